"""Nearest-neighbour purity: do clips of one label sit near each other in feature space?"""

import numpy as np


def clip_purity(features: np.ndarray, labels: np.ndarray,
                groups: np.ndarray | None = None) -> float:
  """Leave-one-out 1-nearest-neighbour accuracy (Euclidean) of `labels` over `features`.

  Args:
    features: [N, D] with N >= 2.
    labels: [N] any comparable labels.
    groups: optional [N] group (e.g. video) ids; neighbours from a row's own group
      are excluded. Neighbouring clips of one video look alike whatever their
      labels mean, so only across-video purity says whether a label is visible.

  Chance is the sum of squared label frequencies (about 1 / classes when balanced).
  """
  x = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if len(x) < 2 or len(x) != len(labels):
    raise ValueError(f'need N >= 2 features with one label each, got {len(x)} and {len(labels)}')
  sq = (x * x).sum(1)
  dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
  np.fill_diagonal(dist, np.inf)
  if groups is not None:
    groups = np.asarray(groups)
    dist[groups[:, None] == groups[None, :]] = np.inf
    if np.isinf(dist).all(axis=1).any():
      raise ValueError('every row needs a neighbour outside its own group')
  return float(np.mean(labels[dist.argmin(1)] == labels))


def chance_purity(labels: np.ndarray) -> float:
  """Expected 1-NN purity of features unrelated to the labels."""
  _, counts = np.unique(np.asarray(labels), return_counts=True)
  p = counts / counts.sum()
  return float((p * p).sum())
