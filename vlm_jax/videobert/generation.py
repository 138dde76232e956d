"""VideoBERT generation: text-to-video and future forecasting, shown as frames.

Text-to-video: `[CLS] sentence [>] [MASK] x n [SEP]`; at each masked video
position the most likely visual token not already chosen for the sentence (so a
strip shows n different tokens), or with `against_prior` the one the sentence
makes likelier than the same masks without it (frequent tokens otherwise win
for every sentence).

Forecasting at rate r: `[CLS] [>] token [MASK] x r [SEP]`; the top-3 tokens at
the r-th mask, i.e. r clips ahead. Training subsampled video at rates 1 to 5,
so one clip step stands for 1.5 s to 7.5 s of video.

A visual token is shown as the middle frame of the training clip nearest its
centroid (kept by `vlm-jax build-codebook`), and on a labelled corpus named by
the verb and noun of most training clips assigned to it (`token_labels`), which
is what the demo scores generated tokens by.
"""

import collections
import os
from typing import Sequence

import numpy as np

from vlm_jax.data import files as files_lib
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import video as video_lib
from vlm_jax.videobert import inference as videobert_inference


def text_to_video(loaded, sentences: Sequence[str], num_tokens: int = 4,
                  against_prior: bool = False) -> list[list[int]]:
  """[len(sentences)] lists of `num_tokens` distinct visual token ids (leaf indices).

  With `against_prior` a token is scored by log p(token | sentence) - log p(token)
  at its position, p(token) from the same sequence without the sentence: the
  tokens the sentence makes likelier rather than those frequent in every video.
  """
  vocab = loaded.vocab
  texts = tokenizer_lib.wordpieces(loaded.tokenizer, list(sentences))
  queries = []
  for text in texts + ([[]] if against_prior else []):
    room = loaded.config.data.seq_len - num_tokens - 3
    ids, types = videobert_inference.text_video_sequence(
        text[:room], [vocab.mask_id] * num_tokens, vocab)
    first = len(ids) - 1 - num_tokens
    queries.append(videobert_inference.Query(ids, types, tuple(range(first, first + num_tokens))))
  log_probs = videobert_inference.masked_log_probs(loaded, queries, videobert_inference.VISUAL)
  if against_prior:
    prior = log_probs.pop()
    log_probs = [lp - prior for lp in log_probs]
  out = []
  for scores in log_probs:
    chosen: list[int] = []
    for row in scores:
      row = row.copy()
      row[chosen] = -np.inf
      chosen.append(int(row.argmax()))
    out.append(chosen)
  return out


def forecast_log_probs(loaded, tokens: Sequence[int],
                       rates: Sequence[int] = (1, 2, 3, 4, 5)) -> np.ndarray:
  """[len(tokens), len(rates), num_visual_tokens] log p(visual token r clips after each token)."""
  vocab = loaded.vocab
  queries = []
  for token in tokens:
    for rate in rates:
      ids, types = videobert_inference.text_video_sequence(
          [], [vocab.visual_id(int(token))] + [vocab.mask_id] * rate, vocab)
      queries.append(videobert_inference.Query(ids, types, (len(ids) - 2,)))
  log_probs = videobert_inference.masked_log_probs(loaded, queries, videobert_inference.VISUAL)
  return np.stack([lp[0] for lp in log_probs]).reshape(len(tokens), len(rates), -1)


def forecast(loaded, tokens: Sequence[int], rates: Sequence[int] = (1, 2, 3, 4, 5),
             top: int = 3) -> np.ndarray:
  """[len(tokens), len(rates), top] most likely visual tokens r clips after each token."""
  return np.argsort(-forecast_log_probs(loaded, tokens, rates), axis=-1, kind='stable')[..., :top]


def token_labels(tokens: dict[str, tuple[np.ndarray, np.ndarray]], segments: Sequence[dict],
                 num_tokens: int) -> dict[str, list]:
  """The majority verb and noun of the labelled clips assigned to each visual token.

  Args:
    tokens: {video_id: (tokens [clips], times [clips, 2])} of the training videos.
    segments: labelled steps (video_id, start, end, verb, noun); a clip belongs to
      the step its centre lies in, clips outside every step are not counted.
    num_tokens: the number of visual tokens (codebook leaves).

  Returns:
    {'verb': [num_tokens], 'noun': [num_tokens]} labels (None: no labelled clip),
    'count': [num_tokens] clips of each token in the videos (labelled or not).
  """
  counts = {what: [collections.Counter() for _ in range(num_tokens)] for what in ('verb', 'noun')}
  frequency = np.zeros(num_tokens, np.int64)
  for video_tokens, _ in tokens.values():
    frequency += np.bincount(video_tokens, minlength=num_tokens)
  for s in segments:
    if s['video_id'] not in tokens:
      continue
    video_tokens, times = tokens[s['video_id']]
    centres = times.mean(axis=1)
    for token in video_tokens[(centres >= s['start']) & (centres <= s['end'])]:
      for what in ('verb', 'noun'):
        counts[what][token][s[what]] += 1
  labels: dict[str, list] = {what: [c.most_common(1)[0][0] if c else None for c in per_token]
                             for what, per_token in counts.items()}
  labels['count'] = frequency.tolist()
  return labels


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


def strips_figure(rows: Sequence[tuple], frames: TokenFrames, title: str = '',
                  gaps: Sequence[int] = (), frame_inches: float = 1.1):
  """A matplotlib Figure: per row a caption above its tokens' frames, each titled.

  Args:
    rows: (caption, tokens) or (caption, tokens, titles): titles, one per token,
      default '#id'.
    frames: the token pictures.
    title: the figure's title.
    gaps: a blank column after each of these token indices (groups a row).
    frame_inches: a frame's side; at the 100 dpi of `save_strips`, 110 px.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  columns = max(len(row[1]) for row in rows)
  widths = []
  for c in range(columns):
    widths += [1.0] + ([0.25] if c in gaps else [])
  titled = any(len(row) > 2 and any('\n' in t for t in row[2]) for row in rows)
  row_inches = frame_inches + (0.5 if titled else 0.35)
  fig = plt.figure(figsize=(frame_inches * sum(widths) + 0.3,
                            row_inches * len(rows) + (0.4 if title else 0)),
                   layout='constrained')
  for subfig, row in zip(np.atleast_1d(fig.subfigures(len(rows), 1)), rows):
    caption, tokens = row[0], row[1]
    titles = row[2] if len(row) > 2 else [f'#{int(t)}' for t in tokens]
    axes = subfig.subplots(1, len(widths), gridspec_kw={'width_ratios': widths})
    frame_axes = [ax for ax, w in zip(axes, widths) if w == 1.0]
    for ax in axes:
      ax.axis('off')
    for ax, token, text in zip(frame_axes, tokens, titles):
      ax.imshow(frames(token))
      ax.set_title(text, fontsize=7.5)
    subfig.suptitle(caption, x=0.01, ha='left', fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10, fontweight='bold')
  return fig


def save_strips(path: str, rows: Sequence[tuple], frames: TokenFrames, title: str = '',
                gaps: Sequence[int] = ()) -> None:
  """`strips_figure` as one PNG at `path`."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig = strips_figure(rows, frames, title, gaps)
  with files_lib.atomic_path(path) as tmp:
    # format: matplotlib would read it from the temporary name's extension.
    fig.savefig(tmp, dpi=100, format='png')
  plt.close(fig)
