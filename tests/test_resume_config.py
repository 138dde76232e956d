"""Resuming a workdir under another config: refused in one line, or allowed and recorded."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import videobert as videobert_config
from vlm_jax import config_checks
from vlm_jax.videobert import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first run's settings, as flags and as config fields: a checkpoint at step 6 only,
# rows at 4 and 6 (where the run stops, off the cadence).
FLAGS = ['--config.train.num_steps=6', '--config.train.log_every=4',
         '--config.train.checkpoint_every=100', '--config.train.global_batch_size=8',
         '--config.data.synthetic_videos=16', '--config.optim.warmup_steps=1']


def _config():
  config = videobert_config.get_config('tiny,runlocal')
  config.train.num_steps, config.train.log_every, config.train.checkpoint_every = 6, 4, 100
  config.train.global_batch_size, config.data.synthetic_videos = 8, 16
  config.optim.warmup_steps = 1
  return config


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('resume_config') / 'run'
  trainer.train(_config(), str(workdir))
  return workdir


def _files(workdir):
  return {name: (workdir / name).read_bytes()
          for name in ('config.json', 'manifest.json', 'metrics.jsonl')}


def _train(workdir, *flags):
  return subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/videobert.py:tiny,runlocal', f'--workdir={workdir}', *FLAGS, *flags],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)


def test_a_config_of_other_shapes_is_refused_in_one_line(run_dir):
  before = _files(run_dir)
  done = _train(run_dir, '--config.model.hidden_size=128')
  assert done.returncode != 0
  assert 'Traceback' not in done.stderr  # Orbax's 'tree structures do not match'
  # One line (TensorFlow's start-up notes aside).
  lines = [line for line in done.stderr.splitlines() if line.startswith('vlm-jax')]
  assert len(lines) == 1, done.stderr
  assert lines[0].startswith('vlm-jax train: the checkpoint at step 6 in ')
  assert 'other shapes' in lines[0] and 'config.model.hidden_size 64 -> 128' in lines[0]
  assert 'params.bert.embeddings.LayerNorm.bias: (64,) saved, (128,) now' in lines[0]
  assert _files(run_dir) == before


def test_another_learning_rate_is_refused_without_leave(run_dir):
  before = _files(run_dir)
  config = _config()
  config.optim.learning_rate = 5e-4
  with pytest.raises(config_checks.ConfigError,
                     match=r'config\.optim\.learning_rate 0\.001 -> 0\.0005; set '
                           r'config\.train\.allow_config_change=True'):
    trainer.train(config, str(run_dir))
  assert _files(run_dir) == before


def test_an_allowed_change_is_recorded_and_rows_mean_the_same(run_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir, workdir)
  original = json.loads((workdir / 'config.json').read_text())
  done = _train(workdir, '--config.optim.learning_rate=5e-4', '--config.train.num_steps=10',
                '--config.train.allow_config_change=True')
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'config.optim.learning_rate: 0.001 -> 0.0005 from step 6' in done.stdout + done.stderr
  manifest = json.loads((workdir / 'manifest.json').read_text())
  assert manifest['resumed_from_step'] == 6 and manifest['final_step'] == 10
  assert manifest['config_changes'] == [
      dict(step=6, field='optim.learning_rate', old=0.001, new=0.0005),
      dict(step=6, field='train.num_steps', old=6, new=10)]
  # config.json holds the values now in force; the manifest, every earlier one.
  config = json.loads((workdir / 'config.json').read_text())
  assert config['optim']['learning_rate'] == 0.0005 and config['train']['num_steps'] == 10
  assert config['model'] == original['model']
  # Row 6 (the first run's last, of steps 5-6) is redone: row 8 averages steps 5-8.
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [4, 8, 10]
  assert not any('resumed' in r for r in rows)
