"""VideoBERT zero-shot action classification (SPEC section 1).

The video's visual tokens follow the template "now let me show you how to
[MASK] the [MASK]." and the model fills the masks: the verb is read from the
first mask and the noun from the second, restricted to given label
vocabularies. The language prior is the same template with no video.

A label that WordPiece splits into several pieces is scored by its first piece
(the template has one mask per word); labels sharing a first piece would tie,
so `label_token_ids` rejects them.
"""

from typing import Sequence

import numpy as np

from vlm_jax.data import narration
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.videobert import inference as videobert_inference

# The paper's prompt; the synthetic corpora never narrate with it (data/narration.py).
TEMPLATE = narration.PROMPT


def template_ids(tok, vocab, template: str = TEMPLATE) -> tuple[list[int], tuple[int, int]]:
  """WordPiece ids of `template` ('...{verb}...{noun}...') with two [MASK]s, and their indices."""
  before, rest = template.split('{verb}')
  middle, after = rest.split('{noun}')
  pieces = tokenizer_lib.wordpieces(tok, [before, middle, after])
  ids = pieces[0] + [vocab.mask_id] + pieces[1] + [vocab.mask_id] + pieces[2]
  verb_at = len(pieces[0])
  return ids, (verb_at, verb_at + 1 + len(pieces[1]))


def label_token_ids(tok, labels: Sequence[str], what: str) -> np.ndarray:
  """[len(labels)] WordPiece id of each label's first piece."""
  ids = [pieces[0] if pieces else None
         for pieces in tokenizer_lib.wordpieces(tok, list(labels))]
  empty = [label for label, i in zip(labels, ids) if i is None]
  if empty:
    raise ValueError(f'{what} labels with no WordPieces: {empty}')
  seen = {}
  for label, i in zip(labels, ids):
    if i in seen:
      raise ValueError(f'{what} labels {seen[i]!r} and {label!r} share their first WordPiece')
    seen[i] = label
  return np.asarray(ids)


def queries(tok, vocab, visual_tokens: Sequence[Sequence[int]], seq_len: int,
            with_video: bool = True, template: str = TEMPLATE) -> list[videobert_inference.Query]:
  """One query per segment: the template, then the segment's visual tokens (leaf ids).

  Visual tokens beyond what `seq_len` holds are dropped from the end.
  """
  text, (verb_at, noun_at) = template_ids(tok, vocab, template)
  room = seq_len - len(text) - 3  # [CLS], [>], [SEP]
  out = []
  for tokens in visual_tokens:
    visual = [vocab.visual_id(int(t)) for t in tokens[:room]] if with_video else []
    ids, types = videobert_inference.text_video_sequence(text, visual, vocab)
    out.append(videobert_inference.Query(ids, types, (1 + verb_at, 1 + noun_at)))
  return out


def scores(loaded, visual_tokens: Sequence[Sequence[int]], verbs: Sequence[str],
           nouns: Sequence[str], with_video: bool = True,
           template: str = TEMPLATE) -> tuple[np.ndarray, np.ndarray]:
  """Verb [N, len(verbs)] and noun [N, len(nouns)] log-probabilities per segment.

  `template` is the paper's prompt unless another is given (diagnostics).
  """
  tok, vocab = loaded.tokenizer, loaded.vocab
  verb_ids = label_token_ids(tok, verbs, 'verb')
  noun_ids = label_token_ids(tok, nouns, 'noun')
  qs = queries(tok, vocab, visual_tokens, loaded.config.data.seq_len, with_video, template)
  log_probs = videobert_inference.masked_log_probs(loaded, qs, videobert_inference.TEXT)
  verb = np.stack([lp[0, verb_ids] for lp in log_probs])
  noun = np.stack([lp[1, noun_ids] for lp in log_probs])
  return verb, noun
