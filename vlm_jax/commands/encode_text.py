"""vlm-jax encode-text: embed text lines with a BERT checkpoint or a VideoCLIP run.

  vlm-jax encode-text --checkpoint DIR|minilm --input texts.txt --output out.npz
  vlm-jax encode-text --videoclip RUN --input TEXTS.txt --output TEXTS.npy

With --checkpoint (a Hugging Face folder): writes `input_ids` [N, L],
`attention_mask` [N, L] and `last_hidden_state` [N, L, H] (float32), L = the
longest line in WordPieces (with [CLS]/[SEP]), capped at --max_length.

With --videoclip (a VideoCLIP `vlm-jax train` workdir): writes the pooled text
embeddings [N, hidden] to the .npy and the texts, one per line in the same
order, beside it as .txt: the text input of `vlm-jax eval <task>` (whose
--write_texts writes the texts a task needs).
"""

import os

import jax
import numpy as np
import tqdm
from absl import flags

from vlm_jax.convert import hf_bert
from vlm_jax.data import tokenizer
from vlm_jax.models import bert

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'minilm', 'Hugging Face BERT folder, or "minilm" for the packaged one.')
_INPUT = flags.DEFINE_string('input', None, 'UTF-8 text file, one text per line.',
    allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output .npz path.',
    allow_override=True)
_VIDEOCLIP = flags.DEFINE_string(
    'videoclip', None, 'A VideoCLIP train workdir: pooled text embeddings (.npy) instead.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 512, 'Truncate texts to this many tokens.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Texts per forward pass.')
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['input', 'output']


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
  """Tokenizes and encodes `texts`; see the module docstring for the outputs."""
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
  hidden = np.zeros((len(texts), length, config.hidden_size), np.float32)
  for start in tqdm.tqdm(range(0, len(texts), batch_size), desc='encode-text', unit='batch'):
    chunk = slice(start, start + batch_size)
    # Pad the last batch to the same shape so that jit compiles once.
    n = ids[chunk].shape[0]
    pad = ((0, batch_size - n), (0, 0))
    out = apply(params, np.pad(ids[chunk], pad), np.pad(mask[chunk], pad))
    hidden[chunk] = np.asarray(out)[:n]
  return {'input_ids': ids, 'attention_mask': mask, 'last_hidden_state': hidden}


def encode_videoclip(workdir: str, texts: list[str], output: str) -> None:
  """Writes OUTPUT.npy [N, hidden] and OUTPUT.txt (the texts, one per line)."""
  from vlm_jax.evaluate import _embeddings  # pylint: disable=import-outside-toplevel
  from vlm_jax.videoclip import inference as videoclip  # pylint: disable=import-outside-toplevel
  if not output.endswith('.npy'):
    raise ValueError(f'--output {output}: with --videoclip, give a .npy path')
  texts = [_embeddings.normalize_text(t) for t in texts]
  loaded = videoclip.load(workdir)
  embeddings = videoclip.encode_texts(loaded, texts, _BATCH_SIZE.value)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  np.save(output, embeddings.astype(np.float32))
  with open(_embeddings.texts_path_for(output), 'w', encoding='utf-8') as f:
    f.write(''.join(t + '\n' for t in texts))


def main(argv):
  del argv
  if _VIDEOCLIP.value:
    try:
      texts = read_lines(_INPUT.value)
      encode_videoclip(_VIDEOCLIP.value, texts, _OUTPUT.value)
    except (ValueError, FileNotFoundError) as e:
      raise SystemExit(f'vlm-jax encode-text: {e}') from e
    print(f'wrote {_OUTPUT.value}: {len(texts)} texts')
    return
  try:
    texts = read_lines(_INPUT.value)
    outputs = encode(_CHECKPOINT.value, texts, _MAX_LENGTH.value, _BATCH_SIZE.value)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f'vlm-jax encode-text: {e}') from e
  np.savez(_OUTPUT.value, **outputs)
  print(f'wrote {_OUTPUT.value}: {len(texts)} texts, '
        f'last_hidden_state {outputs["last_hidden_state"].shape}')
