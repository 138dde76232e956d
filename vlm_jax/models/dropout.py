"""Dropout masks from threefry bits that XLA can fuse into the masked op.

jax.random.bits on the CPU runs threefry's 20 rounds as a rolled while loop
(JAX lowers it that way to keep CPU compile times short), so every mask
costs a loop of separate array passes and the mask cannot fuse into the
dropout's multiply. `threefry_bits` is the same hash, rounds unrolled:
XLA fuses it with the comparison and the multiply into one loop. Its bits
are threefry2x32(key, (0, i)) for the element with flat index i, the hash
inputs jax.random.bits uses (with JAX's default `jax_threefry_partitionable`),
so hi ^ lo equals jax.random.bits(key, shape) bit for bit (tests/test_dropout.py).

On GPUs and TPUs jaxlib has a threefry kernel: `bits_mode('kernel')` draws the
same bits through it (jax.extend.random.threefry2x32_p), 'unrolled' through the
written-out hash, and 'auto' (the default) picks per backend: unrolled on the
CPU, where it was measured faster, the kernel elsewhere (the accelerator
benchmark, benchmarks/throughput.py, times both). The mode changes no bit.
"""

import contextlib
import contextvars

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

Array = jax.Array

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
BITS_MODES = ('auto', 'unrolled', 'kernel')
_BITS_MODE = contextvars.ContextVar('dropout_bits_mode', default='auto')


@contextlib.contextmanager
def bits_mode(mode: str):
  """Threefry dropout bits drawn by `mode` (BITS_MODES) in what is traced inside."""
  if mode not in BITS_MODES:
    raise ValueError(f'dropout bits mode must be one of {BITS_MODES}, got {mode!r}')
  token = _BITS_MODE.set(mode)
  try:
    yield
  finally:
    _BITS_MODE.reset(token)


def resolved_bits_mode(backend: str | None = None) -> str:
  """'unrolled' or 'kernel': the mode in effect, 'auto' resolved for `backend`."""
  mode = _BITS_MODE.get()
  if mode == 'auto':
    return 'unrolled' if (backend or jax.default_backend()) == 'cpu' else 'kernel'
  return mode


def _rotate_left(x: Array, bits: int) -> Array:
  return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key1: Array, key2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
  """Threefry-2x32 (20 rounds, Salmon et al. 2011) of the pairs (x1, x2), uint32 arrays."""
  ks = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for block in range(5):
    for rotation in _ROTATIONS[block % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, rotation) ^ x1
    x1 = x1 + ks[(block + 1) % 3]
    x2 = x2 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x1, x2


def threefry_bits(key: Array, shape: tuple[int, ...]) -> tuple[Array, Array]:
  """64 random bits per element of `shape`, as two uint32 arrays (hi, lo).

  `key` is a typed threefry key (jax.random.key) or its raw uint32[2] data;
  the hash is written out or jaxlib's kernel (`bits_mode`), the same bits.
  Sizes up to 2**32 elements (the counter's high word stays 0).
  """
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  if resolved_bits_mode() == 'kernel':
    return tuple(threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(index), index))
  return threefry2x32(key[0], key[1], jnp.zeros_like(index), index)


def keep_mask(rng: Array, rate: float, shape: tuple[int, ...]) -> Array:
  """Bernoulli(1 - rate) keep mask [*shape], bool: 32 random bits per element.

  Threefry keys use `threefry_bits` (lo word); other key kinds (rbg) draw
  through jax.random.bits. P(drop) is `rate` rounded to a multiple of 2**-32.
  """
  threshold = np.uint32(min(round(rate * 2.0**32), 2**32 - 1))
  if str(jax.random.key_impl(rng)) == 'threefry2x32':
    bits = threefry_bits(rng, shape)[1]
  else:
    bits = jax.random.bits(rng, shape, jnp.uint32)
  return bits >= threshold


def apply_keep_mask(x: Array, keep: Array, rate: float) -> Array:
  """Inverted dropout of `x` with a keep mask drawn at `rate`: kept values scale by 1 / (1 - rate)."""
  if rate == 0.0:
    return x
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


class Dropout(nn.Module):
  """Inverted dropout with `keep_mask` (rng collection 'dropout')."""
  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    return apply_keep_mask(x, keep_mask(self.make_rng('dropout'), self.rate, x.shape), self.rate)
