"""BERT's masked-language-model masking of one `[CLS] w_1 ... w_n [SEP] 0 ...` row.

Shared by the systems that predict masked WordPieces (CBT's L_bert, ClipBERT's
image-text pretraining); systems do not import each other, so it lives here.

`rate` of the row's n WordPieces (round(rate * n), at least one when n > 0;
never `[CLS]`, `[SEP]` or padding) are predicted: 80% of them replaced by
`[MASK]`, 10% by a random id of the vocabulary, 10% left as they are. Their
positions are listed in P slots per row (`text_predictions`: the most a full
row has) so that a head scores only them. Every draw comes from the caller's
generator, in a fixed order, so a row keyed by (seed, step, row) is rebuilt
bit for bit by a resumed run or another process.
"""

import numpy as np


def text_predictions(rate: float, max_text_tokens: int) -> int:
  """P, the predicted WordPieces of a full sentence: the most any row has (round is monotone)."""
  return min(max_text_tokens, max(1, int(round(rate * max_text_tokens))))


def mask_text(rng: np.random.Generator, input_ids: np.ndarray, num_words: int, rate: float,
              mask_id: int, vocab_size: int, num_predictions: int) -> dict[str, np.ndarray]:
  """BERT's masking of one `[CLS] w_1 ... w_n [SEP] 0 ...` row (the module docstring).

  Args:
    rng: the row's generator.
    input_ids: [L] int32, the row; n = num_words WordPieces from position 1.
    rate: the fraction of the n WordPieces predicted (round(rate * n), at least one
      when n > 0).
    mask_id: `[MASK]`'s id; vocab_size: random replacements are drawn from [0, vocab_size).
    num_predictions: P >= the predictions of any row (`text_predictions`).

  Returns:
    masked_ids [L] int32 (the text tower's input); mlm_positions, mlm_labels
    [P] int32 (the predicted positions and their original ids, 0 past the
    row's count) and mlm_weights [P] float32 (1 for a real prediction).
  """
  count = min(num_words, max(1, int(round(rate * num_words))))
  positions = 1 + np.sort(rng.choice(num_words, count, replace=False))  # 1 +: past [CLS]
  action = rng.random(count)
  random_ids = rng.integers(vocab_size, size=count)
  original = input_ids[positions]
  masked_ids = input_ids.copy()
  masked_ids[positions] = np.where(action < 0.8, mask_id,
                                   np.where(action < 0.9, random_ids, original))
  out = {'masked_ids': masked_ids, 'mlm_positions': np.zeros(num_predictions, np.int32),
         'mlm_labels': np.zeros(num_predictions, np.int32),
         'mlm_weights': np.zeros(num_predictions, np.float32)}
  out['mlm_positions'][:count] = positions
  out['mlm_labels'][:count] = original
  out['mlm_weights'][:count] = 1.0
  return out
