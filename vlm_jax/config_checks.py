"""Checks of a config's values, run before anything is built or compiled."""

import jax.numpy as jnp


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _require(condition: bool, field: str, message: str):
  if not condition:
    raise ConfigError(f'config.{field}: {message}')


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes with -1 resolved; raises ConfigError if they do not fit."""
  data, model = mesh_config.data, mesh_config.model
  _require(model >= 1, 'mesh.model', f'must be >= 1, got {model}')
  _require(data == -1 or data >= 1, 'mesh.data', f'must be -1 or >= 1, got {data}')
  if data == -1:
    _require(num_devices % model == 0, 'mesh.model',
             f'{model} does not divide the {num_devices} devices')
    data = num_devices // model
  _require(data * model == num_devices, 'mesh',
           f'data={data} x model={model} = {data * model} devices, but there are '
           f'{num_devices}')
  return data, model


def validate(config, num_devices: int, num_processes: int = 1) -> None:
  """Raises ConfigError naming the first field whose value cannot work."""
  m, d, o, t = config.model, config.data, config.optim, config.train
  data_parallel, _ = mesh_shape(config.mesh, num_devices)
  _require(m.hidden_size % m.num_heads == 0, 'model.hidden_size',
           f'{m.hidden_size} is not divisible by model.num_heads={m.num_heads}')
  for field in ('dtype', 'param_dtype'):
    try:
      jnp.dtype(m[field])
    except TypeError as e:
      raise ConfigError(f'config.model.{field}: unknown dtype {m[field]!r}') from e
  _require(m.attention_impl in ('xla', 'fused'), 'model.attention_impl',
           f"must be 'xla' or 'fused', got {m.attention_impl!r}")
  _require(m.attention_impl == 'xla' or m.attention_dropout_rate == 0, 'model.attention_impl',
           f"'fused' has no attention dropout; set model.attention_dropout_rate=0 "
           f'(got {m.attention_dropout_rate})')
  _require(config.train.dropout_rng in ('threefry2x32', 'rbg', 'unsafe_rbg'), 'train.dropout_rng',
           f"must be threefry2x32, rbg or unsafe_rbg, got {config.train.dropout_rng!r}")
  _require(d.seq_len <= m.max_position_embeddings, 'data.seq_len',
           f'{d.seq_len} is longer than the position table '
           f'(model.max_position_embeddings={m.max_position_embeddings})')
  _require(d.seq_len >= 8, 'data.seq_len', f'must be at least 8, got {d.seq_len}')
  _require(1 <= d.max_predictions <= d.seq_len, 'data.max_predictions',
           f'must be in [1, data.seq_len={d.seq_len}], got {d.max_predictions}')
  _require(0.0 < d.mask_prob < 1.0, 'data.mask_prob', f'must be in (0, 1), got {d.mask_prob}')
  weights = dict(d.regime_weights)
  _require(all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0,
           'data.regime_weights', f'must be >= 0 and not all zero, got {weights}')
  _require(d.max_subsample_rate >= 1, 'data.max_subsample_rate',
           f'must be >= 1, got {d.max_subsample_rate}')
  _require(d.max_concat_sentences >= 2, 'data.max_concat_sentences',
           f'must be >= 2, got {d.max_concat_sentences}')
  _require(d.segment_len_no_asr >= 1, 'data.segment_len_no_asr',
           f'must be >= 1, got {d.segment_len_no_asr}')
  _require(m.num_visual_tokens >= 1, 'model.num_visual_tokens',
           f'must be >= 1, got {m.num_visual_tokens}')
  _require(o.name in ('adam', 'adamw'), 'optim.name', f'must be adam or adamw, got {o.name!r}')
  _require(o.learning_rate > 0, 'optim.learning_rate', f'must be > 0, got {o.learning_rate}')
  _require(0 <= o.warmup_steps < t.num_steps, 'optim.warmup_steps',
           f'must be in [0, train.num_steps={t.num_steps}), got {o.warmup_steps}')
  _require(o.grad_accum_steps >= 1, 'optim.grad_accum_steps',
           f'must be >= 1, got {o.grad_accum_steps}')
  batch = t.global_batch_size
  _require(batch % num_processes == 0, 'train.global_batch_size',
           f'{batch} is not divisible by the {num_processes} processes')
  _require(batch % o.grad_accum_steps == 0, 'train.global_batch_size',
           f'{batch} is not divisible by optim.grad_accum_steps={o.grad_accum_steps}')
  micro = batch // o.grad_accum_steps
  _require(micro % data_parallel == 0, 'train.global_batch_size',
           f'{batch} (micro-batch {micro}) is not divisible by the data-parallel size '
           f'{data_parallel} (mesh.data)')
  _require(t.num_steps >= 1, 'train.num_steps', f'must be >= 1, got {t.num_steps}')
  _require(t.log_every >= 1, 'train.log_every', f'must be >= 1, got {t.log_every}')
  _require(t.checkpoint_every >= 1, 'train.checkpoint_every',
           f'must be >= 1, got {t.checkpoint_every}')
  _require(t.keep_checkpoints >= 1, 'train.keep_checkpoints',
           f'must be >= 1, got {t.keep_checkpoints}')


def validate_videoclip(config, num_devices: int, num_processes: int, num_videos: int) -> None:
  """Raises ConfigError naming the first VideoCLIP config field whose value cannot work."""
  m, d, o, t = config.model, config.data, config.optim, config.train
  data_parallel, _ = mesh_shape(config.mesh, num_devices)
  for field in ('dtype', 'param_dtype'):
    try:
      jnp.dtype(m[field])
    except TypeError as e:
      raise ConfigError(f'config.model.{field}: unknown dtype {m[field]!r}') from e
  if not m.init_checkpoint:
    _require(m.hidden_size % m.num_heads == 0, 'model.hidden_size',
             f'{m.hidden_size} is not divisible by model.num_heads={m.num_heads}')
    _require(1 <= m.video_layers <= m.num_layers, 'model.video_layers',
             f'must be in [1, model.num_layers={m.num_layers}], got {m.video_layers}')
  _require(m.temperature > 0, 'model.temperature', f'must be > 0, got {m.temperature}')
  _require(1 <= d.min_text_tokens <= d.max_text_tokens, 'data.min_text_tokens',
           f'must be in [1, data.max_text_tokens={d.max_text_tokens}], got {d.min_text_tokens}')
  _require(1 <= d.min_video_seconds <= d.max_video_seconds, 'data.min_video_seconds',
           f'must be in [1, data.max_video_seconds={d.max_video_seconds}], got '
           f'{d.min_video_seconds}')
  _require(d.text_tokens_cap >= 1, 'data.text_tokens_cap', f'must be >= 1, got {d.text_tokens_cap}')
  _require(d.pairs_per_video >= 1, 'data.pairs_per_video', f'must be >= 1, got {d.pairs_per_video}')
  _require(d.retrieval_pairs >= 1, 'data.retrieval_pairs', f'must be >= 1, got {d.retrieval_pairs}')
  k = d.videos_per_batch
  _require(k >= 1, 'data.videos_per_batch', f'must be >= 1, got {k}')
  need = 2 * k if d.retrieval else k
  _require(num_videos >= need, 'data.videos_per_batch',
           f'{num_videos} training videos with sentences cannot fill a batch of {k} videos'
           + (f' drawn from {need} neighbours (or set data.retrieval=False)' if d.retrieval else ''))
  _require(k % num_processes == 0, 'data.videos_per_batch',
           f'{k} is not divisible by the {num_processes} processes')
  _require((k * d.pairs_per_video) % data_parallel == 0, 'data.videos_per_batch',
           f'the batch of {k} x {d.pairs_per_video} pairs is not divisible by the data-parallel '
           f'size {data_parallel} (mesh.data)')
  _require(o.name in ('adam', 'adamw'), 'optim.name', f'must be adam or adamw, got {o.name!r}')
  _require(o.learning_rate > 0, 'optim.learning_rate', f'must be > 0, got {o.learning_rate}')
  # Micro-batches would each lose the others' negatives: not the same loss.
  _require(o.grad_accum_steps == 1, 'optim.grad_accum_steps',
           'must be 1 for a contrastive loss (its negatives span the whole batch)')
  _require(t.num_epochs >= 1, 'train.num_epochs', f'must be >= 1, got {t.num_epochs}')
  _require(0 <= o.warmup_steps < t.num_epochs * t.steps_per_epoch, 'optim.warmup_steps',
           f'must be below the {t.num_epochs * t.steps_per_epoch} steps of training '
           f'({t.num_epochs} epochs x {t.steps_per_epoch} batches), got {o.warmup_steps}')
  _require(t.dropout_rng in ('threefry2x32', 'rbg', 'unsafe_rbg'), 'train.dropout_rng',
           f"must be threefry2x32, rbg or unsafe_rbg, got {t.dropout_rng!r}")
  for field in ('log_every', 'checkpoint_every', 'keep_checkpoints', 'encode_batch_size'):
    _require(t[field] >= 1, f'train.{field}', f'must be >= 1, got {t[field]}')
