"""A trained VideoCLIP, loaded from a `vlm-jax train` workdir: text and video embeddings.

Videos longer than the model's window (data.max_video_seconds, 32 s) are cut
into consecutive windows: a pooled embedding is the mean of the windows'
embeddings, per-second states are the windows' states in order.
"""

import dataclasses
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from vlm_jax.data import batching
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.train import checkpoints, report
from vlm_jax.videoclip import step as step_lib


@dataclasses.dataclass
class Loaded:
  config: ml_collections.ConfigDict
  model: Any
  params: Any
  step: int
  tokenizer: Any

  @property
  def window(self) -> int:
    return int(self.config.data.max_video_seconds)


def vocab_file(config) -> str:
  """The run's vocab.txt (data.vocab_file, else the init checkpoint's, else the default)."""
  return tokenizer_lib.resolve_vocab_file(config.data.vocab_file, config.model.init_checkpoint)


def load(workdir: str, step: int | None = None) -> Loaded:
  """The config, model and parameters of a VideoCLIP run (latest checkpoint by default)."""
  config = report.read_config(workdir)
  if config.get('system') != 'videoclip':
    raise ValueError(f'{workdir} holds a {config.get("system", "videobert")} run, not VideoCLIP')
  config.mesh.data, config.mesh.model = 1, 1
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(workdir, setup.sharded.abstract_state.params, step)
  return Loaded(config, setup.model, params, step,
                tokenizer_lib.load(vocab_file(config)))


def text_inputs(loaded: Loaded, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] WordPieces (cut to data.text_tokens_cap) [SEP]`, padded: ids and mask [n, cap + 2].

  [CLS] and [SEP] are the ids of the run's vocab, as in its training pairs
  (vlm_jax.videoclip.pipeline.sampling_options).
  """
  cap = loaded.config.data.text_tokens_cap
  special = tokenizer_lib.special_ids(loaded.tokenizer)
  pieces = tokenizer_lib.wordpieces(loaded.tokenizer, list(texts))
  ids = np.zeros((len(texts), cap + 2), np.int32)
  mask = np.zeros_like(ids)
  for i, p in enumerate(pieces):
    row = [special['[CLS]']] + p[:cap] + [special['[SEP]']]
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


def encode_texts(loaded: Loaded, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
  """[n, hidden] pooled text embeddings."""
  if not len(texts):
    return np.zeros((0, 0), np.float32)
  ids, mask = text_inputs(loaded, texts)
  apply = jax.jit(lambda p, i, m: loaded.model.apply({'params': p}, i, m, method='encode_text'))
  return batching.map_padded(lambda i, m: apply(loaded.params, i, m), (ids, mask), batch_size)


def windows(features: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
  """[T, D] -> ([ceil(T / window), window, D] zero-padded, [.., window] mask)."""
  t, dim = features.shape
  n = max(1, -(-t // window))
  padded = np.zeros((n * window, dim), np.float32)
  padded[:t] = features
  mask = (np.arange(n * window) < t).astype(np.int32)
  return padded.reshape(n, window, dim), mask.reshape(n, window)


def _windowed(loaded: Loaded, videos: Sequence[np.ndarray], method: str, batch_size: int):
  chunks, owners = [], []
  for i, features in enumerate(videos):
    w, m = windows(np.asarray(features, np.float32), loaded.window)
    chunks.append((w, m))
    owners += [i] * len(w)
  if not chunks:
    return np.zeros((0, 0), np.float32), np.zeros((0,), int), np.zeros((0, loaded.window), int)
  feats = np.concatenate([c[0] for c in chunks])
  masks = np.concatenate([c[1] for c in chunks])
  apply = jax.jit(lambda p, f, m: loaded.model.apply({'params': p}, f, m, method=method))
  out = batching.map_padded(lambda f, m: apply(loaded.params, f, m), (feats, masks), batch_size)
  return out, np.asarray(owners), masks


def encode_videos(loaded: Loaded, videos: Sequence[np.ndarray], batch_size: int = 32
                  ) -> np.ndarray:
  """[n, hidden]: per [T, D] per-second features, the mean of its windows' embeddings."""
  pooled, owners, _ = _windowed(loaded, videos, 'encode_video', batch_size)
  return np.stack([pooled[owners == i].mean(axis=0) for i in range(len(videos))])


def video_states(loaded: Loaded, videos: Sequence[np.ndarray], batch_size: int = 32
                 ) -> list[np.ndarray]:
  """Per [T, D] video, its [T, hidden] per-second states (window by window)."""
  states, owners, masks = _windowed(loaded, videos, 'video_states', batch_size)
  out = []
  for i, features in enumerate(videos):
    rows = states[owners == i].reshape(-1, states.shape[-1])
    out.append(rows[masks[owners == i].reshape(-1) > 0][:len(features)])
  return out
