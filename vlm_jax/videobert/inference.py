"""A trained VideoBERT, loaded from a `vlm-jax train` workdir, and masked-token prediction.

The zero-shot tasks (action classification, text-to-video, forecasting) all ask
the same question: given a sequence with `[MASK]`s, how likely is each token of
one modality at each masked position.
"""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlm_jax.data import batching
from vlm_jax.train import checkpoints, report
from vlm_jax.videobert import step as step_lib
from vlm_jax.videobert import vocab as vocab_lib

TEXT, VISUAL = 'text', 'visual'


@dataclasses.dataclass
class Loaded:
  config: ml_collections.ConfigDict
  tokenizer: Any
  vocab: vocab_lib.JointVocab
  model: Any
  params: Any
  step: int


def load(workdir: str, step: int | None = None) -> Loaded:
  """The config, tokenizer, model and parameters of a training run (latest step by default)."""
  config = report.read_config(workdir)
  config.mesh.data, config.mesh.model = 1, 1
  tok, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(workdir, setup.abstract_state.params, step)
  return Loaded(config, tok, vocab, setup.model, params, step)


@dataclasses.dataclass(frozen=True)
class Query:
  """One sequence: joint ids, token types and the positions to predict."""
  ids: Sequence[int]
  types: Sequence[int]
  positions: Sequence[int]


def text_video_sequence(text_ids: Sequence[int], visual_ids: Sequence[int],
                        vocab: vocab_lib.JointVocab) -> tuple[list[int], list[int]]:
  """`[CLS] text [>] video [SEP]` (joint ids) and its token types, as in training.

  With no visual ids the sequence is `[CLS] text [SEP]`, all type 0 (the text regime).
  """
  ids = [vocab.cls_id, *text_ids]
  types = [0] * len(ids)
  if len(visual_ids):
    ids += [vocab.video_sep_id, *visual_ids]
    types += [0] + [1] * len(visual_ids)
  ids.append(vocab.sep_id)
  types.append(types[-1])
  return ids, types


def masked_log_probs(loaded: Loaded, queries: Sequence[Query], modality: str,
                     batch_size: int = 32) -> list[np.ndarray]:
  """Log-probabilities over one modality's vocabulary at each query's positions.

  The softmax runs over the WordPieces (`text`) or the visual tokens (`visual`)
  only, as in training's per-modality cloze losses.

  Returns:
    One [len(query.positions), V] float32 array per query, V the text vocabulary
    size or the number of visual tokens; visual column j is visual token j.
  """
  vocab, seq_len = loaded.vocab, loaded.config.data.seq_len
  if modality not in (TEXT, VISUAL):
    raise ValueError(f'modality must be {TEXT!r} or {VISUAL!r}, got {modality!r}')
  num_positions = max(len(q.positions) for q in queries)
  for q in queries:
    if len(q.ids) > seq_len:
      raise ValueError(f'a query of {len(q.ids)} tokens exceeds data.seq_len={seq_len}')
  lo, hi = (0, vocab.text_vocab_size) if modality == TEXT else (vocab.visual_offset, vocab.size)

  @jax.jit
  def predict(params, ids, types, mask, positions):
    logits = loaded.model.apply({'params': params}, ids, types, mask, positions,
                                deterministic=True)['mlm_logits'][..., lo:hi]
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

  # All queries as [n, seq_len] rows; map_padded feeds them in [batch_size, seq_len] chunks
  # (fixed shapes: one compilation).
  ids = np.zeros((len(queries), seq_len), np.int32)
  types, mask = np.zeros_like(ids), np.zeros_like(ids)
  positions = np.zeros((len(queries), num_positions), np.int32)
  for row, q in enumerate(queries):
    ids[row, :len(q.ids)], types[row, :len(q.ids)], mask[row, :len(q.ids)] = q.ids, q.types, 1
    positions[row, :len(q.positions)] = q.positions
  log_probs = batching.map_padded(lambda *inputs: predict(loaded.params, *inputs),
                                  (ids, types, mask, positions), batch_size)
  return [log_probs[row, :len(q.positions)] for row, q in enumerate(queries)]
