"""Analytic model FLOPs against XLA's own count of the compiled forward pass."""

import jax
import jax.numpy as jnp
import pytest

from configs import videobert as videobert_config
from vlm_jax.train import flops
from vlm_jax.videobert import model as videobert
from vlm_jax.videobert import vocab as vocab_lib


@pytest.mark.parametrize('visual_dim', [128, 96])
def test_forward_flops_match_xla_cost_analysis(visual_dim):
  config = videobert_config.get_config('base,runlocal')
  m = config.model
  m.num_layers, m.hidden_size, m.num_heads, m.mlp_dim = 2, 128, 4, 512
  m.num_visual_tokens, m.visual_embedding_dim = 300, visual_dim
  vocab = vocab_lib.JointVocab(m.text_vocab_size, m.num_visual_tokens)
  model = videobert.build(m, vocab)
  batch, seq, preds = 4, 64, 10
  ids = jnp.ones((batch, seq), jnp.int32)
  positions = jnp.zeros((batch, preds), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids, ids, positions))
  forward = jax.jit(lambda p: model.apply(p, ids, ids, ids, positions, deterministic=True))
  cost = forward.lower(params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  expected = flops.forward_flops(m, vocab.size, batch, seq, preds)
  # XLA also counts softmax, GELU and LayerNorm arithmetic: a few percent more.
  assert expected <= cost['flops'] <= 1.15 * expected
  assert flops.train_flops(m, vocab.size, batch, seq, preds) == 3 * expected


def test_peak_flops_by_device_name():
  class Fake:
    device_kind = 'NVIDIA H100 80GB HBM3'
  assert flops.peak_flops(Fake()) == 989e12
  Fake.device_kind = 'NVIDIA H100 PCIe'
  assert flops.peak_flops(Fake()) == 756e12
  Fake.device_kind = 'NVIDIA H200'
  assert flops.peak_flops(Fake()) == 989e12
  Fake.device_kind = 'TPU v5 lite'
  assert flops.peak_flops(Fake()) == 197e12
  Fake.device_kind = 'cpu'
  assert flops.peak_flops(Fake()) is None
