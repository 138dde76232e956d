"""Zero-shot step localization (CrossTask protocol): ordered DP decode and recall.

Follows CrossTask's official evaluation (DmZhukov/CrossTask, train.py `eval`,
`get_recalls`, dp.pyx with exactly_one=True, data.py `read_assignment`):
  * scores [T, K] = per-second states @ step embeddings, log-softmax over the
    K steps of the task, cost = -log-probability;
  * the decode assigns every step k of the task's ordered list to exactly one
    second t_k with t_1 < t_2 < ... < t_K (every other second is background at
    zero cost) minimising the summed cost: `ordered_assignment`;
  * ground truth Y [T, K]: step s annotated (start, end) marks seconds
    floor(start) .. ceil(end) - 1;
  * per task, recall = sum over its videos of #(steps whose predicted second is
    marked for that step) / sum of #(steps with any marked second); the
    reported number is the mean over tasks.
"""

from typing import Sequence

import numpy as np


def log_softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
  """Numerically stable log-softmax."""
  scores = np.asarray(scores, np.float64)
  shifted = scores - scores.max(axis=axis, keepdims=True)
  return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def ordered_assignment(cost: np.ndarray) -> np.ndarray:
  """Strictly increasing seconds t_0 < ... < t_{K-1} minimising sum_k cost[t_k, k].

  Dynamic programming in O(T K): best[k][t] = cost of placing steps 0..k with
  step k exactly at second t = cost[t, k] + min over t' < t of best[k-1][t'];
  the inner min is a running prefix minimum. Among equal-cost solutions the one
  whose steps lie earliest (first minimum, back to front) is returned.

  Args:
    cost: [T, K] with T >= K.

  Returns:
    [K] int64 seconds, one per step, increasing.
  """
  cost = np.asarray(cost, np.float64)
  t_len, k_len = cost.shape
  if k_len == 0:
    return np.zeros(0, np.int64)
  if t_len < k_len:
    raise ValueError(f'{k_len} steps cannot take distinct seconds of a {t_len}-second video')
  # prefix_arg[k][t]: the second of step k in the best placement of steps
  # 0..k within seconds 0..t.
  prefix_arg = np.zeros((k_len, t_len), np.int64)
  best = cost[:, 0].copy()
  for k in range(k_len):
    if k > 0:
      # Step k at t needs steps 0..k-1 within 0..t-1.
      previous = np.full(t_len, np.inf)
      previous[1:] = prefix_min[:-1]
      best = cost[:, k] + previous
    # Running minimum and where it was first reached.
    prefix_min = np.minimum.accumulate(best)
    changed = np.concatenate([[True], prefix_min[1:] < prefix_min[:-1]])
    prefix_arg[k] = np.maximum.accumulate(np.where(changed, np.arange(t_len), 0))
  out = np.zeros(k_len, np.int64)
  limit = t_len - 1
  for k in range(k_len - 1, -1, -1):
    out[k] = prefix_arg[k][limit]
    limit = out[k] - 1
  return out


def assignment_matrix(seconds: np.ndarray, num_seconds: int) -> np.ndarray:
  """Y_pred [T, K] uint8 with a 1 at (seconds[k], k)."""
  out = np.zeros((num_seconds, len(seconds)), np.uint8)
  out[np.asarray(seconds, np.int64), np.arange(len(seconds))] = 1
  return out


def ground_truth_matrix(num_seconds: int, num_steps: int,
                        segments: Sequence[tuple[int, float, float]]) -> np.ndarray:
  """Y_true [T, K] uint8 from (step 1-based, start s, end s) rows (read_assignment).

  Step s marks seconds floor(start) .. ceil(end) - 1, clipped to the video.
  """
  out = np.zeros((num_seconds, num_steps), np.uint8)
  for step, start, end in segments:
    if not 1 <= step <= num_steps:
      raise ValueError(f'step {step} outside 1..{num_steps}')
    out[max(0, int(np.floor(start))):max(0, int(np.ceil(end))), step - 1] = 1
  return out


def video_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int]:
  """(matched steps, annotated steps) of one video, as in `get_recalls`."""
  return int(np.sum(y_true * y_pred)), int(np.sum(y_true.sum(axis=0) > 0))


def task_recalls(counts: dict[str, list[tuple[int, int]]]) -> dict[str, float]:
  """{task: sum matched / sum annotated} over its videos (tasks with any step)."""
  out = {}
  for task, pairs in counts.items():
    total = sum(n for _, n in pairs)
    if total:
      out[task] = sum(m for m, _ in pairs) / total
  return out
