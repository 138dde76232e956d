"""Evaluation of a cross-encoder (ClipBERT): retrieval from a pair-score matrix, and QA accuracy.

A cross-encoder has no embeddings to compare: every (text, video) pair goes
through the model (ClipBERT's `inference_retrieval`: each test video against
every caption, its match probability as the score). `score_matrix` fills the
[num_texts, num_videos] matrix block by block through a pair scorer;
`retrieval_metrics` ranks it both ways with vlm_jax.metrics.retrieval's
conventions (1-based ranks, R@k as fractions, numpy median, pessimistic ties):
- text -> video: each caption's own video among all videos;
- video -> text: among all captions, the best-ranked of the video's own ones
  (the usual rule with several captions per video: the other own captions are
  left out of its ranking); a video without a caption is only a distractor.
  ClipBERT inverts its caption -> video map instead, keeping one caption per
  video; with one caption per video (MSR-VTT 1k-A) the two agree.
R@k comes with its 95% bootstrap interval over the queries
(vlm_jax.metrics.intervals).

QA: multiple-choice accuracy is the argmax over a question's option scores
(ClipBERT's `probs.max(1)`; ties count wrong); open-ended accuracy compares
the predicted answer string with the annotated one, as ClipBERT's
`evaluate_tgif_qa`: an answer outside the classifier's answer set can never be
predicted and so counts wrong. `vlm-jax eval cross-retrieval`, `multiple-choice`
and `open-qa` feed these from a ClipBERT run and its videos
(vlm_jax/clipbert/inference.py).
"""

from typing import Callable, Optional, Sequence

import numpy as np

from vlm_jax.metrics import intervals
from vlm_jax.metrics import retrieval

KS = (1, 5, 10)


def score_matrix(score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], num_texts: int,
                 num_videos: int, block: tuple[int, int]) -> np.ndarray:
  """Every text against every video, `block` = (texts, videos) pairs per call.

  Every call gets full blocks, so a jitted scorer compiles once: the last
  block of each axis is padded by repeating its last index (a valid input),
  and the padded scores are dropped. Videos are the outer loop, so a scorer
  can keep a block of videos' visual tokens while the texts change.

  Args:
    score_fn: (text_indices [texts], video_indices [videos]) -> scores
      [texts, videos] (array-like); e.g. ClipBERT's match probability.
    num_texts, num_videos: sizes of the matrix.
    block: texts and videos per call.

  Returns:
    [num_texts, num_videos] float32 scores.
  """
  text_block, video_block = block
  if num_texts < 1 or num_videos < 1:
    raise ValueError(f'need >= 1 text and video, got {num_texts} x {num_videos}')
  if text_block < 1 or video_block < 1:
    raise ValueError(f'block={block}: both sizes >= 1')
  out = np.empty((num_texts, num_videos), np.float32)

  def padded(start, size, total):
    indices = np.arange(start, start + size)
    return np.minimum(indices, total - 1), min(size, total - start)

  for video_start in range(0, num_videos, video_block):
    videos, video_count = padded(video_start, video_block, num_videos)
    for text_start in range(0, num_texts, text_block):
      texts, text_count = padded(text_start, text_block, num_texts)
      scores = np.asarray(score_fn(texts, videos), np.float32)
      if scores.shape != (text_block, video_block):
        raise ValueError(f'score_fn returned shape {scores.shape}, expected '
                         f'{(text_block, video_block)} (texts, videos)')
      out[text_start:text_start + text_count, video_start:video_start + video_count] = (
          scores[:text_count, :video_count])
  return out


def _check(scores: np.ndarray, text_to_video: np.ndarray) -> None:
  if scores.ndim != 2:
    raise ValueError(f'scores must be [texts, videos], got shape {scores.shape}')
  if text_to_video.shape != (scores.shape[0],):
    raise ValueError(f'text_to_video must be [{scores.shape[0]}] (one video per text), got '
                     f'shape {text_to_video.shape}')
  if text_to_video.min() < 0 or text_to_video.max() >= scores.shape[1]:
    raise ValueError(f'text_to_video has videos outside [0, {scores.shape[1]})')


def text_to_video_ranks(scores: np.ndarray, text_to_video: np.ndarray,
                        ties: str = 'pessimistic') -> np.ndarray:
  """[num_texts] 1-based rank of each text's video.

  scores [num_texts, num_videos]; text_to_video [num_texts] each text's video.
  """
  scores, text_to_video = np.asarray(scores), np.asarray(text_to_video, np.int64)
  _check(scores, text_to_video)
  return retrieval.ranks_from_similarity(scores, text_to_video, ties)


def video_to_text_ranks(scores: np.ndarray, text_to_video: np.ndarray,
                        ties: str = 'pessimistic') -> np.ndarray:
  """1-based rank of each captioned video's best-ranked own caption among all texts.

  Its other own captions are set to -inf before ranking, so they neither
  push the best one down nor tie with it (a score of -inf itself would).
  Videos without a caption are distractors of text -> video only: they are
  no query here, so the result is [number of captioned videos], in video order.
  """
  scores, text_to_video = np.asarray(scores, np.float64), np.asarray(text_to_video, np.int64)
  _check(scores, text_to_video)
  captioned = np.flatnonzero(np.bincount(text_to_video, minlength=scores.shape[1]))
  by_video = scores.T[captioned]  # [captioned videos, texts], a copy
  own = text_to_video[None, :] == captioned[:, None]
  best = np.argmax(np.where(own, by_video, -np.inf), axis=1)
  other_own = own & (np.arange(scores.shape[0])[None, :] != best[:, None])
  by_video[other_own] = -np.inf
  return retrieval.ranks_from_similarity(by_video, best, ties)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict:
  """R@k with 95% bootstrap intervals (`R@k_ci95`, >= 2 queries), median and mean rank, count.

  Args:
    ranks: [num_queries] 1-based ranks of each query's ground truth.
    ks: the R@k cut-offs.
  """
  out = retrieval.retrieval_metrics(ranks, ks)
  if len(ranks) >= 2:
    for k in ks:
      out[f'R@{k}_ci95'] = list(intervals.bootstrap_interval((ranks <= k).astype(np.float64)))
  return out


def retrieval_metrics(scores: np.ndarray, text_to_video: Optional[np.ndarray] = None,
                      ties: str = 'pessimistic', ks: Sequence[int] = KS) -> dict:
  """Both directions' R@k (with 95% intervals), median and mean rank, counts.

  Args:
    scores: [num_texts, num_videos] pair scores, higher = a better match.
    text_to_video: [num_texts] each text's video; None: the diagonal (one
      caption per video, num_texts == num_videos).
    ties: vlm_jax.metrics.retrieval's ('pessimistic', 'optimistic', 'mean').
    ks: the R@k cut-offs.

  Returns:
    {'text_to_video': {...}, 'video_to_text': {...}}, each
    vlm_jax.metrics.retrieval.retrieval_metrics plus 'R@k_ci95' [low, high].
  """
  scores = np.asarray(scores)
  if text_to_video is None:
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
      raise ValueError(f'a diagonal ground truth needs a square matrix, got {scores.shape}')
    text_to_video = np.arange(scores.shape[0])
  return {'text_to_video': rank_metrics(text_to_video_ranks(scores, text_to_video, ties), ks),
          'video_to_text': rank_metrics(video_to_text_ranks(scores, text_to_video, ties), ks)}


def multiple_choice_accuracy(scores: np.ndarray, answers: np.ndarray) -> dict:
  """Accuracy of the argmax option, with its 95% interval and chance.

  Args:
    scores: [num_questions, num_options] (ClipBERT: consensus-reduced option
      scores, or match probabilities of "question option" texts).
    answers: [num_questions] the right option.

  Returns:
    {'accuracy', 'accuracy_ci95' [low, high] (>= 2 questions), 'count', 'chance'}.
  """
  scores, answers = np.asarray(scores), np.asarray(answers, np.int64)
  if scores.ndim != 2 or answers.shape != (scores.shape[0],):
    raise ValueError(f'scores [questions, options] and answers [questions], got '
                     f'{scores.shape} and {answers.shape}')
  correct = retrieval.multiple_choice_correct(scores, answers, 'pessimistic')
  return _accuracy(correct, chance=1.0 / scores.shape[1])


def predicted_answers(logits: np.ndarray, answers: Sequence[str]) -> list[str]:
  """[num_questions, num_classes] logits -> the argmax class's answer string.

  `answers[i]` is class i's answer (ClipBERT's label2ans).
  """
  logits = np.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] != len(answers):
    raise ValueError(f'logits [questions, {len(answers)} classes], got shape {logits.shape}')
  return [answers[i] for i in np.argmax(logits, axis=1)]


def open_ended_accuracy(predictions: Sequence[str], answers: Sequence[str],
                        answer_types: Optional[Sequence[str]] = None) -> dict:
  """Exact-match accuracy of predicted answer strings, overall and per answer type.

  Args:
    predictions: [num_questions] predicted answers (`predicted_answers`).
    answers: [num_questions] annotated answers, in or out of the answer set.
    answer_types: [num_questions] e.g. MSRVTT-QA's what / who / how / where /
      when, FrameQA's object / number / color / location; None: none.

  Returns:
    {'accuracy', 'accuracy_ci95' (>= 2 questions), 'count'}, plus 'by_type':
    {type: {'accuracy', 'count'}} when answer_types are given.
  """
  if len(predictions) != len(answers) or not answers:
    raise ValueError(f'{len(predictions)} predictions for {len(answers)} answers: need the '
                     'same number, >= 1')
  correct = (np.asarray(predictions, object) == np.asarray(answers, object)).astype(np.float64)
  out = _accuracy(correct)
  if answer_types is not None:
    if len(answer_types) != len(answers):
      raise ValueError(f'{len(answer_types)} answer types for {len(answers)} answers')
    types = np.asarray(answer_types, object)
    out['by_type'] = {str(t): {'accuracy': float(correct[types == t].mean()),
                               'count': int((types == t).sum())}
                      for t in sorted(set(answer_types))}
  return out


def _accuracy(correct: np.ndarray, chance: Optional[float] = None) -> dict:
  out = {'accuracy': float(correct.mean()), 'count': int(len(correct))}
  if len(correct) >= 2:
    out['accuracy_ci95'] = list(intervals.bootstrap_interval(correct))
  if chance is not None:
    out['chance'] = chance
  return out
