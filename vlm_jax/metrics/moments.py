"""DiDeMo moment ranking: the 21 candidate moments and the official metrics.

A DiDeMo video is cut into six 5-second chunks (0..5); a moment (s, e) is the
chunks s..e inclusive, so there are 6 + 15 = 21 contiguous candidates, in the
official order: (0,0) .. (5,5), then itertools.combinations(range(6), 2)
(LocalizingMoments data_processing.py; MMPT's DiDeMoPredictor).

Official metrics (LisaAnne/LocalizingMoments utils/eval.py `eval_predictions`),
per query with the annotators' moments `times` (usually 4):
  * rank of each annotator moment = its 1-based position in the predicted list;
    the query's rank = the mean of its 3 best (smallest) such ranks, i.e. the
    "best 3 of 4" consensus that discards the outlying annotator;
  * rank@1 / rank@5 = fraction of queries whose averaged rank is <= 1 / <= 5
    (rank@1 needs three annotator moments equal to the top prediction);
  * IoU of the top prediction with each annotator moment, in chunk units with
    inclusive ends: (min(e) + 1 - max(s)) / (max(e) + 1 - min(s)), floored at 0;
    mIoU = mean over queries of the mean of the 3 largest IoUs.
With fewer than 3 annotations all of them are used (numpy slicing).
"""

import itertools
from typing import Sequence

import numpy as np

CHUNK_SECONDS = 5
NUM_CHUNKS = 6
CANDIDATES: tuple[tuple[int, int], ...] = tuple(
    [(i, i) for i in range(NUM_CHUNKS)] + list(itertools.combinations(range(NUM_CHUNKS), 2)))


def moment_embeddings(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean per-second state of each candidate moment.

  Moment (s, e) covers seconds [5 s, 5 (e + 1)); only the seconds the video has
  are averaged. A moment past the end of a short video has no seconds and is
  not a candidate (MMPT drops moments with no valid second).

  Args:
    states: [T, D] per-second video states.

  Returns:
    [21, D] float32 moment vectors (zeros where invalid) and [21] bool valid.
  """
  states = np.asarray(states, np.float32)
  out = np.zeros((len(CANDIDATES), states.shape[1]), np.float32)
  valid = np.zeros(len(CANDIDATES), bool)
  for i, (s, e) in enumerate(CANDIDATES):
    window = states[s * CHUNK_SECONDS:(e + 1) * CHUNK_SECONDS]
    if len(window):
      out[i] = window.mean(axis=0)
      valid[i] = True
  return out, valid


def rank_moments(scores: np.ndarray, valid: np.ndarray) -> list[tuple[int, int]]:
  """Valid candidates by descending score; ties keep the official candidate order."""
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  return [CANDIDATES[i] for i in order if valid[i]]


def iou(pred: Sequence[int], gt: Sequence[int]) -> float:
  """Chunk IoU with inclusive ends (LocalizingMoments)."""
  intersection = max(0, min(pred[1], gt[1]) + 1 - max(pred[0], gt[0]))
  union = max(pred[1], gt[1]) + 1 - min(pred[0], gt[0])
  return intersection / union


def query_scores(ranking: Sequence[tuple[int, int]],
                 times: Sequence[Sequence[int]]) -> tuple[float, float]:
  """(averaged rank, averaged IoU) of one query; see the module docstring.

  An annotator moment missing from `ranking` (it lies past the end of the
  video's features) gets rank len(ranking) + 1; the official code would fail.
  """
  position = {tuple(m): i + 1 for i, m in enumerate(ranking)}
  ranks = [position.get(tuple(t), len(ranking) + 1) for t in times]
  ious = [iou(ranking[0], t) for t in times] if ranking else [0.0] * len(times)
  return float(np.mean(np.sort(ranks)[:3])), float(np.mean(np.sort(ious)[-3:]))


def didemo_metrics(average_ranks: Sequence[float],
                   average_ious: Sequence[float]) -> dict[str, float]:
  """{'rank@1', 'rank@5', 'mIoU', 'count'} (fractions) from `query_scores` outputs."""
  ranks = np.asarray(average_ranks, np.float64)
  if not len(ranks):
    return {'rank@1': None, 'rank@5': None, 'mIoU': None, 'count': 0}
  return {'rank@1': float(np.mean(ranks <= 1)), 'rank@5': float(np.mean(ranks <= 5)),
          'mIoU': float(np.mean(average_ious)), 'count': int(len(ranks))}
