"""Multi-head scaled dot-product attention: written out with BERT's dropout on the
probabilities, or a fused kernel of the backend (`padded_attention`).

The written-out path's gradient is hand-written (`jax.custom_vjp`) so that its four batched
products are plain or right-transposed matrix products over [heads, length,
head_dim] blocks: autodiff of the forward contracts two of them over their
leading axis (P^T dO and dS^T Q), a form XLA's CPU backend hands to a slower
kernel (benchmarks/RESULTS.md). The residuals are the probabilities and the
keep mask, as in autodiff.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.models import dropout

Array = jax.Array

# model.attention_impl: 'xla' written out (dropout, any backend, the CPU's
# choice); 'cudnn' cuDNN's flash attention on NVIDIA GPUs, padding given as
# per-row key counts; 'tpu_flash' Pallas's TPU flash attention, padding given as
# segment ids; 'auto' the best of them the backend and the config allow (`resolve`).
IMPLEMENTATIONS = ('xla', 'cudnn', 'tpu_flash', 'auto')
# Pallas's TPU kernel tiles the key axis in blocks of (a multiple of) 128.
_TPU_BLOCK = 128


def resolve(implementation: str, *, attention_dropout_rate: float, dtype: Any,
            head_dim: int, backend: str | None = None) -> str:
  """The implementation `implementation` ('auto' or a name) stands for on `backend`.

  'auto' is cuDNN on a GPU and Pallas flash attention on a TPU where they can
  compute the config's attention: neither has attention dropout, and cuDNN
  needs bf16 or fp16 and a head size <= 256 and a multiple of 8; else 'xla'.
  """
  if implementation != 'auto':
    return implementation
  backend = backend or jax.default_backend()
  if attention_dropout_rate > 0:
    return 'xla'
  if backend == 'gpu' and cudnn_supports(dtype, head_dim):
    return 'cudnn'
  if backend == 'tpu':
    return 'tpu_flash'
  return 'xla'


def cudnn_supports(dtype: Any, head_dim: int) -> bool:
  """Whether cuDNN's flash attention takes this compute dtype and head size."""
  return (jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
          and head_dim <= 256 and head_dim % 8 == 0)


def padding_bias(key_mask: Array, dtype: Any) -> Array:
  """[batch, keys] 1/0 mask -> [batch, 1, 1, keys] additive bias (0 or dtype's minimum)."""
  return jnp.where(key_mask[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


def padded_attention(query: Array, key: Array, value: Array, key_mask: Array, *,
                     implementation: str, keep: Array | None = None,
                     rate: float = 0.0) -> Array:
  """Every query over the keys `key_mask` keeps, by `implementation` (not 'auto').

  Every implementation computes the same function, padded query rows included
  (they attend to the kept keys), so outputs and gradients agree to rounding.

  Args:
    query: [batch, num_queries, heads, head_dim].
    key, value: [batch, keys, heads, head_dim].
    key_mask: [batch, keys], nonzero for keys to attend to. 'cudnn' reads it as a
      count per row, so its zeros must all come after its ones.
    implementation: 'xla', 'cudnn' or 'tpu_flash'.
    keep, rate: the dropout keep mask of the probabilities [batch, heads,
      num_queries, keys] and its rate ('xla' only).

  Returns:
    [batch, num_queries, heads, head_dim].
  """
  if implementation == 'xla':
    return dot_product_attention(query, key, value, padding_bias(key_mask, query.dtype), keep,
                                 rate)
  if keep is not None:
    raise ValueError(f'attention dropout needs the xla implementation, not {implementation!r}')
  if implementation == 'cudnn':
    lengths = jnp.sum(key_mask > 0, axis=-1, dtype=jnp.int32)
    return jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=lengths,
                                        implementation='cudnn')
  if implementation == 'tpu_flash':
    return _tpu_flash(query, key, value, key_mask)
  raise ValueError(f'unknown attention implementation {implementation!r}; '
                   f'known: {", ".join(IMPLEMENTATIONS[:-1])}')


def attended_keys_first(key: Array, value: Array, key_mask: Array
                        ) -> tuple[Array, Array, Array]:
  """Each row's keys and values reordered so the attended ones come first, in order.

  Attention is a sum over keys, so the order does not change it; it lets
  cuDNN's per-row key count stand for a mask with padding anywhere.
  key, value: [batch, keys, heads, head_dim]; key_mask: [batch, keys].
  Returns the reordered key, value and key_mask.
  """
  order = jnp.argsort(key_mask <= 0, axis=-1, stable=True)
  take = lambda x: jnp.take_along_axis(x, order[:, :, None, None], axis=1)
  return take(key), take(value), jnp.take_along_axis(key_mask, order, axis=-1)


def _tpu_flash(query: Array, key: Array, value: Array, key_mask: Array) -> Array:
  """`_tpu_flash_kernel` on each device's rows and heads under a mesh.

  XLA cannot partition a Pallas kernel: under jax.set_mesh it runs per device
  (jax.shard_map), rows over the mesh's 'data' axis and heads over 'model',
  the split the layer's logical constraints ask for.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _tpu_flash_kernel(query, key, value, key_mask)
  axis = lambda name: name if name in mesh.axis_names else None
  heads = jax.sharding.PartitionSpec(axis('data'), None, axis('model'), None)
  rows = jax.sharding.PartitionSpec(axis('data'), None)
  return jax.shard_map(_tpu_flash_kernel, in_specs=(heads, heads, heads, rows),
                       out_specs=heads, check_vma=False)(query, key, value, key_mask)


def _tpu_flash_kernel(query: Array, key: Array, value: Array, key_mask: Array) -> Array:
  """Pallas's TPU flash attention; the padding as segment ids (queries 1, keys their mask)."""
  # pylint: disable-next=import-outside-toplevel
  from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash
  num_queries, num_keys = query.shape[1], key.shape[1]
  # The kernel tiles both axes in blocks of 128: pad them to a multiple with
  # keys no query attends to (segment 0) and queries whose rows are dropped.
  pad_to = lambda n: -(-n // _TPU_BLOCK) * _TPU_BLOCK
  q_len, k_len = pad_to(num_queries), pad_to(num_keys)
  pad = lambda x, n: jnp.pad(jnp.transpose(x, (0, 2, 1, 3)),
                             ((0, 0), (0, 0), (0, n - x.shape[1]), (0, 0)))
  segments = pallas_flash.SegmentIds(
      q=jnp.ones((query.shape[0], q_len), jnp.int32),
      kv=jnp.pad((key_mask > 0).astype(jnp.int32), ((0, 0), (0, k_len - num_keys))))
  out = pallas_flash.flash_attention(
      pad(query, q_len), pad(key, k_len), pad(value, k_len), segment_ids=segments,
      sm_scale=float(np.float32(query.shape[-1]) ** -0.5))
  return jnp.transpose(out[:, :, :num_queries], (0, 2, 1, 3))


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
