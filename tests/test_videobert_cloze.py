"""Held-out cloze: one query per WordPiece, and the most-frequent-piece baseline."""

import numpy as np

from vlm_jax.data import tokenizer
from vlm_jax.videobert import cloze
from vlm_jax.videobert import inference as videobert_inference
from vlm_jax.videobert import vocab as vocab_lib


def test_each_piece_is_masked_once_with_the_video_after_the_text():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  qs, answers = cloze.queries(tok, vocab, ['chop the onion.'], [[5, 6]], seq_len=48)
  pieces = [tok.token_to_id(w) for w in ('chop', 'the', 'onion', '.')]
  assert answers.tolist() == pieces
  visual = [vocab.visual_id(5), vocab.visual_id(6)]
  for i, q in enumerate(qs):
    text = pieces[:i] + [vocab.mask_id] + pieces[i + 1:]
    assert list(q.ids) == [vocab.cls_id, *text, vocab.video_sep_id, *visual, vocab.sep_id]
    assert list(q.types) == [0] * 6 + [1] * 3
    assert tuple(q.positions) == (1 + i,)


def test_long_inputs_fit_the_sequence_keeping_one_visual_token():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  qs, answers = cloze.queries(tok, vocab, [' '.join(['onion'] * 30)], [list(range(20))],
                              seq_len=16)
  assert len(answers) == 12 and all(len(q.ids) == 16 for q in qs)
  assert list(qs[0].ids[-3:]) == [vocab.video_sep_id, vocab.visual_id(0), vocab.sep_id]


def test_evaluate_against_a_hand_count(loaded):
  sentences = ['stir the egg.', 'peel the tomato.']
  tokens = [[1, 2], [3]]
  result = cloze.evaluate(loaded, sentences, tokens, ['the egg. the', 'egg'])
  tok, vocab = loaded.tokenizer, loaded.vocab
  # 'the' is the most frequent training piece; 2 of the 8 held-out pieces are 'the'.
  assert result['baseline_piece'] == 'the' and result['num_masked'] == 8
  assert result['most_frequent_piece']['top1'] == 2 / 8
  qs, answers = cloze.queries(tok, vocab, sentences, tokens, loaded.config.data.seq_len)
  log_probs = videobert_inference.masked_log_probs(loaded, qs, videobert_inference.TEXT)
  want = np.mean([lp[0].argmax() == a for lp, a in zip(log_probs, answers)])
  assert result['model']['top1'] == want
  low, high = result['model']['top1_ci95']
  assert low <= want <= high
