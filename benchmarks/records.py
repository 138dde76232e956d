"""make-records' throughput against a bare TFRecordWriter of the same bytes (issue 19).

  python benchmarks/records.py [--videos 200] [--clips 160] [--dim 1024] [--repeats 2]

Inputs shaped like extract-features' output: per video `<id>.npy` [clips, dim]
float16 features of 1.5-s clips (a Gaussian mixture), `<id>.times.npy`, and
one HowTo100M-style captions JSON with a sentence every 4 s. VideoBERT's
records need a codebook: build-codebook's tree (4 levels x 12, its default
beam and refinement) fitted on 20,000 of the clips, not timed. Timed:
`make_records.run` end to end (reading the files, visual tokens by the tree
or per-second features, WordPieces, serialisation, writing 8 shards) for each
format, against writing the bytes it wrote (read back beforehand) with one
bare tf.io.TFRecordWriter per shard: the floor of the writing alone. Best of
`--repeats` runs each, alternating. Prints one Markdown table (videos/s,
clips/s, MB/s of records, and the bare writer's MB/s) and appends a JSON line
to --jsonl.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # as benchmarks/codebook.py: tiny products

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from configs import make_records as make_records_config  # pylint: disable=wrong-import-position
from vlm_jax.stages import make_records  # pylint: disable=wrong-import-position
from vlm_jax.videobert import codebook as codebook_lib  # pylint: disable=wrong-import-position

CLIP_SECONDS = 1.5
WORDS = ('now add the onion and stir it well then pour some water into the pan and let it '
         'simmer for a while before you season with salt and pepper').split()


def write_inputs(folder: str, videos: int, clips: int, dim: int, seed: int) -> tuple[str, str]:
  """(features folder, captions JSON) of `videos` synthetic videos."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 1, (256, dim)).astype(np.float32)
  features = os.path.join(folder, 'features')
  os.makedirs(features)
  captions = {}
  for v in range(videos):
    video_id = f'video{v:05d}'
    x = centres[rng.integers(0, len(centres), clips)] + rng.normal(0, 0.3, (clips, dim))
    np.save(os.path.join(features, f'{video_id}.npy'), x.astype(np.float16))
    starts = np.arange(clips) * CLIP_SECONDS
    np.save(os.path.join(features, f'{video_id}.times.npy'),
            np.stack([starts, starts + CLIP_SECONDS], axis=1))
    seconds = np.arange(0, clips * CLIP_SECONDS - 4, 4.0)
    captions[video_id] = {
        'start': seconds.tolist(), 'end': (seconds + 3.5).tolist(),
        'text': [' '.join(rng.choice(WORDS, 10)) for _ in seconds]}
  path = os.path.join(folder, 'captions.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(captions, f)
  return features, path


def bare_write(serialized: list[list[bytes]], output: str) -> float:
  """Seconds to write each shard's records with a plain TFRecordWriter."""
  shutil.rmtree(output, ignore_errors=True)
  os.makedirs(output)
  start = time.perf_counter()
  for i, shard in enumerate(serialized):
    with tf.io.TFRecordWriter(os.path.join(output, f'bare-{i:05d}.tfrecord')) as writer:
      for raw in shard:
        writer.write(raw)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--videos', type=int, default=200)
  parser.add_argument('--clips', type=int, default=160, help='Clips per video (1.5 s each).')
  parser.add_argument('--dim', type=int, default=1024)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--jsonl', default='runs/benchmarks/records.jsonl')
  args = parser.parse_args()

  work = tempfile.mkdtemp(prefix='vlm_jax_records_bench_')
  try:
    features, captions = write_inputs(work, args.videos, args.clips, args.dim, args.seed)
    sample = np.concatenate([np.load(os.path.join(features, n)).astype(np.float32)
                             for n in codebook_lib.list_features(features)])
    sample = sample[np.random.default_rng(args.seed).permutation(len(sample))[:20_000]]
    codebook = os.path.join(work, 'codebook.npz')
    codebook_lib.build(sample, levels=4, k=12, seed=args.seed, beam=4, refine_rounds=2).save(
        codebook)
    rows = []
    for system in ('videobert', 'videoclip'):
      config = make_records_config.get_config(system)
      config.num_shards = 8
      ours, bare, manifest = [], [], None
      for _ in range(args.repeats):
        output = os.path.join(work, f'records_{system}')
        shutil.rmtree(output, ignore_errors=True)
        start = time.perf_counter()
        manifest = make_records.run(features, codebook if system == 'videobert' else None,
                                    captions, output, config, progress=False)
        ours.append(time.perf_counter() - start)
        serialized = [[r.numpy() for r in tf.data.TFRecordDataset([p])]
                      for p in manifest['shards']]
        bare.append(bare_write(serialized, os.path.join(work, 'bare')))
      megabytes = sum(os.path.getsize(p) for p in manifest['shards']) / 1e6
      c = manifest['counts']
      rows.append(dict(system=system, videos=c['videos'], clips=c['clips'],
                       sentences=c['sentences'], megabytes=round(megabytes, 2),
                       seconds=round(min(ours), 3), bare_seconds=round(min(bare), 4),
                       videos_per_s=round(c['videos'] / min(ours), 2),
                       clips_per_s=round(c['clips'] / min(ours), 1),
                       mb_per_s=round(megabytes / min(ours), 2),
                       bare_mb_per_s=round(megabytes / min(bare), 1)))
  finally:
    shutil.rmtree(work, ignore_errors=True)

  print(f'{args.videos} videos x {args.clips} clips x {args.dim}-d, {platform.machine()}, '
        f'{os.cpu_count()} CPUs, {datetime.date.today()}\n')
  print('| format | videos/s | clips/s | MB/s of records | record MB | bare writer MB/s |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["system"]} | {r["videos_per_s"]} | {r["clips_per_s"]} | {r["mb_per_s"]} | '
          f'{r["megabytes"]} | {r["bare_mb_per_s"]} |')
  os.makedirs(os.path.dirname(args.jsonl) or '.', exist_ok=True)
  with open(args.jsonl, 'a', encoding='utf-8') as f:
    f.write(json.dumps(dict(args=vars(args), date=str(datetime.date.today()),
                            machine=platform.machine(), rows=rows)) + '\n')


if __name__ == '__main__':
  main()
