"""CBT's input pipeline: windows of consecutive clips, masked, with their ASR sentence.

Records are the feature records VideoCLIP reads too (vlm_jax.data.feature_records:
per-clip float16 features and the timed WordPiece sentences); one feature row
is one clip. They are read once into host memory.

A batch at step s is drawn from a generator keyed by (seed, s) alone: distinct
videos (so each window's sentence is a negative for every other window), one
random sentence of each, the window of `num_clips` consecutive clips centred
on the sentence's middle (shifted to fit inside the video; a shorter video is
padded), and masked clips (`mask_rate` of the real clips, at least one, in
spans of `mask_span`). A resumed run, or any process, builds the same batch.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from vlm_jax.data import feature_records
from vlm_jax.data.files import DataError

# The batch's arrays, in the order tf.numpy_function returns them.
NAMES = ('features', 'clip_mask', 'masked', 'input_ids', 'attention_mask', 'video_index')
DTYPES = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowOptions:
  """How windows are cut and framed (the config's data fields and its vocab's ids)."""
  cls_id: int
  sep_id: int
  num_clips: int
  max_text_tokens: int
  mask_rate: float
  mask_span: int = 1


def window_start(centre_seconds: float, num_clips: int, video_clips: int, length: int) -> int:
  """First clip of the `length`-clip window centred on `centre_seconds`, inside the video."""
  centre = int(np.clip(np.floor(centre_seconds), 0, video_clips - 1))
  return int(np.clip(centre - num_clips // 2, 0, video_clips - length))


def mask_clips(rng: np.random.Generator, length: int, rate: float, span: int) -> np.ndarray:
  """[length] 0/1: spans of `span` clips from random starts until round(rate * length) (>= 1)."""
  masked = np.zeros(length, np.int32)
  target = min(length, max(1, int(round(rate * length))))
  while masked.sum() < target:
    start = int(rng.integers(length))
    masked[start:start + span] = 1
  return masked


def window(corpus: feature_records.Corpus, video: int, rng: np.random.Generator,
           opts: WindowOptions) -> dict[str, np.ndarray]:
  """One window of `video` and its sentence, as fixed-shape arrays.

  Returns:
    features [num_clips, dim] float32 (padding zero), clip_mask and masked
    [num_clips] int32, input_ids and attention_mask [max_text_tokens + 2] int32
    (`[CLS] sentence [SEP]`, zero padded).
  """
  features, n = corpus.features[video], opts.num_clips
  sentence = int(rng.integers(len(corpus.sentences[video])))
  length = min(n, features.shape[0])
  start = window_start(corpus.times[video][sentence].mean(), n, features.shape[0], length)
  out = {'features': np.zeros((n, features.shape[1]), np.float32),
         'clip_mask': np.zeros(n, np.int32), 'masked': np.zeros(n, np.int32),
         'input_ids': np.zeros(opts.max_text_tokens + 2, np.int32),
         'attention_mask': np.zeros(opts.max_text_tokens + 2, np.int32)}
  out['features'][:length] = features[start:start + length]
  out['clip_mask'][:length] = 1
  out['masked'][:length] = mask_clips(rng, length, opts.mask_rate, opts.mask_span)
  ids = ([opts.cls_id] + list(corpus.sentences[video][sentence])[:opts.max_text_tokens]
         + [opts.sep_id])
  out['input_ids'][:len(ids)] = ids
  out['attention_mask'][:len(ids)] = 1
  return out


def batch_at(corpus: feature_records.Corpus, step: int, seed: int, batch_size: int,
             opts: WindowOptions, process_index: int = 0,
             process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of the global batch of `step` (the module docstring's draw).

  Row r of the global batch depends on (seed, step, r) only, so processes build
  disjoint slices of one batch.
  """
  videos = np.random.default_rng([seed, step]).choice(len(corpus), batch_size, replace=False)
  share = batch_size // process_count
  rows = range(process_index * share, (process_index + 1) * share)
  parts = [window(corpus, int(videos[r]), np.random.default_rng([seed, step, r]), opts)
           for r in rows]
  batch = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
  batch['video_index'] = videos[list(rows)].astype(np.int32)
  return batch


def make_dataset(corpus: feature_records.Corpus, seed: int, batch_size: int, opts: WindowOptions,
                 start_step: int, num_steps: int, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """The host batches of steps start_step + 1 ... num_steps (a step's batch: `batch_at`)."""
  if batch_size % process_count:
    raise DataError(f'{batch_size} windows per batch do not split over {process_count} '
                    'processes')

  def build(step):
    batch = batch_at(corpus, int(step), seed, batch_size, opts, process_index, process_count)
    return tuple(batch[n] for n in NAMES)

  steps = tf.data.Dataset.range(start_step + 1, num_steps + 1)
  ds = steps.map(lambda s: tf.numpy_function(build, [s], DTYPES, stateful=False),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.map(lambda *tensors: dict(zip(NAMES, tensors))).prefetch(2)
