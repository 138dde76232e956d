"""VideoCLIP's overlapped video-text clip sampling and retrieval-augmented batches (SPEC §3).

Overlapped sampling, per pair: a random ASR sentence is the centre; a target
text length is drawn from U{8..64} tokens and the span of sentences grows left
or right (probability 0.5 each step) until it holds that many tokens, would
exceed 256 s, or reaches both ends; its tokens are cut to 61. The video clip's
centre second is drawn uniformly inside the text span, its length from
U{3..32} s, and it grows one second at a time in a random direction from the
centre (within the video). So video and text overlap without being aligned.

Retrieval augmentation: video vectors (mean over sampled pairs of
(z_video + z_text) / 2) go into a faiss IVF index; seed videos are drawn, each
seed's 2k nearest neighbours are searched, and k of them form one batch, so the
negatives of a batch are hard: similar videos.
"""

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingOptions:
  """How pairs are sampled (the paper's values by default) and framed as model inputs."""
  # The model vocab's [CLS] and [SEP] (vlm_jax.videoclip.pipeline.sampling_options reads
  # them from the config's vocab file): a pair's text input is `[CLS] text [SEP]`.
  cls_id: int
  sep_id: int
  pairs_per_video: int = 16
  min_text_tokens: int = 8
  max_text_tokens: int = 64
  text_tokens_cap: int = 61      # [CLS] + 61 + [SEP] = 63 positions
  max_span_seconds: float = 256.0
  min_video_seconds: int = 3
  max_video_seconds: int = 32


@dataclasses.dataclass(frozen=True)
class Pair:
  """One sampled video-text pair of a video."""
  text_ids: list[int]            # WordPieces, at most text_tokens_cap
  text_span: tuple[float, float]  # seconds covered by the chosen sentences
  video_start: int               # first second (row of the per-second features)
  video_end: int                 # one past the last second


def sample_pair(rng: np.random.Generator, sentences: Sequence[Sequence[int]],
                times: np.ndarray, num_seconds: int, opts: SamplingOptions) -> Pair:
  """One overlapped pair.

  Args:
    rng: the source of randomness.
    sentences: WordPiece ids per ASR sentence, in time order.
    times: [num_sentences, 2] start and end seconds.
    num_seconds: rows of the video's per-second features.
    opts: the sampling parameters.
  """
  n = len(sentences)
  if n == 0 or num_seconds < 1:
    raise ValueError('a pair needs at least one sentence and one second of video')
  lo = hi = int(rng.integers(n))
  target = int(rng.integers(opts.min_text_tokens, opts.max_text_tokens + 1))
  length = len(sentences[lo])
  while length < target and (lo > 0 or hi < n - 1):
    grow_left = (rng.random() < 0.5 and lo > 0) or hi == n - 1
    new_lo, new_hi = (lo - 1, hi) if grow_left else (lo, hi + 1)
    if times[new_hi, 1] - times[new_lo, 0] > opts.max_span_seconds:
      break
    lo, hi = new_lo, new_hi
    length += len(sentences[lo] if grow_left else sentences[hi])
  text = [t for s in sentences[lo:hi + 1] for t in s][:opts.text_tokens_cap]
  text_start, text_end = float(times[lo, 0]), float(times[hi, 1])

  centre = int(np.clip(np.floor(rng.uniform(text_start, max(text_end, text_start + 1e-6))),
                       0, num_seconds - 1))
  want = min(int(rng.integers(opts.min_video_seconds, opts.max_video_seconds + 1)), num_seconds)
  start, end = centre, centre + 1
  while end - start < want:
    grow_left = (rng.random() < 0.5 and start > 0) or end == num_seconds
    if grow_left:
      start -= 1
    else:
      end += 1
  return Pair(text, (text_start, text_end), start, end)


def sample_video(rng: np.random.Generator, sentences, times, num_seconds: int,
                 opts: SamplingOptions) -> list[Pair]:
  """`opts.pairs_per_video` independent pairs of one video."""
  return [sample_pair(rng, sentences, np.asarray(times, np.float64), num_seconds, opts)
          for _ in range(opts.pairs_per_video)]


def retrieval_batches(video_vectors: np.ndarray, videos_per_batch: int,
                      rng: np.random.Generator, num_lists: int = 512) -> list[np.ndarray]:
  """Batches of similar videos for one epoch.

  Args:
    video_vectors: [num_videos, dim] float32.
    videos_per_batch: k; each batch holds k videos drawn from a seed's 2k neighbours.
    rng: seeds the draws.
    num_lists: IVF lists (the paper: 512), reduced when there are few videos.

  Returns:
    num_videos // k arrays of k distinct video indices.
  """
  import faiss  # pylint: disable=import-outside-toplevel
  vectors = np.ascontiguousarray(video_vectors, np.float32)
  n, dim = vectors.shape
  k = videos_per_batch
  if n < 2 * k:
    raise ValueError(f'{n} videos cannot fill batches of {k} drawn from {2 * k} neighbours')
  # faiss wants 39 training points per list; a corpus too small for two lists
  # is searched exactly (what one list would do anyway).
  lists = min(num_lists, n // 39)
  if lists < 2:
    index = faiss.IndexFlatL2(dim)
  else:
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists, faiss.METRIC_L2)
    index.train(vectors)
    index.nprobe = min(lists, 8)
  index.add(vectors)
  seeds = rng.choice(n, size=n // k, replace=False)
  _, neighbours = index.search(vectors[seeds], 2 * k)
  batches = []
  for seed, row in zip(seeds, neighbours):
    found = row[row >= 0]
    if len(found) < k:  # a sparse probe: complete from exact search of the seed
      exact = np.argsort(((vectors - vectors[seed]) ** 2).sum(1), kind='stable')[:2 * k]
      found = np.concatenate([found, exact[~np.isin(exact, found)]])[:2 * k]
    batches.append(rng.choice(found, size=k, replace=False))
  return batches
