"""The VideoBERT tf.data pipeline: video records -> masked, padded batches.

Per example (one video record), all in the TF graph:
  1. draw a regime by the configured weights: text-only, video-only or
     video-text (a record without ASR can only give video-only, one without
     clips only text-only);
  2. pick a sentence and, with `concat_prob`, join it with its next
     neighbours (up to `max_concat_sentences`) into one long sentence;
  3. draw a video subsampling rate r in 1..max_subsample_rate; the video
     segment is every r-th clip whose midpoint lies in the sentence's
     [start, end] (ASR segmentation), or `segment_len_no_asr` clips at stride r
     from a random start when the video has no ASR;
  4. video-text examples take, with `negative_prob`, the video segment of
     another video (drawn from a second, independently shuffled stream) and
     get alignment label 0;
  5. build `[CLS] text [>] video [SEP]` (`[CLS] text [SEP]`, `[CLS] [>] video
     [SEP]`), truncate to `seq_len`, mask as BERT (15% of non-special
     positions; 80% [MASK], 10% a random token of the same modality, 10%
     unchanged) and pad.

Every random draw is a stateless op seeded by (seed, example index), and the
record order comes from seeded shuffles, so the stream is a function of the
seed; a resumed run restores the iterator (`save_state`/`restore_state`) and
sees the same batches as an uninterrupted one.
"""

import dataclasses
from typing import Sequence

import tensorflow as tf

from vlm_jax.data import records
from vlm_jax.data.files import DataError
from vlm_jax.videobert import vocab as vocab_lib
from vlm_jax.videobert.regimes import (REGIME_NAMES, TEXT, VIDEO,  # pylint: disable=unused-import
                                       VIDEO_TEXT)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  seq_len: int
  max_predictions: int
  mask_prob: float = 0.15
  regime_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # text, video, video_text
  concat_prob: float = 0.3
  max_concat_sentences: int = 3
  max_subsample_rate: int = 5
  segment_len_no_asr: int = 16
  negative_prob: float = 0.5
  shuffle_buffer: int = 1024

  @classmethod
  def from_config(cls, data_config) -> 'PipelineOptions':
    w = data_config.regime_weights
    return cls(
        seq_len=data_config.seq_len, max_predictions=data_config.max_predictions,
        mask_prob=data_config.mask_prob,
        regime_weights=(w.text, w.video, w.video_text),
        concat_prob=data_config.concat_prob,
        max_concat_sentences=data_config.max_concat_sentences,
        max_subsample_rate=data_config.max_subsample_rate,
        segment_len_no_asr=data_config.segment_len_no_asr,
        negative_prob=data_config.negative_prob,
        shuffle_buffer=data_config.shuffle_buffer)


class _Rng:
  """Stateless random draws keyed by (seed, example index, draw number)."""

  def __init__(self, seed: int, index: tf.Tensor):
    self._seed = seed
    self._index = tf.cast(index, tf.int64)
    self._draws = 0

  def _key(self) -> tf.Tensor:
    self._draws += 1  # counted at trace time: each op gets its own stream
    return tf.stack([tf.constant(self._seed * 1_000_003 + self._draws, tf.int64), self._index])

  def uniform(self, shape=()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=self._key())

  def integer(self, low, high, shape=()) -> tf.Tensor:
    """Uniform int32 in [low, high) (high > low)."""
    low = tf.cast(low, tf.int32)
    high = tf.cast(high, tf.int32)
    span = tf.cast(high - low, tf.float32)
    draw = tf.cast(tf.floor(self.uniform(shape) * span), tf.int32)
    return low + tf.minimum(draw, high - low - 1)


def _record_stream(files: Sequence[str], seed: int, shuffle_buffer: int) -> tf.data.Dataset:
  """Parsed records in a seeded, endlessly repeated, shuffled order."""
  ds = tf.data.Dataset.from_tensor_slices(list(files))
  ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  ds = ds.map(records.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.filter(lambda r: tf.size(r['text/sentence_lengths']) + tf.size(r['video/token_ids']) > 0)


def _sentence_span(rec, rng: _Rng, opts: PipelineOptions):
  """A sentence, maybe joined with its neighbours: (wordpieces, start, end)."""
  lengths = tf.cast(rec['text/sentence_lengths'], tf.int32)
  num = tf.size(lengths)
  first = rng.integer(0, tf.maximum(num, 1))
  joined = tf.where(rng.uniform() < opts.concat_prob,
                    rng.integer(2, opts.max_concat_sentences + 1), 1)
  last = tf.minimum(first + joined, num)  # exclusive
  bounds = tf.concat([[0], tf.cumsum(lengths)], axis=0)
  text = tf.cast(rec['text/token_ids'][bounds[first]:bounds[last]], tf.int32)
  # A zero appended so that a record without sentences still indexes safely.
  start = tf.gather(tf.concat([rec['text/start_times'], [0.0]], 0), first)
  end = tf.gather(tf.concat([rec['text/end_times'], [0.0]], 0), tf.maximum(last - 1, 0))
  return text, start, end


def _video_segment(rec, rng: _Rng, opts: PipelineOptions, span):
  """Visual token (cluster) ids of one segment, subsampled at a random rate."""
  tokens = tf.cast(rec['video/token_ids'], tf.int32)
  num_clips = tf.size(tokens)
  rate = rng.integer(1, opts.max_subsample_rate + 1)
  # Without ASR: `segment_len_no_asr` clips at stride `rate` from a random start.
  window = opts.segment_len_no_asr * rate
  start = rng.integer(0, tf.maximum(num_clips - window + 1, 1))
  fixed = tokens[start:start + window:rate]
  if span is None:
    return fixed
  # With ASR: the clips whose midpoint falls inside the sentence time span.
  _, t_start, t_end = span
  mid = (rec['video/start_times'] + rec['video/end_times']) / 2.0
  inside = tf.boolean_mask(tokens, (mid >= t_start) & (mid <= t_end))[::rate]

  def nearest():  # no clip inside the sentence: the one closest to its middle
    return tf.gather(tokens, tf.argmin(tf.abs(mid - (t_start + t_end) / 2.0)))[None]

  def aligned():
    return tf.cond((tf.size(inside) > 0) | (num_clips == 0), lambda: inside, nearest)

  return tf.cond(tf.size(rec['text/sentence_lengths']) > 0, aligned, lambda: fixed)


def _draw_regime(rec, rng: _Rng, opts: PipelineOptions) -> tf.Tensor:
  has_text = tf.cast(tf.size(rec['text/sentence_lengths']) > 0, tf.float32)
  has_video = tf.cast(tf.size(rec['video/token_ids']) > 0, tf.float32)
  w = tf.stack([opts.regime_weights[TEXT] * has_text,
                opts.regime_weights[VIDEO] * has_video,
                opts.regime_weights[VIDEO_TEXT] * has_text * has_video])
  cumulative = tf.cumsum(w) / tf.reduce_sum(w)
  return tf.minimum(tf.reduce_sum(tf.cast(rng.uniform() >= cumulative, tf.int32)), 2)


def _assemble(text, video, regime, vocab: vocab_lib.JointVocab, seq_len: int):
  """Concatenates the pieces of one sequence, truncated to `seq_len`."""
  use_text = tf.cast(regime != VIDEO, tf.int32)
  use_video = tf.cast(regime != TEXT, tf.int32)
  text = text[:tf.size(text) * use_text]
  video = video[:tf.size(video) * use_video] + vocab.visual_offset
  budget = seq_len - 2 - use_video  # [CLS], [SEP] and `[>]` with video
  keep_video = tf.minimum(tf.size(video), tf.maximum(budget - tf.size(text), budget // 2))
  keep_text = tf.minimum(tf.size(text), budget - keep_video)
  text, video = text[:keep_text], video[:keep_video]
  video_sep = tf.fill([use_video], vocab.video_sep_id)
  ids = tf.concat([[vocab.cls_id], text, video_sep, video, [vocab.sep_id]], axis=0)
  types = tf.concat([tf.zeros([1 + keep_text + use_video], tf.int32),
                     tf.fill([keep_video + 1], tf.minimum(use_video, 1))], axis=0)
  return ids, types


def _mask(ids, rng: _Rng, vocab: vocab_lib.JointVocab, opts: PipelineOptions):
  """BERT masking of one unpadded sequence: (ids, positions, targets, weights)."""
  length = tf.size(ids)
  special = tf.reduce_any(ids[:, None] == tf.constant(vocab.special_ids, tf.int32)[None], axis=1)
  candidate = tf.logical_not(special)
  num_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32))
  num_predict = tf.cast(tf.round(tf.cast(num_candidates, tf.float32) * opts.mask_prob), tf.int32)
  num_predict = tf.minimum(tf.maximum(num_predict, tf.minimum(num_candidates, 1)),
                           opts.max_predictions)
  scores = tf.where(candidate, rng.uniform([length]), -1.0)
  k = tf.minimum(length, opts.max_predictions)
  _, order = tf.math.top_k(scores, k=k)
  positions = order[:num_predict]
  targets = tf.gather(ids, positions)
  # 80% [MASK], 10% a random token of the same modality, 10% unchanged.
  action = rng.uniform([num_predict])
  is_visual = targets >= vocab.visual_offset
  random_text = rng.integer(0, vocab.text_vocab_size, [num_predict])
  random_visual = vocab.visual_offset + rng.integer(0, vocab.num_visual_tokens, [num_predict])
  replacement = tf.where(action < 0.8, vocab.mask_id,
                         tf.where(action < 0.9,
                                  tf.where(is_visual, random_visual, random_text), targets))
  ids = tf.tensor_scatter_nd_update(ids, positions[:, None], replacement)
  pad = opts.max_predictions - num_predict
  return (ids, tf.pad(positions, [[0, pad]]), tf.pad(targets, [[0, pad]]),
          tf.pad(tf.ones([num_predict], tf.float32), [[0, pad]]))


def _pad(x, length):
  return tf.ensure_shape(tf.pad(x, [[0, length - tf.size(x)]]), [length])


def make_dataset(files: Sequence[str], opts: PipelineOptions, vocab: vocab_lib.JointVocab,
                 batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """The endless stream of training batches of one host.

  Returns batches of: `input_ids`, `token_type_ids`, `attention_mask`
  [batch, seq_len] int32; `masked_positions`, `masked_ids` [batch, P] int32 and
  `masked_weights` [batch, P] float32 (P = max_predictions); `regime` [batch]
  int32 (0 text, 1 video, 2 video-text); `alignment_label` [batch] int32
  (1 aligned, 0 video from another video; only meaningful for video-text).
  """
  files = sorted(files)
  if not files:
    raise FileNotFoundError('no training files given')
  if len(files) >= process_count:
    files = files[process_index::process_count]
    shard_records = False
  else:
    shard_records = True  # fewer files than hosts: split records instead
  seed = seed * 7 + process_index

  def stream(stream_seed):
    ds = _record_stream(files, stream_seed, opts.shuffle_buffer)
    if shard_records:
      ds = ds.shard(process_count, process_index)
    return ds.enumerate()

  def partner_segment(index, rec):
    rng = _Rng(seed + 2, index)
    span = _sentence_span(rec, rng, opts)
    return rec['video_id'], _video_segment(rec, rng, opts, span)

  partners = stream(seed + 1000).map(partner_segment, num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)

  def example(primary, partner):
    index, rec = primary
    partner_id, partner_video = partner
    rng = _Rng(seed, index)
    regime = _draw_regime(rec, rng, opts)
    span = _sentence_span(rec, rng, opts)
    video = _video_segment(rec, rng, opts, span)
    negative = ((regime == VIDEO_TEXT) & (rng.uniform() < opts.negative_prob)
                & (partner_id != rec['video_id']) & (tf.size(partner_video) > 0))
    video = tf.cond(negative, lambda: partner_video, lambda: video)
    ids, types = _assemble(span[0], video, regime, vocab, opts.seq_len)
    length = tf.size(ids)
    ids, positions, targets, weights = _mask(ids, rng, vocab, opts)
    return {
        'input_ids': _pad(ids, opts.seq_len),
        'token_type_ids': _pad(types, opts.seq_len),
        'attention_mask': _pad(tf.ones([length], tf.int32), opts.seq_len),
        'masked_positions': tf.ensure_shape(positions, [opts.max_predictions]),
        'masked_ids': tf.ensure_shape(targets, [opts.max_predictions]),
        'masked_weights': tf.ensure_shape(weights, [opts.max_predictions]),
        'regime': regime,
        'alignment_label': 1 - tf.cast(negative, tf.int32),
    }

  ds = tf.data.Dataset.zip(stream(seed), partners)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


class BatchIterator:
  """NumPy batches from a dataset, with checkpointable position.

  A read error names the broken file: TF's own message does not.
  """

  def __init__(self, dataset: tf.data.Dataset, files: Sequence[str]):
    self._files = list(files)
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    try:
      batch = next(self._iterator)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      corrupt = records.find_corrupt(self._files)
      where = f'{corrupt[0]}: {corrupt[1]}' if corrupt else e.message
      raise DataError(f'cannot read training data: {where}') from e
    return {k: v.numpy() for k, v in batch.items()}

  def save_state(self, path: str) -> None:
    """Writes the iterator position (and shuffle buffers) under `path`."""
    self._checkpoint.write(path)

  def restore_state(self, path: str) -> None:
    self._checkpoint.read(path).assert_consumed()
