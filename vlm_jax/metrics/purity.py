"""Nearest-neighbour purity: do clips of one label sit near each other in feature space?"""

import numpy as np


def clip_purity(features: np.ndarray, labels: np.ndarray) -> float:
  """Leave-one-out 1-nearest-neighbour accuracy (Euclidean) of `labels` over `features`.

  Args:
    features: [N, D] with N >= 2.
    labels: [N] any comparable labels.

  Chance is the sum of squared label frequencies (about 1 / classes when balanced).
  """
  x = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if len(x) < 2 or len(x) != len(labels):
    raise ValueError(f'need N >= 2 features with one label each, got {len(x)} and {len(labels)}')
  sq = (x * x).sum(1)
  dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
  np.fill_diagonal(dist, np.inf)
  return float(np.mean(labels[dist.argmin(1)] == labels))


def chance_purity(labels: np.ndarray) -> float:
  """Expected 1-NN purity of features unrelated to the labels."""
  _, counts = np.unique(np.asarray(labels), return_counts=True)
  p = counts / counts.sum()
  return float((p * p).sum())
