"""Dropout masks: the unrolled threefry hash against JAX's own, rates, scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from vlm_jax.models import dropout


@pytest.mark.parametrize('shape', [(7,), (3, 5, 7), (2, 63, 384)])
def test_threefry_bits_are_jax_threefry_of_the_element_index(shape):
  key = jax.random.key(1234)
  hi, lo = dropout.threefry_bits(key, shape)
  data = jax.random.key_data(key)
  index = jnp.arange(int(np.prod(shape)), dtype=jnp.uint32)
  want_hi, want_lo = threefry2x32_p.bind(data[0], data[1], jnp.zeros_like(index), index)
  np.testing.assert_array_equal(np.asarray(hi), np.asarray(want_hi).reshape(shape))
  np.testing.assert_array_equal(np.asarray(lo), np.asarray(want_lo).reshape(shape))
  # jax.random.bits hashes the same counters and folds the two words together.
  np.testing.assert_array_equal(np.asarray(hi ^ lo),
                                np.asarray(jax.random.bits(key, shape, jnp.uint32)))


def test_threefry_bits_same_under_jit_and_from_raw_key_data():
  key = jax.random.key(5)
  eager = dropout.threefry_bits(key, (4, 9))
  jitted = jax.jit(lambda k: dropout.threefry_bits(k, (4, 9)))(key)
  raw = dropout.threefry_bits(jax.random.key_data(key), (4, 9))
  for a, b, c in zip(eager, jitted, raw):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_keep_mask_drops_each_element_independently_at_the_rate(impl, rate):
  shape = (64, 96, 130)
  keep = np.asarray(dropout.keep_mask(jax.random.key(0, impl=impl), rate, shape))
  assert keep.shape == shape and keep.dtype == bool
  def within(observed, p, n):  # 5 standard errors of a Bernoulli(p) mean over n
    assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / n), (observed, p)
  within((~keep).mean(), rate, keep.size)
  # Neighbours along the last and the first axis are dropped independently.
  within((~keep[..., :-1] & ~keep[..., 1:]).mean(), rate**2, keep[..., 1:].size)
  within((~keep[:-1] & ~keep[1:]).mean(), rate**2, keep[1:].size)
  other = np.asarray(dropout.keep_mask(jax.random.key(1, impl=impl), rate, shape))
  within((other != keep).mean(), 2 * rate * (1 - rate), keep.size)


def test_dropout_scales_kept_values_and_is_off_when_deterministic():
  x = np.ones((256, 384), np.float32)
  layer = dropout.Dropout(0.1)
  y = np.asarray(layer.apply({}, x, False, rngs={'dropout': jax.random.key(0)}))
  np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)
  keep = np.asarray(dropout.keep_mask(jax.random.key(0), 0.1, x.shape))
  # flax's make_rng folds the module path into the key, so compare rates, not masks.
  assert abs((y == 0).mean() - (~keep).mean()) < 0.01
  np.testing.assert_array_equal(np.asarray(layer.apply({}, x, True)), x)
  np.testing.assert_array_equal(
      np.asarray(dropout.Dropout(0.0).apply({}, x, False, rngs={'dropout': jax.random.key(0)})), x)


@pytest.mark.parametrize('shape', [(7,), (2, 4, 11, 11)])
def test_the_kernel_mode_draws_the_unrolled_bits_through_jaxlibs_primitive(shape):
  key = jax.random.fold_in(jax.random.key(9), 3)
  masks, jaxprs = {}, {}
  for mode in ('unrolled', 'kernel'):
    with dropout.bits_mode(mode):
      masks[mode] = jax.jit(lambda k: dropout.keep_mask(k, 0.1, shape))(key)
      jaxprs[mode] = str(jax.make_jaxpr(lambda k: dropout.keep_mask(k, 0.1, shape))(key))
  np.testing.assert_array_equal(np.asarray(masks['kernel']), np.asarray(masks['unrolled']))
  assert 'threefry2x32' in jaxprs['kernel'] and 'threefry2x32' not in jaxprs['unrolled']


def test_auto_bits_are_unrolled_on_the_cpu_and_the_kernel_elsewhere():
  assert dropout.resolved_bits_mode('cpu') == 'unrolled'
  assert dropout.resolved_bits_mode('gpu') == dropout.resolved_bits_mode('tpu') == 'kernel'
  with dropout.bits_mode('kernel'):
    assert dropout.resolved_bits_mode('cpu') == 'kernel'
  with pytest.raises(ValueError, match='dropout bits mode'):
    with dropout.bits_mode('philox'):
      pass
