"""CBT's networks: what each output may depend on, the all-pairs tiling, the text checkpoint,
the text MLM head."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cbt as cbt_config
from vlm_jax.cbt import model as cbt_model
from vlm_jax.cbt import step as cbt_step
from vlm_jax.convert import hf_bert

BATCH, CLIPS, DIM, TEXT = 3, 6, 5, 7


@pytest.fixture(scope='module')
def model_and_params():
  config = cbt_config.get_config('tiny,runlocal')
  config.model.feature_dim = DIM
  model = cbt_model.Cbt(cbt_step.text_config(config), cbt_step.visual_config(config),
                        config.model.cross_layers, config.model.max_clips)
  rng = np.random.default_rng(0)
  inputs = dict(features=rng.normal(size=(BATCH, CLIPS, DIM)).astype(np.float32),
                clip_mask=np.array([[1] * 6, [1] * 6, [1] * 4 + [0] * 2], np.int32),
                masked=np.array([[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]],
                                np.int32),
                input_ids=rng.integers(1000, 2000, (BATCH, TEXT)).astype(np.int32),
                attention_mask=np.array([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4],
                                        np.int32))
  params = nn.meta.unbox(jax.jit(lambda rng: model.init({'params': rng}, **inputs)['params'])(
      jax.random.key(0)))
  return model, params, inputs


def _apply(model, params, inputs, **changes):
  return jax.jit(lambda p, x: model.apply({'params': p}, **x))(params, dict(inputs, **changes))


def test_a_masked_clip_is_seen_only_as_its_target(model_and_params):
  model, params, inputs = model_and_params
  base = _apply(model, params, inputs)
  features = inputs['features'].copy()
  features[0, 1] += 3.0  # masked: the transformer reads the mask vector there
  out = _apply(model, params, inputs, features=features)
  np.testing.assert_allclose(out['visual_states'], base['visual_states'], atol=1e-6)
  assert not np.allclose(out['visual_targets'][0, 1], base['visual_targets'][0, 1])
  # The target is the shared projection of the feature: features @ kernel + bias.
  projection = params['visual']['feature_projection']
  np.testing.assert_allclose(out['visual_targets'][0, 1],
                             features[0, 1] @ projection['kernel'] + projection['bias'],
                             rtol=1e-5, atol=1e-6)
  features[0, 0] += 3.0  # unmasked: every state of the window sees it
  out = _apply(model, params, inputs, features=features)
  assert not np.allclose(out['visual_states'][0], base['visual_states'][0])
  np.testing.assert_allclose(out['visual_states'][1:], base['visual_states'][1:], atol=1e-6)


def test_padding_clips_and_tokens_change_nothing_real(model_and_params):
  model, params, inputs = model_and_params
  base = _apply(model, params, inputs)
  features, ids = inputs['features'].copy(), inputs['input_ids'].copy()
  features[2, 4:] = 50.0
  ids[2, 3:] = 7
  out = _apply(model, params, inputs, features=features, input_ids=ids)
  np.testing.assert_allclose(out['visual_states'][2, :4], base['visual_states'][2, :4],
                             atol=1e-5)
  np.testing.assert_allclose(out['cross_scores'], base['cross_scores'], atol=1e-5)


def test_cross_scores_pair_every_window_with_every_sentence(model_and_params):
  model, params, inputs = model_and_params
  out = _apply(model, params, inputs)
  text = model.apply({'params': params}, inputs['input_ids'], inputs['attention_mask'],
                     method=cbt_model.Cbt.encode_text)
  for v in range(BATCH):
    for s in range(BATCH):
      # One aligned row: sentence s in front of window v.
      direct = model.apply({'params': params}, text[s:s + 1], inputs['attention_mask'][s:s + 1],
                           out['visual_states'][v:v + 1], inputs['clip_mask'][v:v + 1],
                           method=cbt_model.Cbt.score)
      np.testing.assert_allclose(out['cross_scores'][v, s], direct[0], rtol=1e-5, atol=1e-6)


def test_frozen_text_gets_no_gradient_and_trained_text_does(model_and_params):
  model, params, inputs = model_and_params

  def text_grad_norm(m):
    grads = jax.jit(jax.grad(lambda p: m.apply({'params': p}, **inputs)['cross_scores'].sum()))(
        params)
    return float(jnp.sqrt(sum((g ** 2).sum() for g in jax.tree.leaves(grads['text_bert']))))

  assert text_grad_norm(model) == 0.0
  assert text_grad_norm(dataclasses.replace(model, freeze_text=False)) > 0.0


def test_text_bert_loads_the_minilm_checkpoint():
  config = cbt_config.get_config('tiny')
  config.train.global_batch_size = 4
  config.mesh.data = 1
  setup = cbt_step.build(config, jax.devices()[:1])
  params = cbt_step.initial_params(setup)
  _, expected, _ = hf_bert.load('minilm')
  assert cbt_step.text_config(config).hidden_size == 384
  for a, b in zip(jax.tree.leaves(params['text_bert']), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


POSITIONS = np.array([[1, 4], [2, 3], [1, 1]], np.int32)  # [batch, P]; row 2 repeats a slot


@pytest.fixture(scope='module')
def mlm_params(model_and_params):
  model, _, inputs = model_and_params
  return nn.meta.unbox(jax.jit(lambda rng: model.init(
      {'params': rng}, **inputs, mlm_positions=POSITIONS)['params'])(jax.random.key(0)))


def test_the_mlm_head_exists_only_with_the_term_and_is_tied_to_the_word_table(
    model_and_params, mlm_params):
  model, params, inputs = model_and_params
  assert 'mlm_head' not in params  # initialised without mlm_positions: runs without the term
  head = mlm_params['mlm_head']
  assert sorted(head) == ['bias', 'transform', 'transform_norm']  # no output matrix of its own
  out = jax.jit(lambda p, x: model.apply({'params': p}, **x, mlm_positions=POSITIONS))(
      mlm_params, inputs)
  text = np.asarray(model.apply({'params': mlm_params}, inputs['input_ids'],
                                inputs['attention_mask'], method=cbt_model.Cbt.encode_text))
  # The head written out: transform, exact GELU, LayerNorm, the word table's transpose.
  h = np.take_along_axis(text, POSITIONS[..., None], axis=1)
  h = h @ head['transform']['kernel'] + head['transform']['bias']
  h = np.asarray(jax.nn.gelu(h, approximate=False))
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
  h = h * head['transform_norm']['scale'] + head['transform_norm']['bias']
  table = mlm_params['text_bert']['embeddings']['word_embeddings']['embedding']
  assert out['mlm_logits'].shape == (BATCH, 2, table.shape[0])
  np.testing.assert_allclose(out['mlm_logits'], h @ table.T + head['bias'], atol=2e-4)
  # The head reads the text states and changes nothing the other losses read.
  plain = _apply(model, {k: v for k, v in mlm_params.items() if k != 'mlm_head'}, inputs)
  for key in ('visual_states', 'visual_targets', 'cross_scores'):
    np.testing.assert_array_equal(out[key], plain[key])


def test_mlm_gradients_reach_the_text_bert_only_when_it_trains(model_and_params, mlm_params):
  """Frozen, the term trains its head alone (why the config checks refuse that pairing)."""
  model, _, inputs = model_and_params

  def grads(m):
    loss = lambda p: m.apply({'params': p}, **inputs, mlm_positions=POSITIONS)['mlm_logits'][
        ..., 1000].sum()
    return jax.jit(jax.grad(loss))(mlm_params)

  norm = lambda tree: float(jnp.sqrt(sum((g ** 2).sum() for g in jax.tree.leaves(tree))))
  frozen, trained = grads(model), grads(dataclasses.replace(model, freeze_text=False))
  assert norm(frozen['text_bert']['encoder']) == 0.0 and norm(frozen['mlm_head']) > 0.0
  assert norm(trained['text_bert']['encoder']) > 0.0
