"""The TFRecord schema: one `tf.train.Example` per video.

| feature                 | type          | meaning                                         |
|-------------------------|---------------|-------------------------------------------------|
| `video_id`              | bytes         | the video's id                                   |
| `text/token_ids`        | int64 list    | WordPiece ids of all sentences, concatenated     |
| `text/sentence_lengths` | int64 list    | WordPieces per sentence (sums to the above)      |
| `text/start_times`      | float list    | sentence start, seconds                          |
| `text/end_times`        | float list    | sentence end, seconds                            |
| `video/token_ids`       | int64 list    | visual token (codebook leaf) per clip, 0..K-1    |
| `video/start_times`     | float list    | clip start, seconds                              |
| `video/end_times`       | float list    | clip end, seconds                                |

A video without ASR has empty `text/*` lists; segmenting, sentence
concatenation, subsampling and masking happen per example in the pipeline.
"""

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

FEATURES = {
    'video_id': tf.io.FixedLenFeature([], tf.string),
    'text/token_ids': tf.io.VarLenFeature(tf.int64),
    'text/sentence_lengths': tf.io.VarLenFeature(tf.int64),
    'text/start_times': tf.io.VarLenFeature(tf.float32),
    'text/end_times': tf.io.VarLenFeature(tf.float32),
    'video/token_ids': tf.io.VarLenFeature(tf.int64),
    'video/start_times': tf.io.VarLenFeature(tf.float32),
    'video/end_times': tf.io.VarLenFeature(tf.float32),
}


@dataclasses.dataclass
class VideoRecord:
  """One video's tokens in host memory (the unit written to a TFRecord)."""
  video_id: str
  sentences: list[list[int]]          # WordPiece ids per sentence
  sentence_times: list[tuple[float, float]]
  visual_tokens: list[int]            # one codebook leaf per clip
  clip_times: list[tuple[float, float]]

  def validate(self):
    if len(self.sentences) != len(self.sentence_times):
      raise ValueError(f'{self.video_id}: {len(self.sentences)} sentences but '
                       f'{len(self.sentence_times)} sentence times')
    if len(self.visual_tokens) != len(self.clip_times):
      raise ValueError(f'{self.video_id}: {len(self.visual_tokens)} visual tokens but '
                       f'{len(self.clip_times)} clip times')


def _int64(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, values))))


def _float(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, values))))


def to_example(record: VideoRecord) -> bytes:
  record.validate()
  starts, ends = (zip(*record.sentence_times) if record.sentence_times else ((), ()))
  clip_starts, clip_ends = (zip(*record.clip_times) if record.clip_times else ((), ()))
  feature = {
      'video_id': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[record.video_id.encode()])),
      'text/token_ids': _int64([t for s in record.sentences for t in s]),
      'text/sentence_lengths': _int64([len(s) for s in record.sentences]),
      'text/start_times': _float(starts),
      'text/end_times': _float(ends),
      'video/token_ids': _int64(record.visual_tokens),
      'video/start_times': _float(clip_starts),
      'video/end_times': _float(clip_ends),
  }
  # deterministic: map fields in key order, so the same records are the same bytes in every
  # process (protobuf's map order otherwise follows the process's string hashing).
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def write_shards(records: Iterable, output_dir: str, num_shards: int,
                 prefix: str = 'videos', serialize=None) -> list[str]:
  """Writes records round-robin into `num_shards` TFRecord files; returns their paths.

  `serialize` turns a record into bytes (default: this schema's `to_example`).
  """
  serialize = serialize or to_example
  tf.io.gfile.makedirs(output_dir)
  paths = [os.path.join(output_dir, f'{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord')
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  try:
    for i, record in enumerate(records):
      writers[i % num_shards].write(serialize(record))
  finally:
    for w in writers:
      w.close()
  return paths


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Serialized example -> dense 1-D tensors (graph mode, for tf.data)."""
  parsed = tf.io.parse_single_example(serialized, FEATURES)
  return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v)
          for k, v in parsed.items()}


def read(paths: Sequence[str]) -> Iterable[VideoRecord]:
  """Reads records back into host memory (for tools and tests)."""
  for path in paths:
    for raw in tf.data.TFRecordDataset([path]):
      p = {k: v.numpy() for k, v in parse(raw).items()}
      bounds = np.cumsum(np.concatenate([[0], p['text/sentence_lengths']]))
      yield VideoRecord(
          video_id=p['video_id'].decode(),
          sentences=[p['text/token_ids'][a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])],
          sentence_times=list(zip(p['text/start_times'].tolist(), p['text/end_times'].tolist())),
          visual_tokens=p['video/token_ids'].tolist(),
          clip_times=list(zip(p['video/start_times'].tolist(), p['video/end_times'].tolist())))


def find_corrupt(paths: Sequence[str]) -> tuple[str, str] | None:
  """The first file that fails to read, with TF's message; None if all read."""
  for path in paths:
    try:
      for _ in tf.data.TFRecordDataset([path]):
        pass
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
      return path, e.message
  return None
