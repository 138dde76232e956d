"""ClipBERT on precomputed clip features (the frozen-features baseline).

The feature rows read at sampled times and the visual tokens are checked by
hand; a CLI run over the six colour videos of the ClipBERT training tests,
with hand-made features, trains, learns and is scored by the eval binary.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_clipbert_training import COLOURS, _jsonl, _write_video  # the colour videos
from vlm_jax.clipbert import clip_features
from vlm_jax.clipbert import inference
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import objectives
from vlm_jax.data import feature_stats
from vlm_jax.data import files as files_lib
from vlm_jax.data.files import DataError
from vlm_jax.models import bert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 12
CLIP_SECONDS = 1.5


def _write_features(folder, name, seconds, rows):
  """extract-features' two files for `name`: rows [T, D], 1.5-s clips from 0 s."""
  starts = np.arange(len(rows)) * CLIP_SECONDS
  np.save(folder / f'{name}.npy', np.asarray(rows, np.float32))
  np.save(folder / f'{name}{files_lib.TIMES_SUFFIX}',
          np.stack([starts, np.minimum(starts + CLIP_SECONDS, seconds)], axis=1))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """Six colour videos, their pairs.jsonl, and features (in a nested folder) whose rows
  carry the colour in one dimension plus noise; 'red' has none."""
  folder = tmp_path_factory.mktemp('feature_videos')
  features = folder / 'features' / 'train'
  features.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for k, (name, (rgb, seconds)) in enumerate(COLOURS.items()):
    _write_video(folder / f'{name}.mp4', rgb, seconds)
    if name == 'red':
      continue
    clips = int(np.ceil(seconds / CLIP_SECONDS))
    rows = 5.0 + rng.normal(0, 0.3, (clips, DIM))  # a large shared offset, as random S3D's
    rows[:, k] += 3.0
    _write_features(features, name, seconds, rows)
  _jsonl(folder / 'pairs.jsonl', [{'video': n, 'text': f'a {n} screen'} for n in COLOURS])
  return folder


def test_rows_are_the_clips_nearest_each_time_standardised(tmp_path):
  rows = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
  # Clips [0, 1.5], [1.5, 3], [3, 4]: centres 0.75, 2.25, 3.5.
  _write_features(tmp_path, 'v', 4.0, rows)
  frames = clip_features.FeatureFrames(str(tmp_path), 4)
  times = np.array([[0.1, 1.4], [1.6, 3.2], [3.9, 9.0]])
  got = frames.at(str(tmp_path / 'elsewhere' / 'v.mp4'), times)  # found by the file stem
  assert got.shape == (3, 2, 1, 1, 4)
  np.testing.assert_array_equal(got[..., 0, 0, :], rows[[[0, 0], [1, 2], [2, 2]]])
  frames.stats = feature_stats.Stats(np.full(4, 2.0, np.float32), np.full(4, 4.0, np.float32))
  np.testing.assert_allclose(frames.at('v.mp4', times)[0, 0, 0, 0], (rows[0] - 2.0) / 4.0)
  with pytest.raises(DataError, match='w.mp4: no features under'):
    frames.at('w.mp4', times)
  with pytest.raises(DataError, match=r'v.npy: features of shape \(3, 4\), expected \[clips, 5\] '
                                       r'\(config.model.feature_dim\)'):
    clip_features.FeatureFrames(str(tmp_path), 5).at('v.mp4', times)


def test_visual_tokens_of_features_by_hand():
  """A clip's token: LayerNorm(mean over its frames of row @ W + b, + row 0, col 0 and the
  type embedding), one token a clip, no frame encoder in the tree."""
  text = bert.BertConfig(vocab_size=30, hidden_size=8, num_layers=1, num_heads=2, mlp_dim=16)
  config = clipbert_model.ClipBertConfig(bert_config=text, resnet_config=None, feature_dim=DIM)
  model = clipbert_model.ClipBert(config)
  frames = np.random.default_rng(1).normal(size=(2, 3, 2, 1, 1, DIM)).astype(np.float32)
  ids = jnp.ones((2, 1, 5), jnp.int32)
  params = jax.device_get(nn.unbox(model.init(jax.random.key(0), ids, ids, frames))['params'])
  assert 'frame_encoder' not in params
  tokens = np.asarray(model.apply({'params': params}, frames, method='visual_tokens'))
  p, v = params['grid_encoder']['projection'], params['visual_embeddings']
  x = (frames[..., 0, 0, :] @ p['kernel'] + p['bias']).mean(axis=2)  # [2, 3, hidden]
  x = x + v['row_position_embeddings']['embedding'][0] + v['col_position_embeddings'][
      'embedding'][0] + v['token_type_embeddings']['embedding'][0]
  x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
  x = x * v['LayerNorm']['scale'] + v['LayerNorm']['bias']
  np.testing.assert_allclose(tokens, x[:, :, None, :], atol=1e-5)
  with pytest.raises(ValueError, match='exactly one of resnet_config, vit_config and '
                                       'feature_dim'):
    clipbert_model.ClipBertConfig(bert_config=text, feature_dim=DIM)  # and the default ResNet


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'vlm_jax.cli', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, env=dict(os.environ), timeout=600)


def test_the_cli_trains_on_features_learns_and_the_binary_scores_it(corpus, tmp_path):
  workdir = tmp_path / 'run'
  out = _cli('train', '--config', 'configs/clipbert.py:tiny,runlocal', '--workdir', workdir,
             f'--config.data.train_jsonl={corpus / "pairs.jsonl"}',
             f'--config.data.video_dir={corpus}',
             f'--config.data.feature_dir={corpus / "features"}',
             f'--config.model.feature_dim={DIM}', '--config.model.text_checkpoint=minilm',
             '--config.train.num_steps=60', '--config.train.log_every=10',
             '--config.train.checkpoint_every=60', '--config.optim.learning_rate=3e-4',
             '--config.optim.frame_encoder_learning_rate=3e-4')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'of clip features from' in out.stdout + out.stderr
  manifest = json.loads((workdir / 'manifest.json').read_text())
  [skipped] = manifest['videos_skipped']  # red has a video and a caption, but no features
  assert skipped['video'] == str(corpus / 'red.mp4') and 'no features under' in skipped['reason']
  # The statistics are those of every training row that has features.
  rows = np.concatenate([np.load(p) for p in sorted((corpus / 'features' / 'train').glob('*.npy'))
                         if not p.name.endswith(files_lib.TIMES_SUFFIX)])
  stats = feature_stats.load(str(workdir))
  np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats.std, rows.std(0), rtol=1e-5)
  metrics = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert metrics[0]['loss'] > 0.6
  assert np.mean([r['loss'] for r in metrics[-2:]]) < 0.4, [r['loss'] for r in metrics]

  out = _cli('eval', 'cross-retrieval', '--workdir', workdir, '--items', corpus / 'pairs.jsonl',
             '--videos', corpus, '--output', tmp_path / 'metrics.json', '--scores',
             tmp_path / 'scores.npy')
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'metrics.json').read_text())
  assert [f['video'] for f in result['failed_videos']] == [str(corpus / 'red.mp4')]
  assert result['text_to_video']['R@1'] >= 4 / 5, result['text_to_video']
  # The binary's scores are the model's own on the standardised rows at inference's times.
  loaded = inference.load(str(workdir))
  names = [n for n in COLOURS if n != 'red']
  frames = np.stack([
      (clip_features.FeatureFrames(str(corpus / 'features'), DIM).at(
          f'{n}.mp4', inference.clip_times(loaded, str(corpus / f'{n}.mp4'))) - stats.mean)
      / stats.std for n in names])
  ids, mask = inference.text_inputs(loaded, [f'a {n} screen' for n in names])
  shape = (len(names),) + ids.shape
  logits = loaded.model.apply({'params': loaded.params}, np.broadcast_to(ids, shape),
                              np.broadcast_to(mask, shape), frames)
  direct = np.asarray(objectives.match_scores(logits, loaded.config.model.consensus)).T
  # float32 through BERT in other batch shapes: the CPU kernels round differently.
  np.testing.assert_allclose(np.load(tmp_path / 'scores.npy'), direct, atol=1e-5)


def test_features_and_their_folder_come_together(corpus, tmp_path):
  base = ['train', '--config', 'configs/clipbert.py:tiny,runlocal', '--workdir', tmp_path / 'x',
          f'--config.data.train_jsonl={corpus / "pairs.jsonl"}']
  out = _cli(*base, f'--config.model.feature_dim={DIM}')
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].endswith(
      f'config.data.feature_dir: model.feature_dim={DIM} reads clip features: name their '
      "folder (extract-features' output)")
  out = _cli(*base, f'--config.data.feature_dir={corpus}')
  assert out.returncode != 0 and 'config.model.feature_dim: data.feature_dir=' in out.stderr
  assert not (tmp_path / 'x').exists()
