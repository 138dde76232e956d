"""ClipBERT's losses, optimizer groups, schedule, config checks and the sharded train step.

The losses are checked against NumPy written from ClipBERT's training loop
(run_video_retrieval.py: LSE over (clip, class) minus LSE over clips of the
true class); the step on 4 emulated devices against 1 device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clipbert as clipbert_config
from vlm_jax import config_checks
from vlm_jax.clipbert import checks
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import objectives
from vlm_jax.clipbert import step
from vlm_jax.train import optim, partitioning


def _config(**overrides):
  config = clipbert_config.get_config('tiny,runlocal')
  config.model.text_vocab_size, config.model.max_position_embeddings = 100, 32
  for field, value in overrides.items():
    section, name = field.split('.')
    config[section][name] = value
  return config


def _batch(config, seed=0):
  shapes = step.abstract_batch(config)
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, config.model.text_vocab_size, shapes['input_ids'].shape)
  mask = np.ones(shapes['attention_mask'].shape, np.int32)
  mask[..., -3:] = 0  # padded tail
  labels = np.zeros(shapes['labels'].shape, np.int32)
  labels[:, 0] = 1  # the caption, then its negative
  return {'input_ids': ids.astype(np.int32), 'attention_mask': mask,
          'frames': (50 * rng.standard_normal(shapes['frames'].shape)).astype(np.float32),
          'labels': labels}


def _names(tree):
  return {optim.path_names(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# ------------------------------------------------------------------ losses


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _lse(x, axis):
  top = x.max(axis=axis, keepdims=True)
  return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.mark.parametrize('method', ['mean', 'max', 'lse'])
def test_matching_loss_is_the_pairs_mean_ce_after_consensus(method):
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)  # batch, clips, texts, 2
  labels = np.array([[1, 0], [1, 0], [0, 1]])
  reduced = {'mean': logits.mean(1), 'max': logits.max(1), 'lse': _lse(logits, 1)}[method]
  ce = -np.take_along_axis(_log_softmax(reduced), labels[..., None], -1)[..., 0]
  loss, metrics = objectives.matching_loss(jnp.asarray(logits), jnp.asarray(labels), method)
  np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['matching_accuracy'],
                             (reduced.argmax(-1) == labels).mean())
  probability = np.exp(_log_softmax(reduced))[..., 1]
  np.testing.assert_allclose(metrics['positive_score'], probability[labels == 1].mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics['negative_score'], probability[labels == 0].mean(),
                             rtol=1e-5)
  if method == 'lse':
    # ClipBERT's own form: LSE over (clip, class) minus LSE over clips of the true class.
    flat = logits.transpose(0, 2, 1, 3).reshape(-1, 4, 2)  # pair, clips, classes
    true = np.take_along_axis(flat, labels.reshape(-1, 1, 1), -1)[..., 0]
    clipbert = _lse(flat.reshape(len(flat), -1), 1) - _lse(true, 1)
    np.testing.assert_allclose(loss, clipbert.mean(), rtol=1e-5)


def test_multiple_choice_and_qa_losses():
  rng = np.random.default_rng(2)
  for logits, labels, loss_fn in [
      (rng.standard_normal((2, 3, 5)), np.array([4, 0]), objectives.multiple_choice_loss),
      (rng.standard_normal((3, 2, 7)), np.array([6, 1, 2]), objectives.qa_loss)]:
    reduced = _lse(logits, 1)
    ce = -np.take_along_axis(_log_softmax(reduced), labels[:, None], -1)[:, 0]
    loss, metrics = loss_fn(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), 'lse')
    np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics['accuracy'], (reduced.argmax(-1) == labels).mean())
  mean_logits = rng.standard_normal((2, 3, 4)).astype(np.float32)
  loss, _ = objectives.loss(clipbert_model.QA, jnp.asarray(mean_logits), jnp.array([0, 3]),
                            'mean')
  ce = -_log_softmax(mean_logits.mean(1))[[0, 1], [0, 3]]
  np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)


def test_match_scores_are_the_softmax_of_the_reduced_logits():
  logits = np.array([[[[0.0, 1.0]], [[2.0, 0.0]]]], np.float32)  # 1 video, 2 clips, 1 text
  reduced = logits.mean(1)
  expected = np.exp(reduced[..., 1]) / np.exp(reduced).sum(-1)
  np.testing.assert_allclose(objectives.match_scores(jnp.asarray(logits), 'mean'), expected,
                             rtol=1e-6)


# ------------------------------------------------------------------ schedule, groups, checks


def test_warmup_is_ten_percent_of_the_steps_then_linear_decay_as_clipbert():
  config = _config(**{'train.num_steps': 100, 'optim.learning_rate': 1e-3,
                      'optim.frame_encoder_learning_rate': 2e-4})
  assert step.warmup_steps(config) == 10
  schedules = step.learning_rate_schedules(config)
  for group, peak in ((step.TRANSFORMER, 1e-3), (step.FRAME_ENCODER, 2e-4)):
    values = np.array([schedules[group](k) for k in range(100)])
    assert values.argmax() == 9 and values[9] == pytest.approx(peak)
    assert values[0] == pytest.approx(peak / 10) and values[-1] == 0
    # ClipBERT's get_lr_sched(global_step = k + 1): warmup_linear.
    s = np.arange(1, 100)
    clipbert = peak * np.where(s < 10, s / 10, (100 - s) / 90)
    np.testing.assert_allclose(values[:99], clipbert, rtol=1e-5)


@pytest.mark.parametrize('arg', ['tiny', 'base', 'tiny,runlocal', 'base,runlocal'])
def test_presets_pass_their_checks(arg):
  config = clipbert_config.get_config(arg)
  checks.validate(config, 4, 1)
  assert config.system == 'clipbert'
  assert config.optim.warmup_fraction == 0.1


def test_base_is_clipberts_msrvtt_retrieval_setting():
  c = clipbert_config.get_config('base')
  assert (c.data.image_size, c.data.num_clips, c.data.num_frames, c.data.fps) == (448, 8, 2, 2)
  assert (c.model.consensus, c.data.negatives, c.data.max_text_tokens) == ('lse', 1, 20)
  assert (c.optim.b1, c.optim.b2, c.optim.eps, c.optim.grad_clip_norm) == (0.9, 0.98, 1e-6, 5.0)
  assert checks.grid_size(c.data.image_size) == 7
  net = step.model_config(c)
  assert net.resnet_config.stage_sizes == (3, 4, 6, 3) and net.resnet_config.freeze_at == 2
  assert net.bert_config.dtype == jnp.bfloat16 and net.bert_config.param_dtype == jnp.float32


@pytest.mark.parametrize('field,value,message', [
    ('model.consensus', 'median', r"^config.model.consensus: must be one of \('mean'"),
    ('model.task', 'captioning', r'^config.model.task: must be one of'),
    ('data.image_size', 32, r'^config.data.image_size: 32 px frames give no visual token'),
    ('data.image_size', 8000, r'^config.data.image_size: 8000 px frames give a 125 x 125 grid'),
    ('data.negatives', 0, r'^config.data.negatives: matching needs >= 1 negative'),
    ('optim.warmup_fraction', 1.0, r'^config.optim.warmup_fraction: must be in \[0, 1\)'),
    ('optim.frame_encoder_learning_rate', -1.0,
     r'^config.optim.frame_encoder_learning_rate: must be >= 0'),
    ('train.global_batch_size', 6, r'^config.train.global_batch_size: the batch of 6 videos is '
     r'not divisible by the data-parallel size 4'),
    ('model.resnet', 'R101', r"^config.model.resnet: must be one of \('R50', 'tiny'\)"),
])
def test_a_bad_field_is_named(field, value, message):
  config = clipbert_config.get_config('tiny')
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(config_checks.ConfigError, match=message):
    checks.validate(config, 4, 1)


def test_qa_needs_answer_classes():
  config = clipbert_config.get_config('tiny')
  config.model.task = 'qa'
  with pytest.raises(config_checks.ConfigError, match=r'^config.model.num_answers: '):
    checks.validate(config, 4, 1)
  config.model.num_answers = 1500
  checks.validate(config, 4, 1)


# ------------------------------------------------------------------ the train step


@pytest.fixture(scope='module')
def stepped():
  """One step of tiny,runlocal on 4 devices: (config, params before, state after, metrics)."""
  config = _config()
  setup = step.build(config)
  params = setup.sharded.init_params(jax.random.key(0))
  before = jax.device_get(params)
  batch = _batch(config)
  state, metrics = setup.train_step(setup.sharded.create_state(params),
                                    partitioning.device_batch(batch, setup.mesh))
  return config, before, batch, jax.device_get(state), jax.device_get(metrics)


def test_parameter_groups_follow_clipberts_cnn_and_transformer(stepped):
  config, before, _, _, _ = stepped
  groups = step.groups_by_path(step.model_config(config))
  assert set(groups) == set(_names(before))
  for names, group in groups.items():
    frozen_stage = names[0] == 'frame_encoder' and names[1].startswith(('stem', 'res2'))
    if frozen_stage or (names[0] == 'frame_encoder' and 'norm' in names):
      assert group == step.FROZEN, names
    elif names[0] in ('frame_encoder', 'grid_encoder'):
      assert group == step.FRAME_ENCODER, names
    else:
      assert group == step.TRANSFORMER, names
  assert step.FRAME_ENCODER in groups.values() and step.FROZEN in groups.values()


def test_sharded_step_equals_one_device(stepped):
  config, before, batch, state4, metrics4 = stepped
  setup = step.build(config, jax.devices()[:1])
  params = jax.device_put(before, setup.sharded.param_shardings)
  state1, metrics1 = setup.train_step(setup.sharded.create_state(params),
                                      partitioning.device_batch(batch, setup.mesh))
  state1, metrics1 = jax.device_get(state1), jax.device_get(metrics1)
  for name in ('loss', 'matching_accuracy', 'l2_grads', 'l2_grads_frame_encoder'):
    np.testing.assert_allclose(metrics4[name], metrics1[name], rtol=2e-5, err_msg=name)
  one, four = _names(state1.params), _names(state4.params)
  for names, value in four.items():
    np.testing.assert_allclose(value, one[names], rtol=1e-5, atol=1e-7, err_msg=str(names))
  assert int(state4.step) == int(state1.step) == 1


def test_frozen_parts_stay_bit_identical_and_the_rest_moves(stepped):
  config, before, _, state, metrics = stepped
  groups = step.groups_by_path(step.model_config(config))
  old, new = _names(before), _names(state.params)
  for names, group in groups.items():
    if group == step.FROZEN:
      np.testing.assert_array_equal(new[names], old[names], err_msg=str(names))
    else:
      assert not np.array_equal(new[names], old[names]), names
  assert metrics['l2_grads_frame_encoder'] > 0 and np.isfinite(metrics['loss'])
  assert metrics['learning_rate'] == pytest.approx(config.optim.learning_rate)


def test_bf16_compute_gives_a_finite_loss_and_gradients_reach_the_frame_encoder(stepped):
  config, before, batch, _, _ = stepped
  config = _config(**{'model.dtype': 'bfloat16'})
  model = clipbert_model.ClipBert(step.model_config(config))

  @jax.jit
  def loss_and_grads(params):
    def loss_fn(p):
      logits = model.apply({'params': p}, batch['input_ids'], batch['attention_mask'],
                           batch['frames'], train=True, rngs={'dropout': jax.random.key(0)})
      return objectives.loss(config.model.task, logits, batch['labels'], 'lse')[0]
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = jax.device_get(loss_and_grads(before))
  assert np.isfinite(loss) and 0.3 < loss < 1.5  # two classes near chance: about log 2
  groups = step.groups_by_path(model.config)
  for names, grad in _names(grads).items():
    assert grad.dtype == np.float32
    if groups[names] == step.FROZEN:
      assert not grad.any(), names
    else:
      assert np.isfinite(grad).all() and grad.any(), names


def test_each_group_gets_its_own_learning_rate(stepped):
  config, before, _, _, _ = stepped
  net = step.model_config(config)
  groups = step.groups_by_path(net)
  rng = np.random.default_rng(3)
  grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), before)
  names_to_grad = _names(grads)
  for frame_lr in (0.0, 3e-3):
    config = _config(**{'optim.learning_rate': 1e-3, 'optim.frame_encoder_learning_rate':
                        frame_lr, 'optim.weight_decay': 0.0, 'optim.grad_clip_norm': 1e9})
    tx, _ = step.make_optimizer(config, groups)
    # One jitted update: eager optax dispatches hundreds of small ops.
    updates = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, before)
    warmup = step.warmup_steps(config)
    for names, update in _names(updates).items():
      lr = {step.TRANSFORMER: 1e-3, step.FRAME_ENCODER: frame_lr, step.FROZEN: 0.0}[
          groups[names]]
      # Adam's first step, bias-corrected: -lr(0) g / (|g| + eps), lr(0) = lr / warmup.
      g = names_to_grad[names]
      expected = -(lr / warmup) * g / (np.abs(g) + config.optim.eps)
      np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-12, err_msg=str(names))
      if lr == 0:
        assert not np.asarray(update).any(), names


def test_abstract_batch_shapes_by_task():
  config = _config()
  shapes = {k: v.shape for k, v in step.abstract_batch(config).items()}
  assert shapes == {'input_ids': (4, 2, 20), 'attention_mask': (4, 2, 20),
                    'frames': (4, 2, 2, 64, 64, 3), 'labels': (4, 2)}
  config.model.task = 'multiple_choice'
  assert step.abstract_batch(config)['input_ids'].shape == (4, 5, 20)
  config.model.task = 'qa'
  shapes = {k: v.shape for k, v in step.abstract_batch(config).items()}
  assert shapes['input_ids'] == (4, 20) and shapes['labels'] == (4,)
