"""Video decoding with PyAV: timestamp-based resampling, resize/crop, clips.

VideoBERT cuts videos into 1.5 s clips of 30 frames at 20 fps; S3D-G (and
VideoCLIP) read 30 fps. This module decodes any container/codec FFmpeg knows
(MP4, AVI, MKV, WebM; H.264 incl. 4:4:4, MPEG-4, VP8, VP9) into frames at such
a target rate, streaming: frames are decoded one at a time and each clip is
yielded as soon as it is full, so memory does not grow with the video.

Resampling (`resample`, used by everything else)
------------------------------------------------
Times are seconds relative to the first decoded frame, computed from frame pts
and the stream time base (never from frame indices, never from
`container.duration`, which some files lack). A frame is displayed from its
pts until the next frame's pts; the last frame for its own duration (the
frame's duration field, else 1 / the stream's average rate, else the last pts
step). The decoded duration is therefore

  D = (last pts - first pts) + duration of the last frame.

Output frame k (k = 0, 1, ...) is the frame displayed at t_k = k / fps: the
latest frame whose time is <= t_k, where a frame whose time is less than a
quarter of an output period after t_k counts as displayed at t_k (containers
round timestamps, Matroska/WebM to milliseconds, and some jitter by several
ms; a frame starting that close to t_k is the better sample anyway). The
number of output frames is

  N = max(1, floor(D * fps + 1/2)),

i.e. output frame k exists when at least half of its period [t_k, t_k + 1/fps)
lies inside the video. At the video's own (constant) rate N is the number of
decoded frames and output frame k is decoded frame k; for a 10 s video,
N = 200 at 20 fps and 300 at 30 fps whatever its own rate. `num_output_frames`
computes N.

Some AVI files carry decode-order timestamps (pts 1, 2, 4, 3, 5, 7, 6, ...)
although the decoder returns frames in display order; the decoder side
re-pairs the frames with their sorted timestamps in a small window, which
leaves already monotonic timestamps unchanged.

Frames
------
Each output frame is resized so that its short side is `size` (aspect ratio
kept; FFmpeg's swscale, area interpolation) and centre-cropped to
`size` x `size`, RGB, float32 in [0, 1]: arrays [T, size, size, 3]. With
`size=None` frames keep their original size, [T, H, W, 3]. The sample aspect
ratio and rotation metadata are ignored.

Unreadable, corrupt or frameless files raise `VideoDecodeError`, which names
the file and the cause. The video stream read is not cover art (see
`_video_stream`); `why_not_video` tells videos from the other files FFmpeg reads (audio,
still images, subtitles, text) by probing them.
"""

import collections
import dataclasses
import fractions
import heapq
import math
import os
from typing import Any, Iterable, Iterator, Optional, Union

import av
import numpy as np

from vlm_jax.data import storage

# A frame whose time is within this fraction of an output period after t_k is
# taken as displayed at t_k (see the module docstring).
PTS_TOLERANCE = 0.25
# Frames held to re-pair decode-order timestamps with display-order frames
# (AVI); B-frame reordering displaces timestamps by a few frames only.
_REORDER_WINDOW = 8
# Codecs of FFmpeg's text-art readers (tty, bintext): they draw any text file
# (a .txt, a list of paths) as frames of ANSI art, which is not video.
_TEXT_ART_CODECS = frozenset({'ansi', 'bintext', 'xbin', 'idf'})

Number = Union[int, float, fractions.Fraction]


class VideoDecodeError(RuntimeError):
  """A video could not be opened or decoded; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Clip:
  """A run of consecutive output frames.

  Attributes:
    frames: [clip_frames, size, size, 3] float32 in [0, 1] ([clip_frames, H, W,
      3] with size=None). A padded last clip repeats its last real frame.
    start: time of the first frame, seconds from the first decoded frame.
    end: start + num_real_frames / fps, seconds: the span the real frames
      cover (before padding).
    num_real_frames: frames taken from the video; the rest are padding.
  """
  frames: np.ndarray
  start: float
  end: float
  num_real_frames: int


def num_output_frames(duration: float, fps: Number) -> int:
  """N = max(1, floor(duration * fps + 1/2)): output frames for a video of `duration` s."""
  return max(1, math.floor(duration * float(fps) + 0.5))


def resample(timed: Iterable[tuple[float, Optional[float], Any]],
             fps: Number) -> Iterator[tuple[int, Any]]:
  """Resamples timed items to `fps`; see the module docstring for the rule.

  Args:
    timed: (time s, duration s or None, payload) in display order. Only the
      last item's duration is used; None or <= 0 falls back to the last time
      step, then to one output period.
    fps: target rate, frames per second.

  Yields:
    (k, payload) for k = 0 .. N - 1: the payload displayed at t_k = k / fps.
    Consecutive outputs may share a payload (upsampling); payloads may be
    skipped (downsampling). Streaming: each is yielded as soon as the next
    item's time shows it is final.
  """
  fps = float(fps)
  if not fps > 0:
    raise ValueError(f'fps must be positive, got {fps}')
  tolerance = PTS_TOLERANCE / fps
  k = 0
  t0 = None
  prev = None  # (relative time, duration, payload)
  last_step = None
  for time, duration, payload in timed:
    if t0 is None:
      t0 = time
    t = time - t0
    if prev is not None:
      # Output times this frame comes after still show the previous frame.
      while k / fps + tolerance < t:
        yield k, prev[2]
        k += 1
      if t > prev[0]:
        last_step = t - prev[0]
    prev = (t, duration, payload)
  if prev is None:
    return
  t, duration, payload = prev
  if duration is None or duration <= 0:
    duration = last_step or 1.0 / fps
  for k in range(k, num_output_frames(t + duration, fps)):
    yield k, payload


def _cause(error: Exception) -> str:
  """'EOFError: End of file': FFmpeg's message without the file name it repeats."""
  return f'{type(error).__name__}: {getattr(error, "strerror", None) or error}'


def _video_stream(container):
  """The video stream to read, or None.

  Not cover art (an attached picture); of several, the one with the most
  frames by the header, the first when none says: an animated AVIF holds its
  one-frame still image before the animation.
  """
  streams = [s for s in container.streams.video
             if not s.disposition & av.stream.Disposition.attached_pic]
  return max(streams, key=lambda s: s.frames or 0, default=None)


def _av_open(path: str):
  """An av container of `path`: a local file, or a URL read through tf.io.gfile."""
  if not storage.is_url(path):
    try:
      return av.open(os.fspath(path))
    except (av.FFmpegError, EOFError, OSError) as e:
      raise VideoDecodeError(f'{path}: cannot open video ({_cause(e)})') from e
  # FFmpeg reads through the handle's read and seek, fetching only the byte
  # ranges it needs (a probe reads the header, not the video). The container
  # holds the handle, which is freed with it.
  handle = storage.open_file(path, 'rb')
  try:
    return av.open(handle)
  except Exception as e:  # TensorFlow's errors (NotFoundError, ...) are no OSError
    handle.close()
    raise VideoDecodeError(f'{path}: cannot open video ({_cause(e)})') from e


def _open(path: str):
  """(container, its video stream); VideoDecodeError when there is none."""
  container = _av_open(path)
  stream = _video_stream(container)
  if stream is None or stream.codec_context.name in _TEXT_ART_CODECS:
    what = ('text, no video stream' if stream is not None else
            'only cover art, no video stream' if container.streams.video else 'no video stream')
    container.close()
    raise VideoDecodeError(f'{path}: {what}')
  return container, stream


def why_not_video(path: str) -> Optional[str]:
  """Why FFmpeg's reading of `path` is not a video; None when it is one.

  The reason starts with its kind: 'audio only', 'still image', 'subtitles',
  'text', ... (then ', detail' and the FFmpeg format in parentheses).

  What the file holds decides, not its name: a video stream (not cover art)
  that decodes to at least two frames makes a video, so MPEG-TS, VOB, DV,
  animated GIF/PNG/AVIF count like MP4 and MKV. Not videos: audio (with or
  without cover art, which FFmpeg shows as a one-picture video stream), still
  images (one frame), subtitles, and text. Costs one open and at most two
  decoded frames.

  Raises:
    VideoDecodeError: FFmpeg cannot open the file, or its video stream does
      not decode: a broken video or no media at all, which the caller tells
      apart.
  """
  with _av_open(path) as container:
    fmt = container.format.name
    stream = _video_stream(container)
    if stream is None:
      if container.streams.audio:
        cover = ', with cover art' if container.streams.video else ''
        return f'audio only{cover} ({fmt})'
      if container.streams.subtitles:
        return f'subtitles, no video ({fmt})'
      return f'picture only, no video ({fmt})' if container.streams.video else f'no video ({fmt})'
    if stream.codec_context.name in _TEXT_ART_CODECS:
      return f"text, no video (FFmpeg's {fmt} reader would draw it as ANSI art)"
    frames = 0
    try:
      for _ in container.decode(stream):
        frames += 1
        if frames == 2:
          return None
    except (av.FFmpegError, EOFError, OSError) as e:
      raise VideoDecodeError(f'{path}: decoding failed after {frames} frames ({_cause(e)})') from e
    if frames == 1:
      return f'still image, one frame ({fmt})'
    raise VideoDecodeError(f'{path}: no video frames decoded')


def probe(path: str) -> dict:
  """Stream metadata without decoding.

  Returns:
    {'path', 'format', 'codec', 'width', 'height', 'pix_fmt', 'fps' (average
    rate, float, or None), 'time_base' ('1/90000'), 'frames' (from the header,
    None when unknown), 'duration' (container duration s, or None: never
    needed for decoding)}.
  """
  container, stream = _open(path)
  try:
    ctx = stream.codec_context
    return {
        'path': os.fspath(path),
        'format': container.format.name,
        'codec': ctx.name,
        'width': ctx.width,
        'height': ctx.height,
        'pix_fmt': ctx.pix_fmt,
        'fps': float(stream.average_rate) if stream.average_rate else None,
        'time_base': str(stream.time_base),
        'frames': stream.frames or None,
        'duration': (container.duration / av.time_base
                     if container.duration is not None else None),
    }
  finally:
    container.close()


def _timed_frames(path: str, container,
                  stream) -> Iterator[tuple[float, Optional[float], Any]]:
  """(time s, duration s or None, av.VideoFrame) of `stream`, in display order."""
  stream.thread_type = 'AUTO'
  time_base = stream.time_base
  rate_period = 1.0 / float(stream.average_rate) if stream.average_rate else None
  frames = collections.deque()
  pts_heap = []
  last_pts = None
  decoded = 0

  def pop():
    frame = frames.popleft()
    pts = heapq.heappop(pts_heap)
    duration = float(frame.duration * time_base) if frame.duration else rate_period
    return float(pts * time_base), duration, frame

  try:
    for frame in container.decode(stream):
      decoded += 1
      pts = frame.pts if frame.pts is not None else frame.dts
      if pts is None:
        # No timestamp at all: one frame step after the previous one.
        step = frame.duration or (round(rate_period / time_base) if rate_period else 1)
        pts = (last_pts + step) if last_pts is not None else 0
      last_pts = pts
      frames.append(frame)
      heapq.heappush(pts_heap, pts)
      if len(frames) > _REORDER_WINDOW:
        yield pop()
  except (av.FFmpegError, EOFError, OSError) as e:
    raise VideoDecodeError(f'{path}: decoding failed after {decoded} frames ({_cause(e)})') from e
  if not decoded:
    raise VideoDecodeError(f'{path}: no video frames decoded')
  while frames:
    yield pop()


def _to_array(frame, size: Optional[int]) -> np.ndarray:
  """av.VideoFrame -> [size, size, 3] (or [H, W, 3]) float32 in [0, 1]."""
  if size is None:
    rgb = frame.to_ndarray(format='rgb24')
  else:
    w, h = frame.width, frame.height
    if w <= h:
      new_w, new_h = size, max(size, round(h * size / w))
    else:
      new_w, new_h = max(size, round(w * size / h)), size
    rgb = frame.reformat(width=new_w, height=new_h, format='rgb24',
                         interpolation='AREA').to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    rgb = rgb[top:top + size, left:left + size]
  return rgb.astype(np.float32) / 255.0


def _check(fps: Number, size: Optional[int]) -> None:
  if not float(fps) > 0:
    raise ValueError(f'fps must be positive, got {fps}')
  if size is not None and size < 1:
    raise ValueError(f'size must be >= 1 or None, got {size}')


def iter_frames(path: str, fps: Number = 20.0,
                size: Optional[int] = 224) -> Iterator[np.ndarray]:
  """Streams output frames [size, size, 3] float32 (see the module docstring)."""
  _check(fps, size)
  container, stream = _open(path)
  try:
    cached_frame, cached = None, None
    for _, frame in resample(_timed_frames(path, container, stream), fps):
      # Only frames that are output get converted; repeats reuse the array.
      if frame is not cached_frame:
        cached_frame, cached = frame, _to_array(frame, size)
      yield cached
  finally:
    container.close()


def decode_frames(path: str, fps: Number = 20.0, size: Optional[int] = 224) -> np.ndarray:
  """All output frames at once, [N, size, size, 3] float32; for small videos and tests."""
  return np.stack(list(iter_frames(path, fps, size)))


def iter_clips(path: str, fps: Number = 20.0, clip_frames: int = 30,
               size: Optional[int] = 224, last_clip: str = 'pad') -> Iterator[Clip]:
  """Non-overlapping clips of `clip_frames` output frames, streamed.

  Args:
    path: video file.
    fps: output rate (20 for VideoBERT, 30 for S3D-G/VideoCLIP).
    clip_frames: frames per clip (VideoBERT: 30 at 20 fps = 1.5 s).
    size: output side after short-side resize and centre crop; None keeps
      the original size.
    last_clip: 'pad' repeats the last frame of a short last clip, 'drop'
      drops it (a video shorter than one clip then gives no clip).

  Yields:
    Clip i covers output frames [i * clip_frames, (i + 1) * clip_frames), so
    there are ceil(N / clip_frames) clips with 'pad', floor(...) with 'drop'.
  """
  if last_clip not in ('pad', 'drop'):
    raise ValueError(f"last_clip must be 'pad' or 'drop', got {last_clip!r}")
  if clip_frames < 1:
    raise ValueError(f'clip_frames must be >= 1, got {clip_frames}')
  fps = float(fps)
  buffer, n, start = None, 0, 0
  for frame in iter_frames(path, fps, size):
    if buffer is None:
      # A fresh buffer per clip: the caller may keep the clips it was given.
      buffer = np.empty((clip_frames,) + frame.shape, np.float32)
    buffer[n] = frame
    n += 1
    if n == clip_frames:
      yield Clip(buffer, start / fps, (start + n) / fps, n)
      buffer, n, start = None, 0, start + clip_frames
  if n and last_clip == 'pad':
    buffer[n:] = buffer[n - 1]
    yield Clip(buffer, start / fps, (start + n) / fps, n)
