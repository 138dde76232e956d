"""A trained CBT, loaded from a `vlm-jax train` workdir: contextual clip states and cross-modal scores.

Contextual states (what the linear probes, segmentation, anticipation and the
captioner read): a video's [T, D] clip features are cut into windows of
data.num_clips clips starting every `stride` clips (default half a window,
the last window reaching the end; vlm_jax.data.windows), each window runs
through the visual transformer unmasked, and a clip covered by two windows
gets the mean of its two states. The window the model trained on is the
window it is read with, and features are standardised by the training
corpus's statistics when the run's were (vlm_jax.data.feature_stats).

Cross-modal scores (zero-shot text-to-video ranking): s(sentence, video) is
the cross-modal transformer's score of the sentence against the video's
window; a video longer than one window takes the mean of its consecutive
windows' scores. The transformer reads both inputs at once, so every
(query, video) pair runs through it: queries x windows in fixed-size blocks.
"""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from vlm_jax.data import feature_stats as features_lib
from vlm_jax.cbt import model as cbt_model
from vlm_jax.cbt import step as step_lib
from vlm_jax.data import batching
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import windows as windows_lib
from vlm_jax.train import checkpoints, report


@dataclasses.dataclass
class Loaded:
  """A CBT run on one device: its config, model, parameters and text tokenizer."""
  config: ml_collections.ConfigDict
  model: cbt_model.Cbt
  params: Any
  step: int
  tokenizer: Any
  # The training corpus's feature statistics, when the run standardised its features.
  stats: features_lib.Stats | None = None

  def prepare(self, features: np.ndarray) -> np.ndarray:
    """[T, D] clip features as the run's training windows had them (standardised or not)."""
    features = np.asarray(features, np.float32)
    return self.stats.apply(features) if self.stats is not None else features

  @property
  def window(self) -> int:
    """Clips per window: the training windows' length."""
    return int(self.config.data.num_clips)


def load(workdir: str, step: int | None = None) -> Loaded:
  """The config, model and parameters of a CBT run (latest checkpoint by default)."""
  config = report.read_inference_config(workdir, 'cbt', 'CBT')
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(workdir, setup.sharded.abstract_state.params, step)
  vocab = tokenizer_lib.resolve_vocab_file(config.data.vocab_file, config.model.init_checkpoint)
  stats = None
  if config.data.get('standardize_features', False):
    stats = features_lib.load(workdir)
    if stats is None:
      raise FileNotFoundError(f'{workdir} standardised its features but has no '
                              f'{features_lib.STATS_FILE}')
  return Loaded(config, setup.model, params, step, tokenizer_lib.load(vocab), stats)


def initial(config, stats: features_lib.Stats | None = None) -> Loaded:
  """The model as training starts (random visual and cross-modal parts, the text checkpoint):
  the no-pretraining baseline of the evaluations. `stats`: a trained run's, so both read
  the same inputs."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.mesh.data, config.mesh.model = 1, 1
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params = jax.device_get(step_lib.initial_params(setup))
  vocab = tokenizer_lib.resolve_vocab_file(config.data.vocab_file, config.model.init_checkpoint)
  return Loaded(config, setup.model, params, 0, tokenizer_lib.load(vocab), stats)


def _windows(videos: Sequence[np.ndarray], window: int, stride: int):
  """All windows of all videos: features [n, window, D], mask [n, window], owner [n], starts."""
  feats, masks, owners, starts = [], [], [], []
  for i, features in enumerate(videos):
    w, m = windows_lib.windows(np.asarray(features, np.float32), window, stride)
    feats.append(w)
    masks.append(m)
    owners += [i] * len(w)
    starts += windows_lib.window_starts(len(features), window, stride)
  return np.concatenate(feats), np.concatenate(masks), np.asarray(owners), np.asarray(starts)


def _visual_states(loaded: Loaded, features: np.ndarray, mask: np.ndarray,
                   batch_size: int) -> np.ndarray:
  """[n, window, D] windows -> [n, window, hidden] visual states (nothing masked)."""
  def encode(params, f, m):
    states, _ = loaded.model.apply({'params': params}, f, m, jnp.zeros_like(m),
                                   method='encode_visual')
    return states
  apply = jax.jit(encode)
  return batching.map_padded(lambda f, m: apply(loaded.params, f, m), (features, mask),
                             batch_size)


def clip_states(loaded: Loaded, videos: Sequence[np.ndarray], stride: int | None = None,
                batch_size: int = 32) -> list[np.ndarray]:
  """Per video [T, D] of clip features, its [T, hidden] contextual states (module docstring).

  Args:
    loaded: the run.
    videos: [T_i, D] clip features each (the records' per-second rows).
    stride: clips between window starts; default half a window.
    batch_size: windows per forward pass.
  """
  if not len(videos):
    return []
  stride = stride or max(1, loaded.window // 2)
  feats, masks, owners, starts = _windows([loaded.prepare(v) for v in videos], loaded.window,
                                          stride)
  states = _visual_states(loaded, feats, masks, batch_size)
  return [windows_lib.merge_windows(states[owners == i], starts[owners == i], len(v))
          for i, v in enumerate(videos)]


def text_inputs(loaded: Loaded, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] sentence [SEP]` ids and mask [n, L], as the training windows frame them
  (data.max_text_tokens WordPieces at most), trimmed to the longest row."""
  ids, mask = tokenizer_lib.sentence_inputs(loaded.tokenizer, list(texts),
                                            int(loaded.config.data.max_text_tokens))
  length = max(2, int(mask.sum(axis=1).max())) if len(texts) else 2
  return ids[:, :length], mask[:, :length]


def cross_scores(loaded: Loaded, texts: Sequence[str], videos: Sequence[np.ndarray],
                 query_block: int = 16, window_block: int = 16,
                 progress: bool = False) -> np.ndarray:
  """[num_texts, num_videos] cross-modal scores s(text, video) (module docstring).

  Args:
    loaded: the run.
    texts: the queries.
    videos: [T_i, D] clip features each.
    query_block, window_block: the pairs of one forward pass are
      query_block x window_block (fixed shapes: the last blocks are padded),
      scored by Cbt.score_pairs without tiling them.
    progress: a progress bar over query blocks.
  """
  ids, text_mask = text_inputs(loaded, texts)
  feats, clip_mask, owners, _ = _windows([loaded.prepare(v) for v in videos], loaded.window,
                                         loaded.window)
  visual = _visual_states(loaded, feats, clip_mask, window_block)

  text_states = jax.jit(lambda p, i, m: loaded.model.apply({'params': p}, i, m,
                                                          method='encode_text'))
  text = batching.map_padded(lambda i, m: text_states(loaded.params, i, m), (ids, text_mask),
                             query_block)

  @jax.jit
  def block(params, t, tm, v, vm):
    scores = loaded.model.apply({'params': params}, t, tm, v, vm, method='score_pairs')
    return scores.T  # [windows, queries] -> [queries, windows]

  num_windows = len(visual)
  by_window = np.zeros((len(texts), num_windows), np.float32)
  for q, q_real in tqdm.tqdm(list(_blocks(len(texts), query_block)), desc='cross scores',
                             unit='block', disable=not progress, leave=False):
    t, tm = _padded(text, q, query_block), _padded(text_mask, q, query_block)
    for w, w_real in _blocks(num_windows, window_block):
      out = block(loaded.params, t, tm, _padded(visual, w, window_block),
                  _padded(clip_mask, w, window_block))
      by_window[q:q + q_real, w:w + w_real] = np.asarray(out)[:q_real, :w_real]
  return np.stack([by_window[:, owners == v].mean(axis=1) for v in range(len(videos))], axis=1)


def _blocks(n: int, size: int):
  """(start, real rows) of consecutive blocks of `size` over n rows."""
  return [(start, min(size, n - start)) for start in range(0, n, size)]


def _padded(array: np.ndarray, start: int, size: int) -> np.ndarray:
  """array[start:start + size], zero-padded to `size` rows."""
  piece = array[start:start + size]
  if len(piece) == size:
    return piece
  return np.concatenate([piece, np.zeros((size - len(piece),) + piece.shape[1:], piece.dtype)])


def segment_means(states: dict[str, np.ndarray], segments: Sequence[dict]) -> np.ndarray:
  """[N, hidden] per segment, the mean of its video's clip states over its seconds.

  Args:
    states: {video_id: [T, hidden]} clip states (one row per second).
    segments: dicts with `video_id`, `start`, `end` (seconds): rows floor(start)
      to ceil(end) - 1, kept inside the video and at least one row.
  """
  out = []
  for s in segments:
    video = states[s['video_id']]
    first = int(np.clip(np.floor(float(s['start'])), 0, len(video) - 1))
    last = int(np.clip(np.ceil(float(s['end'])), first + 1, len(video)))
    out.append(video[first:last].mean(axis=0))
  return np.stack(out).astype(np.float32)
