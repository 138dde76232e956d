"""vlm-jax build-codebook: VideoBERT's visual-token codebook (hierarchical k-means).

  vlm-jax build-codebook --features DIR --output codebook.npz \\
      [--levels 4] [--k 12] [--sample_size 200000] [--seed 0] [--niter 20] \\
      [--beam 4] [--refine_rounds 2] [--standardize]

Reads every `<video_id>.npy` in DIR ([num_clips, D] float16 or float32 clip
features, e.g. S3D), clusters a seeded uniform sample of the clips into
k**levels leaves and writes the codebook .npz (`leaf_centroids` [k**levels, D]
is the visual-token table; see vlm_jax.videobert.codebook) with, for each leaf, the
training clip nearest its centroid as `nearest_video_id` / `nearest_clip_index`
('' / -1 for a leaf no clip reaches). `--beam 4 --refine_rounds 2` (the
defaults) descend with a beam of 4 and refine the fitted tree twice: at 200k x
1024, 4 x 12, that brings the quantisation error from +33% to +14% of a flat
k-means with as many centroids (benchmarks/RESULTS.md); `--beam 1
--refine_rounds 0` is the plain greedy tree. A file that cannot be read, is not 2-D, is
not finite or has another D (the first good file's) is reported and skipped.
`<output>.manifest.json` lists inputs, parameters, counts and failures; a re-run
with the same inputs and parameters finds it and does nothing.
"""

import json
import os
from typing import Any, Optional

import numpy as np
import tqdm
from absl import flags

from vlm_jax.videobert import codebook as codebook_lib

# allow_override: build-codebook, assign-tokens and encode-text share flag
# names, and tests import them into one process (the CLI imports only one).
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features.',
                                allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output codebook .npz path.',
                              allow_override=True)
_LEVELS = flags.DEFINE_integer('levels', 4, 'Tree depth (VideoBERT: 4).')
_K = flags.DEFINE_integer('k', 12, 'Branching factor (VideoBERT: 12).')
_SAMPLE_SIZE = flags.DEFINE_integer(
    'sample_size', 200_000, 'Cluster at most this many clips (seeded uniform sample); 0: all.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the sample and the k-means.')
_NITER = flags.DEFINE_integer('niter', 20, 'k-means iterations per tree node.')
_BEAM = flags.DEFINE_integer('beam', 4, 'Nodes kept per level when descending the tree '
                             '(saved with the codebook); 1: greedy descent.')
_REFINE_ROUNDS = flags.DEFINE_integer(
    'refine_rounds', 2, 'Lloyd rounds over the whole fitted tree (each centroid becomes the '
    'mean of the points that descend under it).')
_STANDARDIZE = flags.DEFINE_bool(
    'standardize', False, 'Cluster per-dimension standardised features (the mean and scale '
    'are saved with the codebook and applied by every assignment). Off: the paper clusters '
    'S3D features as they are.')
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['features', 'output']


def manifest_path(output: str) -> str:
  return f'{output}.manifest.json'


def describe_inputs(folder: str, names: list[str]) -> list[list[Any]]:
  """[name, size, mtime_ns] per file: what a re-run compares to skip."""
  out = []
  for name in names:
    st = os.stat(os.path.join(folder, name))
    out.append([name, st.st_size, st.st_mtime_ns])
  return out


def run(features: str, output: str, levels: int = 4, k: int = 12,
        sample_size: Optional[int] = 200_000, seed: int = 0,
        niter: int = 20, standardize: bool = False, beam: int = 4,
        refine_rounds: int = 2) -> dict[str, Any]:
  """Builds and saves the codebook; returns the manifest (also written).

  If `output` exists and its manifest records the same inputs and parameters,
  nothing is done and that manifest is returned with `skipped: True`.
  """
  names = codebook_lib.list_features(features)
  parameters = dict(levels=levels, k=k, sample_size=sample_size or None, seed=seed,
                    niter=niter, standardize=standardize, beam=beam,
                    refine_rounds=refine_rounds)
  inputs = describe_inputs(features, names)
  if os.path.exists(output) and os.path.exists(manifest_path(output)):
    with open(manifest_path(output), encoding='utf-8') as f:
      previous = json.load(f)
    if previous.get('inputs') == inputs and previous.get('parameters') == parameters:
      return dict(previous, skipped=True)

  # Pass 1: validate every file (memory-mapped), so the sample is drawn over
  # the good clips only and no file is read whole twice into memory.
  good, failures, dim = [], [], None
  for name in tqdm.tqdm(names, desc='build-codebook: check', unit='video'):
    try:
      array = codebook_lib.load_features(os.path.join(features, name), dim)
    except ValueError as e:
      failures.append({'file': name, 'error': str(e)})
      continue
    dim = array.shape[1]
    good.append((name, array.shape[0]))
  if not good:
    raise ValueError(f'{features}: no usable .npy feature files ({len(failures)} failed)')
  counts = np.array([n for _, n in good], np.int64)
  offsets = np.concatenate([[0], np.cumsum(counts)])
  total = int(offsets[-1])

  # Pass 2: gather the sampled clips; global clip index = offset + row.
  if sample_size and sample_size < total:
    chosen = np.sort(np.random.default_rng(seed).choice(total, sample_size, replace=False))
  else:
    chosen = np.arange(total)
  sample = np.empty((len(chosen), dim), np.float32)
  bounds = np.searchsorted(chosen, offsets)
  for i, (name, _) in enumerate(tqdm.tqdm(good, desc='build-codebook: read', unit='video')):
    lo, hi = bounds[i], bounds[i + 1]
    if hi > lo:
      array = np.load(os.path.join(features, name), mmap_mode='r')
      sample[lo:hi] = array[chosen[lo:hi] - offsets[i]]

  extras = {}
  if standardize:
    # A dimension that never varies keeps its scale of 1 rather than blowing up.
    std = sample.std(axis=0)
    extras = {'feature_mean': sample.mean(axis=0),
              'feature_scale': np.where(std > 1e-6, std, 1.0).astype(np.float32)}
    sample = (sample - extras['feature_mean']) / extras['feature_scale']
  codebook = codebook_lib.build(sample, levels=levels, k=k, seed=seed, niter=niter,
                                clip_ids=chosen, beam=beam, refine_rounds=refine_rounds)
  codebook.extras.update(extras)
  video_ids = np.array([os.path.splitext(n)[0] for n, _ in good])
  reached = codebook.nearest_clip >= 0
  video = np.searchsorted(offsets, codebook.nearest_clip, side='right') - 1
  codebook.extras['nearest_video_id'] = np.where(reached, video_ids[np.clip(video, 0, None)], '')
  codebook.extras['nearest_clip_index'] = np.where(
      reached, codebook.nearest_clip - offsets[np.clip(video, 0, None)], -1).astype(np.int64)
  codebook.save(output)

  manifest = dict(
      features=os.path.abspath(features), output=os.path.abspath(output),
      parameters=parameters, inputs=inputs,
      counts=dict(files=len(names), videos=len(good), failed=len(failures), clips=total,
                  sampled=len(chosen), dim=dim, leaves=codebook.num_leaves,
                  leaves_reached=int(reached.sum())),
      failures=failures)
  tmp = manifest_path(output) + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, manifest_path(output))
  return dict(manifest, skipped=False)


def main(argv):
  del argv
  try:
    manifest = run(_FEATURES.value, _OUTPUT.value, _LEVELS.value, _K.value,
                   _SAMPLE_SIZE.value, _SEED.value, _NITER.value, _STANDARDIZE.value,
                   _BEAM.value, _REFINE_ROUNDS.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax build-codebook: {e}') from e
  c = manifest['counts']
  if manifest['skipped']:
    print(f'{_OUTPUT.value} is up to date (same inputs and parameters); nothing to do')
    return
  print(f'wrote {_OUTPUT.value}: {c["leaves"]} leaves ({c["leaves_reached"]} reached) from '
        f'{c["sampled"]} of {c["clips"]} clips in {c["videos"]} videos, D = {c["dim"]}; '
        f'{c["failed"]} files failed (see {manifest_path(_OUTPUT.value)})')
