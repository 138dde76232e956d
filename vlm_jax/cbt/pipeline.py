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

With the text MLM term on (`text_mask_rate` > 0) the sentence is masked as
BERT masks it, from the same (seed, step, row) generator after every other
draw, so the rest of the batch is the same bits with the term on or off:
`text_mask_rate` of the sentence's WordPieces (at least one; never `[CLS]`,
`[SEP]` or padding) are predicted, 80% of them replaced by `[MASK]`, 10% by a
random id of the vocabulary, 10% left as they are; their positions are listed
(P per row, the most a full sentence has) so that the head scores only them,
as VideoBERT's does. Off, the batch has no text-mask arrays at all.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from vlm_jax.data import feature_records
from vlm_jax.data import text_masking
from vlm_jax.data.files import DataError

# The batch's arrays, in the order tf.numpy_function returns them.
NAMES = ('features', 'clip_mask', 'masked', 'input_ids', 'attention_mask', 'video_index')
DTYPES = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32)
# ... followed by these when the text MLM term is on (WindowOptions.text_mask_rate > 0).
TEXT_MASK_NAMES = ('masked_ids', 'mlm_positions', 'mlm_labels', 'mlm_weights')
TEXT_MASK_DTYPES = (tf.int32, tf.int32, tf.int32, tf.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowOptions:
  """How windows are cut and framed (the config's data fields and its vocab's ids)."""
  cls_id: int
  sep_id: int
  num_clips: int
  max_text_tokens: int
  mask_rate: float
  mask_span: int = 1
  # The text MLM term's masking: 0 = off (no text-mask arrays); `mask_id` and
  # `vocab_size` (the bound of the random replacements) are read only when on.
  text_mask_rate: float = 0.0
  mask_id: int = -1
  vocab_size: int = 0

  def __post_init__(self):
    if self.text_mask_rate > 0 and (self.mask_id < 0 or self.vocab_size < 1):
      raise ValueError(f'text_mask_rate={self.text_mask_rate} needs a mask_id and a vocab_size, '
                       f'got {self.mask_id} and {self.vocab_size}')

  @property
  def names(self) -> tuple[str, ...]:
    """The batch's arrays (make_dataset's order)."""
    return NAMES + (TEXT_MASK_NAMES if self.text_mask_rate > 0 else ())

  @property
  def dtypes(self) -> tuple[tf.DType, ...]:
    return DTYPES + (TEXT_MASK_DTYPES if self.text_mask_rate > 0 else ())


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
    (`[CLS] sentence [SEP]`, zero padded); with opts.text_mask_rate > 0 also
    `text_masking.mask_text`'s masked_ids [max_text_tokens + 2] and mlm_positions,
    mlm_labels, mlm_weights [P].
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
  if opts.text_mask_rate > 0:  # the last draws of the row's generator: nothing above moves
    out.update(text_masking.mask_text(
        rng, out['input_ids'], len(ids) - 2, opts.text_mask_rate, opts.mask_id,
        opts.vocab_size, text_masking.text_predictions(opts.text_mask_rate,
                                                       opts.max_text_tokens)))
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
    return tuple(batch[n] for n in opts.names)

  steps = tf.data.Dataset.range(start_step + 1, num_steps + 1)
  ds = steps.map(lambda s: tf.numpy_function(build, [s], opts.dtypes, stateful=False),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.map(lambda *tensors: dict(zip(opts.names, tensors))).prefetch(2)
