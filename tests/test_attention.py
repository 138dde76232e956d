"""Attention with a hand-written gradient against flax, NumPy and plain autodiff."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.models import attention, bert, dropout

BATCH, LENGTH, HEADS, HEAD_DIM = 3, 11, 4, 8


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  q, k, v, d_out = (rng.normal(size=(BATCH, LENGTH, HEADS, HEAD_DIM)).astype(np.float32)
                    for _ in range(4))
  lengths = np.array([LENGTH, 7, 3])
  bias = np.where(np.arange(LENGTH)[None] < lengths[:, None], 0.0, -1e9).astype(np.float32)
  return q, k, v, d_out, bias[:, None, None, :]


def _numpy_attention(q, k, v, bias, keep, rate):
  q, k, v = (np.transpose(x, (0, 2, 1, 3)).astype(np.float64) for x in (q, k, v))
  logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(HEAD_DIM) + bias
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  probs = np.where(keep, probs / (1 - rate), 0.0)
  return np.transpose(probs @ v, (0, 2, 1, 3))


def _autodiff_attention(q, k, v, bias, keep, rate):
  """The same function written plainly, differentiated by JAX."""
  q, k, v = (jnp.transpose(x, (0, 2, 1, 3)) for x in (q, k, v))
  probs = jax.nn.softmax(jnp.einsum('bhld,bhmd->bhlm', q, k) / np.sqrt(HEAD_DIM) + bias)
  probs = jnp.where(keep, probs / (1 - rate), 0.0)
  return jnp.transpose(jnp.einsum('bhlm,bhmd->bhld', probs, v), (0, 2, 1, 3))


def _grads(fn, q, k, v, d_out):
  return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * d_out), argnums=(0, 1, 2))(q, k, v)


def test_without_dropout_equals_flax_attention_and_its_gradient():
  q, k, v, d_out, bias = _inputs()
  ours = lambda q, k, v: attention.dot_product_attention(q, k, v, bias)
  flax = lambda q, k, v: nn.dot_product_attention(q, k, v, bias=bias)
  np.testing.assert_allclose(np.asarray(ours(q, k, v)), np.asarray(flax(q, k, v)), atol=1e-6)
  for a, b in zip(_grads(ours, q, k, v, d_out), _grads(flax, q, k, v, d_out)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_with_dropout_equals_numpy_and_autodiff_of_the_plain_form():
  q, k, v, d_out, bias = _inputs(1)
  rate = 0.3
  keep = np.asarray(dropout.keep_mask(jax.random.key(3), rate, (BATCH, HEADS, LENGTH, LENGTH)))
  ours = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, bias, keep, rate))
  np.testing.assert_allclose(np.asarray(ours(q, k, v)),
                             _numpy_attention(q, k, v, bias, keep, rate), atol=1e-5)
  plain = lambda q, k, v: _autodiff_attention(q, k, v, bias, keep, rate)
  for a, b in zip(_grads(ours, q, k, v, d_out), _grads(plain, q, k, v, d_out)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_no_gradient_flows_into_the_bias():
  q, k, v, _, bias = _inputs()
  d_bias = jax.grad(lambda b: jnp.sum(attention.dot_product_attention(q, k, v, b)))(bias)
  np.testing.assert_array_equal(np.asarray(d_bias), 0.0)


def test_bert_attention_dropout_draws_every_batch_row_and_head_apart():
  # Identical rows in, so only the dropout masks can make the rows differ; a
  # mask broadcast over the batch (flax's default) would give equal rows.
  cfg = bert.BertConfig(hidden_size=32, num_heads=4, num_layers=1, mlp_dim=64,
                        dropout_rate=0.0, attention_dropout_rate=0.5)
  layer = bert.SelfAttention(cfg)
  x = np.repeat(np.random.default_rng(0).normal(size=(1, LENGTH, 32)).astype(np.float32), 4, 0)
  bias = np.zeros((4, 1, 1, LENGTH), np.float32)
  params = layer.init(jax.random.key(0), x, bias, deterministic=True)
  out = np.asarray(layer.apply(params, x, bias, deterministic=False,
                               rngs={'dropout': jax.random.key(1)}))
  assert all(np.abs(out[i] - out[0]).max() > 1e-3 for i in range(1, 4))
  np.testing.assert_allclose(np.asarray(layer.apply(params, x, bias, deterministic=True))[1:],
                             np.asarray(layer.apply(params, x, bias, deterministic=True))[:1]
                             .repeat(3, 0), atol=1e-6)


def test_bert_attention_draws_one_mask_element_per_batch_head_query_key(monkeypatch):
  seen, real = {}, attention.dot_product_attention
  def spy(query, key, value, bias, keep=None, rate=0.0):
    seen['keep'], seen['rate'] = keep, rate
    return real(query, key, value, bias, keep, rate)
  monkeypatch.setattr(attention, 'dot_product_attention', spy)
  cfg = bert.BertConfig(hidden_size=32, num_heads=4, num_layers=1, mlp_dim=64,
                        attention_dropout_rate=0.2)
  layer = bert.SelfAttention(cfg)
  x = np.zeros((2, LENGTH, 32), np.float32)
  bias = np.zeros((2, 1, 1, LENGTH), np.float32)
  params = layer.init(jax.random.key(0), x, bias, deterministic=True)
  assert seen['keep'] is None and seen['rate'] == 0.0
  layer.apply(params, x, bias, deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert seen['keep'].shape == (2, 4, LENGTH, LENGTH) and seen['rate'] == 0.2
