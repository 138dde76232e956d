"""Checks of a VideoCLIP training config (configs/videoclip.py), run before anything is built."""

from vlm_jax import config_checks as checks
from vlm_jax.config_checks import require


def validate(config, num_devices: int, num_processes: int, num_videos: int) -> None:
  """Raises ConfigError naming the first field whose value cannot work.

  Args:
    config: with train.steps_per_epoch filled in (the trainer's with_corpus_size).
    num_devices, num_processes: JAX's.
    num_videos: training videos with sentences (the batches are drawn from them).
  """
  m, d, o, t = config.model, config.data, config.optim, config.train
  data_parallel, _ = checks.mesh_shape(config.mesh, num_devices)
  checks.numerics(m)
  if not m.init_checkpoint:  # a checkpoint's own shape wins over the config's
    checks.heads(m)
    require(1 <= m.video_layers <= m.num_layers, 'model.video_layers',
            f'must be in [1, model.num_layers={m.num_layers}], got {m.video_layers}')
  require(m.temperature > 0, 'model.temperature', f'must be > 0, got {m.temperature}')
  require(m.get('video_layout', 'mmpt') in ('mmpt', 'packed'), 'model.video_layout',
          f'must be "mmpt" or "packed", got {m.get("video_layout")!r}')
  require(1 <= d.min_text_tokens <= d.max_text_tokens, 'data.min_text_tokens',
          f'must be in [1, data.max_text_tokens={d.max_text_tokens}], got {d.min_text_tokens}')
  require(1 <= d.min_video_seconds <= d.max_video_seconds, 'data.min_video_seconds',
          f'must be in [1, data.max_video_seconds={d.max_video_seconds}], got '
          f'{d.min_video_seconds}')
  for field in ('text_tokens_cap', 'pairs_per_video', 'retrieval_pairs'):
    require(d[field] >= 1, f'data.{field}', f'must be >= 1, got {d[field]}')
  k = d.videos_per_batch
  require(k >= 1, 'data.videos_per_batch', f'must be >= 1, got {k}')
  need = 2 * k if d.retrieval else k
  require(num_videos >= need, 'data.videos_per_batch',
          f'{num_videos} training videos with sentences cannot fill a batch of {k} videos'
          + (f' drawn from {need} neighbours (or set data.retrieval=False)' if d.retrieval else ''))
  checks.batch_split('data.videos_per_batch', k, num_processes, k * d.pairs_per_video,
                     data_parallel, f'the batch of {k} x {d.pairs_per_video} pairs')
  require(t.num_epochs >= 1, 'train.num_epochs', f'must be >= 1, got {t.num_epochs}')
  num_steps = t.num_epochs * t.steps_per_epoch
  checks.optimizer(o, num_steps, f'{num_steps} steps of training ({t.num_epochs} epochs x '
                                 f'{t.steps_per_epoch} batches)')
  # Micro-batches would each lose the others' negatives: not the same loss.
  require(o.grad_accum_steps == 1, 'optim.grad_accum_steps',
          'must be 1 for a contrastive loss (its negatives span the whole batch)')
  checks.train_loop(t, ('log_every', 'checkpoint_every', 'keep_checkpoints',
                        'encode_batch_size'))


def records(config, feature_dim: int, text_vocab_size: int, files: list[str],
            manifests: dict[str, dict]) -> None:
  """The records against the model: feature width, and their vocab as make-records states it.

  Args:
    config: the training config.
    feature_dim: the width of the records' features (every record holds it).
    text_vocab_size: rows of the text tower's word table.
    files: the record files (the first one is named for the width).
    manifests: {path: manifest} of the records' make-records manifest.json files.

  Raises:
    ConfigError: naming the file or manifest, its field and both numbers.
  """
  require(feature_dim == config.model.feature_dim, 'model.feature_dim',
          f'{config.model.feature_dim}, but the records hold {feature_dim}-d features '
          f'(video/feature_dim in {files[0]}); set --config.model.feature_dim={feature_dim}')
  for path, manifest in manifests.items():
    system = manifest.get('system', 'videoclip')
    require(system == 'videoclip', 'data.train_files',
            f'{path} describes {system} records, not VideoCLIP ones '
            '(vlm-jax make-records --config.system=videoclip)')
    text = manifest.get('text_vocab_size')
    require(text is None or text == text_vocab_size, 'data.vocab_file',
            f'the text tower has {text_vocab_size} word rows, but {path} has '
            f'text_vocab_size={text} (vocab_file={manifest.get("vocab_file")}): the records '
            'were tokenized with another vocab; give that one (with a model of its size) or '
            'remake the records with this one')
