"""Zero-shot action segmentation (COIN, VideoCLIP protocol): per-second labels.

Label 0 is background; label i >= 1 is the (i - 1)-th label text. Each second
gets the argmax label of its similarities to the label embeddings if that best
similarity is strictly above gamma, else background (MMPT's COINZSPredictor:
`logits_max > lbd`), with gamma = the largest similarity between two different
label embeddings. Frame accuracy is over every second of every video,
background seconds included, and is reported beside the all-background
baseline (which reportedly scores about as well on COIN).
"""

import math
from typing import Sequence

import numpy as np


def background_threshold(label_embeddings: np.ndarray) -> float:
  """gamma: the largest dot product between two different label embeddings.

  Args:
    label_embeddings: [num_labels, D], num_labels >= 2.
  """
  labels = np.asarray(label_embeddings, np.float64)
  if labels.shape[0] < 2:
    raise ValueError('gamma needs at least two labels')
  sim = labels @ labels.T
  np.fill_diagonal(sim, -np.inf)
  return float(sim.max())


def predict_seconds(states: np.ndarray, label_embeddings: np.ndarray,
                    gamma: float) -> np.ndarray:
  """Per-second predictions, 0 = background, i = label i - 1.

  Args:
    states: [T, D] per-second video states.
    label_embeddings: [num_labels, D].
    gamma: background threshold (`background_threshold`).

  Returns:
    [T] int64. A tie for the best label goes to the lower label index.
  """
  scores = np.asarray(states, np.float32) @ np.asarray(label_embeddings, np.float32).T
  best = scores.argmax(axis=1)
  return np.where(scores.max(axis=1) > gamma, best + 1, 0).astype(np.int64)


def seconds_labels(num_seconds: int, segments: Sequence[tuple[float, float, int]]) -> np.ndarray:
  """Ground truth per second from (start, end, label) segments, 0 elsewhere.

  Second t covers [t, t + 1); a segment labels seconds floor(start) to
  ceil(end) - 1 (the rule of CrossTask's `read_assignment` and MMPT's COIN
  targets), clipped to the video; a later segment overwrites an earlier one.

  Args:
    num_seconds: T.
    segments: (start seconds, end seconds, label >= 1).

  Returns:
    [T] int64.
  """
  out = np.zeros(num_seconds, np.int64)
  for start, end, label in segments:
    out[max(0, math.floor(start)):max(0, math.ceil(end))] = label
  return out


def frame_accuracy(predictions: Sequence[np.ndarray],
                   targets: Sequence[np.ndarray]) -> dict[str, float]:
  """Frame accuracy over all seconds of all videos, and the all-background one.

  Args:
    predictions: per video, [T_v] int labels.
    targets: per video, [T_v] int labels (0 = background).

  Returns:
    {'frame_accuracy', 'background_baseline_accuracy', 'seconds',
     'labelled_fraction_predicted'}.
  """
  pred = np.concatenate([np.asarray(p) for p in predictions]) if predictions else np.zeros(0)
  true = np.concatenate([np.asarray(t) for t in targets]) if targets else np.zeros(0)
  if pred.shape != true.shape:
    raise ValueError(f'{pred.shape[0]} predicted seconds but {true.shape[0]} targets')
  if not len(true):
    return dict(frame_accuracy=None, background_baseline_accuracy=None, seconds=0,
                labelled_fraction_predicted=None)
  return dict(frame_accuracy=float(np.mean(pred == true)),
              background_baseline_accuracy=float(np.mean(true == 0)),
              seconds=int(len(true)),
              labelled_fraction_predicted=float(np.mean(pred != 0)))
