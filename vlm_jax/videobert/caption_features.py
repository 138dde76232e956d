"""VideoBERT caption features of video segments (SPEC section 1, captioning).

A segment's visual tokens follow the template "now let's [MASK] the [MASK] to
the [MASK], and then [MASK] the [MASK]." in one VideoBERT sequence,
`[CLS] template [>] video [SEP]`. The feature is the average of the encoder's
final hidden states over the video tokens, concatenated with their average
over the five masked text positions: [2 * hidden]. The paper optionally
appends the segment's pooled S3D feature (the mean of its clips' features).
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.data import batching
from vlm_jax.data import segments as segments_lib
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.videobert import inference as videobert_inference

TEMPLATE = "now let's [MASK] the [MASK] to the [MASK], and then [MASK] the [MASK]."
MASK = '[MASK]'


@dataclasses.dataclass(frozen=True)
class FeatureQuery:
  """One segment's sequence and the positions its feature averages over."""
  ids: Sequence[int]
  types: Sequence[int]
  video_positions: Sequence[int]
  mask_positions: Sequence[int]


def template_ids(tok, vocab) -> tuple[list[int], list[int]]:
  """WordPiece ids of the template with its five [MASK]s, and the masks' indices in them."""
  pieces = tokenizer_lib.wordpieces(tok, TEMPLATE.split(MASK))
  ids, masks = list(pieces[0]), []
  for part in pieces[1:]:
    masks.append(len(ids))
    ids += [vocab.mask_id, *part]
  return ids, masks


def queries(tok, vocab, visual_tokens: Sequence[Sequence[int]],
            seq_len: int) -> list[FeatureQuery]:
  """One query per segment: the template, then its visual tokens (leaf ids).

  Visual tokens beyond what `seq_len` holds are dropped from the end; a
  segment needs at least one (the video average is undefined otherwise).
  """
  text, masks = template_ids(tok, vocab)
  video_start = 1 + len(text) + 1  # after [CLS] template [>]
  room = seq_len - video_start - 1  # and [SEP] at the end
  if room < 1:
    raise ValueError(f'data.seq_len={seq_len} leaves no room for video after the template')
  out = []
  for i, tokens in enumerate(visual_tokens):
    visual = [vocab.visual_id(int(t)) for t in tokens[:room]]
    if not visual:
      raise ValueError(f'segment {i} has no visual tokens')
    ids, types = videobert_inference.text_video_sequence(text, visual, vocab)
    out.append(FeatureQuery(ids, types, tuple(range(video_start, video_start + len(visual))),
                            tuple(1 + m for m in masks)))
  return out


def pool(hidden: jax.Array, video_weights: jax.Array, mask_weights: jax.Array) -> jax.Array:
  """[batch, seq, hidden] states -> [batch, 2 * hidden]: video mean, then masked-text mean.

  Args:
    hidden: [batch, seq, hidden] final encoder states.
    video_weights: [batch, seq], 1 at the video tokens.
    mask_weights: [batch, seq], 1 at the template's masked positions.
  """
  def mean(weights):
    weights = weights.astype(hidden.dtype)
    # Padding rows of a batch have no positions: max(., 1) keeps them finite.
    return (jnp.einsum('bs,bsh->bh', weights, hidden)
            / jnp.maximum(weights.sum(1, keepdims=True), 1.0))
  return jnp.concatenate([mean(video_weights), mean(mask_weights)], axis=-1)


def videobert_features(loaded: videobert_inference.Loaded,
                       visual_tokens: Sequence[Sequence[int]],
                       batch_size: int = 32) -> np.ndarray:
  """[N, 2 * hidden] float32 caption features of N segments' visual tokens."""
  seq_len = loaded.config.data.seq_len
  qs = queries(loaded.tokenizer, loaded.vocab, visual_tokens, seq_len)

  @jax.jit
  def features(params, ids, types, mask, video_weights, mask_weights):
    # Only `hidden` is used: XLA drops the heads' work from the compiled code.
    hidden = loaded.model.apply({'params': params}, ids, types, mask,
                                jnp.zeros((ids.shape[0], 1), jnp.int32),
                                deterministic=True)['hidden']
    return pool(hidden.astype(jnp.float32), video_weights, mask_weights)

  if not qs:
    return np.zeros((0, 2 * loaded.config.model.hidden_size), np.float32)
  # All queries as [n, seq_len] rows; map_padded feeds them in [batch_size, seq_len] chunks
  # (fixed shapes: one compilation).
  ids = np.zeros((len(qs), seq_len), np.int32)
  types, mask = np.zeros_like(ids), np.zeros_like(ids)
  video_weights = np.zeros((len(qs), seq_len), np.float32)
  mask_weights = np.zeros_like(video_weights)
  for row, q in enumerate(qs):
    ids[row, :len(q.ids)], types[row, :len(q.ids)], mask[row, :len(q.ids)] = q.ids, q.types, 1
    video_weights[row, list(q.video_positions)] = 1
    mask_weights[row, list(q.mask_positions)] = 1
  return batching.map_padded(lambda *inputs: features(loaded.params, *inputs),
                             (ids, types, mask, video_weights, mask_weights), batch_size)


def pooled_clip_features(features: np.ndarray, times: np.ndarray, start: float,
                         end: float) -> np.ndarray:
  """[D] mean of the clip features of a segment (the clips `tokens_in` would pick).

  Args:
    features: [num_clips, D] clip features of one video (S3D).
    times: [num_clips, 2] clip start and end seconds.
    start, end: the segment, in seconds.
  """
  return segments_lib.tokens_in(features.astype(np.float32), times, start, end).mean(axis=0)


INPUTS = ('videobert+s3d', 'videobert', 's3d')


@dataclasses.dataclass(frozen=True)
class VideoClips:
  """One video's clips: features [num_clips, D], times [num_clips, 2] and visual tokens."""
  features: np.ndarray
  times: np.ndarray
  tokens: np.ndarray | None  # [num_clips] leaf ids; None when VideoBERT is not used


def segment_features(segments: Sequence[dict], videos: dict[str, VideoClips],
                     loaded: videobert_inference.Loaded | None, inputs: str,
                     batch_size: int = 32) -> np.ndarray:
  """[N, D] caption features of segments whose video is in `videos`.

  Args:
    segments: dicts with `video_id`, `start`, `end` (seconds).
    videos: the clips of every segment's video.
    loaded: the VideoBERT run (unused for inputs 's3d').
    inputs: 'videobert' ([2 * hidden]), 's3d' (pooled clip features, [D]) or
      'videobert+s3d' (both, concatenated).
    batch_size: segments per VideoBERT forward pass.
  """
  if inputs not in INPUTS:
    raise ValueError(f'inputs must be one of {INPUTS}, got {inputs!r}')
  parts = []
  if inputs.startswith('videobert'):
    visual = [segments_lib.tokens_in(videos[s['video_id']].tokens, videos[s['video_id']].times,
                                     float(s['start']), float(s['end'])) for s in segments]
    parts.append(videobert_features(loaded, visual, batch_size))
  if inputs.endswith('s3d'):
    parts.append(np.stack([
        pooled_clip_features(videos[s['video_id']].features, videos[s['video_id']].times,
                             float(s['start']), float(s['end'])) for s in segments]))
  return np.concatenate(parts, axis=1).astype(np.float32)
