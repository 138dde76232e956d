"""VideoBERT's alignment head on held-out steps: is this video the sentence's own?

Training asks the head (a linear layer on the pooled `[CLS]`) whether the video
of a video-text example is the sentence's own or, `negative_prob` of the time,
another video's (vlm_jax/videobert/pipeline.py). Here the same question is put
to held-out steps: each narrated step once with its own visual tokens and once
with those of a step of another video. Two scores come out:

- accuracy at the training mix: each step is shown mismatched with probability
  `negative_prob` (a seeded draw) and the head's argmax is compared with the
  truth, against the always-aligned baseline that training's label split
  allows (1 - negative_prob);
- pairwise: how often the head gives the step's own video a higher
  P(aligned) than the mismatched one (chance 50%), a score the label split
  cannot lift.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.data import batching
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.metrics import intervals
from vlm_jax.videobert import inference as videobert_inference
from vlm_jax.videobert import vocab as vocab_lib


def sequence(text_ids: Sequence[int], visual_tokens: Sequence[int], vocab: vocab_lib.JointVocab,
             seq_len: int) -> tuple[list[int], list[int]]:
  """`[CLS] text [>] video [SEP]` cut to `seq_len` as training cuts it (pipeline._assemble).

  Video keeps at least half the room when both do not fit.
  """
  budget = seq_len - 3
  keep_video = min(len(visual_tokens), max(budget - len(text_ids), budget // 2))
  keep_text = min(len(text_ids), budget - keep_video)
  return videobert_inference.text_video_sequence(
      list(text_ids[:keep_text]), [vocab.visual_id(int(t)) for t in visual_tokens[:keep_video]],
      vocab)


def aligned_probs(loaded, text_ids: Sequence[Sequence[int]],
                  visual_tokens: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
  """[N] P(aligned) of N (WordPiece ids, visual token ids) pairs, unmasked."""
  seq_len = loaded.config.data.seq_len
  ids = np.zeros((len(text_ids), seq_len), np.int32)
  types, mask = np.zeros_like(ids), np.zeros_like(ids)
  for row, (text, visual) in enumerate(zip(text_ids, visual_tokens)):
    seq_ids, seq_types = sequence(text, visual, loaded.vocab, seq_len)
    ids[row, :len(seq_ids)], types[row, :len(seq_ids)], mask[row, :len(seq_ids)] = (
        seq_ids, seq_types, 1)

  @jax.jit
  def predict(params, ids, types, mask):
    logits = loaded.model.apply({'params': params}, ids, types, mask,
                                jnp.zeros((ids.shape[0], 1), jnp.int32),
                                deterministic=True)['alignment_logits']
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1]  # label 1: aligned

  return batching.map_padded(lambda *inputs: predict(loaded.params, *inputs),
                             (ids, types, mask), batch_size)


def mismatched_partners(video_ids: Sequence[str], seed: int = 0) -> np.ndarray:
  """[N] for each step the index of a uniformly drawn step of another video.

  Raises:
    ValueError: when all steps come from one video (no mismatch exists).
  """
  video_ids = np.asarray(video_ids)
  rng = np.random.default_rng(seed)
  partners = np.empty(len(video_ids), np.int64)
  for i, video_id in enumerate(video_ids):
    others = np.flatnonzero(video_ids != video_id)
    if not len(others):
      raise ValueError('mismatched pairs need steps of at least two videos')
    partners[i] = rng.choice(others)
  return partners


def cloze_log_likelihood(loaded, text_ids: Sequence[Sequence[int]],
                         word_ids: Sequence[Sequence[int]],
                         visual_tokens: Sequence[Sequence[int]]) -> np.ndarray:
  """[N] log p(the words | the rest of the sentence and the video), by the cloze head.

  Args:
    text_ids: [N] the sentences' WordPiece ids.
    word_ids: [N] the first WordPiece of each word to predict (the step's verb and
      noun); each is masked where it first occurs in its sentence.
    visual_tokens: [N] the video shown with each sentence.
  """
  queries, targets = [], []
  for text, words, visual in zip(text_ids, word_ids, visual_tokens):
    text = list(text)
    positions = [text.index(w) for w in words]
    for p in positions:
      text[p] = loaded.vocab.mask_id
    ids, types = sequence(text, visual, loaded.vocab, loaded.config.data.seq_len)
    queries.append(videobert_inference.Query(ids, types, tuple(1 + p for p in positions)))
    targets.append(list(words))
  log_probs = videobert_inference.masked_log_probs(loaded, queries, videobert_inference.TEXT)
  return np.array([lp[np.arange(len(t)), t].sum() for lp, t in zip(log_probs, targets)])


def evaluate(loaded, sentences: Sequence[str], visual_tokens: Sequence[Sequence[int]],
             video_ids: Sequence[str], negative_prob: float, seed: int = 0,
             words: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
  """The head's scores on held-out steps (module docstring), with 95% bootstrap intervals.

  Args:
    loaded: the trained VideoBERT.
    sentences: [N] the steps' narration.
    visual_tokens: [N] each step's visual tokens (leaf ids).
    video_ids: [N] the video of each step (partners come from other videos).
    negative_prob: the share of mismatched pairs (training's data.negative_prob).
    seed: seeds the partners and which steps are shown mismatched.
    words: [N] (verb, noun) of each step, when known: how many mismatches share
      both (a "negative" that shows what the sentence says), and `cloze_pairwise`,
      how often the cloze head finds the sentence's verb and noun likelier with the
      own video than with the mismatched one: whether the encoder links the two at
      all, head aside.

  Returns:
    accuracy and always_aligned ({'mean', 'ci95'}), pairwise and its chance, the
    mean P(aligned) of own and mismatched videos, counts; with `words` also
    cloze_pairwise and mismatches_sharing_verb_and_noun.
  """
  text_ids = [list(ids) for ids in tokenizer_lib.wordpieces(
      loaded.tokenizer, list(sentences))]
  partners = mismatched_partners(video_ids, seed)
  own = aligned_probs(loaded, text_ids, visual_tokens)
  other = aligned_probs(loaded, text_ids, [visual_tokens[j] for j in partners])
  negative = np.random.default_rng(seed + 1).random(len(own)) < negative_prob
  shown = np.where(negative, other, own)
  correct = (shown > 0.5) == ~negative
  result = {
      'num_steps': len(own), 'num_negatives': int(negative.sum()),
      'negative_prob': float(negative_prob),
      'accuracy': intervals.with_interval(correct.astype(np.float64)),
      'always_aligned': intervals.with_interval((~negative).astype(np.float64)),
      'pairwise': intervals.with_interval((own > other) + 0.5 * (own == other)),
      'pairwise_chance': 0.5,
      'mean_p_aligned': {'own': float(own.mean()), 'mismatched': float(other.mean())},
      'predicted_aligned': float((shown > 0.5).mean()),
  }
  if words is not None:
    result['mismatches_sharing_verb_and_noun'] = float(np.mean(
        [tuple(words[i]) == tuple(words[j]) for i, j in enumerate(partners)]))
    # A word is found by its first WordPiece; a step whose sentence lacks one is left out.
    firsts = [[pieces[0] for pieces in tokenizer_lib.wordpieces(loaded.tokenizer, list(w))]
              for w in words]
    kept = [i for i, (text, first) in enumerate(zip(text_ids, firsts))
            if all(f in text for f in first)]
    if len(kept) >= 2:
      texts, firsts = [text_ids[i] for i in kept], [firsts[i] for i in kept]
      with_own = cloze_log_likelihood(loaded, texts, firsts, [visual_tokens[i] for i in kept])
      with_other = cloze_log_likelihood(loaded, texts, firsts,
                                        [visual_tokens[partners[i]] for i in kept])
      result['cloze_pairwise'] = intervals.with_interval(
          (with_own > with_other) + 0.5 * (with_own == with_other))
      result['cloze_num_steps'] = len(kept)
  return result
