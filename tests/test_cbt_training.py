"""CBT end to end on hand-made records: the CLI trains, resumes, and shards as one device."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import cbt as cbt_config
from vlm_jax import config_checks
from vlm_jax.cbt import checks as cbt_checks
from vlm_jax.cbt import inference as cbt_inference
from vlm_jax.cbt import pipeline as cbt_pipeline
from vlm_jax.cbt import step as cbt_step
from vlm_jax.cbt import trainer as cbt_trainer
from vlm_jax.data import feature_records
from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.train import checkpoints, partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 16


def _corpus(num_videos: int, seed: int = 0) -> list[feature_records.FeatureRecord]:
  """Videos of 4 topics: slowly drifting features offset by topic, words from the topic's 10."""
  rng = np.random.default_rng(seed)
  out = []
  for v in range(num_videos):
    topic, clips = v % 4, int(rng.integers(10, 24))
    drift = np.cumsum(rng.normal(scale=0.5, size=(clips, DIM)), axis=0)
    features = (drift + 3 * np.eye(DIM)[topic]).astype(np.float32)
    sentences, times, t = [], [], 0.0
    while t < clips - 2:
      sentences.append([2000 + 10 * topic + int(x) for x in rng.integers(0, 10, 5)])
      times.append((t, t + 2.0))
      t += 2.5
    out.append(feature_records.FeatureRecord(f'v{v:03d}', features, sentences, times))
  return out


@pytest.fixture(scope='module')
def record_files(tmp_path_factory):
  return records.write_shards(_corpus(16), str(tmp_path_factory.mktemp('cbt_records')), 2,
                              serialize=feature_records.to_example)


def _config(files):
  c = cbt_config.get_config('tiny,runlocal')
  c.data.train_files = ','.join(files)
  c.model.feature_dim = DIM
  return c


def _cli(workdir, files):
  return subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config', 'configs/cbt.py:tiny,runlocal',
       f'--workdir={workdir}', f'--config.data.train_files={",".join(files)}',
       f'--config.model.feature_dim={DIM}'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), check=True)


@pytest.fixture(scope='module')
def runs(record_files, tmp_path_factory):
  """A straight CLI run, and one stopped at step 6 then resumed by the CLI."""
  straight = tmp_path_factory.mktemp('cbt_straight')
  _cli(straight, record_files)
  resumed = tmp_path_factory.mktemp('cbt_resumed')
  cbt_trainer.train(_config(record_files), str(resumed), stop_at=6)
  out = _cli(resumed, record_files)
  return straight, resumed, out.stdout + out.stderr


def _rows(workdir):
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _params(workdir, config):
  setup = cbt_step.build(config)
  params, step = checkpoints.restore_params(str(workdir), setup.sharded.abstract_state.params)
  return jax.device_get(params), step


def test_the_cli_trains_and_the_loss_decreases(runs):
  rows = _rows(runs[0])
  assert [r['step'] for r in rows] == list(range(2, 13, 2))
  assert rows[-1]['loss'] < rows[0]['loss']
  for key in ('loss_visual', 'loss_cross', 'visual_accuracy', 'cross_accuracy', 'l2_grads'):
    assert np.isfinite(rows[-1][key])
  manifest = json.loads((runs[0] / 'manifest.json').read_text())
  assert manifest['system'] == 'cbt' and manifest['final_step'] == 12


def test_resume_mid_run_equals_a_straight_run(runs, record_files):
  straight, resumed, log = runs
  assert 'resumed from the checkpoint at step 6' in log
  config = _config(record_files)
  (a, step_a), (b, step_b) = _params(straight, config), _params(resumed, config)
  assert step_a == step_b == 12
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_sharded_step_equals_single_device_and_leaves_frozen_text(record_files):
  config = _config(record_files)
  corpus = feature_records.load_corpus(record_files)
  batch = cbt_pipeline.batch_at(corpus, 1, config.seed, 8, cbt_trainer.window_options(config))
  batch.pop('video_index')
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    setup = cbt_step.build(config.copy_and_resolve_references(), devices)
    initial = cbt_step.initial_params(setup)
    text_before = jax.device_get(initial['text_bert'])
    state = setup.sharded.create_state(initial)
    state, metrics = setup.train_step(state, partitioning.device_batch(batch, setup.mesh))
    results.append((float(metrics['loss']), jax.device_get(state.params)))
    # Frozen: no update at all (AdamW's decay would otherwise shrink them).
    for x, y in zip(jax.tree.leaves(text_before), jax.tree.leaves(results[-1][1]['text_bert'])):
      np.testing.assert_array_equal(x, y)
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_config_checks_name_the_field(record_files):
  config = _config(record_files)
  config.train.global_batch_size = 32
  with pytest.raises(config_checks.ConfigError, match='^config.train.global_batch_size: 32'):
    cbt_trainer.train(config, '/nonexistent/never-made')
  config = _config(record_files)
  config.model.feature_dim = 8
  with pytest.raises(config_checks.ConfigError, match='^config.model.feature_dim: 8, but'):
    cbt_trainer.train(config, '/nonexistent/never-made')


@pytest.mark.parametrize('preset', ['tiny', 'base', 'tiny,runlocal'])
def test_presets_pass_their_checks_on_four_devices(preset):
  config = cbt_config.get_config(preset)
  cbt_checks.validate(config, 4, 1, config.train.global_batch_size)
  assert config.system == 'cbt' and config.model.cross_layers == 1


SENTENCES = ['now let me pour the water', 'slice the onion thinly', 'stir it well',
             'fry the egg', 'peel a potato']


def test_features_are_standardised_by_the_training_corpus(runs, record_files):
  corpus = feature_records.load_corpus(record_files)
  rows = np.concatenate(corpus.features).astype(np.float64)
  loaded = cbt_inference.load(str(runs[0]))
  np.testing.assert_allclose(loaded.stats.mean, rows.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loaded.stats.std, rows.std(0), rtol=1e-5)
  standardised = loaded.prepare(corpus.features[0])
  np.testing.assert_allclose(standardised, (corpus.features[0] - rows.mean(0)) / rows.std(0),
                             atol=1e-4)


def test_clip_states_are_the_visual_transformer_over_windows(runs, record_files):
  loaded = cbt_inference.load(str(runs[0]))
  assert loaded.step == 12 and loaded.window == 8
  corpus = feature_records.load_corpus(record_files)
  video = max(corpus.features, key=len)  # >= 16 clips: windows at 0, 4, 8, ... (stride 4)
  encode = lambda f: np.asarray(loaded.model.apply(
      {'params': loaded.params}, loaded.prepare(f)[None], np.ones((1, len(f)), np.int32),
      np.zeros((1, len(f)), np.int32), method='encode_visual')[0][0])
  short, long = cbt_inference.clip_states(loaded, [video[:5], video])
  # A video shorter than a window: one padded window, padding masked as keys.
  np.testing.assert_allclose(short, encode(video[:5]), atol=1e-5)
  first, second = encode(video[:8]), encode(video[4:12])
  np.testing.assert_allclose(long[:4], first[:4], atol=1e-5)  # only window 0 covers 0..3
  np.testing.assert_allclose(long[4:8], (first[4:] + second[:4]) / 2, atol=1e-5)
  assert long.shape == (len(video), loaded.config.model.visual_hidden_size)


def test_cross_scores_equal_the_training_forward_pass(runs, record_files):
  loaded = cbt_inference.load(str(runs[0]))
  corpus = feature_records.load_corpus(record_files)
  videos = [f[:8] for f in corpus.features[:len(SENTENCES)]]
  ids, mask = tokenizer_lib.sentence_inputs(loaded.tokenizer, SENTENCES,
                                            loaded.config.data.max_text_tokens)
  inputs = np.stack([loaded.prepare(v) for v in videos])
  out = loaded.model.apply({'params': loaded.params}, inputs,
                           np.ones((len(videos), 8), np.int32), np.zeros((len(videos), 8), np.int32),
                           ids, mask)
  # Blocks of 2 queries x 3 windows: padded blocks must not change a real pair's score.
  scores = cbt_inference.cross_scores(loaded, SENTENCES, videos, query_block=2, window_block=3)
  np.testing.assert_allclose(scores, np.asarray(out['cross_scores']).T, atol=1e-4)
  # A video of two windows scores the mean of its windows' scores.
  two = np.concatenate([videos[0], videos[1]])
  both = cbt_inference.cross_scores(loaded, SENTENCES, [two])[:, 0]
  np.testing.assert_allclose(both, (scores[:, 0] + scores[:, 1]) / 2, atol=1e-4)
