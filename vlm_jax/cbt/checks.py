"""Checks of a CBT training config (configs/cbt.py), run before anything is built."""

from vlm_jax import config_checks as checks
from vlm_jax.cbt import objectives
from vlm_jax.config_checks import require


def validate(config, num_devices: int, num_processes: int, num_videos: int) -> None:
  """Raises ConfigError naming the first field whose value cannot work.

  Args:
    config: a configs/cbt.py config.
    num_devices, num_processes: JAX's.
    num_videos: training videos with sentences (each batch draws distinct ones).
  """
  m, d, o, t, loss = config.model, config.data, config.optim, config.train, config.loss
  data_parallel, _ = checks.mesh_shape(config.mesh, num_devices)
  checks.numerics(m)
  if not m.init_checkpoint:  # a checkpoint's own shape wins over the config's
    checks.heads(m)
  require(m.visual_hidden_size % m.visual_heads == 0, 'model.visual_hidden_size',
          f'{m.visual_hidden_size} is not divisible by model.visual_heads={m.visual_heads}')
  for field in ('visual_layers', 'cross_layers', 'feature_dim'):
    require(m[field] >= 1, f'model.{field}', f'must be >= 1, got {m[field]}')
  require(1 <= d.num_clips <= m.max_clips, 'data.num_clips',
          f'must be in [1, model.max_clips={m.max_clips}], got {d.num_clips}')
  require(1 <= d.max_text_tokens <= m.max_position_embeddings - 2, 'data.max_text_tokens',
          f'must be in [1, {m.max_position_embeddings - 2}] (`[CLS]` and `[SEP]` take 2 of '
          f'model.max_position_embeddings), got {d.max_text_tokens}')
  require(0 < d.mask_rate <= 1, 'data.mask_rate', f'must be in (0, 1], got {d.mask_rate}')
  require(d.mask_span >= 1, 'data.mask_span', f'must be >= 1, got {d.mask_span}')
  require(loss.visual_negatives in objectives.NEGATIVES, 'loss.visual_negatives',
          f'must be one of {objectives.NEGATIVES}, got {loss.visual_negatives!r}')
  require(loss.visual_temperature >= 0, 'loss.visual_temperature',
          f'must be >= 0 (0 = none), got {loss.visual_temperature}')
  for field in ('visual_weight', 'cross_weight', 'bert_weight'):
    require(loss[field] >= 0, f'loss.{field}', f'must be >= 0, got {loss[field]}')
  # Frozen, the text BERT gets no gradient: the MLM term would train only its own
  # head, which nothing else reads, while masking the text L_cross reads.
  require(not (loss.bert_weight > 0 and m.freeze_text), 'loss.bert_weight',
          f'{loss.bert_weight} trains the text BERT, but model.freeze_text=True freezes it; '
          'set --config.model.freeze_text=False (or loss.bert_weight=0)')
  if loss.bert_weight > 0:
    require(0 < d.text_mask_rate <= 1, 'data.text_mask_rate',
            f'must be in (0, 1] with loss.bert_weight > 0, got {d.text_mask_rate}')
  b = t.global_batch_size
  require(num_videos >= b, 'train.global_batch_size',
          f'{b} windows of distinct videos, but the records hold {num_videos} videos with '
          'sentences')
  checks.batch_split('train.global_batch_size', b, num_processes, b, data_parallel,
                     f'the batch of {b} windows')
  require(t.num_steps >= 1, 'train.num_steps', f'must be >= 1, got {t.num_steps}')
  checks.optimizer(o, t.num_steps, f'train.num_steps={t.num_steps}')
  # Micro-batches would each lose the others' negatives: not the same loss.
  require(o.grad_accum_steps == 1, 'optim.grad_accum_steps',
          'must be 1 for a contrastive loss (its negatives span the whole batch)')
  checks.train_loop(t)


def records(config, feature_dim: int, files: list[str]) -> None:
  """The records' feature width against model.feature_dim (ConfigError naming both)."""
  require(feature_dim == config.model.feature_dim, 'model.feature_dim',
          f'{config.model.feature_dim}, but the records hold {feature_dim}-d features '
          f'(video/feature_dim in {files[0]}); set --config.model.feature_dim={feature_dim}')
