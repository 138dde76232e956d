"""CBT's losses against hand NumPy computations, and sharded against one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax.cbt import objectives


def _case(seed=0, batch=2, clips=3, hidden=4):
  rng = np.random.default_rng(seed)
  outputs = rng.normal(size=(batch, clips, hidden)).astype(np.float32)
  targets = rng.normal(size=(batch, clips, hidden)).astype(np.float32)
  clip_mask = np.ones((batch, clips), np.int32)
  clip_mask[-1, -1] = 0  # the last window is one clip short
  masked = np.zeros((batch, clips), np.int32)
  masked[0, 1] = masked[1, 0] = 1
  return outputs, targets, masked, clip_mask


def _hand_nce(outputs, targets, masked, candidates, temperature=1.0):
  """The loss written out position by position: the definition, in float64."""
  e = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
  y = targets.reshape(-1, targets.shape[-1]).astype(np.float64)
  cand = np.flatnonzero(candidates.reshape(-1))
  losses = []
  for i in np.flatnonzero(masked.reshape(-1)):
    denominator = sum(np.exp(e[i] @ y[j] / temperature) for j in cand)
    losses.append(-np.log(np.exp(e[i] @ y[i] / temperature) / denominator))
  return np.mean(losses)


@pytest.mark.parametrize('negatives,temperature', [('all', None), ('masked', None),
                                                    ('all', 0.5)])
def test_visual_nce_matches_the_hand_computation(negatives, temperature):
  outputs, targets, masked, clip_mask = _case()
  loss, metrics = objectives.visual_nce(outputs, targets, masked, clip_mask, negatives,
                                        temperature)
  candidates = masked if negatives == 'masked' else clip_mask
  expected = _hand_nce(outputs, targets, masked, candidates, temperature or 1.0)
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert 0 <= float(metrics['visual_accuracy']) <= 1


def test_visual_nce_accuracy_counts_masked_clips_whose_own_feature_wins():
  targets = np.eye(4, dtype=np.float32).reshape(1, 4, 4) * 5
  outputs = targets.copy()
  outputs[0, 2] = targets[0, 3]  # clip 2 predicts clip 3's feature
  masked = np.array([[1, 0, 1, 0]])
  _, metrics = objectives.visual_nce(outputs, targets, masked, np.ones((1, 4)))
  assert float(metrics['visual_accuracy']) == 0.5


def test_only_masked_outputs_and_real_candidates_count():
  outputs, targets, masked, clip_mask = _case(seed=1)
  loss, _ = objectives.visual_nce(outputs, targets, masked, clip_mask)
  changed_outputs = outputs.copy()
  changed_outputs[masked == 0] += 100.0  # unmasked outputs are predicted by nobody
  changed_targets = targets.copy()
  changed_targets[clip_mask == 0] = 100.0  # a padding clip is nobody's candidate
  again, _ = objectives.visual_nce(changed_outputs, changed_targets, masked, clip_mask)
  assert float(again) == pytest.approx(float(loss), rel=1e-6)
  # A real unmasked clip's feature is a candidate: changing it changes the loss.
  moved = targets.copy()
  moved[0, 0] += 1.0
  assert float(objectives.visual_nce(outputs, moved, masked, clip_mask)[0]) != pytest.approx(
      float(loss), rel=1e-6)


def test_cross_nce_matches_the_hand_computation():
  scores = np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)
  loss, metrics = objectives.cross_nce(scores)
  s = scores.astype(np.float64)
  # Window v: -log exp(s(v, v)) / sum over the batch's sentences s' of exp(s(v, s')).
  expected = np.mean([-np.log(np.exp(s[v, v]) / np.exp(s[v]).sum()) for v in range(3)])
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics['cross_accuracy']) == pytest.approx(
      np.mean(s.argmax(axis=1) == np.arange(3)))


def test_sharded_losses_span_the_global_batch():
  """On 4 devices (each holding 2 windows) the negatives still come from all 8."""
  outputs, targets, masked, clip_mask = _case(seed=3, batch=8, clips=5, hidden=6)
  masked[:, 2] = 1
  scores = np.random.default_rng(4).normal(size=(8, 8)).astype(np.float32)
  batch = {'masked': masked, 'clip_mask': clip_mask}
  model_outputs = {'visual_states': outputs, 'visual_targets': targets, 'cross_scores': scores}

  def loss(outputs, batch):
    return objectives.cbt_loss(outputs, batch, visual_weight=1.0, cross_weight=0.5)

  single = jax.jit(loss)(model_outputs, batch)
  mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(4, 1), ('data', 'model'))
  rows = NamedSharding(mesh, PartitionSpec('data'))
  sharded_inputs = jax.device_put((model_outputs, batch), rows)
  assert len(sharded_inputs[0]['visual_states'].sharding.device_set) == 4
  sharded = jax.jit(loss)(*sharded_inputs)
  np.testing.assert_allclose(sharded[0], single[0], rtol=1e-6)
  for key in single[1]:
    np.testing.assert_allclose(sharded[1][key], single[1][key], rtol=1e-6)
  # And both are the global-batch loss, not a mean of per-device ones.
  expected = (_hand_nce(outputs, targets, masked, clip_mask)
              + 0.5 * float(objectives.cross_nce(jnp.asarray(scores))[0]))
  assert float(sharded[0]) == pytest.approx(expected, rel=1e-5)
  per_device = np.mean([_hand_nce(outputs[i:i + 2], targets[i:i + 2], masked[i:i + 2],
                                  clip_mask[i:i + 2]) for i in range(0, 8, 2)])
  assert abs(per_device - _hand_nce(outputs, targets, masked, clip_mask)) > 1e-3


def _mlm_case(seed=5, batch=3, slots=2, vocab=7):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, slots, vocab)).astype(np.float32) * 2
  labels = rng.integers(0, vocab, (batch, slots)).astype(np.int32)
  weights = np.array([[1, 1], [1, 0], [1, 1]], np.float32)[:batch]
  return logits, labels, weights


def test_text_mlm_matches_the_hand_computation():
  logits, labels, weights = _mlm_case()
  loss, metrics = objectives.text_mlm(logits, labels, weights)
  x = logits.astype(np.float64)
  losses, correct = [], []
  for b, p in zip(*np.nonzero(weights)):  # the padding slot [1, 1] counts for nothing
    losses.append(-(x[b, p, labels[b, p]] - np.log(np.exp(x[b, p]).sum())))
    correct.append(x[b, p].argmax() == labels[b, p])
  assert float(loss) == pytest.approx(np.mean(losses), rel=1e-6)
  assert float(metrics['bert_accuracy']) == pytest.approx(np.mean(correct))


def test_the_mlm_term_is_weighted_in_and_absent_at_weight_zero():
  outputs, targets, masked, clip_mask = _case(seed=6, batch=3)
  logits, labels, weights = _mlm_case()
  scores = np.random.default_rng(7).normal(size=(3, 3)).astype(np.float32)
  model_outputs = {'visual_states': outputs, 'visual_targets': targets, 'cross_scores': scores}
  batch = {'masked': masked, 'clip_mask': clip_mask}
  weights_kw = dict(visual_weight=1.0, cross_weight=0.5)
  before = jax.jit(lambda o, b: objectives.cbt_loss(o, b, **weights_kw))(model_outputs, batch)
  with_mlm_arrays = (dict(model_outputs, mlm_logits=logits),
                     dict(batch, mlm_labels=labels, mlm_weights=weights))
  off = jax.jit(lambda o, b: objectives.cbt_loss(o, b, bert_weight=0.0, **weights_kw))(
      *with_mlm_arrays)
  # Off: the same bits as a call that never heard of the term, and no MLM metrics.
  assert np.asarray(off[0]).tobytes() == np.asarray(before[0]).tobytes()
  assert sorted(off[1]) == sorted(before[1]) and 'loss_bert' not in off[1]
  on = objectives.cbt_loss(*with_mlm_arrays, bert_weight=0.25, **weights_kw)
  mlm, mlm_metrics = objectives.text_mlm(logits, labels, weights)
  assert float(on[0]) == pytest.approx(float(before[0]) + 0.25 * float(mlm), rel=1e-6)
  assert float(on[1]['loss_bert']) == pytest.approx(float(mlm))
  assert float(on[1]['bert_accuracy']) == float(mlm_metrics['bert_accuracy'])


def test_sharded_mlm_loss_is_the_global_batch_mean():
  """Rows with different numbers of predictions: a mean of per-device means would differ."""
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(8, 3, 11)).astype(np.float32)
  labels = rng.integers(0, 11, (8, 3)).astype(np.int32)
  weights = (np.arange(3)[None] < (np.arange(8) % 3 + 1)[:, None]).astype(np.float32)
  single = jax.jit(objectives.text_mlm)(logits, labels, weights)
  mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(4, 1), ('data', 'model'))
  sharded = jax.jit(objectives.text_mlm)(*jax.device_put((logits, labels, weights),
                                                         NamedSharding(mesh, PartitionSpec('data'))))
  np.testing.assert_allclose(sharded[0], single[0], rtol=1e-6)
  per_device = np.mean([float(objectives.text_mlm(logits[i:i + 2], labels[i:i + 2],
                                                  weights[i:i + 2])[0]) for i in range(0, 8, 2)])
  assert abs(per_device - float(single[0])) > 1e-3
