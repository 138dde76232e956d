"""Multi-head scaled dot-product attention with BERT's dropout on the probabilities.

The gradient is written out (`jax.custom_vjp`) so that its four batched
products are plain or right-transposed matrix products over [heads, length,
head_dim] blocks: autodiff of the forward contracts two of them over their
leading axis (P^T dO and dS^T Q), a form XLA's CPU backend hands to a slower
kernel (benchmarks/RESULTS.md). The residuals are the probabilities and the
keep mask, as in autodiff.
"""

import functools

import jax
import jax.numpy as jnp

from vlm_jax.models import dropout

Array = jax.Array


def dot_product_attention(query: Array, key: Array, value: Array, bias: Array,
                          keep: Array | None = None, rate: float = 0.0) -> Array:
  """softmax(q k^T / sqrt(d) + bias), dropped out, times v.

  Args:
    query, key, value: [batch, length, heads, head_dim].
    bias: additive, broadcastable to [batch, heads, length, length] (the
      padding bias is [batch, 1, 1, length]); no gradient flows into it.
    keep: bool [batch, heads, length, length], the dropout keep mask of the
      probabilities (one draw per element, as BERT), or None for no dropout.
    rate: the dropout rate `keep` was drawn with; kept values scale by 1 / (1 - rate).

  Returns:
    [batch, length, heads, head_dim].
  """
  if keep is None:
    keep = jnp.ones((), bool)
    rate = 0.0
  return _attention(query, key, value, bias, keep, rate)


def _heads_first(x: Array) -> Array:
  return jnp.transpose(x, (0, 2, 1, 3))  # [batch, length, heads, d] -> [batch, heads, length, d]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(query, key, value, bias, keep, rate):
  return _forward(query, key, value, bias, keep, rate)[0]


def _forward(query, key, value, bias, keep, rate):
  scale = jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
  q, k, v = _heads_first(query), _heads_first(key), _heads_first(value)
  logits = jnp.einsum('bhld,bhmd->bhlm', q, k) * scale + bias.astype(query.dtype)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bhlm,bhmd->bhld', dropout.apply_keep_mask(probs, keep, rate), v)
  # Q and dO are kept as [batch, heads, head_dim, length]: the products that
  # contract over the query axis then read them without a transposed operand.
  q_t = jnp.transpose(query, (0, 2, 3, 1))
  return _heads_first(out), (q_t, k, v, probs, keep, bias)


def _backward(rate, residuals, d_out):
  q_t, k, v, probs, keep, bias = residuals
  scale = jnp.asarray(q_t.shape[-2] ** -0.5, q_t.dtype)
  d_o = _heads_first(d_out)
  d_o_t = jnp.transpose(d_out, (0, 2, 3, 1))
  d_dropped = jnp.einsum('bhld,bhmd->bhlm', d_o, v)
  d_v_t = jnp.einsum('bhdl,bhlm->bhdm', d_o_t, dropout.apply_keep_mask(probs, keep, rate))
  d_probs = dropout.apply_keep_mask(d_dropped, keep, rate)
  d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True)) * scale
  d_q = jnp.einsum('bhlm,bhmd->bhld', d_logits, k)
  d_k_t = jnp.einsum('bhdl,bhlm->bhdm', q_t, d_logits)
  length_first = (0, 3, 1, 2)  # [batch, heads, d, length] -> [batch, length, heads, d]
  return (_heads_first(d_q), jnp.transpose(d_k_t, length_first),
          jnp.transpose(d_v_t, length_first), jnp.zeros_like(bias), None)


_attention.defvjp(_forward, _backward)
