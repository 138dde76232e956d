"""The build-codebook job: VideoBERT's visual-token codebook over a folder of clip features.

Used by `vlm-jax build-codebook` and the demo; see that command for the options.
"""

import os
from typing import Any, Optional

import numpy as np
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import storage
from vlm_jax.videobert import codebook as codebook_lib


def manifest_path(output: str) -> str:
  return f'{output}.manifest.json'


def centroids_path(output: str) -> str:
  """Where the leaf centroids go: codebook.npz -> codebook.centroids.npy."""
  return f'{os.path.splitext(output)[0]}.centroids.npy'


def write_centroids(codebook: codebook_lib.Codebook, path: str) -> None:
  """The [K, D] leaf centroids in the features' own space, row i = visual token i.

  What `model.visual_init` reads (the paper's visual-token table: each token's
  centroid S3D feature). A codebook fitted on standardised features is mapped
  back to the features' scale.
  """
  centroids = codebook.leaf_centroids
  if 'feature_mean' in codebook.extras:
    centroids = centroids * codebook.extras['feature_scale'] + codebook.extras['feature_mean']
  files_lib.save_npy(path, centroids.astype(np.float32))


def describe_inputs(folder: str, names: list[str]) -> list[list[Any]]:
  """[name, size, mtime_ns] per file: what a re-run compares to skip."""
  out = []
  for name in names:
    out.append([name, *storage.size_and_mtime(os.path.join(folder, name))])
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
  if storage.exists(output) and storage.exists(manifest_path(output)):
    previous = files_lib.read_json(manifest_path(output))
    if previous.get('inputs') == inputs and previous.get('parameters') == parameters:
      if not storage.exists(centroids_path(output)):
        write_centroids(codebook_lib.Codebook.load(output), centroids_path(output))
      return dict(previous, skipped=True)

  # Pass 1: every file's header (shape, type, size), so the sample is drawn
  # over the usable clips. Pass 2 reads the sampled rows alone: at corpus
  # scale most files hold none of them and are never read.
  good, failures, dim = [], [], None
  for name in tqdm.tqdm(names, desc='build-codebook: check', unit='video'):
    try:
      rows, dim = codebook_lib.feature_shape(os.path.join(features, name), dim)
    except ValueError as e:
      failures.append({'file': name, 'error': str(e)})
      continue
    good.append((name, rows))
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
  keep = np.ones(len(chosen), bool)
  bounds = np.searchsorted(chosen, offsets)
  read, non_finite = 0, 0
  for i, (name, _) in enumerate(tqdm.tqdm(good, desc='build-codebook: read', unit='video')):
    lo, hi = bounds[i], bounds[i + 1]
    if hi == lo:
      continue
    sample[lo:hi] = storage.read_npy_rows(os.path.join(features, name), chosen[lo:hi] - offsets[i])
    read += 1
    if not np.isfinite(sample[lo:hi]).all():
      # Its clips leave the sample rather than the tree fitting NaNs.
      failures.append({'file': name, 'error': 'non-finite values'})
      keep[lo:hi] = False
      non_finite += 1
  if not keep.all():
    sample, chosen = sample[keep], chosen[keep]

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
  write_centroids(codebook, centroids_path(output))

  manifest = dict(
      features=storage.absolute(features), output=storage.absolute(output),
      centroids=storage.absolute(centroids_path(output)),
      parameters=parameters, inputs=inputs,
      counts=dict(files=len(names), videos=len(good) - non_finite, failed=len(failures),
                  clips=total, sampled=len(chosen), files_read=read, dim=dim, leaves=codebook.num_leaves,
                  leaves_reached=int(reached.sum())),
      failures=failures)
  files_lib.write_json(manifest_path(output), manifest, indent=1)
  return dict(manifest, skipped=False)
