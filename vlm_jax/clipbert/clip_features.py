"""Precomputed clip features in place of decoded frames: ClipBERT's frozen-features baseline.

ClipBERT's argument is against models that read dense features extracted once
by a frozen network. To measure that argument on the same data, a ClipBERT run
with data.feature_dir reads such features instead of pixels: extract-features'
outputs, per video `<id>.npy` [T, D] and `<id>.times.npy` [T, 2] (each clip's
start and end seconds), found by the video's file stem anywhere under the
folder. A sampled frame at time t becomes the row of the clip whose centre is
nearest t, a one-cell frame [1, 1, D]. The sparse sampler, consensus, joint
BERT and heads are unchanged, so the baseline differs from ClipBERT only in
what a frame is (model.feature_dim; vlm_jax.clipbert.model).
"""

import os
from typing import Optional

import numpy as np

from vlm_jax.data import feature_stats
from vlm_jax.data import files as files_lib
from vlm_jax.data.files import DataError


def index_folder(folder: str) -> dict[str, str]:
  """{video id (file stem): path of its features .npy} under `folder`, any depth."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'config.data.feature_dir: no such folder {folder!r}')
  found = {}
  for root, _, names in os.walk(folder):
    for name in sorted(names):
      if name.endswith('.npy') and not name.endswith(files_lib.TIMES_SUFFIX):
        found.setdefault(name[:-len('.npy')], os.path.join(root, name))
  return found


class FeatureFrames:
  """The feature rows of a folder's videos at sampled times (the module docstring).

  Files are read once and kept; safe to call from the batch builder's threads
  (a race reads a file twice, to the same arrays).
  """

  def __init__(self, folder: str, feature_dim: int,
               stats: Optional[feature_stats.Stats] = None):
    self.folder, self.feature_dim, self.stats = folder, feature_dim, stats
    self._paths = index_folder(folder)
    self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def path(self, video: str) -> Optional[str]:
    """The features file of a video path (by its stem), or None."""
    return self._paths.get(os.path.splitext(os.path.basename(video))[0])

  def raw(self, video: str) -> tuple[np.ndarray, np.ndarray]:
    """([T, D] float32 features as stored, [T] clip centres in seconds) of a video.

    Raises:
      DataError: no features file, no times file, or a shape that does not
        fit (named).
    """
    path = self.path(video)
    if path is None:
      raise DataError(f'{video}: no features under {self.folder} (looked for '
                      f'{os.path.splitext(os.path.basename(video))[0]}.npy)')
    if path not in self._cache:
      times_path = path[:-len('.npy')] + files_lib.TIMES_SUFFIX
      try:
        features = np.load(path).astype(np.float32)
        times = np.load(times_path).astype(np.float64)
      except (OSError, ValueError) as e:
        raise DataError(f'{path}: unreadable features ({e})') from e
      if features.ndim != 2 or features.shape[1] != self.feature_dim:
        raise DataError(f'{path}: features of shape {features.shape}, expected '
                        f'[clips, {self.feature_dim}] (config.model.feature_dim)')
      if times.shape != (len(features), 2):
        raise DataError(f'{times_path}: times of shape {times.shape}, expected '
                        f'[{len(features)}, 2] (start, end) for {path}')
      if not len(features):
        raise DataError(f'{path}: no clips')
      self._cache[path] = (features, times.mean(axis=1))
    return self._cache[path]

  def at(self, video: str, times: np.ndarray) -> np.ndarray:
    """times [...] seconds -> [..., 1, 1, D] float32 rows (standardised with `stats`)."""
    features, centres = self.raw(video)
    rows = np.abs(np.asarray(times, np.float64)[..., None] - centres).argmin(axis=-1)
    picked = features[rows]
    if self.stats is not None:
      picked = self.stats.apply(picked)
    return picked[..., None, None, :]

  def at_or_error(self, video: str, times: np.ndarray, _longest_side: int = 0
                  ) -> tuple[Optional[np.ndarray], Optional[str], int]:
    """`at` with `frames.decode_or_error`'s answer: (rows or None, error or None, 0)."""
    try:
      return self.at(video, times), None, 0
    except DataError as e:
      return None, str(e), 0

  def corpus_stats(self, videos) -> feature_stats.Stats:
    """Per-dimension statistics over every row of `videos`' features (the training set's).

    A video without usable features is left out here (its rows are skipped and
    reported by the batches); none at all is a DataError.
    """
    rows, first_error = [], None
    for video in sorted(set(videos)):
      try:
        rows.append(self.raw(video)[0])
      except DataError as e:
        first_error = first_error or str(e)
    if not rows:
      raise DataError(f'{self.folder}: no usable features of any training video (the first: '
                      f'{first_error})')
    return feature_stats.corpus_stats(rows)
