"""Top-k accuracy of scored classes."""

import numpy as np


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """[N] whether each row's label is among the k highest scores (ties: see topk_accuracy)."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.ndim != 2 or labels.shape != scores.shape[:1]:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} do not match')
  if len(labels) == 0:
    raise ValueError('no rows to score')
  label_scores = scores[np.arange(len(labels)), labels][:, None]
  at_least = (scores >= label_scores).sum(axis=1)  # includes the label itself
  return at_least <= k


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Fraction of rows whose label is among the k highest scores.

  Args:
    scores: [N, C] higher is better.
    labels: [N] class indices in [0, C).
    k: 1 <= k; k >= C counts every row as correct.

  Ties are broken against the label: a row is correct only when fewer than k
  classes score strictly higher and, among those tied with the label, the label
  still fits in the k slots counting the tied ones first. So a constant score
  (e.g. a model that ignores its input) gets top-k = 0 unless k >= C.
  """
  return float(np.mean(topk_correct(scores, labels, k)))


def chance(num_classes: int, k: int) -> float:
  """Top-k accuracy of a uniformly random ranking."""
  return min(1.0, k / num_classes)
