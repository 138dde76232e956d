"""Checks of a config's values, run before anything is built or compiled.

The checks every training config shares (mesh, model numerics, optimizer,
batch divisibility, train loop); each system's own `checks.validate`
(vlm_jax/videobert/checks.py, vlm_jax/videoclip/checks.py) calls them beside
its own. A failed check raises ConfigError naming the field.
"""

import jax.numpy as jnp

from vlm_jax.models import attention

DROPOUT_RNGS = ('threefry2x32', 'rbg', 'unsafe_rbg')


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def require(condition: bool, field: str, message: str) -> None:
  """Raises ConfigError('config.<field>: <message>') unless `condition`."""
  if not condition:
    raise ConfigError(f'config.{field}: {message}')


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes with -1 resolved; raises ConfigError if they do not fit."""
  data, model = mesh_config.data, mesh_config.model
  require(model >= 1, 'mesh.model', f'must be >= 1, got {model}')
  require(data == -1 or data >= 1, 'mesh.data', f'must be -1 or >= 1, got {data}')
  if data == -1:
    require(num_devices % model == 0, 'mesh.model',
            f'{model} does not divide the {num_devices} devices')
    data = num_devices // model
  require(data * model == num_devices, 'mesh',
          f'data={data} x model={model} = {data * model} devices, but there are '
          f'{num_devices}')
  return data, model


def heads(model_config) -> None:
  """The hidden size splits over the attention heads."""
  m = model_config
  require(m.hidden_size % m.num_heads == 0, 'model.hidden_size',
          f'{m.hidden_size} is not divisible by model.num_heads={m.num_heads}')


def numerics(model_config) -> None:
  """Known dtypes; an attention implementation that supports the attention dropout."""
  m = model_config
  for field in ('dtype', 'param_dtype'):
    try:
      jnp.dtype(m[field])
    except TypeError as e:
      raise ConfigError(f'config.model.{field}: unknown dtype {m[field]!r}') from e
  impls = attention.IMPLEMENTATIONS
  require(m.attention_impl in impls, 'model.attention_impl',
          f'must be {", ".join(map(repr, impls[:-1]))} or {impls[-1]!r}, '
          f'got {m.attention_impl!r}')
  # 'auto' falls back to 'xla' where a fused kernel cannot compute the config's attention.
  require(m.attention_impl in ('xla', 'auto') or m.attention_dropout_rate == 0,
          'model.attention_impl',
          f"{m.attention_impl!r} has no attention dropout (neither cuDNN's public flash "
          "attention nor Pallas's kernel draws one); set model.attention_dropout_rate=0 "
          f"(got {m.attention_dropout_rate}) or use 'xla'")
  if m.attention_impl == 'cudnn':
    head_dim = m.hidden_size // max(m.num_heads, 1)
    require(attention.cudnn_supports(m.dtype, head_dim), 'model.attention_impl',
            "'cudnn' needs model.dtype bfloat16 or float16 and a head size <= 256 that "
            f'divides by 8; got {m.dtype} and {head_dim}')


def optimizer(optim_config, num_steps: int, steps: str) -> None:
  """Adam(W), a positive learning rate, a warm-up shorter than the run.

  Args:
    optim_config: config.optim.
    num_steps: optimizer steps of the whole run.
    steps: how the message names num_steps, e.g. 'train.num_steps=300'.
  """
  o = optim_config
  require(o.name in ('adam', 'adamw'), 'optim.name', f'must be adam or adamw, got {o.name!r}')
  require(o.learning_rate > 0, 'optim.learning_rate', f'must be > 0, got {o.learning_rate}')
  require(0 <= o.warmup_steps < num_steps, 'optim.warmup_steps',
          f'must be in [0, {steps}), got {o.warmup_steps}')
  require(o.grad_accum_steps >= 1, 'optim.grad_accum_steps',
          f'must be >= 1, got {o.grad_accum_steps}')


def batch_split(field: str, size: int, num_processes: int, rows: int, data_parallel: int,
                rows_text: str) -> None:
  """A batch that splits over the processes, and whose rows split over mesh.data.

  Args:
    field: the config field that sets the batch, e.g. 'train.global_batch_size'.
    size: its value; each process loads size / num_processes of it.
    num_processes: JAX processes.
    rows: rows of one device step (a micro-batch, or every pair of a batch).
    data_parallel: the mesh's data axis.
    rows_text: how the message names `rows`.
  """
  require(size >= 1, field, f'must be >= 1, got {size}')
  require(size % num_processes == 0, field,
          f'{size} is not divisible by the {num_processes} processes')
  require(rows % data_parallel == 0, field,
          f'{rows_text} is not divisible by the data-parallel size {data_parallel} (mesh.data)')


def train_loop(train_config, fields=('log_every', 'checkpoint_every', 'keep_checkpoints')):
  """A known dropout PRNG; every field of `fields` >= 1."""
  t = train_config
  require(t.dropout_rng in DROPOUT_RNGS, 'train.dropout_rng',
          f'must be {", ".join(DROPOUT_RNGS[:-1])} or {DROPOUT_RNGS[-1]}, got {t.dropout_rng!r}')
  for field in fields:
    require(t[field] >= 1, f'train.{field}', f'must be >= 1, got {t[field]}')
