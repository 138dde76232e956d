"""CBT's all-pairs cross-modal scoring against the tiled computation it replaced.

The reference below is the cross-modal transformer as it was: every (window,
sentence) pair tiled into a row (cbt_model.all_pairs) and run through
bert.Encoder at all L + T positions. The model now projects each sentence and
window once and runs the last layer at position 0 only; its scores, gradients
and parameter tree must be the reference's.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cbt as cbt_config
from vlm_jax.cbt import model as cbt_model
from vlm_jax.cbt import objectives
from vlm_jax.cbt import step as cbt_step
from vlm_jax.models import bert

BATCH, CLIPS, DIM, TEXT = 4, 6, 5, 7


class TiledCrossTransformer(nn.Module):
  """The cross-modal transformer before the change, on aligned (tiled) rows."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, text_states, text_mask, visual_states, clip_mask):
    cfg = self.config
    text = bert.dense(cfg, cfg.hidden_size, (None, 'embed'), 'text_projection')(text_states)
    modality = nn.Embed(2, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        embedding_init=cbt_model._normal(cfg, (None, 'embed')),  # pylint: disable=protected-access
                        name='modality_embeddings')
    x = jnp.concatenate([text + modality(jnp.asarray(cbt_model.TEXT)),
                         visual_states + modality(jnp.asarray(cbt_model.VIDEO))], axis=1)
    x = bert.layer_norm(cfg, 'input_norm')(x)
    mask = jnp.concatenate([text_mask, clip_mask], axis=1)
    x = bert.Encoder(cfg, name='encoder')(x, mask, deterministic=True)
    return bert.dense(cfg, 1, ('embed', None), 'score')(x[:, 0])[:, 0]


def _model(cross_layers: int) -> cbt_model.Cbt:
  config = cbt_config.get_config('tiny,runlocal')
  config.model.feature_dim = DIM
  return cbt_model.Cbt(cbt_step.text_config(config), cbt_step.visual_config(config),
                       cross_layers, config.model.max_clips, freeze_text=False)


def _inputs():
  rng = np.random.default_rng(1)
  return dict(features=rng.normal(size=(BATCH, CLIPS, DIM)).astype(np.float32),
              clip_mask=np.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 6, [1] * 5 + [0]], np.int32),
              masked=np.array([[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1],
                               [0, 0, 0, 1, 0, 0]], np.int32),
              input_ids=rng.integers(1000, 2000, (BATCH, TEXT)).astype(np.int32),
              attention_mask=np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5,
                                       [1] * 6 + [0]], np.int32))


def _tiled_scores(model, params, inputs):
  """[batch (windows), batch (sentences)] by the tiled reference."""
  states, _ = model.apply({'params': params}, inputs['features'], inputs['clip_mask'],
                          inputs['masked'], method=cbt_model.Cbt.encode_visual)
  text = model.apply({'params': params}, inputs['input_ids'], inputs['attention_mask'],
                     method=cbt_model.Cbt.encode_text)
  reference = TiledCrossTransformer(dataclasses.replace(model.visual_config,
                                                        num_layers=model.cross_layers))
  scores = reference.apply({'params': params['cross']},
                           *cbt_model.all_pairs(text, inputs['attention_mask'], states,
                                                inputs['clip_mask']))
  return scores.reshape(BATCH, BATCH)


@pytest.fixture(scope='module', params=[1, 2], ids=['one_cross_layer', 'two_cross_layers'])
def setup(request):
  model, inputs = _model(request.param), _inputs()
  params = nn.meta.unbox(jax.jit(lambda rng: model.init({'params': rng}, **inputs)['params'])(
      jax.random.key(0)))
  return model, params, inputs


def test_scores_equal_the_tiled_pairs(setup):
  model, params, inputs = setup
  new = jax.jit(lambda p: model.apply({'params': p}, **inputs)['cross_scores'])(params)
  old = jax.jit(lambda p: _tiled_scores(model, p, inputs))(params)
  assert new.shape == (BATCH, BATCH)
  assert float(jnp.std(old)) > 1e-3  # scores that differ between pairs, so the layout counts
  np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-5)


def _cross_loss_gradients(model, params, inputs):
  """Gradients of L_cross w.r.t. every parameter: (new path, tiled reference), flattened."""
  new_loss = lambda p: objectives.cross_nce(model.apply({'params': p}, **inputs)['cross_scores'])[0]
  old_loss = lambda p: objectives.cross_nce(_tiled_scores(model, p, inputs))[0]
  new, old = (jax.jit(jax.grad(f))(params) for f in (new_loss, old_loss))
  names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(old)]
  to_numpy = lambda tree: [np.asarray(g, np.float64) for g in jax.tree.leaves(tree)]
  assert jax.tree.structure(new) == jax.tree.structure(old)
  return names, to_numpy(new), to_numpy(old)


def test_cross_loss_gradients_equal_the_tiled_pairs(setup):
  model, params, inputs = setup
  names, new, old = _cross_loss_gradients(model, params, inputs)
  norm = lambda gs: float(np.sqrt(sum((g ** 2).sum() for g in gs)))
  assert norm([n - o for n, o in zip(new, old)]) <= 1e-5 * norm(old)
  largest = max(float(np.linalg.norm(o)) for o in old)
  for name, n, o in zip(names, new, old):
    # Float32 rounding summed in another order: ~4e-6 of the largest gradient (the text
    # projection's). Tensors with small gradients (the text position embeddings', bias
    # vectors', ~1e-3 of the largest) or zero ones in exact arithmetic (key biases, the
    # score bias: softmax ignores a shift) get the same absolute error, up to ~3e-5 of
    # their own norm. The float64 test below shows it is rounding, tensor by tensor.
    error = float(np.linalg.norm(n - o))
    assert error <= 1e-5 * largest, (name, error / largest)
  # Every part of the model gets a gradient from the cross loss (the text BERT trains here).
  for part in ('text_bert', 'visual', 'cross'):
    assert norm([g for name, g in zip(names, new) if name.startswith(f"['{part}']")]) > 0.0


def test_cross_loss_gradients_equal_the_tiled_pairs_tensor_by_tensor_in_float64(setup):
  model, params, inputs = setup
  with jax.enable_x64(True):
    wide = lambda c: dataclasses.replace(c, dtype=jnp.float64, param_dtype=jnp.float64)
    model = dataclasses.replace(model, text_config=wide(model.text_config),
                                visual_config=wide(model.visual_config))
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    inputs = dict(inputs, features=inputs['features'].astype(np.float64))
    names, new, old = _cross_loss_gradients(model, params, inputs)
  assert new[0].dtype == np.float64
  largest = max(float(np.linalg.norm(o)) for o in old)
  for name, n, o in zip(names, new, old):
    error, size = float(np.linalg.norm(n - o)), float(np.linalg.norm(o))
    assert error <= 1e-10 * size + 1e-14 * largest, (name, error, size)


def _described(tree):
  """Path -> (shape, logical axis names) of every boxed parameter."""
  leaves = jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return {jax.tree_util.keystr(path): (leaf.value.shape, leaf.names) for path, leaf in leaves}


def test_the_parameter_tree_is_the_tiled_models(setup):
  model, _, inputs = setup
  boxed = jax.eval_shape(lambda rng: model.init({'params': rng}, **inputs)['params'],
                         jax.random.key(0))
  text = jax.ShapeDtypeStruct((BATCH * BATCH, TEXT, model.text_config.hidden_size), jnp.float32)
  visual = jax.ShapeDtypeStruct((BATCH * BATCH, CLIPS, model.visual_config.hidden_size),
                                jnp.float32)
  masks = [jax.ShapeDtypeStruct((BATCH * BATCH, n), jnp.int32) for n in (TEXT, CLIPS)]
  reference = TiledCrossTransformer(dataclasses.replace(model.visual_config,
                                                        num_layers=model.cross_layers))
  old_cross = jax.eval_shape(lambda rng, *x: reference.init({'params': rng}, *x)['params'],
                             jax.random.key(0), text, masks[0], visual, masks[1])
  assert _described(boxed['cross']) == _described(old_cross)
  assert sorted(boxed) == ['cross', 'text_bert', 'visual']
  layers = sorted(boxed['cross']['encoder'])
  assert layers == [f'layer_{i}' for i in range(model.cross_layers)]


def test_score_pairs_of_unequal_sets_are_the_aligned_scores(setup):
  """score_pairs (what inference.cross_scores uses) on 3 windows x 4 sentences, entry by entry."""
  model, params, inputs = setup
  states, _ = model.apply({'params': params}, inputs['features'][:3], inputs['clip_mask'][:3],
                          inputs['masked'][:3] * 0, method=cbt_model.Cbt.encode_visual)
  text = model.apply({'params': params}, inputs['input_ids'], inputs['attention_mask'],
                     method=cbt_model.Cbt.encode_text)
  grid = model.apply({'params': params}, text, inputs['attention_mask'], states,
                     inputs['clip_mask'][:3], method=cbt_model.Cbt.score_pairs)
  assert grid.shape == (3, BATCH)
  windows, sentences = np.repeat(np.arange(3), BATCH), np.tile(np.arange(BATCH), 3)
  aligned = model.apply({'params': params}, text[sentences], inputs['attention_mask'][sentences],
                        states[windows], inputs['clip_mask'][:3][windows],
                        method=cbt_model.Cbt.score)
  np.testing.assert_allclose(grid.reshape(-1), aligned, rtol=1e-5, atol=1e-5)


def test_dropout_reaches_the_scores(setup):
  """Training: hidden and attention-probability dropout in the cross layers change the scores,
  one draw per rng."""
  model, params, inputs = setup
  scores = lambda seed, det: model.apply({'params': params}, **inputs, deterministic=det,
                                         rngs={'dropout': jax.random.key(seed)})['cross_scores']
  plain, a, b = scores(0, True), scores(1, False), scores(2, False)
  assert np.all(np.isfinite(a))
  assert not np.allclose(a, plain, atol=1e-4) and not np.allclose(a, b, atol=1e-4)
  np.testing.assert_array_equal(a, scores(1, False))


def test_a_layer_at_some_query_positions_is_the_full_layer_there():
  """bert.TransformerLayer with `queries`, given x whole or as broadcast pieces."""
  cfg = bert.BertConfig(hidden_size=32, num_heads=4, mlp_dim=64)
  rng = np.random.default_rng(0)
  first = rng.normal(size=(1, 3, 5, 32)).astype(np.float32)  # shared by 2 rows
  second = rng.normal(size=(2, 1, 4, 32)).astype(np.float32)  # shared by 3 columns
  mask = np.ones((2, 3, 9), np.int32)
  mask[0, 1, 3:5] = 0
  mask[1, :, 7:] = 0
  full = np.concatenate([np.broadcast_to(first, (2, 3, 5, 32)),
                         np.broadcast_to(second, (2, 3, 4, 32))], axis=2).reshape(6, 9, 32)
  bias = bert.attention_bias(mask.reshape(6, 9), jnp.float32)
  layer = bert.TransformerLayer(cfg)
  params = layer.init(jax.random.key(0), full, bias, True)
  whole = layer.apply(params, full, bias, True)
  some = layer.apply(params, full, bias, True, full[:, 1:3])
  np.testing.assert_allclose(some, whole[:, 1:3], rtol=1e-5, atol=1e-5)
  pieces = layer.apply(params, (first, second), bias.reshape(2, 3, 1, 1, 9), True,
                       first[:, :, :1])
  assert pieces.shape == (2, 3, 1, 32)
  np.testing.assert_allclose(pieces.reshape(6, 1, 32), whole[:, :1], rtol=1e-5, atol=1e-5)


def test_pieces_attention_draws_the_same_dropout_and_gradients_as_the_broadcast_rows():
  """bert.SelfAttention's pieces (keys and values never broadcast to the rows) against the
  same rows written out whole: dropout on, outputs and gradients of parameters and pieces."""
  cfg = bert.BertConfig(hidden_size=32, num_heads=4, mlp_dim=64, attention_dropout_rate=0.3)
  rng = np.random.default_rng(1)
  first = jnp.asarray(rng.normal(size=(1, 3, 5, 32)), jnp.float32)  # one per column
  second = jnp.asarray(rng.normal(size=(2, 1, 4, 32)), jnp.float32)  # one per row
  mask = np.ones((2, 3, 9), np.int32)
  mask[0, 1, 3:5] = 0
  mask[1, :, 7:] = 0
  bias = bert.attention_bias(mask.reshape(6, 9), jnp.float32)
  layer = bert.SelfAttention(cfg)
  rows = lambda a, b: jnp.concatenate([jnp.broadcast_to(a, (2, 3, 5, 32)),
                                       jnp.broadcast_to(b, (2, 3, 4, 32))], axis=2)
  params = layer.init(jax.random.key(0), rows(first, second).reshape(6, 9, 32), bias,
                      deterministic=True)
  weights = jnp.asarray(rng.normal(size=(2, 3, 1, 32)), jnp.float32)
  rngs = {'dropout': jax.random.key(7)}

  def as_pieces(p, a, b):
    out = layer.apply(p, (a, b), bias.reshape(2, 3, 1, 1, 9), deterministic=False,
                      queries=a[:, :, :1], rngs=rngs)
    return jnp.sum(out * weights), out

  def as_rows(p, a, b):
    x = rows(a, b).reshape(6, 9, 32)
    out = layer.apply(p, x, bias, deterministic=False, queries=x[:, :1], rngs=rngs)
    return jnp.sum(out.reshape(2, 3, 1, 32) * weights), out.reshape(2, 3, 1, 32)

  grad = lambda f: jax.grad(f, argnums=(0, 1, 2), has_aux=True)(params, first, second)
  (g_pieces, out_pieces), (g_rows, out_rows) = grad(as_pieces), grad(as_rows)
  deterministic = layer.apply(params, (first, second), bias.reshape(2, 3, 1, 1, 9),
                              deterministic=True, queries=first[:, :, :1])
  assert not np.allclose(out_pieces, deterministic, atol=1e-3)  # dropout was on
  np.testing.assert_allclose(out_pieces, out_rows, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g_pieces), jax.tree.leaves(g_rows)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
