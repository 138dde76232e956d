"""Optax optimizer from config: clip, Adam(W), linear warm-up then linear decay."""

import jax
import optax


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
  """0 -> lr over warmup_steps, then linearly to 0 at num_steps."""
  warmup = optim_config.warmup_steps
  lr = optim_config.learning_rate
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, max(warmup, 1)),
       optax.linear_schedule(lr, 0.0, max(num_steps - warmup, 1))],
      boundaries=[warmup])


def _decay_mask(params):
  """Weight decay on kernels and embeddings, not on biases and LayerNorm scales."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) not in ('bias', 'scale'), params)


def make(optim_config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(optim_config, num_steps)
  if optim_config.name == 'adamw':
    adam = optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                       eps=optim_config.eps, weight_decay=optim_config.weight_decay,
                       mask=_decay_mask)
  else:
    adam = optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adam)
  return tx, schedule
