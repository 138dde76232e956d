"""ClipBERT's sparse frame loader vs whole-video decoding vs what the train step consumes.

  python benchmarks/clipbert_loader.py [--preset tiny|base] [--runlocal] [--batch N]
      [--videos DIR | --workdir DIR --num_videos 24] [--items video|step]
      [--batches 6 --rounds 2 --warmup 1] [--workers 2]
      [--step_frames_per_second F | --step_steps 4] [--jsonl runs/benchmarks/clipbert_loader.jsonl]

The loader is vlm_jax.clipbert.data.BatchBuilder, as the trainer builds it
(vlm_jax.clipbert.trainer.batch_options of the same config as
benchmarks/clipbert_step.py's: `tiny` is 8 videos x 2 clips x 2 frames of
128 px a step, 2 texts of 20 tokens per video): each step it draws the
batch's items, samples each video's clips (vlm_jax.clipbert.sampling), and
decodes only those frames (vlm_jax.data.frames.decode_at: seek, decode
forward, stop) in a pool of host threads (data.workers, one video per task),
then resizes, pads, normalises and tokenizes. Its frames/s is videos x clips x
frames per batch over the median seconds of a `BatchBuilder.batch` call, one
batch at a time (the trainer's tf.data pipeline, `make_dataset`, builds two
at once; its rate is reported too, after its first batch).

Against it:
- whole decoding: the same rows' videos decoded from first frame to last with
  PyAV (the same opener and decoder settings), the frames at the same
  timestamps picked by the loader's rule (the latest frame at or before t +
  1/4 frame period) and converted (vlm_jax.data.frames.square_frame, then
  data.normalize), in a pool of as many threads, one video per task: what a
  loader that reads whole videos does at best (it converts only the frames it
  keeps and tokenizes nothing). Both paths give the same frames, which the
  test checks (tests/test_clipbert_benchmark.py);
- the step's need: frames/s of vlm_jax.clipbert.step's jitted train step on
  the same config (benchmarks/clipbert_step.py's stepper: random weights,
  random batch, one device), measured in this run after the loader (the step
  has the cores to itself, as the loader had) or given by
  --step_frames_per_second. Target: loader / step >= 2 on 2 cores, so that the
  loader is never the bottleneck, even sharing the cores with the step.

Videos: --videos DIR (any video files, any depth; items take the file stem as
their text unless DIR holds a synth-videos steps.jsonl), or a corpus rendered
by `vlm-jax synth-videos` (vlm_jax.stages.synth_videos.run: 128 x 128 H.264
at 20 fps, 10-20 s each) into --workdir (kept, and reused by the next run) or
a temporary folder. Items (written as a jsonl, read by data.read_items): one
{video, text} per video (text: its narrated steps' sentences), or with
`--items step` one per narrated step, {video, text, start, end}, its clips
sampled inside the step's span. Every video is probed before timing (the
builder caches its probes for the whole run, so a run probes each video once),
and a warm-up batch of each path reads the files into the page cache first.

Prints the numbers and appends them, with shapes, versions, device and date,
as one line to --jsonl.
"""

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: clipbert_step
import clipbert_step  # pylint: disable=wrong-import-position,import-error
import step_timing  # pylint: disable=wrong-import-position,import-error

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vlm_jax import host_memory  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import data as data_lib  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import sampling  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import step as step_lib  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import trainer  # pylint: disable=wrong-import-position
from vlm_jax.data import frames as frames_lib  # pylint: disable=wrong-import-position
from vlm_jax.data import video as video_lib  # pylint: disable=wrong-import-position
from vlm_jax.data import youcook2  # pylint: disable=wrong-import-position
from vlm_jax.stages import synth_videos  # pylint: disable=wrong-import-position


# ----------------------------------------------------------------------------
# Videos and items.
# ----------------------------------------------------------------------------

def render_videos(folder: str, num_videos: int, seed: int = 0) -> str:
  """A synth-videos corpus of `num_videos` training videos under `folder` (reused when
  rendered before with the same parameters); returns its videos/ folder."""
  synth_videos.run(folder, num_videos=num_videos, num_test=0, seed=seed, num_dev=0)
  return os.path.join(folder, 'videos')


def write_items(video_dir: str, path: str, per: str = 'video') -> int:
  """Writes the items jsonl at `path`: one {video, text} per video, or (`per='step'`) one
  {video, text, start, end} per narrated step of a synth-videos corpus; returns the count."""
  videos, _ = youcook2.find_videos(video_dir)
  steps_file = os.path.join(os.path.dirname(os.path.abspath(video_dir)), 'steps.jsonl')
  recipes = {}
  if os.path.exists(steps_file):
    with open(steps_file) as f:
      recipes = {r['video_id']: r['steps'] for r in map(json.loads, f) if r['video_id'] in videos}
  if per == 'step' and not recipes:
    raise ValueError(f'--items step needs a synth-videos corpus (its steps.jsonl): {video_dir}')
  lines = []
  for video_id, video in sorted(videos.items()):
    steps = [s for s in recipes.get(video_id, []) if s['sentence']]
    if per == 'step':
      lines += [dict(video=video, text=s['sentence'], start=s['start'], end=s['end'])
                for s in steps]
    else:
      lines.append(dict(video=video, text=' '.join(s['sentence'] for s in steps) or video_id))
  with open(path, 'w') as f:
    f.writelines(json.dumps(line) + '\n' for line in lines)
  return len(lines)


def make_builder(config, items_path: str, workers: int | None = None) -> data_lib.BatchBuilder:
  """The trainer's BatchBuilder for `config` over the items, every video probed."""
  found = data_lib.read_items(items_path)
  options = trainer.batch_options(config)
  if workers:
    options = dataclasses.replace(options, workers=workers)
  builder = data_lib.BatchBuilder(found.items, trainer.tokenizer(config), options, config.seed)
  # The probes the builder caches over a run, all done once up front.
  builder._probe_all({item.video for item in builder.items})  # pylint: disable=protected-access
  return builder


# ----------------------------------------------------------------------------
# The loader's rows, and whole-video decoding of the same frames.
# ----------------------------------------------------------------------------

def sampled_rows(builder: data_lib.BatchBuilder, step: int, batch_size: int
                 ) -> list[tuple[int, str, np.ndarray]]:
  """(row, video, [clips, frames] seconds) of each row of `step`'s batch, as
  BatchBuilder samples them (its selection, the item's span, sampling.train_timestamps
  keyed by (seed, step, row)). Rows the builder would replace (a video it cannot
  probe, or too short) are left out."""
  o = builder.options
  probes = builder._probes  # pylint: disable=protected-access
  rows = []
  for row, index in enumerate(builder.selection(step, batch_size)):
    item = builder.items[int(index)]
    if item.video not in probes:
      probes[item.video] = frames_lib.probe_or_error(item.video)
    info, _ = probes[item.video]
    if info is None:
      continue
    duration, fps = info
    start, end = item.span if item.span else (0.0, duration)
    length = min(end, duration) - start
    if length < max(o.min_duration, 2.0 / fps):
      continue
    times = sampling.train_timestamps(length, fps, num_clips=o.num_clips,
                                      num_frames=o.num_frames, fps=o.fps, seed=builder.seed,
                                      step=step, video_index=row)
    rows.append((row, item.video, times + start))
  return rows


def whole_decode(path: str, timestamps: np.ndarray, longest_side: int,
                 stats: frames_lib.DecodeStats | None = None) -> np.ndarray:
  """Every frame of the video decoded, in order; those at `timestamps` kept.

  The frame at t is the latest one whose time (from the first frame) is at
  most t + 1/4 period (before the first frame: the first; past the end: the
  last), converted by frames_lib.square_frame: uint8 [*timestamps.shape, S, S, 3].
  For videos with presentation timestamps (MP4, MKV, WebM; not the AVIs that
  store decode-order times, which decode_at re-pairs).
  """
  times = np.asarray(timestamps, np.float64)
  flat = times.reshape(-1)
  order = np.argsort(flat, kind='stable')
  out = np.zeros((flat.size, longest_side, longest_side, 3), np.uint8)
  container, stream = frames_lib._open(path)  # pylint: disable=protected-access
  try:
    rate = stream.average_rate or stream.guessed_rate
    tolerance = video_lib.PTS_TOLERANCE / float(rate) if rate else 0.0
    time_base = float(stream.time_base)
    origin, held, converted, k = None, None, (None, None), 0

    def put(frame):
      nonlocal converted
      if converted[0] is not frame:
        converted = (frame, frames_lib.square_frame(frame, longest_side))
      out[order[k]] = converted[1]

    for frame in container.decode(stream):
      if stats is not None:
        stats.decoded_frames += 1
      pts = frame.pts if frame.pts is not None else frame.dts
      origin = pts if origin is None else origin
      t = (pts - origin) * time_base
      while k < flat.size and t > flat[order[k]] + tolerance:
        put(held if held is not None else frame)  # a time before the first frame: the first
        k += 1
      held = frame
    if held is None:
      raise ValueError(f'{path}: no frames decoded')
    while k < flat.size:
      put(held)
      k += 1
  finally:
    container.close()
  if stats is not None:
    stats.videos += 1
  return out.reshape(times.shape + out.shape[1:])


def whole_decode_batch(pool: concurrent.futures.Executor, rows, longest_side: int,
                       normalization: str) -> tuple[np.ndarray, int]:
  """The rows' frames by whole decoding, one video per task: (normalised frames
  [rows, clips, frames, S, S, 3], frames decoded)."""
  def task(row):
    stats = frames_lib.DecodeStats()
    return whole_decode(row[1], row[2], longest_side, stats), stats.decoded_frames

  results = list(pool.map(task, rows))
  frames = np.stack([f for f, _ in results]) if results else np.zeros((0,), np.uint8)
  return data_lib.normalize(frames, normalization), sum(n for _, n in results)


def seconds_per_keyframe(paths: Sequence[str]) -> float:
  """The videos' mean seconds between keyframes (duration / keyframe packets; demuxed,
  not decoded): how far back of a sampled frame the sparse decoder must start."""
  seconds = keyframes = 0
  for path in paths:
    container, stream = frames_lib._open(path)  # pylint: disable=protected-access
    try:
      keyframes += sum(1 for packet in container.demux(stream) if packet.is_keyframe)
    finally:
      container.close()
    seconds += frames_lib.probe(path)[0]
  return seconds / max(keyframes, 1)


def sparse_decoded_frames(rows, longest_side: int) -> int:
  """Frames the sparse decoder decodes for the rows (decode_at's DecodeStats), untimed."""
  stats = frames_lib.DecodeStats()
  for _, video, times in rows:
    frames_lib.decode_at(video, times, longest_side, stats=stats)
  return stats.decoded_frames


def check_frames(builder: data_lib.BatchBuilder, step: int, batch_size: int) -> dict[str, Any]:
  """Whether the loader's batch of `step` holds, row by row, the frames that whole
  decoding picks for the same timestamps (and that decode_at returns)."""
  batch, skips = builder.batch(step, batch_size)
  rows = sampled_rows(builder, step, batch_size)
  o = builder.options
  mismatched, compared, whole_count, sparse_count = [], 0, 0, 0
  for row, video, times in rows:
    if any(s.row == row for s in skips):
      continue
    stats = frames_lib.DecodeStats()
    whole = whole_decode(video, times, o.longest_side, stats)
    sparse_stats = frames_lib.DecodeStats()
    sparse = frames_lib.decode_at(video, times, o.longest_side, stats=sparse_stats)
    whole_count += stats.decoded_frames
    sparse_count += sparse_stats.decoded_frames
    compared += 1
    if not (np.array_equal(whole, sparse)
            and np.array_equal(data_lib.normalize(whole, o.normalization), batch['frames'][row])):
      mismatched.append(row)
  return {'rows': batch_size, 'rows_compared': compared, 'rows_mismatched': mismatched,
          'frames_compared': compared * o.num_clips * o.num_frames,
          'decoded_frames_whole': whole_count, 'decoded_frames_sparse': sparse_count}


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------

def time_loader(builder: data_lib.BatchBuilder, pool, steps: Sequence[int], batch_size: int,
                rounds: int) -> dict[str, list[float]]:
  """Seconds per batch of the loader and of whole decoding on the same steps, `rounds`
  times, taking turns; and the frames each delivered and decoded."""
  o = builder.options
  out = {'loader': [], 'whole_decode': [], 'loader_frames': 0, 'whole_decode_frames': 0,
         'whole_decoded_frames': 0}
  for _ in range(rounds):
    for step in steps:
      start = time.perf_counter()
      batch, _ = builder.batch(step, batch_size)
      out['loader'].append(time.perf_counter() - start)
      out['loader_frames'] += int(np.prod(batch['frames'].shape[:3]))
    for step in steps:
      start = time.perf_counter()
      rows = sampled_rows(builder, step, batch_size)
      frames, decoded = whole_decode_batch(pool, rows, o.longest_side, o.normalization)
      out['whole_decode'].append(time.perf_counter() - start)
      out['whole_decode_frames'] += int(np.prod(frames.shape[:3]))
      out['whole_decoded_frames'] += decoded
  return out


def time_dataset(builder: data_lib.BatchBuilder, batch_size: int, start: int,
                 batches: int) -> float:
  """Seconds per batch of the trainer's tf.data pipeline (data.make_dataset), after its first."""
  iterator = data_lib.make_dataset(builder, batch_size, start, start + batches + 1
                                   ).as_numpy_iterator()
  next(iterator)
  begin = time.perf_counter()
  count = sum(1 for _ in iterator)
  return (time.perf_counter() - begin) / max(count, 1)


def step_frames_per_second(config, warmup: int, steps: int) -> dict[str, Any]:
  """The jitted train step's frames/s on `config` (clipbert_step's stepper, one device)."""
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params = jax.device_get(step_lib.initial_params(setup))
  batch = clipbert_step.random_batch(config, np.random.default_rng(0))
  times = step_timing.time_sides({'vlm_jax': step_timing.jax_stepper(setup, params, batch)},
                                   warmup, steps, 1)['vlm_jax']
  median = statistics.median(times)
  return {'step_seconds': [round(t, 4) for t in times], 'median_step_seconds': round(median, 4),
          'frames_per_second': clipbert_step.frames_per_step(config) / median}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='tiny', choices=['tiny', 'base'])
  parser.add_argument('--runlocal', action='store_true',
                      help="The preset's `runlocal` shapes (64 px, batch 4).")
  parser.add_argument('--batch', type=int, default=0, help="Videos per step; 0 = the preset's.")
  parser.add_argument('--videos', default='',
                      help='A folder of videos to read; default: render a synth-videos corpus.')
  parser.add_argument('--workdir', default='',
                      help='Where the rendered corpus and the items go (kept and reused); '
                           "'' = a temporary folder.")
  parser.add_argument('--num_videos', type=int, default=24, help='Videos to render.')
  parser.add_argument('--items', default='video', choices=['video', 'step'],
                      help='One item per video, or per narrated step (a span of its video).')
  parser.add_argument('--batches', type=int, default=6, help='Timed batches per round.')
  parser.add_argument('--rounds', type=int, default=2, help='Turns of loader and whole decode.')
  parser.add_argument('--warmup', type=int, default=1, help='Untimed batches of each first.')
  parser.add_argument('--workers', type=int, default=0,
                      help="Decoding threads; 0 = the config's data.workers.")
  parser.add_argument('--step_frames_per_second', type=float, default=0.0,
                      help='The train step\'s frames/s; 0 = measure it in this run.')
  parser.add_argument('--step_steps', type=int, default=4, help='Timed train steps (if measured).')
  parser.add_argument('--skip_dataset', action='store_true',
                      help="Do not time the trainer's tf.data pipeline.")
  parser.add_argument('--jsonl', default='runs/benchmarks/clipbert_loader.jsonl',
                      help='Appends one line of results here.')
  args = parser.parse_args()

  host_memory.retain_freed_memory()  # as vlm_jax.cli, before any computation
  jax.config.update('jax_threefry_partitionable', True)
  config = clipbert_step.benchmark_config(args.preset, args.runlocal, args.batch or None)
  batch_size = config.train.global_batch_size
  with tempfile.TemporaryDirectory() as scratch:
    workdir = args.workdir or scratch
    os.makedirs(workdir, exist_ok=True)
    render_seconds = None
    video_dir = args.videos
    if not video_dir:
      start = time.perf_counter()
      video_dir = render_videos(os.path.join(workdir, 'corpus'), args.num_videos)
      render_seconds = round(time.perf_counter() - start, 1)
    items_path = os.path.join(workdir, f'items_{args.items}.jsonl')
    num_items = write_items(video_dir, items_path, args.items)
    builder = make_builder(config, items_path, args.workers or None)
    o = builder.options
    print(f'{num_items} items of {len({i.video for i in builder.items})} videos in {video_dir}'
          f'{f" (rendered in {render_seconds} s)" if render_seconds is not None else ""}; '
          f'batches of {batch_size} videos x {o.num_clips} clips x {o.num_frames} frames at '
          f'{o.longest_side} px, {o.workers} {o.pool} workers', flush=True)
    load_before = os.getloadavg()
    with builder, concurrent.futures.ThreadPoolExecutor(o.workers) as pool:
      warm = list(range(1, args.warmup + 1))
      time_loader(builder, pool, warm, batch_size, 1)
      timed = list(range(args.warmup + 1, args.warmup + 1 + args.batches))
      times = time_loader(builder, pool, timed, batch_size, args.rounds)
      dataset_seconds = None if args.skip_dataset else time_dataset(
          builder, batch_size, timed[-1], args.batches)
      rows = [r for step in timed for r in sampled_rows(builder, step, batch_size)]
      sparse_decoded = sparse_decoded_frames(rows, o.longest_side)
      keyframe_seconds = seconds_per_keyframe(sorted({item.video for item in builder.items}))
    load_after = os.getloadavg()

  frames = clipbert_step.frames_per_step(config)
  loader = frames / statistics.median(times['loader'])
  whole = (times['whole_decode_frames'] / len(times['whole_decode'])
           / statistics.median(times['whole_decode']))
  step = ({'frames_per_second': args.step_frames_per_second, 'given': True}
          if args.step_frames_per_second else
          step_frames_per_second(config, 2, args.step_steps))
  delivered = sum(r[2].size for r in rows)
  result = {
      'benchmark': 'clipbert_loader',
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'preset': args.preset + (',runlocal' if args.runlocal else ''),
      'shapes': clipbert_step.shapes(config), 'frames_per_step': frames,
      'videos': args.videos or f'synth-videos x {args.num_videos} (128 px, 20 fps)',
      'items': args.items, 'num_items': num_items, 'workers': o.workers, 'pool': o.pool,
      'seconds_per_keyframe': round(keyframe_seconds, 2),
      'warmup': args.warmup, 'batches': args.batches, 'rounds': args.rounds,
      'device': step_timing.device_description(),
      'versions': {'jax': jax.__version__, 'av': __import__('av').__version__,
                   'python': platform.python_version()},
      'batch_seconds': {side: [round(t, 4) for t in times[side]]
                        for side in ('loader', 'whole_decode')},
      'frames_per_second': {
          'loader': round(loader, 1), 'whole_decode': round(whole, 1),
          'loader_tf_data': (round(frames / dataset_seconds, 1) if dataset_seconds else None),
          'step': round(step['frames_per_second'], 2)},
      'decoded_per_delivered_frame': {
          'loader': round(sparse_decoded / max(delivered, 1), 2),
          'whole_decode': round(times['whole_decoded_frames'] /
                                max(times['whole_decode_frames'], 1), 2)},
      'step': step,
      'ratio_loader_over_step': round(loader / step['frames_per_second'], 2),
      'ratio_loader_over_whole_decode': round(loader / whole, 2),
      'load_average_1min': [round(load_before[0], 2), round(load_after[0], 2)],
  }
  print(f'device: {result["device"]}')
  fps = result['frames_per_second']
  print(f'loader        {fps["loader"]:8.1f} frames/s (median '
        f'{statistics.median(times["loader"]):.3f} s a batch; '
        f'{result["decoded_per_delivered_frame"]["loader"]} decoded per frame)')
  if dataset_seconds:
    print(f'loader tf.data {fps["loader_tf_data"]:7.1f} frames/s ({dataset_seconds:.3f} s a batch)')
  print(f'whole decode  {fps["whole_decode"]:8.1f} frames/s (median '
        f'{statistics.median(times["whole_decode"]):.3f} s a batch; '
        f'{result["decoded_per_delivered_frame"]["whole_decode"]} decoded per frame; '
        f'{keyframe_seconds:.1f} s between keyframes)')
  print(f'train step    {fps["step"]:8.2f} frames/s'
        f'{" (given)" if step.get("given") else ""}')
  print(f'loader / step {result["ratio_loader_over_step"]}x (target >= 2); loader / whole decode '
        f'{result["ratio_loader_over_whole_decode"]}x (1-minute load average '
        f'{result["load_average_1min"][0]} -> {result["load_average_1min"][1]})')
  if args.jsonl:
    step_timing.append_jsonl(args.jsonl, result)


if __name__ == '__main__':
  main()
