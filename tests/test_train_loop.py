"""The sharded trainer and its loop: mesh equivalence, resumption, accumulation, NaN stop,
loading parameters only, CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from configs import videobert as videobert_config
from vlm_jax import config_checks
from vlm_jax.train import checkpoints, loop, partitioning
from vlm_jax.videobert import checks, pipeline
from vlm_jax.videobert import step as step_lib
from vlm_jax.videobert import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**train):
  config = videobert_config.get_config('tiny,runlocal')
  config.train.global_batch_size = 8
  config.data.synthetic_videos = 32
  for key, value in train.items():
    config.train[key] = value
  return config


def first_batches(config, vocab, n):
  tok, _ = step_lib.load_vocab(config)
  files = trainer.training_files(config, tok)
  ds = pipeline.make_dataset(files, pipeline.PipelineOptions.from_config(config.data), vocab,
                             config.train.global_batch_size, seed=config.seed)
  it = pipeline.BatchIterator(ds, files)
  return [next(it) for _ in range(n)]


def run_steps(config, devices, batches):
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=devices)
  state = setup.create_state(setup.init_params(jax.random.key(config.seed)))
  losses = []
  for batch in batches:
    state, metrics = setup.train_step(state, partitioning.device_batch(batch, setup.mesh))
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params)


def assert_trees_close(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_2x2_mesh_matches_single_device():
  assert jax.device_count() == 4, 'conftest emulates 4 devices'
  config = small_config()
  _, vocab = step_lib.load_vocab(config)
  batches = first_batches(config, vocab, 2)
  config.mesh.data, config.mesh.model = 2, 2
  sharded_losses, sharded = run_steps(config, jax.devices()[:4], batches)
  config.mesh.data, config.mesh.model = 1, 1
  single_losses, single = run_steps(config, jax.devices()[:1], batches)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  assert_trees_close(sharded, single, atol=2e-5)


def test_parameters_and_state_are_sharded_by_the_logical_rules():
  config = small_config()
  config.mesh.data, config.mesh.model = 2, 2
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:4])
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
  layer = setup.param_shardings['bert']['encoder']['layer_0']
  assert layer['attention']['query']['kernel'].spec == P(None, 'model')  # embed, heads
  assert layer['attention']['out']['kernel'].spec == P('model', None)
  assert layer['mlp']['intermediate']['kernel'].spec == P(None, 'model')  # embed, mlp
  assert setup.param_shardings['bert']['embeddings']['word_embeddings']['embedding'].spec == P(
      None, None)  # replicated
  # Adam's moments follow their parameters.
  moments = [s for s in jax.tree.leaves(setup.state_shardings.opt_state)
             if s.spec == P(None, 'model')]
  assert len(moments) >= 2 * config.model.num_layers * 4
  assert partitioning.batch_sharding(setup.mesh).spec == P('data')


def test_gradient_accumulation_matches_one_big_batch():
  config = small_config()
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  _, vocab = step_lib.load_vocab(config)
  batches = first_batches(config, vocab, 1)
  whole_losses, whole = run_steps(config, jax.devices(), batches)
  config.optim.grad_accum_steps = 2
  config.mesh.data = 4  # micro-batch 4 still splits over the data axis
  accumulated_losses, accumulated = run_steps(config, jax.devices(), batches)
  np.testing.assert_allclose(accumulated_losses, whole_losses, rtol=1e-5)
  assert_trees_close(accumulated, whole, atol=2e-5)


@pytest.mark.parametrize('frozen', [False, True])
def test_a_frozen_visual_table_gets_no_update_of_any_kind(frozen):
  config = small_config()
  config.model.freeze_visual_embeddings = frozen
  # A large decay: a stopped gradient alone would still let AdamW shrink the table.
  config.optim.name, config.optim.weight_decay = 'adamw', 0.1
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:1])
  before = jax.device_get(setup.init_params(jax.random.key(0)))
  state = setup.create_state(setup.init_params(jax.random.key(0)))
  for batch in first_batches(config, vocab, 3):
    state, _ = setup.train_step(state, partitioning.device_batch(batch, setup.mesh))
  after = jax.device_get(state.params)
  table = lambda p: p['visual_embeddings']['embedding']
  words = lambda p: p['bert']['embeddings']['word_embeddings']['embedding']
  assert np.array_equal(table(before), table(after)) == frozen
  assert not np.array_equal(words(before), words(after))
  # No Adam moments are kept for a frozen table.
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.shape == table(before).shape]
  assert len(moments) == (0 if frozen else 2)


def test_paper_preset_is_the_papers_reading():
  config = videobert_config.get_config('paper')
  assert (config.model.num_layers, config.model.hidden_size, config.model.num_heads) == (
      24, 1024, 16)
  assert (config.optim.name, config.optim.learning_rate, config.optim.weight_decay,
          config.optim.warmup_steps) == ('adam', 1e-5, 0.0, 0)
  assert (config.train.global_batch_size, config.train.num_steps) == (128, 500_000)
  assert config.model.num_visual_tokens == 12**4
  assert config.model.visual_embedding_dim == 1024 and config.model.freeze_visual_embeddings
  # A frozen table that is not the centroids would never learn: refused, naming the field.
  with pytest.raises(config_checks.ConfigError, match='model.visual_init'):
    checks.validate(config, 4)


def test_paper_preset_trains_around_the_frozen_codebook_centroids(tmp_path):
  config = videobert_config.get_config('paper,runlocal')
  config.model.num_visual_tokens = 48
  config.train.global_batch_size, config.train.num_steps = 8, 3
  config.optim.warmup_steps = 1
  config.data.synthetic_videos = 32
  centroids = np.random.default_rng(0).normal(size=(48, 1024)).astype(np.float32)
  np.save(tmp_path / 'codebook.centroids.npy', centroids)
  config.model.visual_init = str(tmp_path / 'codebook.centroids.npy')
  trainer.train(config, str(tmp_path / 'run'))
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(str(tmp_path / 'run'), setup.abstract_state.params)
  assert step == 3
  np.testing.assert_array_equal(np.asarray(params['visual_embeddings']['embedding']), centroids)


def restore_params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  return ocp.StandardCheckpointer().restore(path)['params']


def test_stop_and_resume_equals_uninterrupted(tmp_path):
  config = small_config(num_steps=8, checkpoint_every=3, log_every=2)
  # Stopped off the logging cadence: its last row (5) averages step 5 alone.
  trainer.train(config, str(tmp_path / 'resumed'), stop_at=5)
  manifest = json.loads((tmp_path / 'resumed' / 'manifest.json').read_text())
  assert manifest['final_step'] == 5 and manifest['checkpoint_steps'][-1] == 5
  trainer.train(config, str(tmp_path / 'resumed'))
  trainer.train(config, str(tmp_path / 'straight'))
  resumed = restore_params(str(tmp_path / 'resumed'), 8)
  straight = restore_params(str(tmp_path / 'straight'), 8)
  assert_trees_close(resumed, straight, atol=1e-6)
  manifest = json.loads((tmp_path / 'resumed' / 'manifest.json').read_text())
  assert manifest['resumed_from_step'] == 5
  # Each row means what the straight run's does: row 6 averages steps 5 and 6.
  rows, straight_rows = _rows(tmp_path / 'resumed'), _rows(tmp_path / 'straight')
  assert [r['step'] for r in rows] == [r['step'] for r in straight_rows] == [2, 4, 6, 8]
  for row, straight_row in zip(_without_timing(rows), _without_timing(straight_rows)):
    assert row == pytest.approx(straight_row, rel=1e-5)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = small_config(num_steps=10, checkpoint_every=1)
  config.optim.learning_rate = 1e30
  config.optim.warmup_steps = 0
  with pytest.raises(loop.TrainingDiverged, match='last good checkpoint is step'):
    trainer.train(config, str(tmp_path))
  saved = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert saved and saved[-1] < 10
  params = restore_params(str(tmp_path), saved[-1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _toy_run(plan_reads: list) -> loop.Run:
  """Linear regression on a 4-device mesh; an 'epoch' of 3 steps starts by reading the state.

  `plan_reads` gets (first step of the epoch, state.step read then) per epoch start.
  """
  mesh = partitioning.make_mesh(ml_collections.ConfigDict(dict(data=-1, model=1)))
  replicated = NamedSharding(mesh, PartitionSpec())
  tx = optax.adam(0.3)

  def create():
    params = {'w': jnp.zeros(4), 'b': jnp.zeros(())}
    return partitioning.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

  def step_fn(state, batch):
    def loss_fn(params):
      return jnp.mean((batch['x'] @ params['w'] + params['b'] - batch['y']) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return (partitioning.TrainState(state.step + 1, optax.apply_updates(state.params, updates),
                                    opt_state),
            dict(loss=loss, l2_grads=optax.tree.norm(grads)))

  def batches(state, start):
    for step in range(start + 1, 1000):
      if step % 3 == 1:
        plan_reads.append((step, int(state().step)))
      x = np.random.default_rng(step).normal(size=(8, 4)).astype(np.float32)
      yield dict(x=x, y=x @ np.arange(4, dtype=np.float32) + 1)

  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          jax.eval_shape(create))
  return loop.Run(mesh=mesh, abstract_state=abstract,
                  create_state=jax.jit(create, out_shardings=replicated),
                  train_step=jax.jit(step_fn, out_shardings=(replicated, None), donate_argnums=0),
                  num_steps=7, batches=batches, examples_per_step=8,
                  manifest={'toy': True}, log_fields=lambda step: {'epoch': (step - 1) // 3})


def _toy_config():
  return ml_collections.ConfigDict(
      dict(train=dict(log_every=2, checkpoint_every=3, keep_checkpoints=2)))


@pytest.fixture(scope='module')
def toy_runs(tmp_path_factory):
  """(straight workdir, resumed workdir, plan reads of the resumed run's two halves)."""
  straight, resumed = tmp_path_factory.mktemp('toy_straight'), tmp_path_factory.mktemp('toy')
  loop.train(_toy_config(), str(straight), _toy_run([]), progress=False)
  first, second = [], []
  loop.train(_toy_config(), str(resumed), _toy_run(first), stop_at=5, progress=False)
  loop.train(_toy_config(), str(resumed), _toy_run(second), progress=False)
  return straight, resumed, (first, second)


def _rows(workdir):
  return [json.loads(l) for l in open(workdir / 'metrics.jsonl')]


def _without_timing(rows):
  return [{k: v for k, v in r.items() if not k.endswith('_per_second')} for r in rows]


def test_loop_logs_checkpoints_resumes_and_hands_batches_the_current_state(toy_runs):
  straight, resumed, (first, second) = toy_runs
  # Each epoch is planned from the state after the step before it, also when resumed.
  assert first == [(1, 0), (4, 3)] and second == [(7, 6)]
  rows = _rows(resumed)
  assert [r['step'] for r in rows] == [2, 4, 6, 7]
  assert [r['epoch'] for r in rows] == [0, 1, 1, 2]
  assert all(r['examples_per_second'] == pytest.approx(8 * r['steps_per_second']) for r in rows)
  # The same rows as the straight run: row 6 averages steps 5 and 6 although the first
  # run stopped after 5 (its row 5 is redone), and nothing marks the resume.
  assert _without_timing(rows) == _without_timing(_rows(straight))
  manifest = json.loads((resumed / 'manifest.json').read_text())
  assert manifest['toy'] and manifest['resumed_from_step'] == 5 and manifest['final_step'] == 7
  assert manifest['checkpoint_steps'] == [6, 7]  # every 3, the end, keep 2
  assert manifest['config_changes'] == []
  assert (resumed / 'curves.png').stat().st_size > 0
  assert rows[-1]['loss'] < rows[0]['loss']
  np.testing.assert_array_equal(restore_params(str(resumed), 7)['w'],
                                restore_params(str(straight), 7)['w'])


def test_a_checkpoint_without_the_metrics_window_marks_the_first_row(tmp_path):
  """Checkpoints written before the window was saved: the row says what it averages."""
  loop.train(_toy_config(), str(tmp_path), _toy_run([]), stop_at=5, progress=False)
  # As such a checkpoint's metadata: no custom metadata.
  path = tmp_path / 'checkpoints' / '5' / '_CHECKPOINT_METADATA'
  metadata = json.loads(path.read_text())
  del metadata['custom_metadata'][loop.WINDOW_KEY]
  path.write_text(json.dumps(metadata))
  loop.train(_toy_config(), str(tmp_path), _toy_run([]), progress=False)
  rows = _rows(tmp_path)
  assert [r['step'] for r in rows] == [2, 4, 5, 6, 7]  # 5 kept: its steps are nowhere else
  assert rows[3]['resumed'] and rows[3]['averaged_steps'] == 1
  assert not any('resumed' in r for r in rows[:3] + rows[4:])


def test_restore_params_reads_no_optimizer_state(toy_runs, monkeypatch):
  workdir = str(toy_runs[0])
  abstract = _toy_run([]).abstract_state
  state, step = checkpoints.restore_latest(workdir, abstract)
  read = []
  deserialize = ocp.type_handlers.ArrayHandler.deserialize

  async def spy(self, infos, args=None):
    read.extend(info.name for info in infos)
    return await deserialize(self, infos, args)

  monkeypatch.setattr(ocp.type_handlers.ArrayHandler, 'deserialize', spy)
  params, params_step = checkpoints.restore_params(workdir, abstract.params)
  assert params_step == step == 7
  assert sorted(read) == ['params.b', 'params.w']  # no Adam moments, no step counter
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    assert x.sharding == y.sharding
    np.testing.assert_array_equal(x, y)
  earlier, _ = checkpoints.restore_params(workdir, abstract.params, step=6)
  assert not np.array_equal(earlier['w'], params['w'])


def test_train_command_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  command = [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
             'configs/videobert.py:tiny,runlocal', '--workdir', str(workdir)]
  env = dict(os.environ)
  subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True)
  rows = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [10, 20, 30, 40, 50, 60]
  for key in ('loss_text_mlm', 'loss_video_mlm', 'loss_video_text_mlm', 'loss_alignment',
              'accuracy_masked_tokens', 'accuracy_alignment', 'learning_rate',
              'steps_per_second', 'examples_per_second'):
    assert key in rows[0]
  assert rows[-1]['loss'] < rows[0]['loss']  # it learns
  assert os.listdir(workdir / 'tensorboard')
  assert (workdir / 'curves.png').stat().st_size > 0
  # Running it again resumes at the end instead of starting over.
  again = subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True, text=True)
  assert 'resumed from the checkpoint at step 60' in again.stdout + again.stderr
  assert json.loads((workdir / 'manifest.json').read_text())['resumed_from_step'] == 60


def test_sigterm_saves_a_checkpoint_and_the_next_run_resumes(tmp_path):
  workdir = tmp_path / 'run'
  command = [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
             'configs/videobert.py:tiny,runlocal', '--workdir', str(workdir),
             '--config.train.num_steps=150', '--config.train.log_every=5',
             '--config.train.checkpoint_every=1000']
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().strip()):
    assert process.poll() is None and time.time() < deadline, 'training did not start'
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=240)
  assert process.returncode == 0, err
  manifest = json.loads((workdir / 'manifest.json').read_text())
  stopped = manifest['final_step']
  assert manifest['preempted'] and 5 <= stopped < 150
  assert manifest['checkpoint_steps'] == [stopped]  # saved on SIGTERM, not on schedule
  assert f'saved the checkpoint at step {stopped}' in out + err
  subprocess.run(command, check=True, cwd=REPO, capture_output=True)
  manifest = json.loads((workdir / 'manifest.json').read_text())
  assert manifest['resumed_from_step'] == stopped
  assert manifest['final_step'] == 150 and not manifest['preempted']
  steps = [json.loads(l)['step'] for l in open(metrics)]
  assert steps == sorted(set(steps)) and steps[-1] == 150


def test_step_compiles_from_abstract_inputs_with_a_memory_report():
  """What benchmarks/memory_large.py does for the large preset, on the tiny one."""
  sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
  import memory_large  # pylint: disable=import-outside-toplevel
  config = small_config()
  config.model.dtype, config.model.remat = 'bfloat16', True
  config.mesh.data, config.mesh.model = 2, 2
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:4])
  memory = setup.compile_step(memory_large.abstract_batch(config, setup.mesh)).memory_analysis()
  assert memory.argument_size_in_bytes > 0 and memory.temp_size_in_bytes > 0
