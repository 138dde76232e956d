"""Decoding only the frames a sparse sampler asks for: seek, decode forward, stop.

ClipBERT-style training reads a few frames per video per step (8 clips x 2
frames of a 15 s MSR-VTT video), so decoding whole videos, or storing dense
frame dumps, is what made its training disk- and decoder-bound. `decode_at`
decodes the frames at given times and little else.

Times
-----
A timestamp is seconds from the video's first frame, as in
`vlm_jax.data.video` and `vlm_jax.clipbert.sampling`: frame times are
(pts - first pts) * time_base, where the first pts is the smallest
presentation time among the stream's first packets (not `container.duration`
nor `stream.start_time`: an AVI's frames start at pts 1 while its start_time
says 0).

Which frame a timestamp gets
----------------------------
The frame displayed at t: the latest frame whose time is <= t + 1/4 of a
source frame period (`video.PTS_TOLERANCE`; containers round timestamps, to
milliseconds in Matroska, and a frame starting that close after t is the one
meant). This is ClipBERT's pick, which truncates fractional frame indices
(`linspace(...).long()`), and `video.resample`'s rule; `sampling.clip_timestamps`
keeps every time below the last frame's end. A time before the first frame
gets the first frame, a time past the end the last one.

How little is decoded
---------------------
All N x T timestamps are visited in increasing time (overlapping clips share
frames; each frame is decoded at most once per call):
- the first one, and any lying more than SEEK_GAP_SECONDS after the last
  decoded frame, start with `container.seek` to the keyframe at or before it
  (stream time base, backward); if the decoder's first frame still comes
  after it (MP4 indexes decode times, which precede a B-frame stream's
  presentation times), the seek is retried 1 s, 2 s, 4 s, ... earlier;
- a closer one reads (does not decode) the packets up to it, and when they
  hold a keyframe at or before it, decoding restarts there and the packets
  before are dropped;
- decoding stops at the first frame past the last timestamp.
`DecodeStats` counts the frames decoded, which tests compare with the video's
frame count.

Frames
------
Each picked frame is resized so that its longer side is `longest_side`
(aspect kept, the shorter side truncated to an integer as ClipBERT's
`get_resize_size`; swscale bilinear, as ClipBERT's bilinear resize) and
zero-padded at the bottom and right to `longest_side` x `longest_side`
(ClipBERT's `ImagePad`): RGB uint8. Normalisation is the reader's (the
backbone decides it).

Decode-order timestamps: some AVI files label display-order frames with
decode-order times (`vlm_jax.data.video`); their frames are re-paired with
sorted times in a small window, as there. Other containers carry presentation
times and are read without the window (which would decode 8 frames more per
run); one that shows unordered frame times is decoded again with it.

Errors (unreadable, corrupt, no frames) raise `DataError` naming the file.
"""

import collections
import dataclasses
import heapq
import math
import os
from typing import Optional

import av
import numpy as np

from vlm_jax.data import video as video_lib
from vlm_jax.data.files import DataError

# A target this far past the last decoded frame is reached by container.seek;
# a nearer one by reading packets forward. Encoders place a keyframe at least
# every ~10 s (x264's default keyint 250 at 25 fps), so a seek farther than this
# lands past what was decoded, while reading a nearer gap's packets costs I/O
# only (no decoding) and never lands behind it.
SEEK_GAP_SECONDS = 10.0
# Packets read to find the first presentation time: B-frames displace
# presentation times by a few packets only (video._REORDER_WINDOW's reasoning).
_FIRST_PACKETS = 16
_AV_ERRORS = (av.FFmpegError, EOFError, OSError)


@dataclasses.dataclass
class DecodeStats:
  """Counters a caller passes in to see the work done (they accumulate).

  Attributes:
    decoded_frames: frames that came out of the decoder.
    seeks: container seeks (retries included).
    videos: `decode_at` calls that returned.
  """
  decoded_frames: int = 0
  seeks: int = 0
  videos: int = 0


class _Unordered(Exception):
  """Frames came out with decreasing times: decode again with re-pairing."""


def _open(path: str):
  try:
    return video_lib._open(path)  # pylint: disable=protected-access
  except video_lib.VideoDecodeError as e:
    raise DataError(str(e)) from e


def _cause(error: Exception) -> str:
  return f'{type(error).__name__}: {getattr(error, "strerror", None) or error}'


def _packet_time(packet) -> Optional[int]:
  return packet.pts if packet.pts is not None else packet.dts


def _first_pts(path: str, container, stream, stats: Optional[DecodeStats] = None) -> int:
  """The smallest presentation time among the first packets (the time origin).

  With `stats`, the first packet is also decoded (and counted): x264 writes its
  build number in an SEI there, and FFmpeg's H.264 decoder reproduces old x264
  builds' 4:4:4 encoding bug only once it has seen it. Decoded from a later
  keyframe without it, imageio's cockatoo.mp4 (High 4:4:4) comes out wrong in
  every pixel.
  """
  times = []
  for packet in container.demux(stream):
    if stats is not None and not times and packet.size:
      stats.decoded_frames += len(packet.decode()) or 1
    if packet.size and _packet_time(packet) is not None:
      times.append(_packet_time(packet))
      if len(times) == _FIRST_PACKETS:
        break
  if not times:
    raise DataError(f'{path}: no video packets')
  return min(times)


def _rate(stream) -> Optional[float]:
  rate = stream.average_rate or stream.guessed_rate
  return float(rate) if rate else None


def probe(path: str) -> tuple[float, float]:
  """(duration s, fps) of a video, from its packets: nothing is decoded.

  duration = (last presentation time + that frame's duration) - first
  presentation time, the decoded duration of `vlm_jax.data.video` (never the
  header's, which some files lack or get wrong): the packets after a seek to
  the end (the last keyframe) are read, or all of them where the file cannot
  seek. fps is the stream's average rate (else FFmpeg's guess, else 1 / the
  last frame's duration); ClipBERT's clip window is measured with it.

  Raises:
    DataError: not a readable video (the message names the file).
  """
  path = os.fspath(path)
  container, stream = _open(path)
  try:
    origin = _first_pts(path, container, stream)
    last = None  # (pts, duration) of the latest-displayed packet
    for attempt in ('end', 'start'):
      try:
        container.seek(2**62 if attempt == 'end' else origin, stream=stream, backward=True)
      except _AV_ERRORS:
        continue
      for packet in container.demux(stream):
        pts = _packet_time(packet)
        if packet.size and pts is not None and (last is None or pts > last[0]):
          last = (pts, packet.duration or 0)
      if last is not None:
        break
    if last is None:
      raise DataError(f'{path}: no video packets after seeking')
    time_base = float(stream.time_base)
    fps = _rate(stream) or (1.0 / (last[1] * time_base) if last[1] else None)
    if not fps:
      raise DataError(f'{path}: no frame rate in the stream or its packets')
    period = last[1] * time_base if last[1] else 1.0 / fps
    return (last[0] - origin) * time_base + period, fps
  except _AV_ERRORS as e:
    raise DataError(f'{path}: cannot read packets ({_cause(e)})') from e
  finally:
    container.close()


def square_frame(frame: av.VideoFrame, longest_side: int) -> np.ndarray:
  """A decoded frame -> [longest_side, longest_side, 3] uint8 RGB (the module docstring)."""
  width, height = frame.width, frame.height
  if height >= width:
    new_h, new_w = longest_side, max(1, int(width * longest_side / height))
  else:
    new_h, new_w = max(1, int(height * longest_side / width)), longest_side
  rgb = frame.reformat(width=new_w, height=new_h, format='rgb24',
                       interpolation='BILINEAR').to_ndarray()
  out = np.zeros((longest_side, longest_side, 3), np.uint8)
  out[:new_h, :new_w] = rgb
  return out


class _Reader:
  """One video's packets and decoder, positioned by seeks and keyframe skips."""

  def __init__(self, path, container, stream, origin, window, stats):
    self.path, self.container, self.stream = path, container, stream
    self.origin, self.window, self.stats = origin, window, stats
    self.time_base = stream.time_base
    rate = _rate(stream)
    self.tolerance = video_lib.PTS_TOLERANCE / rate if rate else 0.0
    self.packets = None
    self.buffer = collections.deque()  # demuxed, not yet decoded
    self._reset_decoder()

  def _reset_decoder(self):
    self.frames = collections.deque()  # decoded, waiting for their re-paired time
    self.pts_heap = []
    self.ready = collections.deque()  # (time s, frame) in display order
    self.last_pts = None
    self.exhausted = False

  def to_pts(self, seconds: float) -> int:
    return self.origin + math.floor(seconds / self.time_base)

  def seek(self, seconds: float) -> None:
    """Positions the reader at the keyframe at or before `seconds`."""
    self.stats.seeks += 1
    self.container.seek(max(self.to_pts(seconds), self.origin), stream=self.stream,
                        backward=True, any_frame=False)
    self.stream.codec_context.flush_buffers()
    self.packets = self.container.demux(self.stream)
    self.buffer.clear()
    self._reset_decoder()

  def skip_to_keyframe(self, seconds: float) -> bool:
    """Drops undecoded packets before the last keyframe at or before `seconds`, if any."""
    target = self.to_pts(seconds)
    while not self.buffer or self._dts(self.buffer[-1]) <= target:
      packet = next(self.packets, None)
      if packet is None:
        break
      self.buffer.append(packet)
      if not packet.size:
        break
    keys = [i for i, p in enumerate(self.buffer)
            if p.is_keyframe and p.size and _packet_time(p) is not None
            and _packet_time(p) <= target]
    if not keys:
      return False
    for _ in range(keys[-1]):
      self.buffer.popleft()
    self.stream.codec_context.flush_buffers()
    self._reset_decoder()
    return True

  @staticmethod
  def _dts(packet) -> float:
    # The flush packet (no data) ends the stream: nothing is read past it.
    if not packet.size:
      return math.inf
    time = packet.dts if packet.dts is not None else packet.pts
    return -math.inf if time is None else time

  def _pop(self):
    frame = self.frames.popleft()
    pts = heapq.heappop(self.pts_heap)
    return float((pts - self.origin) * self.time_base), frame

  def next_frame(self):
    """(time s, frame) of the next frame in display order, or None at the end."""
    while not self.ready and not self.exhausted:
      packet = self.buffer.popleft() if self.buffer else next(self.packets, None)
      if packet is None:
        self.exhausted = True
        while self.frames:
          self.ready.append(self._pop())
        break
      for frame in packet.decode():
        self.stats.decoded_frames += 1
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
          pts = self.last_pts + (frame.duration or 1) if self.last_pts is not None else self.origin
        if not self.window and self.last_pts is not None and pts <= self.last_pts:
          raise _Unordered()
        self.last_pts = pts
        self.frames.append(frame)
        heapq.heappush(self.pts_heap, pts)
        if len(self.frames) > self.window:
          self.ready.append(self._pop())
    return self.ready.popleft() if self.ready else None


def _decode(path, container, stream, times, longest_side, stats, window) -> np.ndarray:
  """The body of `decode_at` with a re-pairing window (0: frames' own times)."""
  origin = _first_pts(path, container, stream, stats)
  reader = _Reader(path, container, stream, origin, window, stats)
  flat = times.reshape(-1)
  out = np.zeros((flat.size, longest_side, longest_side, 3), np.uint8)
  held = pending = None  # latest frame at or before the target; the first one after it
  converted = (None, None)  # (frame, array): a frame picked twice is converted once
  last_time = None
  for index in np.argsort(flat, kind='stable'):
    t = float(flat[index])
    if last_time is None or t - last_time > SEEK_GAP_SECONDS:
      margin = 0.0
      reader.seek(t)
      held = pending = None
    elif reader.skip_to_keyframe(t):
      margin = 0.0
      held = pending = None
    else:
      margin = None  # continuing: frames up to here were all seen
    while True:
      while True:
        if pending is None:
          pending = reader.next_frame()
          if pending is None:
            break
          last_time = pending[0]
        if pending[0] > t + reader.tolerance:
          break
        held, pending = pending, None
      if held is not None or margin is None or reader.to_pts(t - margin) <= origin:
        break
      # The seek landed after t: start earlier (the module docstring).
      margin = max(1.0, 2 * margin)
      reader.seek(t - margin)
      held = pending = None
    chosen = held or pending
    if chosen is None:
      raise DataError(f'{path}: no video frames decoded')
    if converted[0] is not chosen[1]:
      converted = (chosen[1], square_frame(chosen[1], longest_side))
    out[index] = converted[1]
  return out.reshape(times.shape + out.shape[1:])


def decode_at(path: str, timestamps: np.ndarray, longest_side: int = 448, *,
              stats: Optional[DecodeStats] = None) -> np.ndarray:
  """The frames displayed at `timestamps`, decoding little else (the module docstring).

  Args:
    path: a video file.
    timestamps: [N, T] seconds from the first frame (any shape works; N clips
      of T frames from `vlm_jax.clipbert.sampling`).
    longest_side: S, the frames' longer side after resizing and the padded square.
    stats: counters to add this call's work to.

  Returns:
    uint8 [N, T, S, S, 3] RGB, each frame bottom/right zero-padded.

  Raises:
    DataError: the file cannot be opened or decoded (the message names it).
  """
  path = os.fspath(path)
  times = np.asarray(timestamps, np.float64)
  if times.size == 0 or not np.all(np.isfinite(times)):
    raise ValueError(f'timestamps must be finite and non-empty, got shape {times.shape}')
  if longest_side < 1:
    raise ValueError(f'longest_side must be >= 1, got {longest_side}')
  stats = stats if stats is not None else DecodeStats()
  window = None  # 0 first, unless the container is AVI (the module docstring)
  while True:
    container, stream = _open(path)
    try:
      if window is None:
        avi = 'avi' in container.format.name.split(',')
        window = video_lib._REORDER_WINDOW if avi else 0  # pylint: disable=protected-access
      frames = _decode(path, container, stream, times, longest_side, stats, window)
      stats.videos += 1
      return frames
    except _Unordered:
      window = video_lib._REORDER_WINDOW  # pylint: disable=protected-access
    except _AV_ERRORS as e:
      raise DataError(f'{path}: decoding failed ({_cause(e)})') from e
    finally:
      container.close()


def probe_or_error(path: str) -> tuple[Optional[tuple[float, float]], Optional[str]]:
  """`probe` for a worker pool: ((duration, fps), None), or (None, the error's message)."""
  try:
    return probe(path), None
  except DataError as e:
    return None, str(e)


def decode_or_error(path: str, timestamps: np.ndarray, longest_side: int
                    ) -> tuple[Optional[np.ndarray], Optional[str], int]:
  """`decode_at` for a worker pool: (frames or None, error message or None, frames decoded).

  Module-level and returning plain values so that a process pool can pickle
  both the call and its answer.
  """
  stats = DecodeStats()
  try:
    return decode_at(path, timestamps, longest_side, stats=stats), None, stats.decoded_frames
  except DataError as e:
    return None, str(e), stats.decoded_frames
