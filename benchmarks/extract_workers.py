"""extract-features end to end with decoding threads against decoding in the main thread.

  python benchmarks/extract_workers.py --videos runs/demo/train_videos.txt [--workers 0,1]
      [--rounds 2] [-- --config.x=y ...]

Runs `vlm-jax extract-features` on the same videos once per `--workers` value
(`--config.decode_workers`; 0 = auto) per round, the order alternating between
rounds, each into a fresh output folder, with the demo's feature settings
(S3D, whole-map pooling, 112 px, 10 fps x 15 frames, batch 4; flags after
`--` override them). Prints one Markdown row per run: wall seconds, clips/s,
the main thread's wait for decoded clips and for the devices (from the
manifest), the ratio of clips/s to the `--workers` baseline (the last value,
1 by default) of the same round, and whether the features equal the
baseline's bit for bit.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_FEATURES = ['--config', os.path.join(REPO, 'configs', 'extract_features.py') + ':demo',
                 '--config.crop_size=112', '--config.pool=global', '--config.fps=10.0',
                 '--config.clip_frames=15', '--config.batch_size=4', '--config.dtype=float32']


def extract(videos: str, output: str, workers: int, extra: list[str]) -> tuple[float, dict]:
  command = [sys.executable, '-m', 'vlm_jax.cli', 'extract-features', '--videos', videos,
             '--output', output, *DEMO_FEATURES, f'--config.decode_workers={workers}', *extra]
  start = time.perf_counter()
  subprocess.run(command, check=True, capture_output=True, cwd=REPO)
  wall = time.perf_counter() - start
  with open(os.path.join(output, 'manifest.json'), encoding='utf-8') as f:
    return wall, json.load(f)


def same_features(a: str, b: str) -> bool:
  names = sorted(n for n in os.listdir(b) if n.endswith('.npy'))
  return names == sorted(n for n in os.listdir(a) if n.endswith('.npy')) and all(
      np.array_equal(np.load(os.path.join(a, n)), np.load(os.path.join(b, n))) for n in names)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--videos', required=True, help='A folder or list file of videos.')
  parser.add_argument('--workers', default='0,1',
                      help='decode_workers values; the last one is the baseline.')
  parser.add_argument('--rounds', type=int, default=2)
  args, extra = parser.parse_known_args()
  extra = [a for a in extra if a != '--']
  counts = [int(w) for w in args.workers.split(',')]
  print(f'{os.cpu_count()} CPUs; {args.videos}\n')
  print('| round | decode_workers (resolved) | wall s | clips | clips/s | waiting for clips s | '
        'waiting for devices s | vs decode_workers=' f'{counts[-1]} | same bits |')
  print('|---|---|---|---|---|---|---|---|---|')
  with tempfile.TemporaryDirectory() as tmp:
    for round_ in range(args.rounds):
      order = counts if round_ % 2 == 0 else counts[::-1]
      runs = {w: extract(args.videos, os.path.join(tmp, f'r{round_}_w{w}'), w, extra)
              for w in order}
      base = runs[counts[-1]][1]['timings']['clips_per_second']
      for w in counts:
        wall, m = runs[w]
        t = m['timings']
        same = same_features(os.path.join(tmp, f'r{round_}_w{w}'),
                             os.path.join(tmp, f'r{round_}_w{counts[-1]}'))
        print(f'| {round_ + 1} | {w} ({m["decode_workers"]}) | {wall:.1f} | '
              f'{m["counts"]["clips"]} | {t["clips_per_second"]:.2f} | {t["decode_seconds"]:.1f} | '
              f'{t["device_wait_seconds"]:.1f} | {t["clips_per_second"] / base:.2f}x | {same} |')


if __name__ == '__main__':
  main()
