"""make-records states the records' vocabulary; training checks it against the model first."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import make_records as make_records_config
from configs import videobert as videobert_config
from configs import videoclip as videoclip_config
from vlm_jax import config_checks
from vlm_jax.stages import make_records
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import trainer as videobert_trainer
from vlm_jax.videoclip import trainer as videoclip_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, LEVELS, K = 8, 2, 3  # 9 visual tokens
VIDEOS = ('a', 'b', 'c', 'd')


@pytest.fixture(scope='module')
def records_dirs(tmp_path_factory):
  """{'videobert': dir, 'videoclip': dir} of make-records output over the same 4 videos,
  and a fifth whose features are 6-d."""
  root = tmp_path_factory.mktemp('records_vocab')
  features = root / 'features'
  features.mkdir()
  rng = np.random.default_rng(0)
  for video_id, dim in [(v, DIM) for v in VIDEOS] + [('zz_narrow', 6)]:
    np.save(features / f'{video_id}.npy', rng.normal(size=(12, dim)).astype(np.float32))
    starts = np.arange(12, dtype=np.float64)
    np.save(features / f'{video_id}.times.npy', np.stack([starts, starts + 1], axis=1))
  transcripts = root / 'captions.json'
  transcripts.write_text(json.dumps({v: {'start': [0.0, 5.0], 'end': [4.0, 11.0],
                                         'text': ['stir the soup', 'add the salt']}
                                     for v in VIDEOS}))
  book = codebook_lib.build(rng.normal(size=(48, DIM)).astype(np.float32), levels=LEVELS, k=K,
                            seed=0)
  book.save(str(root / 'codebook.npz'))
  dirs = {}
  for system in ('videobert', 'videoclip'):
    config = make_records_config.get_config(system)
    config.num_shards = 2
    dirs[system] = root / system
    make_records.run(str(features), str(root / 'codebook.npz') if system == 'videobert' else None,
                     str(transcripts), str(dirs[system]), config, progress=False)
  return dirs


def _manifest(directory):
  return json.loads((directory / 'manifest.json').read_text())


def _copy(directory, tmp_path, **fields):
  """The records of `directory` in a new folder, their manifest's `fields` replaced
  (all of it left out with manifest=None)."""
  copy = tmp_path / 'copy'
  shutil.copytree(directory, copy)
  if fields.get('manifest', '') is None:
    (copy / 'manifest.json').unlink()
  else:
    (copy / 'manifest.json').write_text(json.dumps(dict(_manifest(directory), **fields)))
  return copy


def test_make_records_states_the_vocabulary(records_dirs):
  videobert, videoclip = (_manifest(records_dirs[s]) for s in ('videobert', 'videoclip'))
  assert (videobert['num_visual_tokens'], videobert['text_vocab_size'],
          videobert['feature_dim']) == (K**LEVELS, 30522, DIM)
  assert (videoclip['num_visual_tokens'], videoclip['text_vocab_size'],
          videoclip['feature_dim']) == (None, 30522, DIM)
  # The first record's width is the records': a video of another is a failure, named.
  assert videoclip['counts']['videos'] == len(VIDEOS)
  [failure] = videoclip['failures']
  assert failure['video_id'] == 'zz_narrow' and '6-d features' in failure['error']


def test_train_refuses_records_past_the_visual_vocabulary_in_one_line(records_dirs, tmp_path):
  workdir = tmp_path / 'run'
  done = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/videobert.py:tiny,runlocal', f'--workdir={workdir}',
       f'--config.data.train_files={records_dirs["videobert"]}/*.tfrecord',
       '--config.model.num_visual_tokens=4'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)
  assert done.returncode != 0 and 'Traceback' not in done.stderr
  lines = [line for line in done.stderr.splitlines() if line.startswith('vlm-jax')]
  assert lines == [f'vlm-jax train: config.model.num_visual_tokens: 4, but '
                   f'{records_dirs["videobert"]}/manifest.json has num_visual_tokens=9: its '
                   'visual token ids do not fit; set --config.model.num_visual_tokens=9 (the '
                   "codebook's leaves)"], done.stderr
  assert not (workdir / 'checkpoints').exists()


@pytest.fixture
def no_build(monkeypatch):
  """Fails the test if the VideoBERT model is built (its checks must come first)."""

  class Built(Exception):
    pass

  def build(*args, **kwargs):
    raise Built
  monkeypatch.setattr(videobert_trainer.step_lib, 'build', build)
  return Built


def _videobert_config(directory):
  config = videobert_config.get_config('tiny,runlocal')
  config.data.train_files = f'{directory}/*.tfrecord'
  return config


def test_videobert_checks_the_system_and_the_text_vocab_before_building(
    records_dirs, tmp_path, no_build, capsys):
  with pytest.raises(config_checks.ConfigError, match='config.data.train_files: .*'
                     'videoclip/manifest.json describes videoclip records'):
    videobert_trainer.train(_videobert_config(records_dirs['videoclip']), str(tmp_path / 'a'))
  other_vocab = _copy(records_dirs['videobert'], tmp_path, text_vocab_size=28996)
  with pytest.raises(config_checks.ConfigError, match='config.model.text_vocab_size: 30522 .*'
                     'copy/manifest.json has text_vocab_size=28996'):
    videobert_trainer.train(_videobert_config(other_vocab), str(tmp_path / 'b'))
  shutil.rmtree(other_vocab)
  # Records without a manifest (third-party, older) train, with a note.
  bare = _copy(records_dirs['videobert'], tmp_path, manifest=None)
  with pytest.raises(no_build):
    videobert_trainer.train(_videobert_config(bare), str(tmp_path / 'c'))
  assert 'no make-records manifest.json' in capsys.readouterr().out


def _videoclip_config(directory, **model):
  config = videoclip_config.get_config('tiny,runlocal')
  config.data.train_files = f'{directory}/*.tfrecord'
  # 4 videos: random batches of 4, one step an epoch.
  config.data.retrieval, config.optim.warmup_steps = False, 1
  config.model.update(model)
  return config


def test_videoclip_checks_the_feature_width_and_the_text_vocab(records_dirs, tmp_path):
  with pytest.raises(config_checks.ConfigError,
                     match=r'config.model.feature_dim: 512, but the records hold 8-d features'):
    videoclip_trainer.train(_videoclip_config(records_dirs['videoclip']), str(tmp_path / 'a'))
  other_vocab = _copy(records_dirs['videoclip'], tmp_path, text_vocab_size=28996)
  with pytest.raises(config_checks.ConfigError, match='config.data.vocab_file: the text tower '
                     'has 30522 word rows, but .*copy/manifest.json has text_vocab_size=28996'):
    videoclip_trainer.train(_videoclip_config(other_vocab, feature_dim=DIM), str(tmp_path / 'b'))
