"""VideoCLIP's input pipeline: records in memory, epoch plans, batches of sampled pairs.

The corpus (per-second features and timed sentences, vlm_jax.data.feature_records)
is read once into host memory: retrieval-augmented batching needs random access
to any video at any step. An epoch is a plan, [num_batches, k] video indices:
a random partition, or the clusters of a faiss index over the videos'
embeddings (vlm_jax.videoclip.sampling.retrieval_batches). A tf.data
pipeline walks the plan and samples each video's overlapped pairs inside
`tf.numpy_function`, with randomness keyed by (seed, epoch, video), so a batch
is the same whichever process builds it and after any resume.
"""

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from vlm_jax.data.files import DataError
from vlm_jax.videoclip import model as videoclip_model
from vlm_jax.data import feature_records
from vlm_jax.videoclip import sampling as videoclip_sampling


def sampling_options(config) -> videoclip_sampling.SamplingOptions:
  """The pair sampling of a VideoCLIP config: its data fields and its vocab's [CLS] / [SEP]."""
  d, ids = config.data, videoclip_model.special_ids(config)
  return videoclip_sampling.SamplingOptions(
      cls_id=ids['[CLS]'], sep_id=ids['[SEP]'],
      pairs_per_video=d.pairs_per_video, min_text_tokens=d.min_text_tokens,
      max_text_tokens=d.max_text_tokens, text_tokens_cap=d.text_tokens_cap,
      max_span_seconds=d.max_span_seconds, min_video_seconds=d.min_video_seconds,
      max_video_seconds=d.max_video_seconds)


def pair_rng(seed: int, epoch: int, video: int, purpose: int = 0) -> np.random.Generator:
  """The generator of one video's pairs in one epoch (purpose 1: retrieval vectors)."""
  return np.random.default_rng([seed, epoch, video, purpose])


def pair_arrays(pairs: Sequence[videoclip_sampling.Pair], features: np.ndarray,
                opts: videoclip_sampling.SamplingOptions) -> dict[str, np.ndarray]:
  """Fixed-shape model inputs of one video's pairs.

  Returns:
    features [n, max_video_seconds, dim] float32, feature_mask [n, max_video_seconds],
    input_ids and attention_mask [n, text_tokens_cap + 2] (`[CLS] text [SEP]`).
  """
  n, seconds, text_len = len(pairs), opts.max_video_seconds, opts.text_tokens_cap + 2
  out = {
      'features': np.zeros((n, seconds, features.shape[1]), np.float32),
      'feature_mask': np.zeros((n, seconds), np.int32),
      'input_ids': np.zeros((n, text_len), np.int32),
      'attention_mask': np.zeros((n, text_len), np.int32),
  }
  for i, pair in enumerate(pairs):
    clip = features[pair.video_start:pair.video_end][:seconds]
    out['features'][i, :len(clip)] = clip
    out['feature_mask'][i, :len(clip)] = 1
    ids = [opts.cls_id] + list(pair.text_ids)[:opts.text_tokens_cap] + [opts.sep_id]
    out['input_ids'][i, :len(ids)] = ids
    out['attention_mask'][i, :len(ids)] = 1
  return out


def video_pairs(corpus: feature_records.Corpus, video: int, rng: np.random.Generator,
                opts: videoclip_sampling.SamplingOptions, num_pairs: int | None = None
                ) -> dict[str, np.ndarray]:
  """`num_pairs` (default opts.pairs_per_video) sampled pairs of one video as arrays."""
  opts_n = dataclasses.replace(opts, pairs_per_video=num_pairs or opts.pairs_per_video)
  pairs = videoclip_sampling.sample_video(rng, corpus.sentences[video], corpus.times[video],
                                          corpus.features[video].shape[0], opts_n)
  return pair_arrays(pairs, corpus.features[video], opts)


def batch_of_videos(corpus: feature_records.Corpus, videos: Sequence[int], epoch: int, seed: int,
                    opts: videoclip_sampling.SamplingOptions) -> dict[str, np.ndarray]:
  """Pairs of `videos`, video-major: rows [i * P, (i + 1) * P) are video i's P pairs."""
  parts = [video_pairs(corpus, int(v), pair_rng(seed, epoch, int(v)), opts) for v in videos]
  batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  batch['video_index'] = np.repeat(np.asarray(videos, np.int32), opts.pairs_per_video)
  return batch


def random_plan(num_videos: int, videos_per_batch: int, rng: np.random.Generator) -> np.ndarray:
  """[num_videos // k, k]: a random partition (the remainder waits for another epoch)."""
  order = rng.permutation(num_videos)
  num_batches = num_videos // videos_per_batch
  return order[:num_batches * videos_per_batch].reshape(num_batches, videos_per_batch)


def retrieval_plan(vectors: np.ndarray, videos_per_batch: int, rng: np.random.Generator,
                   num_lists: int) -> np.ndarray:
  """[num_videos // k, k]: each batch k videos of one seed's 2k nearest neighbours."""
  return np.stack(videoclip_sampling.retrieval_batches(vectors, videos_per_batch, rng,
                                                       num_lists)).astype(np.int64)


def make_dataset(corpus: feature_records.Corpus, plan: np.ndarray, epoch: int, seed: int,
                 opts: videoclip_sampling.SamplingOptions, start_batch: int = 0,
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Batches of the plan's rows from `start_batch` on; this process's share of each.

  Each process builds the pairs of its slice of a row's k videos (k must divide
  by the process count), so the global batch is the whole row.
  """
  k = plan.shape[1]
  if k % process_count:
    raise DataError(f'{k} videos per batch do not split over {process_count} processes')
  share = plan[:, process_index * k // process_count:(process_index + 1) * k // process_count]
  names = ('features', 'feature_mask', 'input_ids', 'attention_mask', 'video_index')
  dtypes = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32)

  def build(row):
    batch = batch_of_videos(corpus, share[int(row)], epoch, seed, opts)
    return tuple(batch[n] for n in names)

  def to_dict(*tensors):
    return dict(zip(names, tensors))

  rows = tf.data.Dataset.range(start_batch, len(plan))
  ds = rows.map(lambda r: tf.numpy_function(build, [r], dtypes, stateful=False),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.map(to_dict).prefetch(2)
