"""Optax optimizer from config: clip, Adam(W), linear warm-up then linear decay."""

from typing import Callable

import jax
import optax

# A parameter's path in the params tree, as jax.tree_util gives it, -> frozen?
FrozenPredicate = Callable[[tuple], bool]


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


def path_names(path: tuple) -> tuple[str, ...]:
  """The dict keys of a tree path (('bert', 'embeddings', ...)); boxes' fields are skipped."""
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def make(optim_config, num_steps: int, frozen: FrozenPredicate | None = None
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of a config, and its learning-rate schedule.

  Parameters for which `frozen(path)` holds get no update at all: a stopped
  gradient alone would still let AdamW's weight decay shrink them (1.0 ->
  0.99905 in 10 steps at decay 0.01), and they keep no Adam moments.
  """
  tx, schedule = _make(optim_config, num_steps)
  if frozen is None:
    return tx, schedule
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: 'frozen' if frozen(path) else 'trained', params)
  return optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels), schedule


def _make(optim_config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(optim_config, num_steps)
  if optim_config.name == 'adamw':
    adam = optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                       eps=optim_config.eps, weight_decay=optim_config.weight_decay,
                       mask=_decay_mask)
  else:
    adam = optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adam)
  return tx, schedule
