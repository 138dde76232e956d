"""vlm-jax synth-videos: a rendered synthetic cooking corpus, real MP4 + WebVTT files.

  vlm-jax synth-videos --output DIR [--num_videos 72] [--num_test 16] [--seed 0] \\
      [--num_verbs 6] [--num_nouns 6]

Writes DIR/videos/<video_id>.mp4 (H.264, 128 x 128, 20 fps), DIR/transcripts/
<video_id>.vtt (one narration cue per step), DIR/steps.jsonl (per video: split,
duration and its steps with start, end, verb, noun, sentence), DIR/verbs.txt,
DIR/nouns.txt and DIR/manifest.json. Test videos (`test_*`) are new instances
of the same verbs and nouns. Deterministic by seed; a re-run finishes what is
missing and refuses a folder made with other parameters.
"""

import dataclasses
import json
import os

import tqdm
from absl import flags

from vlm_jax.data import synthetic_videos

VERSION = 2

_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.', allow_override=True)
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 72, 'Training videos.')
_NUM_TEST = flags.DEFINE_integer('num_test', 16, 'Held-out test videos.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds every video.', allow_override=True)
_NUM_VERBS = flags.DEFINE_integer('num_verbs', 6, 'Verbs used (at most 8).')
_NUM_NOUNS = flags.DEFINE_integer('num_nouns', 6, 'Nouns used (at most 8).')
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['output']


def specs(num_videos: int, num_test: int, seed: int, verbs, nouns):
  out = []
  for split, count, offset in (('train', num_videos, 0), ('test', num_test, 1_000_000)):
    for i in range(count):
      out.append(synthetic_videos.make_spec(f'{split}_{i:04d}', split,
                                            seed * 10_000_019 + offset + i, verbs, nouns))
  return out


def run(output: str, num_videos: int = 72, num_test: int = 16, seed: int = 0,
        num_verbs: int = 6, num_nouns: int = 6) -> dict:
  """Renders what is missing under `output`; returns the manifest."""
  verbs, nouns = synthetic_videos.vocabularies(num_verbs, num_nouns)
  parameters = dict(version=VERSION, num_videos=num_videos, num_test=num_test, seed=seed,
                    verbs=verbs, nouns=nouns, fps=synthetic_videos.FPS,
                    size=synthetic_videos.SIZE)
  manifest_path = os.path.join(output, 'manifest.json')
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      previous = json.load(f)['parameters']
    changed = [k for k in parameters if previous.get(k) != parameters[k]]
    if changed:
      raise ValueError(f'{output} holds a corpus made with other parameters ({changed[0]}: '
                       f'{previous.get(changed[0])!r} there, {parameters[changed[0]]!r} now); '
                       'use another --output')
  for sub in ('videos', 'transcripts'):
    os.makedirs(os.path.join(output, sub), exist_ok=True)
  with open(manifest_path, 'w') as f:
    json.dump({'parameters': parameters, 'complete': False}, f, indent=2)

  all_specs = specs(num_videos, num_test, seed, verbs, nouns)
  rendered = skipped = 0
  for spec in tqdm.tqdm(all_specs, desc='synth-videos', unit='video'):
    video = os.path.join(output, 'videos', spec.video_id + '.mp4')
    if os.path.exists(video):
      skipped += 1
    else:
      tmp = video + '.tmp.mp4'
      synthetic_videos.write_mp4(spec, tmp)
      os.replace(tmp, video)
      rendered += 1
    with open(os.path.join(output, 'transcripts', spec.video_id + '.vtt'), 'w') as f:
      f.write(synthetic_videos.vtt(spec))

  with open(os.path.join(output, 'steps.jsonl'), 'w') as f:
    for spec in all_specs:
      f.write(json.dumps({'video_id': spec.video_id, 'split': spec.split,
                          'duration': spec.duration,
                          'steps': [dataclasses.asdict(s) for s in spec.steps]}) + '\n')
  for name, words in (('verbs.txt', verbs), ('nouns.txt', nouns)):
    with open(os.path.join(output, name), 'w') as f:
      f.write('\n'.join(words) + '\n')
  manifest = {'parameters': parameters, 'complete': True,
              'counts': {'train': num_videos, 'test': num_test, 'rendered': rendered,
                         'already_there': skipped,
                         'steps': sum(len(s.steps) for s in all_specs)},
              'files': ['videos/', 'transcripts/', 'steps.jsonl', 'verbs.txt', 'nouns.txt']}
  with open(manifest_path, 'w') as f:
    json.dump(manifest, f, indent=2)
  return manifest


def main(argv):
  del argv
  try:
    manifest = run(_OUTPUT.value, _NUM_VIDEOS.value, _NUM_TEST.value, _SEED.value,
                   _NUM_VERBS.value, _NUM_NOUNS.value)
  except ValueError as e:
    raise SystemExit(f'vlm-jax synth-videos: {e}') from e
  print(f'{manifest["counts"]["rendered"]} videos rendered, '
        f'{manifest["counts"]["already_there"]} already there: {_OUTPUT.value}')
