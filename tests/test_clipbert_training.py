"""ClipBERT end to end from video files: the CLI trains and resumes, the eval binaries score.

One CLI run of tiny,runlocal over six generated MP4s (a corrupt one and a
missing one in the list) is shared by the tests; a second run, stopped at
step 4 and resumed, is compared with it.
"""

import json
import os
import subprocess
import sys

import av
import jax
import numpy as np
import pytest

from configs import clipbert as clipbert_config
from vlm_jax.clipbert import inference
from vlm_jax.clipbert import objectives
from vlm_jax.clipbert import step as step_lib
from vlm_jax.clipbert import trainer
from vlm_jax.data.files import DataError
from vlm_jax.evaluate import cross_retrieval
from vlm_jax.train import checkpoints, optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Colour, seconds: each video is that colour with a bar sweeping across it.
COLOURS = {'red': ((220, 30, 30), 2.0), 'green': ((30, 200, 40), 3.0),
           'blue': ((30, 40, 220), 4.0), 'yellow': ((230, 220, 30), 2.5),
           'white': ((240, 240, 240), 3.5), 'black': ((10, 10, 10), 2.0)}


def _write_video(path, rgb, seconds, fps=10, side=64):
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.width = stream.height = side
    stream.pix_fmt = 'yuv420p'
    for i in range(int(round(seconds * fps))):
      image = np.empty((side, side, 3), np.uint8)
      image[:] = rgb
      image[:, (i * 4) % side] = 128
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """The folder: six MP4s, a corrupt 'broken.mp4', and pairs.jsonl naming them and 'absent'."""
  folder = tmp_path_factory.mktemp('clipbert_videos')
  for name, (rgb, seconds) in COLOURS.items():
    _write_video(folder / f'{name}.mp4', rgb, seconds)
  (folder / 'broken.mp4').write_bytes(np.random.default_rng(0).bytes(3000))
  rows = [{'video': name, 'text': f'a {name} screen'} for name in COLOURS]
  rows += [{'video': 'broken', 'text': 'a broken screen'},
           {'video': 'absent', 'text': 'a screen nobody filmed'}]
  _jsonl(folder / 'pairs.jsonl', rows)
  return folder


def _config(videos):
  config = clipbert_config.get_config('tiny,runlocal')
  config.data.train_jsonl = str(videos / 'pairs.jsonl')
  config.data.video_dir = str(videos)
  return config


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'vlm_jax.cli', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, env=dict(os.environ), timeout=600)


@pytest.fixture(scope='module')
def runs(videos, tmp_path_factory):
  """A straight CLI run, and one stopped at step 4 then resumed (both 10 steps)."""
  straight = tmp_path_factory.mktemp('clipbert_straight')
  out = _cli('train', '--config', 'configs/clipbert.py:tiny,runlocal', '--workdir', straight,
             f'--config.data.train_jsonl={videos / "pairs.jsonl"}',
             f'--config.data.video_dir={videos}')
  assert out.returncode == 0, out.stderr[-3000:]
  resumed = tmp_path_factory.mktemp('clipbert_resumed')
  trainer.train(_config(videos), str(resumed), stop_at=4)
  trainer.train(_config(videos), str(resumed))
  return straight, resumed, out.stdout + out.stderr


@pytest.fixture(scope='module')
def loaded(runs):
  return inference.load(str(runs[0]))


def _manifest(workdir):
  return json.loads((workdir / 'manifest.json').read_text())


def _params(workdir, config):
  setup = step_lib.build(config)
  params, step = checkpoints.restore_params(str(workdir), setup.sharded.abstract_state.params)
  return jax.device_get(params), step


def _by_path(tree):
  return {optim.path_names(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_the_cli_trains_from_video_files_and_reports_the_bad_ones(runs, videos):
  straight, _, log = runs
  rows = [json.loads(line) for line in (straight / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [2, 4, 6, 8, 10]
  for key in ('loss', 'matching_accuracy', 'l2_grads', 'l2_grads_frame_encoder'):
    assert all(np.isfinite(r[key]) for r in rows), key
  # The loss reaches the CNN: its gradient is small but not zero.
  assert all(r['l2_grads_frame_encoder'] > 0 for r in rows)
  manifest = _manifest(straight)
  assert manifest['system'] == 'clipbert' and manifest['final_step'] == 10
  assert manifest['items'] == 7 and manifest['videos'] == 7
  assert [m['video'] for m in manifest['missing_videos']] == ['absent']
  [skipped] = manifest['videos_skipped']
  assert skipped['video'] == str(videos / 'broken.mp4') and 'cannot open' in skipped['reason']
  assert skipped['rows'] >= 1
  assert 'could not be used and were skipped' in log


def test_parameters_move_except_the_frozen_ones(runs, videos):
  """What 10 steps of runlocal's random BERT can show (its loss stays at ln 2): between
  the checkpoints of steps 4 and 10 every trained leaf moved, no frozen one did."""
  config = _config(videos)
  setup = step_lib.build(config)
  abstract = setup.sharded.abstract_state.params
  before, _ = checkpoints.restore_params(str(runs[0]), abstract, 4)
  after, step = checkpoints.restore_params(str(runs[0]), abstract)
  before, after = _by_path(jax.device_get(before)), _by_path(jax.device_get(after))
  assert step == 10
  groups = step_lib.groups_by_path(step_lib.model_config(config))
  assert step_lib.FROZEN in groups.values()
  for names, group in groups.items():
    if group == step_lib.FROZEN:
      np.testing.assert_array_equal(after[names], before[names], err_msg=str(names))
    else:
      assert not np.array_equal(after[names], before[names]), names


def test_resume_mid_run_equals_a_straight_run(runs, videos):
  straight, resumed, _ = runs
  config = _config(videos)
  (a, step_a), (b, step_b) = _params(straight, config), _params(resumed, config)
  assert step_a == step_b == 10
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6)
  # The skips of both parts of the resumed run add up to the straight run's.
  assert _manifest(resumed)['videos_skipped'] == _manifest(straight)['videos_skipped']
  assert _manifest(resumed)['resumed_from_step'] == 4


def test_with_minilm_text_weights_it_learns_to_match_colours_to_captions(videos, tmp_path):
  """tiny's recipe (MiniLM's BERT) at runlocal size: 80 steps take the matching loss from
  ln 2 to well below it, and every caption then ranks its own video first or close (chance:
  R@1 1/6). A random BERT's loss stays at ln 2 on this task (configs/clipbert.py)."""
  workdir = tmp_path / 'run'
  out = _cli('train', '--config', 'configs/clipbert.py:tiny,runlocal', '--workdir', workdir,
             f'--config.data.train_jsonl={videos / "pairs.jsonl"}',
             f'--config.data.video_dir={videos}', '--config.model.text_checkpoint=minilm',
             '--config.train.num_steps=80', '--config.train.log_every=10',
             '--config.train.checkpoint_every=80', '--config.optim.learning_rate=3e-4',
             '--config.optim.frame_encoder_learning_rate=3e-4')
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert rows[0]['loss'] > 0.65
  assert np.mean([r['loss'] for r in rows[-3:]]) < 0.45, [r['loss'] for r in rows]
  out = _cli('eval', 'cross-retrieval', '--workdir', workdir, '--items', videos / 'pairs.jsonl',
             '--videos', videos, '--output', tmp_path / 'metrics.json')
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'metrics.json').read_text())
  assert result['text_to_video']['count'] == len(COLOURS)
  assert result['text_to_video']['R@1'] >= 4 / 6, result['text_to_video']
  assert result['text_to_video']['mean_rank'] <= 2.0, result['text_to_video']


def test_no_readable_video_is_one_error(videos, tmp_path):
  config = _config(videos)
  config.data.train_jsonl = str(_jsonl(tmp_path / 'bad.jsonl', [
      {'video': str(videos / 'broken.mp4'), 'text': f'caption {i}'} for i in range(4)]))
  with pytest.raises(DataError, match=r'bad.jsonl: none of its 1 videos is readable '
                                       r'\(the first: .*broken.mp4: cannot open'):
    trainer.train(config, str(tmp_path / 'never'))
  assert not (tmp_path / 'never').exists()


def _direct_pairs(loaded, names, texts):
  """Match probabilities [texts, videos] from the model's own forward pass, all pairs at once."""
  frames = np.stack([inference.clip_frames(loaded, str(n)) for n in names])
  ids, mask = inference.text_inputs(loaded, texts)
  shape = (len(names),) + ids.shape
  logits = loaded.model.apply({'params': loaded.params}, np.broadcast_to(ids, shape),
                              np.broadcast_to(mask, shape), frames)
  return np.asarray(objectives.match_scores(logits, loaded.config.model.consensus)).T


def test_eval_cross_retrieval_ranks_the_direct_score_matrix(runs, loaded, videos, tmp_path):
  out = _cli('eval', 'cross-retrieval', '--workdir', runs[0], '--items', videos / 'pairs.jsonl',
             '--videos', videos, '--output', tmp_path / 'metrics.json', '--scores',
             tmp_path / 'scores.npy', '--text_block', 4, '--video_block', 4)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'text_to_video: R@1' in out.stdout and 'video_to_text: R@1' in out.stdout
  result = json.loads((tmp_path / 'metrics.json').read_text())
  assert result['texts'] == result['videos_decoded'] == len(COLOURS)
  assert [f['video'] for f in result['failed_videos']] == [str(videos / 'broken.mp4')]
  assert result['skipped_texts'] == 1 and result['step'] == 10

  direct = _direct_pairs(loaded, [videos / f'{n}.mp4' for n in COLOURS],
                         [f'a {n} screen' for n in COLOURS])
  # Blocks of 4 x 4 over 6 x 6 (padded) with tokens computed once per video.
  np.testing.assert_allclose(np.load(tmp_path / 'scores.npy'), direct, atol=1e-5)
  expected = cross_retrieval.retrieval_metrics(direct)
  for direction in ('text_to_video', 'video_to_text'):
    for key in ('R@1', 'R@5', 'R@10', 'median_rank', 'mean_rank', 'count'):
      assert result[direction][key] == expected[direction][key], (direction, key)


def test_eval_multiple_choice_is_the_argmax_of_the_option_match_scores(runs, loaded, videos,
                                                                     tmp_path):
  options = ['a red screen', 'a blue screen', 'a green screen']
  items = _jsonl(tmp_path / 'mc.jsonl', [
      {'video': 'red', 'question': '', 'options': options, 'answer': 0},
      {'video': 'blue', 'question': '', 'options': options, 'answer': 1},
      {'video': 'green', 'question': '', 'options': options, 'answer': 2},
      {'video': 'broken', 'question': '', 'options': options, 'answer': 0}])
  out = _cli('eval', 'multiple-choice', '--workdir', runs[0], '--items', items, '--videos',
             videos, '--output', tmp_path / 'mc.json')
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'mc.json').read_text())
  assert result['count'] == 3 and result['skipped_questions'] == 1
  assert result['chance'] == pytest.approx(1 / 3)
  direct = _direct_pairs(loaded, [videos / f'{n}.mp4' for n in ('red', 'blue', 'green')],
                         options)  # [options, videos]
  expected = cross_retrieval.multiple_choice_accuracy(direct.T, np.arange(3))
  assert result['accuracy'] == expected['accuracy']
  assert 'accuracy' in out.stdout and 'chance 0.333' in out.stdout


def test_eval_binaries_name_what_is_wrong_in_one_line(runs, videos, tmp_path):
  out = _cli('eval', 'multiple-choice', '--workdir', runs[0], '--items', videos / 'pairs.jsonl',
             '--videos', videos, '--output', tmp_path / 'x.json')
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [
      f'vlm-jax eval multiple-choice: {videos / "pairs.jsonl"}: matching items, this '
      'evaluation reads multiple_choice items']
  out = _cli('eval', 'open-qa', '--help')
  assert out.returncode == 0 and out.stdout.startswith('vlm-jax eval open-qa: ')
  for flag in ('--workdir', '--items', '--videos', '--output'):
    assert f'  {flag}: ' in out.stdout
