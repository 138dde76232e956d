"""model.attention_impl: cuDNN's and Pallas's flash attention against the written-out path.

No GPU or TPU here: the cuDNN call is checked on a faked GPU backend (its
arguments recorded, then computed by jax.nn.dot_product_attention's XLA
path with the same lengths), and Pallas's TPU kernel runs in interpret mode.
"""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import videobert as videobert_config
from vlm_jax import config_checks
from vlm_jax.models import attention, bert
from vlm_jax.videobert import checks as videobert_checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = bert.BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                         attention_dropout_rate=0.0)


def _batch(trailing: bool):
  ids = np.asarray(jax.random.randint(jax.random.key(1), (3, 12), 0, 50))
  mask = (np.arange(12)[None, :] < np.array([[12], [7], [3]])).astype(np.int32)
  if not trailing:  # padding inside rows too, as ClipBERT's text-then-visual sequences
    mask[0, 4:6] = 0
    mask[2, 8:] = 1
  return jnp.asarray(ids), jnp.asarray(mask)


def _outputs_and_grads(config, params, ids, mask):
  """The encoder's states and the gradient of a loss over every position (padded ones too)."""
  model = bert.BertModel(config)
  weights = jax.random.normal(jax.random.key(2), (3, 12, config.hidden_size))

  def loss(p):
    hidden, pooled = model.apply({'params': p}, ids, mask)
    return jnp.sum(hidden * weights) + jnp.sum(pooled), hidden
  (_, hidden), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return hidden, grads


def _assert_same(a, b, grad_tolerance=1e-5):
  hidden_a, grads_a = a
  hidden_b, grads_b = b
  np.testing.assert_allclose(np.asarray(hidden_a), np.asarray(hidden_b), atol=1e-5)
  for x, y in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=grad_tolerance,
                               rtol=grad_tolerance)


@pytest.fixture
def cudnn_calls(monkeypatch):
  """jax.nn.dot_product_attention recorded, then computed by its XLA path (no GPU here)."""
  calls, real = [], jax.nn.dot_product_attention

  def spy(query, key, value, bias=None, mask=None, **kwargs):
    calls.append(dict(kwargs, bias=bias, mask=mask, dtype=query.dtype))
    kwargs['implementation'] = 'xla'
    return real(query, key, value, bias, mask, **kwargs)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', spy)
  return calls


@pytest.mark.parametrize('trailing', [True, False], ids=['trailing_padding', 'inner_padding'])
def test_cudnn_path_equals_the_written_out_path(cudnn_calls, trailing):
  ids, mask = _batch(trailing)
  params = bert.BertModel(CONFIG).init(jax.random.key(0), ids, mask)['params']
  written = _outputs_and_grads(CONFIG, params, ids, mask)
  cudnn = dataclasses.replace(CONFIG, attention_impl='cudnn', trailing_padding=trailing)
  _assert_same(_outputs_and_grads(cudnn, params, ids, mask), written)
  assert cudnn_calls and all(c['implementation'] == 'cudnn' for c in cudnn_calls)


def test_auto_on_a_gpu_calls_cudnn_with_int32_lengths_and_no_bias(cudnn_calls, monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  config = dataclasses.replace(CONFIG, attention_impl='auto', dtype=jnp.bfloat16,
                               trailing_padding=True)
  ids, mask = _batch(trailing=True)
  model = bert.BertModel(config)
  params = model.init(jax.random.key(0), ids, mask)
  cudnn_calls.clear()
  jax.jit(model.apply)(params, ids, mask)
  assert len(cudnn_calls) == CONFIG.num_layers
  for call in cudnn_calls:
    assert call['implementation'] == 'cudnn' and call['dtype'] == jnp.bfloat16
    assert call['bias'] is None and call['mask'] is None
    assert call.get('query_seq_lengths') is None
    assert call['key_value_seq_lengths'].dtype == jnp.int32


def test_cudnn_lengths_count_each_rows_attended_keys(cudnn_calls):
  _, mask = _batch(trailing=False)
  q = jax.random.normal(jax.random.key(0), (3, 12, 2, 8))
  key, value, reordered = attention.attended_keys_first(q, q * 2, mask)
  np.testing.assert_array_equal(np.asarray(reordered),
                                -np.sort(-np.asarray(mask), axis=-1))
  attention.padded_attention(q, key, value, reordered, implementation='cudnn')
  np.testing.assert_array_equal(np.asarray(cudnn_calls[-1]['key_value_seq_lengths']),
                                np.asarray(mask).sum(-1))
  # The attended keys keep their order at the front of their row.
  for row in range(3):
    kept = np.flatnonzero(np.asarray(mask[row]))
    np.testing.assert_array_equal(np.asarray(key[row, :len(kept)]), np.asarray(q[row, kept]))


def _tpu_flash_against_written_out(trailing: bool) -> None:
  """Pallas's kernel in interpret mode (no TPU here) against the written-out path."""
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=import-outside-toplevel
  ids, mask = _batch(trailing)
  params = bert.BertModel(CONFIG).init(jax.random.key(0), ids, mask)['params']
  written = _outputs_and_grads(CONFIG, params, ids, mask)
  # Jitted whole: the interpreter's host callbacks run JAX ops of their own, and
  # beside the main thread's op-by-op dispatch of an eager backward pass they
  # deadlocked now and then.
  flash_config = dataclasses.replace(CONFIG, attention_impl='tpu_flash')
  with pltpu.force_tpu_interpret_mode():
    flash = jax.jit(lambda *a: _outputs_and_grads(flash_config, *a))(params, ids, mask)
  # Against the eager written-out path: jit's float32 summation order alone moves
  # the gradients (up to ~100, a sum over every position) by a few 1e-5.
  _assert_same(flash, written, grad_tolerance=1e-4)


@pytest.mark.parametrize('padding', ['trailing', 'inner'])
def test_tpu_flash_in_interpret_mode_equals_the_written_out_path(padding):
  # One interpreted run per process, on one CPU device, without the suite's persistent
  # compilation cache: an interpret-mode executable (host callbacks) loaded back from
  # that cache hangs, and beside the 4 emulated devices the interpreter's barrier now
  # and then waited for ever.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('JAX_COMPILATION_CACHE') and k != 'XLA_FLAGS'}
  proc = subprocess.run([sys.executable, __file__, padding], cwd=REPO, env=dict(
      env, JAX_ENABLE_COMPILATION_CACHE='false', PYTHONPATH=REPO), capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [padding, 'ok']


def test_tpu_flash_runs_per_device_under_a_mesh(monkeypatch):
  """Sharded rows and heads (2 x 2 emulated devices): the kernel sees each device's block,
  and the blocks join to the written-out result. Interpret mode cannot run here on 4
  devices (its cross-device barrier waits for more threads than 2 cores run), so the
  kernel is the written-out path, recording the shapes it is given."""
  shapes = []

  def kernel(query, key, value, key_mask):
    shapes.append((query.shape, key_mask.shape))
    return attention.padded_attention(query, key, value, key_mask, implementation='xla')
  monkeypatch.setattr(attention, '_tpu_flash_kernel', kernel)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ('data', 'model'))
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(4, 12, 2, 8)), jnp.float32) for _ in range(3))
  mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [5], [9], [1]]), jnp.int32)
  expected = attention.padded_attention(q, k, v, mask, implementation='xla')
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data', None, 'model'))
  q, k, v = (jax.device_put(x, spec) for x in (q, k, v))
  with jax.set_mesh(mesh):
    out = jax.jit(lambda *a: attention.padded_attention(*a, implementation='tpu_flash'))(
        q, k, v, mask)
  assert shapes == [((2, 12, 1, 8), (2, 12))]
  assert out.sharding.spec[:3] == ('data', None, 'model')
  np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize('backend,dtype,rate,expected', [
    ('cpu', jnp.bfloat16, 0.0, 'xla'),
    ('gpu', jnp.bfloat16, 0.0, 'cudnn'),
    ('gpu', jnp.float16, 0.0, 'cudnn'),
    ('gpu', jnp.float32, 0.0, 'xla'),  # cuDNN's flash attention is half precision only
    ('gpu', jnp.bfloat16, 0.1, 'xla'),  # no attention dropout in either kernel
    ('tpu', jnp.float32, 0.0, 'tpu_flash'),
    ('tpu', jnp.bfloat16, 0.1, 'xla'),
])
def test_auto_picks_the_backends_kernel_where_it_computes_the_attention(backend, dtype, rate,
                                                                        expected):
  assert attention.resolve('auto', attention_dropout_rate=rate, dtype=dtype, head_dim=64,
                           backend=backend) == expected
  assert attention.resolve('xla', attention_dropout_rate=rate, dtype=dtype, head_dim=64,
                           backend=backend) == 'xla'


@pytest.mark.parametrize('fields,message', [
    (dict(attention_impl='cudnn', dtype='bfloat16'),
     "config.model.attention_impl: 'cudnn' has no attention dropout"),
    (dict(attention_impl='cudnn', attention_dropout_rate=0.0),
     "config.model.attention_impl: 'cudnn' needs model.dtype bfloat16 or float16"),
])
def test_the_config_check_refuses_what_cudnn_cannot_compute(fields, message):
  config = videobert_config.get_config('tiny,runlocal')
  config.model.update(fields)
  with pytest.raises(config_checks.ConfigError, match=message):
    videobert_checks.validate(config, num_devices=4)
  config.model.update(attention_impl='auto')
  videobert_checks.validate(config, num_devices=4)


if __name__ == '__main__':
  _tpu_flash_against_written_out(sys.argv[1] == 'trailing')
  print(sys.argv[1], 'ok', flush=True)
