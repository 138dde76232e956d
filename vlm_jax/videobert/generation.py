"""VideoBERT generation: text-to-video and future forecasting, shown as frames.

Text-to-video: `[CLS] sentence [>] [MASK] x n [SEP]`; at each masked video
position the most likely visual token not already chosen for the sentence (so a
strip shows n different tokens).

Forecasting at rate r: `[CLS] [>] token [MASK] x r [SEP]`; the top-3 tokens at
the r-th mask, i.e. r clips ahead. Training subsampled video at rates 1 to 5,
so one clip step stands for 1.5 s to 7.5 s of video.

A visual token is shown as the middle frame of the training clip nearest its
centroid (kept by `vlm-jax build-codebook`).
"""

import os
from typing import Sequence

import numpy as np

from vlm_jax.data import files as files_lib
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import video as video_lib
from vlm_jax.videobert import inference as videobert_inference


def text_to_video(loaded, sentences: Sequence[str], num_tokens: int = 4) -> list[list[int]]:
  """[len(sentences)] lists of `num_tokens` distinct visual token ids (leaf indices)."""
  vocab = loaded.vocab
  queries = []
  for text in tokenizer_lib.wordpieces(loaded.tokenizer, list(sentences)):
    room = loaded.config.data.seq_len - num_tokens - 3
    ids, types = videobert_inference.text_video_sequence(
        text[:room], [vocab.mask_id] * num_tokens, vocab)
    first = len(ids) - 1 - num_tokens
    queries.append(videobert_inference.Query(ids, types, tuple(range(first, first + num_tokens))))
  out = []
  for log_probs in videobert_inference.masked_log_probs(loaded, queries,
                                                        videobert_inference.VISUAL):
    chosen: list[int] = []
    for row in log_probs:
      row = row.copy()
      row[chosen] = -np.inf
      chosen.append(int(row.argmax()))
    out.append(chosen)
  return out


def forecast(loaded, tokens: Sequence[int], rates: Sequence[int] = (1, 2, 3, 4, 5),
             top: int = 3) -> np.ndarray:
  """[len(tokens), len(rates), top] most likely visual tokens r clips after each token."""
  vocab = loaded.vocab
  queries = []
  for token in tokens:
    for rate in rates:
      ids, types = videobert_inference.text_video_sequence(
          [], [vocab.visual_id(int(token))] + [vocab.mask_id] * rate, vocab)
      queries.append(videobert_inference.Query(ids, types, (len(ids) - 2,)))
  log_probs = videobert_inference.masked_log_probs(loaded, queries, videobert_inference.VISUAL)
  best = np.stack([np.argsort(-lp[0], kind='stable')[:top] for lp in log_probs])
  return best.reshape(len(tokens), len(rates), top)


class TokenFrames:
  """Middle frames of the training clips nearest each leaf centroid, decoded on demand."""

  def __init__(self, codebook, videos_dir: str, fps: float = 20.0, clip_frames: int = 30,
               size: int = 112):
    extras = codebook.extras
    if 'nearest_video_id' not in extras:
      raise ValueError('the codebook has no nearest_video_id (build it with vlm-jax '
                       'build-codebook)')
    self._video = extras['nearest_video_id']
    self._clip = extras['nearest_clip_index']
    self._videos = {os.path.splitext(name)[0]: os.path.join(videos_dir, name)
                    for name in os.listdir(videos_dir)}
    self._fps, self._clip_frames, self._size = fps, clip_frames, size
    self._cache: dict[int, np.ndarray] = {}

  def __call__(self, token: int) -> np.ndarray:
    """[size, size, 3] float in [0, 1]; grey when no training clip reached the leaf."""
    token = int(token)
    if token not in self._cache:
      frame = np.full((self._size, self._size, 3), 0.5, np.float32)
      video_id, clip = str(self._video[token]), int(self._clip[token])
      if video_id and clip >= 0 and video_id in self._videos:
        for i, c in enumerate(video_lib.iter_clips(self._videos[video_id], self._fps,
                                                   self._clip_frames, self._size)):
          if i == clip:
            frame = c.frames[c.num_real_frames // 2]
            break
      self._cache[token] = frame
    return self._cache[token]


def save_strips(path: str, rows: Sequence[tuple[str, Sequence[int]]], frames: TokenFrames,
                title: str = '') -> None:
  """One PNG: per row a caption and its tokens' frames, each labelled with its id."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  columns = max(len(tokens) for _, tokens in rows)
  fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns + 0.2, 1.9 * len(rows)),
                           squeeze=False)
  for r, (caption, tokens) in enumerate(rows):
    for c in range(columns):
      ax = axes[r, c]
      ax.axis('off')
      if c < len(tokens):
        ax.imshow(frames(tokens[c]))
        ax.set_title(f'#{tokens[c]}', fontsize=7)
    axes[r, 0].text(0, -0.35, caption, transform=axes[r, 0].transAxes, fontsize=8,
                    ha='left', va='bottom')
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  with files_lib.atomic_path(path) as tmp:
    # format: matplotlib would read it from the temporary name's extension.
    fig.savefig(tmp, dpi=90, format='png')
  plt.close(fig)
