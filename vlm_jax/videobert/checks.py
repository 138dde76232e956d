"""Checks of a VideoBERT training config (configs/videobert.py), run before anything is built."""

from vlm_jax import config_checks as checks
from vlm_jax.config_checks import require


def validate(config, num_devices: int, num_processes: int = 1) -> None:
  """Raises ConfigError naming the first field whose value cannot work."""
  m, d, o, t = config.model, config.data, config.optim, config.train
  data_parallel, _ = checks.mesh_shape(config.mesh, num_devices)
  checks.heads(m)
  checks.numerics(m)
  require(m.num_visual_tokens >= 1, 'model.num_visual_tokens',
          f'must be >= 1, got {m.num_visual_tokens}')
  require(not m.freeze_visual_embeddings or m.visual_init, 'model.visual_init',
          'is empty, but model.freeze_visual_embeddings keeps the visual table as initialised: '
          'a frozen random table never learns; give the codebook centroids '
          '(build-codebook writes <codebook>.centroids.npy)')
  require(d.seq_len <= m.max_position_embeddings, 'data.seq_len',
          f'{d.seq_len} is longer than the position table '
          f'(model.max_position_embeddings={m.max_position_embeddings})')
  require(d.seq_len >= 8, 'data.seq_len', f'must be at least 8, got {d.seq_len}')
  require(1 <= d.max_predictions <= d.seq_len, 'data.max_predictions',
          f'must be in [1, data.seq_len={d.seq_len}], got {d.max_predictions}')
  require(0.0 < d.mask_prob < 1.0, 'data.mask_prob', f'must be in (0, 1), got {d.mask_prob}')
  weights = dict(d.regime_weights)
  require(all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0,
          'data.regime_weights', f'must be >= 0 and not all zero, got {weights}')
  require(d.max_subsample_rate >= 1, 'data.max_subsample_rate',
          f'must be >= 1, got {d.max_subsample_rate}')
  require(d.max_concat_sentences >= 2, 'data.max_concat_sentences',
          f'must be >= 2, got {d.max_concat_sentences}')
  require(d.segment_len_no_asr >= 1, 'data.segment_len_no_asr',
          f'must be >= 1, got {d.segment_len_no_asr}')
  require(t.num_steps >= 1, 'train.num_steps', f'must be >= 1, got {t.num_steps}')
  checks.optimizer(o, t.num_steps, f'train.num_steps={t.num_steps}')
  batch = t.global_batch_size
  require(batch % o.grad_accum_steps == 0, 'train.global_batch_size',
          f'{batch} is not divisible by optim.grad_accum_steps={o.grad_accum_steps}')
  micro = batch // o.grad_accum_steps
  checks.batch_split('train.global_batch_size', batch, num_processes, micro, data_parallel,
                     f'{batch} (micro-batch {micro})')
  checks.train_loop(t)


def records_vocab(config, manifests: dict[str, dict]) -> None:
  """The records' vocabulary, as their make-records manifests state it, against the model's.

  Ids past the model's tables train into NaN at the first step, and text ids
  of another vocab train into nonsense: both are refused before anything is
  built or compiled.

  Args:
    config: the training config.
    manifests: {path: manifest} of the records' manifest.json files (older
      manifests may lack a field: it is not checked).

  Raises:
    ConfigError: naming the manifest, its field and both numbers.
  """
  m = config.model
  for path, manifest in manifests.items():
    system = manifest.get('system', 'videobert')
    require(system == 'videobert', 'data.train_files',
            f'{path} describes {system} records, not VideoBERT ones '
            '(vlm-jax make-records --config.system=videobert)')
    visual = manifest.get('num_visual_tokens')
    require(visual is None or visual <= m.num_visual_tokens, 'model.num_visual_tokens',
            f'{m.num_visual_tokens}, but {path} has num_visual_tokens={visual}: its visual '
            f'token ids do not fit; set --config.model.num_visual_tokens={visual} (the '
            "codebook's leaves)")
    text = manifest.get('text_vocab_size')
    require(text is None or text == m.text_vocab_size, 'model.text_vocab_size',
            f'{m.text_vocab_size} (the vocab of config.data.vocab_file or the init checkpoint), '
            f'but {path} has text_vocab_size={text} (vocab_file={manifest.get("vocab_file")}): '
            'the records were tokenized with another vocab; give that one as '
            '--config.data.vocab_file or remake the records with this one')
