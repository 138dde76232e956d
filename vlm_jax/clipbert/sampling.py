"""ClipBERT's sparse sampling as timestamps: which instants of a video to decode.

A clip is a window of W = num_frames / fps seconds (ClipBERT's decoder:
`clip_size = num_frames / target_fps * video_fps` source frames). Its
num_frames frames are spread evenly from the window's first source frame to
its last, ends included (ClipBERT's `temporal_sampling`: `linspace(start,
start + clip_size - 1, num_frames)` over source frame indices), so in seconds
frame k of a clip starting at s is

  s + k (W - p) / (num_frames - 1),   p = 1 / source_fps,

and a one-frame clip is its start. With the slack S = max(duration - W, 0),
starts are (ClipBERT's `get_start_end_idx`):
- training: each of the clips drawn on its own, uniform in [0, S] (they may
  overlap), from a NumPy Generator keyed by (seed, step, video index), so a
  resumed run draws the same clips without any saved state;
- inference: N clips at S * i / N, i = 0 .. N - 1 (ClipBERT's uniform
  `clip_idx / num_clips`: the first at the start, the last one slack / N short
  of the end); a single clip at S / 3 (ClipBERT's evaluation replaces random
  sampling by its "middle" of three uniform clips).

Videos shorter than a clip (duration < W): S = 0, the clip starts at 0, and
frames past the last source frame are clamped to it (time duration - p), so
the last frame repeats, as ClipBERT's `torch.clamp(index, 0, len(frames) - 1)`.
Every timestamp is therefore in [0, duration): `vlm_jax.data.video` decodes the
frame displayed at a time, which is what ClipBERT's truncated indices select.
"""

import numpy as np


def window_seconds(num_frames: int, fps: float) -> float:
  """Length W of a clip of `num_frames` at `fps`: 2 frames at 2 fps cover 1 s."""
  return num_frames / fps


def clip_rng(seed: int, step: int, video_index: int) -> np.random.Generator:
  """The Generator of one video at one training step."""
  for name, value in (('seed', seed), ('step', step), ('video_index', video_index)):
    if int(value) != value or value < 0:
      raise ValueError(f'{name}={value!r}: a non-negative integer')
  return np.random.default_rng([int(seed), int(step), int(video_index)])


def _check(duration: float, source_fps: float, num_clips: int, num_frames: int,
           fps: float) -> None:
  if not duration > 0:
    raise ValueError(f'duration={duration!r}: a video of positive length')
  if not source_fps > 0:
    raise ValueError(f'source_fps={source_fps!r}: must be positive')
  if num_clips < 1 or num_frames < 1:
    raise ValueError(f'num_clips={num_clips}, num_frames={num_frames}: both >= 1')
  if not fps > 0:
    raise ValueError(f'fps={fps!r}: must be positive')


def clip_timestamps(starts: np.ndarray, duration: float, source_fps: float,
                    num_frames: int, fps: float) -> np.ndarray:
  """[N] clip starts (s) -> [N, num_frames] frame times (s), clamped to the last frame."""
  period = 1.0 / source_fps
  span = max(window_seconds(num_frames, fps) - period, 0.0)
  offsets = np.linspace(0.0, span, num_frames) if num_frames > 1 else np.zeros(1)
  times = np.asarray(starts, np.float64)[:, None] + offsets[None, :]
  return np.clip(times, 0.0, max(duration - period, 0.0))


def train_timestamps(duration: float, source_fps: float, *, num_clips: int, num_frames: int,
                     fps: float, seed: int, step: int, video_index: int) -> np.ndarray:
  """Random clips of one video at one step: [num_clips, num_frames] seconds.

  Args:
    duration: the video's length in seconds.
    source_fps: its own frame rate (`vlm_jax.data.video.probe`'s 'fps').
    num_clips: ClipBERT's train_n_clips (8 for MSR-VTT).
    num_frames: frames per clip, ClipBERT's num_frm (2).
    fps: the rate the clip's window is measured at (2).
    seed, step, video_index: the Generator's key (`clip_rng`).
  """
  _check(duration, source_fps, num_clips, num_frames, fps)
  slack = max(duration - window_seconds(num_frames, fps), 0.0)
  starts = clip_rng(seed, step, video_index).uniform(0.0, slack, size=num_clips)
  return clip_timestamps(starts, duration, source_fps, num_frames, fps)


def inference_timestamps(duration: float, source_fps: float, *, num_clips: int,
                         num_frames: int, fps: float) -> np.ndarray:
  """ClipBERT's evaluation clips, uniform over the video: [num_clips, num_frames] seconds."""
  _check(duration, source_fps, num_clips, num_frames, fps)
  slack = max(duration - window_seconds(num_frames, fps), 0.0)
  if num_clips == 1:
    starts = np.array([slack / 3.0])
  else:
    starts = slack * np.arange(num_clips) / num_clips
  return clip_timestamps(starts, duration, source_fps, num_frames, fps)
