"""The synth-videos job: a rendered synthetic cooking corpus, real MP4 + WebVTT files.

Used by `vlm-jax synth-videos` and the demo; see that command for the layout.
"""

import dataclasses
import json
import os

import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import synthetic_videos

# In the manifest: a corpus rendered by another version is not resumed.
VERSION = 3


def specs(num_videos: int, num_test: int, seed: int, verbs, nouns, num_dev: int = 0,
          successor_prob: float = 0.0):
  """The training videos' specs, then the test and dev videos' (seeds far apart: new instances).

  successor_prob: synthetic_videos.make_spec's order of steps (0: none).
  """
  out = []
  for split, count, offset in (('train', num_videos, 0), ('test', num_test, 1_000_000),
                               ('dev', num_dev, 2_000_000)):
    for i in range(count):
      out.append(synthetic_videos.make_spec(f'{split}_{i:04d}', split,
                                            seed * 10_000_019 + offset + i, verbs, nouns,
                                            successor_prob=successor_prob))
  return out


def run(output: str, num_videos: int = 72, num_test: int = 66, seed: int = 0,
        num_verbs: int = 6, num_nouns: int = 6, num_dev: int = 32,
        successor_prob: float = 0.0) -> dict:
  """Renders what is missing under `output`; returns the manifest."""
  verbs, nouns = synthetic_videos.vocabularies(num_verbs, num_nouns)
  parameters = dict(version=VERSION, num_videos=num_videos, num_dev=num_dev,
                    num_test=num_test, seed=seed,
                    verbs=verbs, nouns=nouns, fps=synthetic_videos.FPS,
                    size=synthetic_videos.SIZE)
  if successor_prob:  # absent when 0, so corpora rendered before it existed still resume
    parameters['successor_prob'] = successor_prob
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
  files_lib.write_json(manifest_path, {'parameters': parameters, 'complete': False})

  all_specs = specs(num_videos, num_test, seed, verbs, nouns, num_dev, successor_prob)
  rendered = skipped = 0
  for spec in tqdm.tqdm(all_specs, desc='synth-videos', unit='video'):
    video = os.path.join(output, 'videos', spec.video_id + '.mp4')
    if os.path.exists(video):
      skipped += 1
    else:
      with files_lib.atomic_path(video) as tmp:
        synthetic_videos.write_mp4(spec, tmp)
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
              'counts': {'train': num_videos, 'dev': num_dev, 'test': num_test,
                         'rendered': rendered,
                         'already_there': skipped,
                         'steps': sum(len(s.steps) for s in all_specs)},
              'files': ['videos/', 'transcripts/', 'steps.jsonl', 'verbs.txt', 'nouns.txt']}
  files_lib.write_json(manifest_path, manifest)
  return manifest
