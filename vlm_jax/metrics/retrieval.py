"""Ranking metrics for zero-shot text-to-video retrieval and multiple-choice QA.

Conventions (VideoCLIP / CLIP4Clip / MMPT):
  * Ranks are 1-based: rank 1 = the ground-truth video scored highest.
  * R@k = fraction of queries with rank <= k (a fraction in [0, 1], not %).
  * Median rank = numpy.median of the 1-based ranks, i.e. MMPT's
    `np.median(ranks_0_based) + 1`; with an even count it is the mean of the
    two middle ranks (7.5 on the oracle's 12 ranks; the googleinterns source
    reports the upper median, 8: `median_rank(..., convention='upper')`).
  * Mean rank = arithmetic mean of the 1-based ranks.
  * Ties (a distractor scoring exactly the ground truth's score) are
    pessimistic by default: rank = 1 + #(scores > gt) + #(other scores == gt).
    A collapsed model that gives every video the same score therefore ranks
    last instead of first. 'optimistic' drops the second count; 'mean' is the
    average of the two (a fractional rank, the expected rank under a random
    tie order).

Two exact backends: NumPy (similarity matrix, or blocked over embeddings so
that 10k x 10k never holds more than a block of rows) counts scores instead of
sorting; faiss (IndexFlatIP top-k) returns ranks up to k exactly and `inf` for
a ground truth outside the top k (R@j for j <= k and, when at least half the
ranks are within k, the median are then still exact).
"""

from typing import Optional

import numpy as np

TIES = ('pessimistic', 'optimistic', 'mean')


def _rank_from_counts(greater: np.ndarray, equal: np.ndarray, ties: str) -> np.ndarray:
  if ties == 'pessimistic':
    return 1.0 + greater + equal
  if ties == 'optimistic':
    return 1.0 + greater
  if ties == 'mean':
    return 1.0 + greater + equal / 2.0
  raise ValueError(f'ties must be one of {TIES}, not {ties!r}')


def ranks_from_similarity(similarity: np.ndarray, ground_truth: Optional[np.ndarray] = None,
                          ties: str = 'pessimistic') -> np.ndarray:
  """1-based rank of each query's ground-truth item.

  Args:
    similarity: [num_queries, num_items] scores, higher = better.
    ground_truth: [num_queries] int column of each query's positive; None: the
      diagonal (requires num_queries <= num_items).
    ties: 'pessimistic', 'optimistic' or 'mean' (module docstring).

  Returns:
    [num_queries] float64 ranks (integers unless ties='mean').
  """
  similarity = np.asarray(similarity)
  if similarity.ndim != 2:
    raise ValueError(f'similarity must be [queries, items], got shape {similarity.shape}')
  n = similarity.shape[0]
  if ground_truth is None:
    if n > similarity.shape[1]:
      raise ValueError('diagonal ground truth needs num_queries <= num_items')
    ground_truth = np.arange(n)
  ground_truth = np.asarray(ground_truth, np.int64)
  positive = similarity[np.arange(n), ground_truth][:, None]
  greater = np.sum(similarity > positive, axis=1)
  # Minus one: the positive equals itself.
  equal = np.sum(similarity == positive, axis=1) - 1
  return _rank_from_counts(greater, equal, ties)


def ranks_from_embeddings(queries: np.ndarray, items: np.ndarray,
                          ground_truth: Optional[np.ndarray] = None,
                          ties: str = 'pessimistic', block: int = 1024) -> np.ndarray:
  """`ranks_from_similarity(queries @ items.T, ...)`, `block` query rows at a time.

  Args:
    queries: [num_queries, D] (e.g. text embeddings).
    items: [num_items, D] (e.g. video embeddings).
    ground_truth: [num_queries] item index per query; None: the diagonal.
    ties: see the module docstring.
    block: rows of the similarity matrix held at once.

  Returns:
    [num_queries] float64 1-based ranks.
  """
  queries = np.asarray(queries, np.float32)
  items = np.asarray(items, np.float32)
  n = queries.shape[0]
  if ground_truth is None:
    ground_truth = np.arange(n)
  ground_truth = np.asarray(ground_truth, np.int64)
  out = np.empty(n, np.float64)
  for start in range(0, n, block):
    rows = slice(start, start + block)
    out[rows] = ranks_from_similarity(queries[rows] @ items.T, ground_truth[rows], ties)
  return out


def faiss_topk(queries: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact inner-product top-k with faiss IndexFlatIP.

  Returns:
    scores [num_queries, k] float32 (descending) and ids [num_queries, k] int64.
  """
  import faiss  # pylint: disable=import-outside-toplevel
  items = np.ascontiguousarray(items, np.float32)
  index = faiss.IndexFlatIP(items.shape[1])
  index.add(items)
  return index.search(np.ascontiguousarray(queries, np.float32), min(k, items.shape[0]))


def ranks_from_faiss(queries: np.ndarray, items: np.ndarray, k: int,
                     ground_truth: Optional[np.ndarray] = None,
                     ties: str = 'pessimistic') -> np.ndarray:
  """1-based ranks from a faiss top-k search; `inf` where the rank exceeds k.

  The ground truth's score is the one faiss returned for it, so the comparison
  with the other retrieved scores is made on one set of numbers. faiss is asked
  for k + 1 items: under 'pessimistic' (or 'mean') ties, a ground truth tied
  with the last retrieved score may have further ties beyond the list, so its
  rank is unknown and censored (`inf`), as is every rank above k.

  Args:
    queries: [num_queries, D].
    items: [num_items, D].
    k: top-k depth; ranks <= k are exact.
    ground_truth: [num_queries] item index per query; None: the diagonal.
    ties: see the module docstring.

  Returns:
    [num_queries] float64 ranks, `inf` = beyond k.
  """
  n = queries.shape[0]
  if ground_truth is None:
    ground_truth = np.arange(n)
  ground_truth = np.asarray(ground_truth, np.int64)
  # One item deeper than k: a tie between the ground truth and the k-th score
  # may continue past the list, and the (k + 1)-th score tells whether it does.
  scores, ids = faiss_topk(queries, items, k + 1)
  depth = scores.shape[1]
  hit = ids == ground_truth[:, None]
  found = hit.any(axis=1)
  positive = np.where(found, scores[np.arange(n), hit.argmax(axis=1)], np.nan)[:, None]
  greater = np.sum(scores > positive, axis=1)
  equal = np.sum(scores == positive, axis=1) - 1
  ranks = _rank_from_counts(greater, equal, ties)
  open_tie = ((scores[:, -1] == positive[:, 0]) & (depth < items.shape[0])
              & (ties != 'optimistic'))
  ranks[~found | open_tie | (ranks > k)] = np.inf
  return ranks


def median_rank(ranks: np.ndarray, convention: str = 'numpy') -> Optional[float]:
  """Median of 1-based ranks; None when it depends on censored (inf) ranks.

  Args:
    ranks: [n] 1-based ranks (`inf` = censored beyond a top-k).
    convention: 'numpy' (mean of the two middle values for even n; MMPT,
      CLIP4Clip) or 'upper' (the upper middle value; googleinterns).
  """
  ranks = np.sort(np.asarray(ranks, np.float64))
  n = len(ranks)
  if n == 0:
    return None
  if convention == 'numpy':
    value = float(np.median(ranks))
  elif convention == 'upper':
    value = float(ranks[n // 2])
  else:
    raise ValueError(f"convention must be 'numpy' or 'upper', not {convention!r}")
  return value if np.isfinite(value) else None


def retrieval_metrics(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, Optional[float]]:
  """{'R@k': fraction with rank <= k, 'median_rank', 'mean_rank', 'count'}.

  Censored (`inf`) ranks count as misses for every R@k (exact for k up to the
  top-k depth); the mean rank is then None, the median None unless at least
  half the ranks are finite.
  """
  ranks = np.asarray(ranks, np.float64)
  out: dict[str, Optional[float]] = {}
  for k in ks:
    out[f'R@{k}'] = float(np.mean(ranks <= k)) if len(ranks) else None
  out['median_rank'] = median_rank(ranks)
  out['mean_rank'] = (float(np.mean(ranks)) if len(ranks) and np.all(np.isfinite(ranks))
                      else None)
  out['count'] = int(len(ranks))
  return out


def multiple_choice_correct(scores: np.ndarray, answers: np.ndarray,
                            ties: str = 'pessimistic') -> np.ndarray:
  """Whether the answer is the argmax of each question's option scores.

  Args:
    scores: [num_questions, num_options] video-option similarities.
    answers: [num_questions] index of the right option.
    ties: 'pessimistic': correct only if the answer beats every other option
      strictly; 'optimistic': a tie for the top counts as correct; 'mean': a
      c-way tie for the top counts 1/c (the expectation of a random argmax).

  Returns:
    [num_questions] float64, 1.0 correct / 0.0 wrong (fractions under 'mean').
  """
  ranks = ranks_from_similarity(scores, answers, 'pessimistic')
  best = ranks_from_similarity(scores, answers, 'optimistic') == 1
  if ties == 'pessimistic':
    return (ranks == 1).astype(np.float64)
  if ties == 'optimistic':
    return best.astype(np.float64)
  if ties == 'mean':
    # Pessimistic rank - 1 = the number of options tied with the answer.
    return np.where(best, 1.0 / ranks, 0.0)
  raise ValueError(f'ties must be one of {TIES}, not {ties!r}')


def multiple_choice_accuracy(scores: np.ndarray, answers: np.ndarray,
                             ties: str = 'pessimistic') -> float:
  """Mean of `multiple_choice_correct` (a fraction in [0, 1])."""
  return float(np.mean(multiple_choice_correct(scores, answers, ties)))
