"""Held-out cloze: does a trained VideoBERT fill in the words of sentences it never saw?

Each WordPiece of a held-out sentence is masked in turn, with the sentence's
video after it as in training (`[CLS] text [>] video [SEP]`), and the model's
top-1 guess is checked. The obvious baseline guesses the most frequent
training WordPiece everywhere; a model that learned nothing scores at most
that. It is the cheapest sign that a short run learns, long before the
zero-shot prompts rise above chance.
"""

import collections
from typing import Any, Sequence

import numpy as np

from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.metrics import intervals
from vlm_jax.videobert import inference as videobert_inference


def queries(tok, vocab, sentences: Sequence[str], visual_tokens: Sequence[Sequence[int]],
            seq_len: int) -> tuple[list[videobert_inference.Query], np.ndarray]:
  """One query per WordPiece of each sentence, that piece masked; and the pieces [Q].

  Sentences are cut to fit `seq_len` with at least one visual token, the video
  to fit what is left (from its end).
  """
  out, answers = [], []
  for pieces, tokens in zip(tokenizer_lib.wordpieces(tok, list(sentences)), visual_tokens):
    pieces = pieces[:seq_len - 4]  # [CLS], [>], one visual token, [SEP]
    visual = [vocab.visual_id(int(t)) for t in tokens[:seq_len - len(pieces) - 3]]
    for i, piece in enumerate(pieces):
      ids, types = videobert_inference.text_video_sequence(
          pieces[:i] + [vocab.mask_id] + pieces[i + 1:], visual, vocab)
      out.append(videobert_inference.Query(ids, types, (1 + i,)))
      answers.append(piece)
  return out, np.asarray(answers, np.int64)


def evaluate(loaded, sentences: Sequence[str], visual_tokens: Sequence[Sequence[int]],
             train_sentences: Sequence[str]) -> dict[str, Any]:
  """Top-1 accuracy of the model and of the most-frequent-piece baseline, with 95% intervals.

  Args:
    loaded: a VideoBERT run (videobert_inference.load).
    sentences: held-out sentences.
    visual_tokens: each sentence's visual tokens (leaf ids).
    train_sentences: the training narration, whose most frequent WordPiece is the baseline.

  Returns:
    {'num_masked', 'model': {'top1', 'top1_ci95'}, 'most_frequent_piece': {...},
     'baseline_piece'}.
  """
  if not sentences:
    raise ValueError('no held-out sentences')
  tok = loaded.tokenizer
  counts = collections.Counter(
      p for pieces in tokenizer_lib.wordpieces(tok, list(train_sentences)) for p in pieces)
  if not counts:
    raise ValueError('no training sentences for the baseline')
  baseline = counts.most_common(1)[0][0]
  qs, answers = queries(tok, loaded.vocab, sentences, visual_tokens, loaded.config.data.seq_len)
  log_probs = videobert_inference.masked_log_probs(loaded, qs, videobert_inference.TEXT)
  guesses = np.array([lp[0].argmax() for lp in log_probs])
  result: dict[str, Any] = {'num_masked': len(answers), 'baseline_piece': tok.id_to_token(baseline)}
  for name, correct in (('model', guesses == answers), ('most_frequent_piece', answers == baseline)):
    correct = correct.astype(np.float64)
    result[name] = {'top1': float(correct.mean())}
    if len(correct) >= 2:
      result[name]['top1_ci95'] = list(intervals.bootstrap_interval(correct))
  return result
