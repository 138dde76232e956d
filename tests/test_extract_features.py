"""extract-features: batched sharded S3D features vs single clips, counts, failures, resume.

The model is S3D-G at a 32 px crop with 16-frame clips (its pools accept any
even size; torchvision's S3D needs >= 13 x 209 x 209, too slow for unit
tests), random weights, on the 4 emulated devices of conftest.py.
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import types

import av
import jax
import numpy as np
import pytest
import torch

from configs import extract_features as extract_config
from vlm_jax.convert import s3d_torch
from vlm_jax.data import decode_ahead as decode_ahead_lib
from vlm_jax.data import files as files_lib
from vlm_jax.data import s3d_features as video_features
from vlm_jax.data import shares as shares_lib
from vlm_jax.data import video as video_lib
from vlm_jax.models import s3d
from vlm_jax.stages import extract_features
from vlm_jax.videobert import codebook as codebook_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CROP, CLIP_FRAMES, FPS = 32, 16, 20.0
# Batched + sharded vs one clip through plain model.apply: the same float32
# math in another batch layout; differences are summation-order rounding.
RTOL, ATOL = 1e-4, 1e-5


def small_config(**overrides):
  config = extract_config.get_config('s3dg')
  config.crop_size, config.clip_frames, config.fps = CROP, CLIP_FRAMES, FPS
  config.batch_size = 4  # one clip per device
  config.update(overrides)
  return config


def write_video(path, num_frames, fps=20, size=(64, 48), seed=0):
  """An MPEG-4 video of moving coloured bars, `num_frames` frames at `fps`."""
  rng = np.random.default_rng(seed)
  width, height = size
  base = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for i in range(num_frames):
      image = np.roll(base, 3 * i, axis=1)
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


@pytest.fixture(scope='module')
def encoder():
  return video_features.ClipEncoder(small_config())


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('videos')
  # 3 s -> 60 frames -> 4 clips (last one 12 real frames); 2 s -> 40 -> 3 clips.
  return [('long', write_video(folder / 'long.mp4', 60, seed=1)),
          ('short', write_video(folder / 'short.mp4', 40, seed=2))]


def test_config_checks():
  for preset in ('s3d', 's3dg', 'demo'):
    video_features.check_config(extract_config.get_config(preset))
  demo = extract_config.get_config('demo')
  assert (demo.model, demo.fps, demo.clip_frames) == ('s3d', 20.0, 30)
  assert (demo.crop_size, demo.pool) == (112, 'global')
  small = extract_config.get_config('demo')
  small.pool = 'window'  # S3D's (2, 7, 7) avgpool: a 112 crop gives a 3 x 3 map
  with pytest.raises(video_features.ConfigError, match='config.crop_size'):
    video_features.check_config(small)
  with pytest.raises(video_features.ConfigError, match='config.num_devices'):
    video_features.check_config(small_config(num_devices=5))  # 4 devices
  with pytest.raises(video_features.ConfigError, match='config.batch_size'):
    video_features.check_config(small_config(batch_size=6))
  with pytest.raises(video_features.ConfigError, match='config.output'):
    video_features.check_config(small_config(model='s3d', crop_size=224))
  with pytest.raises(video_features.ConfigError, match='config.decode_workers'):
    video_features.check_config(small_config(decode_workers=-1))
  assert video_features.resolve_decode_workers(small_config(decode_workers=3)) == 3
  assert 1 <= video_features.resolve_decode_workers(small_config()) <= 8  # 0: auto


def test_batched_sharded_equals_single_clips(encoder, videos):
  assert encoder.mesh.shape['data'] == 4 and encoder.feature_dim == 512
  timings = video_features.Timings()
  results = {r.video_id: r for r in video_features.iter_video_features(encoder, videos, timings)}
  # 4 + 3 clips in batches of 4: the second batch carries one padding row.
  assert timings.clips == 7 and timings.batches == 2
  for video_id, path in videos:
    r = results[video_id]
    assert r.error is None
    clips = list(video_lib.iter_clips(path, FPS, CLIP_FRAMES, CROP))
    assert r.features.shape == (len(clips), 512)
    np.testing.assert_allclose(r.times, [(c.start, c.end) for c in clips])
    for i, clip in enumerate(clips):
      expected = encoder.single_clip(clip.frames)
      np.testing.assert_allclose(r.features[i], expected, rtol=RTOL,
                                 atol=ATOL * np.abs(expected).max())


def test_padding_rows_do_not_change_results(encoder, videos):
  clips = [video_features.to_uint8(c.frames)
           for c in video_lib.iter_clips(videos[0][1], FPS, CLIP_FRAMES, CROP)]
  full = np.asarray(encoder(np.stack(clips)))
  padded = np.asarray(encoder(np.stack([clips[0]] + [np.zeros_like(clips[0])] * 3)))
  # One compiled program for both; row 0 does not see the other rows.
  np.testing.assert_array_equal(padded[0], full[0])
  assert encoder(np.stack(clips)).sharding.spec[0] == 'data'


class _RecordingEncoder:
  """`encoder` with another config, keeping a copy of every batch it is given."""

  def __init__(self, encoder, **overrides):
    self.config = small_config(**overrides)
    self.batch_size = encoder.batch_size
    self.batches = []
    self._encoder = encoder

  def __call__(self, frames):
    self.batches.append(frames.copy())
    return self._encoder(frames)


def _decode_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith(decode_ahead_lib.THREAD_NAME + '-')]


def test_decode_workers_give_the_same_features_and_failures(encoder, videos, tmp_path,
                                                           monkeypatch):
  broken = tmp_path / 'broken.mp4'
  broken.write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')  # fails at open
  midway = write_video(tmp_path / 'midway.mp4', 60, seed=3)  # fails after 2 of its 4 clips
  tail = write_video(tmp_path / 'tail.mp4', 30, seed=4)
  real_iter_clips = video_lib.iter_clips

  def iter_clips(path, *args, **kwargs):
    for i, clip in enumerate(real_iter_clips(path, *args, **kwargs)):
      if path == midway and i == 2:
        raise video_lib.VideoDecodeError(f'{path}: corrupt packet')
      yield clip

  monkeypatch.setattr(video_lib, 'iter_clips', iter_clips)  # read by the worker threads too
  inputs = [videos[0], ('broken', str(broken)), ('midway', midway), videos[1], ('tail', tail)]
  for thread in _decode_threads():  # an earlier test's, about to stop
    thread.join(timeout=2.0)
  runs = {}
  for workers in (1, 3):
    recording = _RecordingEncoder(encoder, decode_workers=workers)
    timings = video_features.Timings()
    threads_seen = set()
    on_clip = lambda: threads_seen.update(t.name for t in _decode_threads())
    results = list(video_features.iter_video_features(recording, inputs, timings, on_clip))
    runs[workers] = results, recording.batches, timings
    assert bool(threads_seen) == (workers > 1), threads_seen
  (one, one_batches, one_timings), (three, three_batches, three_timings) = runs[1], runs[3]
  # One decoder: the input order, the failed videos reported where they fail.
  assert [(r.video_id, r.error) for r in one] == [
      ('broken', one[0].error), ('midway', f'{midway}: corrupt packet'),
      ('long', None), ('short', None), ('tail', None)]
  assert 'broken.mp4' in one[0].error
  # Three: any order, the same outcome per video, bit for bit.
  by_id = {r.video_id: r for r in three}
  assert sorted(by_id) == sorted(r.video_id for r in one)
  for a in one:
    b = by_id[a.video_id]
    assert a.error == b.error
    if a.error is None:
      np.testing.assert_array_equal(a.features, b.features)
      np.testing.assert_array_equal(a.times, b.times)
  assert [len(r.times) for r in one if r.error is None] == [4, 3, 2]
  # 4 + 2 (dropped) + 3 + 2 clips in 3 batches either way; the same clips, sorted by bytes.
  assert (one_timings.clips, one_timings.batches) == (three_timings.clips,
                                                      three_timings.batches) == (11, 3)
  rows = lambda batches: sorted(c.tobytes() for b in batches for c in b if c.any())
  assert rows(one_batches) == rows(three_batches)


def test_closing_the_features_early_stops_the_decode_threads(encoder, videos, monkeypatch):
  # One clip queued in all: the workers are blocked on a full queue when closed.
  monkeypatch.setattr(video_features, 'DECODE_QUEUE_CLIPS', 1)
  recording = _RecordingEncoder(encoder, decode_workers=3)
  features = video_features.iter_video_features(recording, videos * 4)
  first = next(features)
  assert first.error is None and _decode_threads()
  features.close()
  for thread in _decode_threads():
    thread.join(timeout=2.0)
  assert not [t.name for t in _decode_threads() if t.is_alive()]


def test_decode_ahead_interleaves_items_in_order_each_and_stops_blocked_workers():
  rng = np.random.default_rng(0)
  delays = rng.uniform(0, 0.004, (8, 6))

  def decode(i):
    if i == 2:
      raise ValueError('cannot open 2')
    for j in range(6):
      time.sleep(delays[i, j])  # workers finish out of order
      if i == 5 and j == 3:
        raise ValueError('broken 5')
      yield i, j

  def per_item(events):
    out = {}
    for index, kind, payload in events:
      out.setdefault(index, []).append(payload if kind == 'value' else
                                       (kind, str(payload) if kind == 'error' else None))
    return out

  expected = {i: [(i, j) for j in range(6)] + [('end', None)] for i in range(8)}
  expected[2] = [('error', 'cannot open 2')]
  expected[5] = [(5, 0), (5, 1), (5, 2), ('error', 'broken 5')]
  one = list(decode_ahead_lib.decode_ahead(list(range(8)), decode, 1, max_queued=2))
  # One worker: item after item, in the caller's thread.
  assert [e[0] for e in one] == sorted(e[0] for e in one)
  assert per_item(one) == expected
  four = list(decode_ahead_lib.decode_ahead(list(range(8)), decode, 4, max_queued=2))
  assert per_item(four) == expected
  assert [e[0] for e in four] != sorted(e[0] for e in four)  # interleaved
  # Endless items: every worker ends up blocked on the full queue, then the
  # consumer goes away; each worker stops, closing its generator.
  closed = []

  def endless(i):
    try:
      yield from itertools.count()
    finally:
      closed.append(i)

  events = decode_ahead_lib.decode_ahead(list(range(5)), endless, workers=3, max_queued=2)
  assert next(events)[1:] == ('value', 0)
  time.sleep(0.2)
  assert len(_decode_threads()) == 3
  events.close()
  for thread in _decode_threads():
    thread.join(timeout=2.0)
  assert not _decode_threads() and sorted(closed) == [0, 1, 2]


def test_clip_counts_times_corrupt_and_resume(realdata, videos, tmp_path, capsys):
  # A folder as users have them: videos, one of them broken, next to captions and notes.
  folder = tmp_path / 'videos'
  folder.mkdir()
  real = realdata / 'mmaction2' / 'test.mp4'  # 10.0 s, 30 fps, 300 frames
  corrupt = realdata / 'edge_cases' / 'truncated_header_only.mkv'
  for source in (real, corrupt, videos[1][1]):
    os.symlink(source, folder / os.path.basename(source))
  (folder / 'test.vtt').write_text('WEBVTT\n\n00:01.000 --> 00:02.000\nThe pool.\n')
  (folder / 'notes.txt').write_text('pool cleaning\n')
  output = str(tmp_path / 'features')
  manifest = extract_features.run(str(folder), output, small_config(), progress=False)
  err = capsys.readouterr().err
  assert 'RANDOM S3D weights' in err and 'failed truncated_header_only' in err
  assert f'files under {folder} that are not videos: 2 (' in err
  reasons = {os.path.basename(n['path']): n['reason'] for n in manifest['not_videos']}
  assert set(reasons) == {'test.vtt', 'notes.txt'}
  assert reasons['test.vtt'] == 'subtitles, no video (webvtt)'
  assert manifest['counts']['not_videos'] == 2

  # 10 s at 20 fps = 200 frames = 12 clips of 16 and a last one of 8 (padded).
  features = np.load(os.path.join(output, 'test.npy'))
  times = np.load(os.path.join(output, 'test.times.npy'))
  assert features.shape == (13, 512) and features.dtype == np.float16
  starts = np.arange(13) * CLIP_FRAMES / FPS
  np.testing.assert_allclose(times[:, 0], starts)
  np.testing.assert_allclose(times[:, 1], np.minimum(starts + CLIP_FRAMES / FPS, 10.0))
  assert manifest['videos']['test']['clips'] == 13
  assert manifest['videos']['short']['clips'] == 3
  assert manifest['counts']['failed'] == 1
  failure, = manifest['failures']
  assert failure['video_id'] == 'truncated_header_only'
  assert 'truncated_header_only.mkv' in failure['error'] and 'cannot open' in failure['error']
  assert manifest['weights'] == 'random' and manifest['random_weights']
  assert manifest['decode_workers'] == video_features.resolve_decode_workers(small_config())
  assert manifest['frame_rate'] == FPS and manifest['crop_size'] == CROP
  assert manifest['clip_frames'] == CLIP_FRAMES and manifest['dtype'] == 'float16'
  assert manifest['timings']['clips_per_second'] > 0
  # build-codebook / assign-tokens read the features only, not the clip times.
  assert codebook_lib.list_features(output) == ['short.npy', 'test.npy']

  # Re-run: done videos kept (files untouched), the failed one retried; with
  # no failure allowed, the batch fails after writing its manifest.
  mtime = os.stat(os.path.join(output, 'test.npy')).st_mtime_ns
  with pytest.raises(ValueError, match=r'1 of 3 videos failed, more than '
                     r'config.max_failures=0 .*first: .*truncated_header_only.mkv'):
    extract_features.run(str(folder), output, small_config(max_failures=0.0), progress=False)
  with open(os.path.join(output, 'manifest.json'), encoding='utf-8') as f:
    again = json.load(f)
  assert again['counts']['written_this_run'] == 0 and again['counts']['skipped_existing'] == 2
  assert again['counts']['failed'] == 1 and again['counts']['clips'] == 16
  assert again['timings']['clips_per_second'] == 0  # not None: no clip this run
  assert os.stat(os.path.join(output, 'test.npy')).st_mtime_ns == mtime
  # A lost output is made again, the same.
  os.remove(os.path.join(output, 'short.times.npy'))
  before = np.load(os.path.join(output, 'short.npy'))
  third = extract_features.run(str(folder), output, small_config(), progress=False)
  assert third['counts']['written_this_run'] == 1
  np.testing.assert_array_equal(np.load(os.path.join(output, 'short.npy')), before)
  assert not [n for n in os.listdir(output) if n.endswith('.tmp')]
  # Other parameters into the same folder: refused, naming the field.
  with pytest.raises(ValueError, match='fps'):
    extract_features.run(str(folder), output, small_config(fps=10.0), progress=False)
  with pytest.raises(video_features.ConfigError, match='config.max_failures'):
    extract_features.run(str(folder), output, small_config(max_failures=2.0), progress=False)


def test_no_videos_found(tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'notes.txt').write_text('ingredients\n')
  # A one-line text is too short for FFmpeg to call it text: 'unreadable'.
  with pytest.raises(ValueError, match=r'no videos found; files under .* that are not '
                     r'videos: 1 \(1 unreadable\)'):
    extract_features.run(str(tmp_path / 'in'), str(tmp_path / 'out'), small_config(),
                         progress=False)
  assert not (tmp_path / 'out').exists()


def test_cli_fails_when_every_video_fails(tmp_path):
  (tmp_path / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
  listing = tmp_path / 'videos.txt'
  listing.write_text('broken.mp4\nmissing.mp4\n')
  output = tmp_path / 'features'
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'extract-features', '--videos', str(listing),
       '--output', str(output), '--config', 'configs/extract_features.py:s3dg',
       f'--config.crop_size={CROP}', f'--config.clip_frames={CLIP_FRAMES}'],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'vlm-jax extract-features: no video could be read: all 2 failed (first: ')
  manifest = json.loads((output / 'manifest.json').read_text())
  assert [f['video_id'] for f in manifest['failures']] == ['broken', 'missing']


def _random_variables(abstract, seed):
  """He-scaled kernels and non-trivial BatchNorm terms (activations stay O(1))."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, abstract)


def _save_state_dict(state_dict, path):
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()},
             str(path))


def test_torchvision_weights_load(tmp_path):
  config = extract_config.get_config('s3d')
  model = video_features.build_model(config)
  abstract = s3d.abstract_variables(model, (1, *video_features.clip_shape(config)))
  variables = _random_variables(abstract, seed=3)
  # torchvision's file has the Kinetics classifier, which extraction ignores.
  with_classifier = s3d.abstract_variables(s3d.S3D(), (1, *video_features.clip_shape(config)))
  variables_tv = dict(variables, params=dict(
      variables['params'], classifier=_random_variables(
          with_classifier['params']['classifier'], seed=4)))
  path = tmp_path / 's3d_kinetics.pth'
  _save_state_dict(s3d_torch.torchvision_from_flax(variables_tv), path)
  config.weights = str(path)
  loaded, info = video_features.load_variables(config, model)
  assert info == {'weights': str(path), 'sha256': video_features.sha256_file(str(path))}
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  # A state_dict of the other architecture is refused, naming tensors.
  config.model, config.output = 's3dg', 'video_embedding'
  with pytest.raises(ValueError, match='s3d_kinetics.pth'):
    video_features.load_variables(config, video_features.build_model(config))


def test_cli_end_to_end_with_weights(videos, tmp_path):
  config = small_config()
  model = video_features.build_model(config)
  abstract = s3d.abstract_variables(model, (1, *video_features.clip_shape(config)))
  variables = _random_variables(abstract, seed=5)
  weights = tmp_path / 's3d_howto100m.pth'
  _save_state_dict(s3d_torch.s3dg_from_flax(variables), weights)
  output = tmp_path / 'features'
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'extract-features', '--videos',
       os.path.dirname(videos[0][1]), '--output', str(output),
       '--config', 'configs/extract_features.py:s3dg', f'--config.crop_size={CROP}',
       f'--config.clip_frames={CLIP_FRAMES}', f'--config.fps={FPS}',
       '--config.batch_size=8',
       '--config.dtype=float32', f'--config.weights={weights}'],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr
  assert 'RANDOM' not in proc.stderr
  manifest = json.loads((output / 'manifest.json').read_text())
  assert manifest['weights_sha256'] == video_features.sha256_file(str(weights))
  assert manifest['devices'] == [str(d) for d in jax.local_devices()]
  assert {k: v['clips'] for k, v in manifest['videos'].items()} == {'long': 4, 'short': 3}
  reference = video_features.ClipEncoder(config, variables=variables)
  for video_id, path in videos:
    got = np.load(output / f'{video_id}.npy')
    assert got.dtype == np.float32
    for i, clip in enumerate(video_lib.iter_clips(path, FPS, CLIP_FRAMES, CROP)):
      expected = reference.single_clip(clip.frames)
      np.testing.assert_allclose(got[i], expected, rtol=RTOL,
                                 atol=ATOL * np.abs(expected).max())


def _makespan(sizes, shares):
  return max(sum(sizes[i] for i in share) for share in shares)


def test_balanced_shares_cover_the_list_and_are_within_lpts_bound_of_the_best():
  rng = np.random.default_rng(0)
  for _ in range(20):
    sizes = list(rng.uniform(1, 100, rng.integers(1, 9)))
    count = int(rng.integers(1, 4))
    got = shares_lib.balanced_shares(sizes, count)
    assert len(got) == count and sorted(i for s in got for i in s) == list(range(len(sizes)))
    # The best split, by trying every assignment of items to processes.
    best = min(_makespan(sizes, [[i for i, p in enumerate(owners) if p == q]
                                 for q in range(count)])
               for owners in itertools.product(range(count), repeat=len(sizes)))
    assert _makespan(sizes, got) <= (4 / 3 - 1 / (3 * count)) * best + 1e-9
  # Equal (or unknown) sizes deal out in turn; more processes than items leave some idle.
  assert shares_lib.balanced_shares([1.0] * 5, 2) == [[0, 2, 4], [1, 3]]
  assert shares_lib.balanced_shares([5.0], 3) == [[0], [], []]


def test_video_seconds_read_the_header_and_count_a_broken_file_as_zero(videos, tmp_path,
                                                                       monkeypatch):
  broken = tmp_path / 'broken.mp4'
  broken.write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
  long_s, short_s, broken_s = shares_lib.video_seconds([videos[0][1], videos[1][1], str(broken)])
  assert long_s == pytest.approx(3.0, abs=0.1) and short_s == pytest.approx(2.0, abs=0.1)
  assert broken_s == 0.0
  # Durations a list file gave are taken as they are: no header is read for them.
  probed = []
  real_probe = video_lib.probe
  monkeypatch.setattr(video_lib, 'probe', lambda path: probed.append(path) or real_probe(path))
  assert shares_lib.video_seconds([videos[0][1], videos[1][1]], {videos[0][1]: 42.0}) == [
      42.0, short_s]
  assert probed == [videos[1][1]]


def _extract_command(*args):
  """`vlm-jax extract-features ARGS` with small_config's settings."""
  return [sys.executable, '-m', 'vlm_jax.cli', 'extract-features', *map(str, args),
          '--config', 'configs/extract_features.py:s3dg', f'--config.crop_size={CROP}',
          f'--config.clip_frames={CLIP_FRAMES}', f'--config.fps={FPS}', '--config.batch_size=4',
          '--config.dtype=float32']


def _extract(*args):
  return subprocess.run(_extract_command(*args), capture_output=True, text=True, cwd=REPO)


def test_two_processes_take_disjoint_shares_resume_alone_and_merge_to_the_one_process_run(
    tmp_path):
  folder = tmp_path / 'videos'
  folder.mkdir()
  for i, frames in enumerate([80, 20, 60, 40, 30]):
    write_video(folder / f'v{i}.mp4', frames, seed=10 + i)
  single = tmp_path / 'single'
  expected = extract_features.run(str(folder), str(single), small_config(dtype='float32'),
                                  progress=False)
  sharded = tmp_path / 'sharded'
  # Two processes at once, as on two hosts.
  procs = [subprocess.Popen(_extract_command('--videos', folder, '--output', sharded,
                                             f'--process_index={i}', '--process_count=2'),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
  names = [shares_lib.manifest_name(i, 2) for i in range(2)]
  shards = [json.loads((sharded / n).read_text()) for n in names]
  assert not (sharded / 'manifest.json').exists()
  ids = [s['share']['item_ids'] for s in shards]
  assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == sorted(expected['videos'])
  assert [s['counts']['written_this_run'] for s in shards] == [len(i) for i in ids]
  # By duration (4, 1, 3, 2, 1.5 s), not by count: 4 + 1.5 against 3 + 2 + 1.
  assert sorted(len(i) for i in ids) == [2, 3]
  assert abs(shards[0]['share']['size'] - shards[1]['share']['size']) <= 1.0

  # Process 1 stopped before its end: one video and its manifest are missing. The merge
  # names the process to run; rerunning it alone finishes only what is missing.
  lost = ids[1][0]
  for path in files_lib.feature_paths(str(sharded), lost):
    os.remove(path)
  (sharded / names[1]).unlink()
  merge = _extract('--videos', folder, '--output', sharded, '--merge')
  assert merge.returncode == 1
  assert merge.stderr.strip().splitlines()[-1] == (
      f'vlm-jax extract-features: {sharded}: no {names[1]}; run process 1 of 2 '
      '(--process_index=1) first')
  rerun = _extract('--videos', folder, '--output', sharded, '--process_index=1',
                   '--process_count=2')
  assert rerun.returncode == 0, rerun.stderr
  counts = json.loads((sharded / names[1]).read_text())['counts']
  assert (counts['written_this_run'], counts['skipped_existing']) == (1, len(ids[1]) - 1)
  merge = _extract('--videos', folder, '--output', sharded, '--merge')
  assert merge.returncode == 0, merge.stderr
  merged = json.loads((sharded / 'manifest.json').read_text())
  assert merged['videos'] == expected['videos'] and merged['failures'] == merged['missing'] == []
  assert merged['counts']['done'] == 5 and merged['parameters'] == expected['parameters']
  # The same bits as one process over every video (other neighbours in each batch).
  for video_id in expected['videos']:
    for ours, theirs in zip(files_lib.feature_paths(str(sharded), video_id),
                            files_lib.feature_paths(str(single), video_id)):
      np.testing.assert_array_equal(np.load(ours), np.load(theirs))


def test_multihost_takes_the_share_that_jax_distributed_names(monkeypatch):
  from vlm_jax.commands import _share_flags  # pylint: disable=import-outside-toplevel
  from vlm_jax.stages import train  # pylint: disable=import-outside-toplevel
  calls = []
  monkeypatch.setattr(train, 'initialize_distributed', lambda: calls.append('init'))
  monkeypatch.setattr(jax, 'process_index', lambda: 3)
  monkeypatch.setattr(jax, 'process_count', lambda: 4)
  value = lambda v: types.SimpleNamespace(value=v)
  given = dict(process_index=value(1), process_count=value(2), merge=value(False))
  assert _share_flags.ShareFlags(multihost=value(False), **given).resolve() == (1, 2)
  assert calls == []
  assert _share_flags.ShareFlags(multihost=value(True), **given).resolve() == (3, 4)
  assert calls == ['init']
