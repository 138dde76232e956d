"""The VideoBERT model: joint vocabulary, tied head, visual table, text init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import videobert as videobert_config
from vlm_jax.convert import hf_bert
from vlm_jax.models import bert
from vlm_jax.videobert import model as videobert
from vlm_jax.videobert import vocab as vocab_lib

VOCAB = vocab_lib.JointVocab(text_vocab_size=30522, num_visual_tokens=48)


def small_model(visual_dim=64, frozen=False):
  config = videobert_config.get_config('tiny,runlocal')
  config.model.num_visual_tokens = VOCAB.num_visual_tokens
  config.model.visual_embedding_dim = visual_dim
  config.model.freeze_visual_embeddings = frozen
  return videobert.build(config.model, VOCAB)


def inputs(batch=2, seq=12, predictions=3):
  rng = np.random.default_rng(0)
  ids = np.concatenate([
      np.full((batch, 1), VOCAB.cls_id), rng.integers(1000, 2000, (batch, 4)),
      np.full((batch, 1), VOCAB.video_sep_id),
      VOCAB.visual_offset + rng.integers(0, VOCAB.num_visual_tokens, (batch, seq - 7)),
      np.full((batch, 1), VOCAB.sep_id)], axis=1).astype(np.int32)
  types = (np.arange(seq) > 5).astype(np.int32)[None].repeat(batch, 0)
  mask = np.ones_like(ids)
  positions = np.array([[1, 7, 9]] * batch, np.int32)[:, :predictions]
  return ids, types, mask, positions


def init(model):
  return jax.tree.map(np.asarray, jax.device_get(
      model.init(jax.random.key(0), *inputs())['params']))


def unbox(params):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.meta.unbox(params)


def test_head_is_tied_to_the_joint_input_table_and_gathers_masked_positions():
  model = small_model(visual_dim=32)
  params = unbox(init(model))
  ids, types, mask, positions = inputs()
  out = model.apply({'params': params}, ids, types, mask, positions)
  assert out['mlm_logits'].shape == (2, 3, VOCAB.size)  # only the masked positions
  assert out['alignment_logits'].shape == (2, 2)
  assert 'decoder' not in params['mlm_head']  # no output matrix of its own
  # Recompute the logits from the input tables by hand.
  head = params['mlm_head']
  visual = params['visual_embeddings']
  table = np.concatenate([
      params['bert']['embeddings']['word_embeddings']['embedding'],
      visual['embedding'] @ visual['projection']['kernel'] + visual['projection']['bias']])
  h = np.take_along_axis(np.asarray(out['hidden']), positions[..., None], axis=1)
  h = h @ head['transform']['kernel'] + head['transform']['bias']
  h = np.asarray(jax.nn.gelu(h, approximate=False))
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
  h = h * head['transform_norm']['scale'] + head['transform_norm']['bias']
  np.testing.assert_allclose(out['mlm_logits'], h @ table.T + head['bias'], atol=2e-4)


def test_visual_table_from_centroids_projected_when_dims_differ():
  model = small_model(visual_dim=32)
  params = unbox(init(model))
  centroids = np.random.default_rng(1).normal(size=(VOCAB.num_visual_tokens, 32))
  params = videobert.with_visual_init(params, centroids.astype(np.float32))
  table = model.apply({'params': params}, method=videobert.VideoBert.token_table)
  projection = params['visual_embeddings']['projection']
  np.testing.assert_allclose(table[VOCAB.visual_offset:],
                             centroids @ projection['kernel'] + projection['bias'], atol=1e-4)
  with pytest.raises(ValueError, match='centroids have shape'):
    videobert.with_visual_init(params, centroids[:, :16])
  # Same dimension as hidden: no projection, the centroids are the embeddings.
  same = small_model(visual_dim=64)
  same_params = videobert.with_visual_init(
      unbox(init(same)), np.ones((VOCAB.num_visual_tokens, 64), np.float32))
  assert 'projection' not in same_params['visual_embeddings']
  table = same.apply({'params': same_params}, method=videobert.VideoBert.token_table)
  np.testing.assert_allclose(table[VOCAB.visual_offset:], 1.0)


@pytest.mark.parametrize('frozen', [True, False])
def test_frozen_visual_table_gets_no_gradient(frozen):
  model = small_model(frozen=frozen)
  params = unbox(init(model))
  ids, types, mask, positions = inputs()

  def loss(p):
    return model.apply({'params': p}, ids, types, mask, positions)['mlm_logits'].sum()

  grads = jax.grad(loss)(params)
  visual_grad = np.abs(grads['visual_embeddings']['embedding']).max()
  assert (visual_grad == 0) == frozen
  assert np.abs(grads['bert']['embeddings']['word_embeddings']['embedding']).max() > 0


def test_text_weights_from_huggingface_checkpoint():
  """On text-only input, VideoBERT with MiniLM weights is MiniLM."""
  config = videobert_config.get_config('tiny')
  config.model.num_visual_tokens = VOCAB.num_visual_tokens
  model = videobert.build(config.model, VOCAB)
  bert_config, bert_params, sd = hf_bert.load('minilm')
  params = videobert.with_pretrained_text(
      unbox(init(model)), bert_params, hf_bert.mlm_head_to_flax(sd), VOCAB)
  word = params['bert']['embeddings']['word_embeddings']['embedding']
  assert word.shape == (VOCAB.text_vocab_size + 1, 384)
  np.testing.assert_array_equal(word[VOCAB.video_sep_id], word[VOCAB.sep_id])
  # New visual rows are drawn at the scale of the pretrained word rows.
  norms = np.linalg.norm(word, axis=1).mean()
  visual_norms = np.linalg.norm(params['visual_embeddings']['embedding'], axis=1).mean()
  assert abs(visual_norms / norms - 1) < 0.2
  ids = np.array([[VOCAB.cls_id, 2085, 2292, 2033, 2265, 2017, VOCAB.sep_id]], np.int32)
  zeros = np.zeros_like(ids)
  out = model.apply({'params': params}, ids, zeros, np.ones_like(ids), zeros[:, :2])
  reference, _ = bert.BertModel(bert_config).apply({'params': bert_params}, ids, np.ones_like(ids))
  np.testing.assert_allclose(out['hidden'], reference, atol=1e-5)


def test_wrong_checkpoint_shape_is_reported():
  model = small_model()
  _, bert_params, _ = hf_bert.load('minilm')  # 384 hidden, the model has 64
  with pytest.raises(ValueError, match='does not fit the model config'):
    videobert.with_pretrained_text(unbox(init(model)), bert_params, None, VOCAB)


def test_bfloat16_compute_with_float32_parameters():
  config = videobert_config.get_config('tiny,runlocal')
  config.model.num_visual_tokens = VOCAB.num_visual_tokens
  config.model.dtype = 'bfloat16'
  model = videobert.build(config.model, VOCAB)
  params = unbox(init(model))
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
  out = model.apply({'params': params}, *inputs())
  assert out['hidden'].dtype == jnp.bfloat16
  assert out['mlm_logits'].dtype == jnp.bfloat16
