"""The encode-text job: text lines through a BERT checkpoint, or a trained run's text tower.

Used by `vlm-jax encode-text`; see that command for the outputs.
"""

import os

import jax
import numpy as np

from vlm_jax import systems
from vlm_jax.convert import hf_bert
from vlm_jax.data import batching
from vlm_jax.data import tokenizer
from vlm_jax.evaluate import _embeddings
from vlm_jax.models import bert

# The systems whose `vlm-jax train` runs encode-text can encode (config.system).
WORKDIR_SYSTEMS = ('videoclip',)


def read_lines(path: str) -> list[str]:
  """Non-empty lines of a UTF-8 file; a decoding error names the file and line."""
  with open(path, 'rb') as f:
    raw = f.read().splitlines()
  lines = []
  for number, line in enumerate(raw, start=1):
    try:
      text = line.decode('utf-8').strip()
    except UnicodeDecodeError as e:
      raise ValueError(f'{path}:{number}: not UTF-8 ({e.reason})') from e
    if text:
      lines.append(text)
  if not lines:
    raise ValueError(f'{path}: no text lines')
  return lines


def encode(checkpoint: str, texts: list[str], max_length: int = 512,
           batch_size: int = 32) -> dict[str, np.ndarray]:
  """Tokenizes and encodes `texts` with a Hugging Face BERT folder (or 'minilm').

  Returns:
    input_ids [N, L] and attention_mask [N, L] int32, last_hidden_state
    [N, L, H] float32; L = the longest text in WordPieces (with [CLS]/[SEP]),
    at most `max_length` and the model's position table.
  """
  config, params, _ = hf_bert.load(checkpoint)
  tok = tokenizer.load(os.path.join(hf_bert.resolve(checkpoint), 'vocab.txt'))
  max_length = min(max_length, config.max_position_embeddings)
  tok.enable_truncation(max_length)
  encodings = tok.encode_batch(texts)
  length = max(len(e.ids) for e in encodings)
  ids = np.zeros((len(texts), length), np.int32)
  mask = np.zeros((len(texts), length), np.int32)
  for i, e in enumerate(encodings):
    ids[i, :len(e.ids)] = e.ids
    mask[i, :len(e.ids)] = 1
  model = bert.BertModel(config)
  apply = jax.jit(lambda p, i, m: model.apply({'params': p}, i, m)[0])
  # Rows are independent, so the padding rows of the last batch change nothing.
  hidden = batching.map_padded(lambda i, m: apply(params, i, m), [ids, mask], batch_size,
                               desc='encode-text')
  return {'input_ids': ids, 'attention_mask': mask,
          'last_hidden_state': np.asarray(hidden, np.float32)}


def encode_run(workdir: str, texts: list[str], output: str, batch_size: int = 32) -> None:
  """A trained run's pooled text embeddings: OUTPUT.npy [N, hidden], OUTPUT.txt the texts.

  Raises:
    ValueError: the run's system has no text embeddings here (only VideoCLIP
      runs today), or `output` is not a .npy path.
    FileNotFoundError: `workdir` holds no config.json.
  """
  system = systems.of_run(workdir)
  if system not in WORKDIR_SYSTEMS:
    raise ValueError(f'{workdir} is a {system} run; --workdir encodes the text of '
                     f'{", ".join(WORKDIR_SYSTEMS)} runs (for BERT states, use --checkpoint)')
  if not output.endswith('.npy'):
    raise ValueError(f'--output {output}: with --workdir, give a .npy path')
  # Imported here: BERT checkpoints need none of VideoCLIP's trainer.
  from vlm_jax.videoclip import inference as videoclip  # pylint: disable=import-outside-toplevel
  texts = [_embeddings.normalize_text(t) for t in texts]
  loaded = videoclip.load(workdir)
  embeddings = videoclip.encode_texts(loaded, texts, batch_size)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  np.save(output, embeddings.astype(np.float32))
  with open(_embeddings.texts_path_for(output), 'w', encoding='utf-8') as f:
    f.write(''.join(t + '\n' for t in texts))


def run(input_path: str, output: str, checkpoint: str = 'minilm', workdir: str | None = None,
        max_length: int = 512, batch_size: int = 32) -> dict:
  """Encodes the lines of `input_path` into `output`; returns {'texts', 'shape'}.

  With `workdir` (a `vlm-jax train` run): its pooled text embeddings
  (`encode_run`); else `checkpoint`'s BERT states as an .npz (`encode`).
  """
  texts = read_lines(input_path)
  if workdir:
    encode_run(workdir, texts, output, batch_size)
    return {'texts': len(texts), 'shape': None}
  outputs = encode(checkpoint, texts, max_length, batch_size)
  np.savez(output, **outputs)
  return {'texts': len(texts), 'shape': outputs['last_hidden_state'].shape}
