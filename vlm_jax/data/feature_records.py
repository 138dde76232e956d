"""The feature-record schema of VideoCLIP and CBT: one `tf.train.Example` per video.

| feature                 | type        | meaning                                           |
|-------------------------|-------------|---------------------------------------------------|
| `video_id`              | bytes       | the video's id                                     |
| `text/token_ids`        | int64 list  | WordPiece ids of all sentences, concatenated       |
| `text/sentence_lengths` | int64 list  | WordPieces per sentence (sums to the above)        |
| `text/start_times`      | float list  | sentence start, seconds                            |
| `text/end_times`        | float list  | sentence end, seconds                              |
| `video/features`        | bytes       | [num_seconds, dim] float16, row t = second [t, t+1) |
| `video/num_seconds`     | int64       | rows of the features                               |
| `video/feature_dim`     | int64       | columns of the features                            |

The text fields are VideoBERT's (vlm_jax.data.records). Features are stored
as float16 bytes: S3D-G's 512-d tokens lose nothing that matters to the
models that read them, and a HowTo100M-scale corpus halves on disk. Shared
here because systems never import one another: `vlm-jax make-records
--config.system=videoclip` writes them, VideoCLIP and CBT read them.
"""

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from vlm_jax import config_checks
from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data.files import DataError

# The id and text fields are VideoBERT's; the video fields are continuous features.
FEATURES = {name: spec for name, spec in records.FEATURES.items()
            if not name.startswith('video/')}
FEATURES.update({
    'video/features': tf.io.FixedLenFeature([], tf.string),
    'video/num_seconds': tf.io.FixedLenFeature([], tf.int64),
    'video/feature_dim': tf.io.FixedLenFeature([], tf.int64),
})


@dataclasses.dataclass
class FeatureRecord:
  """One video: per-second features and timed sentences (host memory)."""
  video_id: str
  features: np.ndarray                 # [num_seconds, dim]
  sentences: list[list[int]]           # WordPiece ids per sentence, in time order
  sentence_times: list[tuple[float, float]]

  def validate(self):
    if self.features.ndim != 2 or self.features.shape[0] < 1:
      raise ValueError(f'{self.video_id}: per-second features must be [T >= 1, D], got '
                       f'{list(self.features.shape)}')
    if len(self.sentences) != len(self.sentence_times):
      raise ValueError(f'{self.video_id}: {len(self.sentences)} sentences but '
                       f'{len(self.sentence_times)} sentence times')


def per_second(features: np.ndarray, clip_times: np.ndarray) -> np.ndarray:
  """Clip features -> one row per second: the clip whose span holds the second's middle.

  Args:
    features: [num_clips, dim] features of consecutive clips (any clip length;
      extract-features' 1-s clips map one to one).
    clip_times: [num_clips, 2] (start, end) seconds.

  Returns:
    [ceil(last clip end), dim]; a second past every clip takes the nearest clip.
  """
  clip_times = np.asarray(clip_times, np.float64)
  num_seconds = max(1, int(np.ceil(clip_times[:, 1].max() - 1e-6)))
  middles = np.arange(num_seconds) + 0.5
  centres = clip_times.mean(axis=1)
  inside = (clip_times[None, :, 0] <= middles[:, None]) & (middles[:, None] < clip_times[None, :, 1])
  nearest = np.abs(centres[None, :] - middles[:, None]).argmin(axis=1)
  rows = np.where(inside.any(axis=1), inside.argmax(axis=1), nearest)
  return features[rows]


def _int64(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, values))))


def _float(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, values))))


def _bytes(value: bytes):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_example(record: FeatureRecord) -> bytes:
  record.validate()
  starts, ends = (zip(*record.sentence_times) if record.sentence_times else ((), ()))
  features = np.ascontiguousarray(record.features, '<f2')
  feature = {
      'video_id': _bytes(record.video_id.encode()),
      'text/token_ids': _int64([t for s in record.sentences for t in s]),
      'text/sentence_lengths': _int64([len(s) for s in record.sentences]),
      'text/start_times': _float(starts),
      'text/end_times': _float(ends),
      'video/features': _bytes(features.tobytes()),
      'video/num_seconds': _int64([features.shape[0]]),
      'video/feature_dim': _int64([features.shape[1]]),
  }
  # deterministic: map fields in key order, so the same records are the same bytes in every
  # process (protobuf's map order otherwise follows the process's string hashing).
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def from_example(serialized: bytes) -> FeatureRecord:
  """Parses one serialized example (eager; the corpus is loaded once per run)."""
  p = tf.io.parse_single_example(serialized, FEATURES)
  p = {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy()
       for k, v in p.items()}
  shape = (int(p['video/num_seconds']), int(p['video/feature_dim']))
  features = np.frombuffer(p['video/features'], '<f2')
  video_id = p['video_id'].decode()
  if features.size != shape[0] * shape[1]:
    raise ValueError(f'{video_id}: video/features holds {features.size} values, not '
                     f'{shape[0]} x {shape[1]}')
  bounds = np.cumsum(np.concatenate([[0], p['text/sentence_lengths']])).astype(int)
  return FeatureRecord(
      video_id=video_id, features=features.reshape(shape),
      sentences=[p['text/token_ids'][a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])],
      sentence_times=list(zip(p['text/start_times'].tolist(), p['text/end_times'].tolist())))


def read(paths: Sequence[str]) -> Iterable[FeatureRecord]:
  """Every record of `paths`, in file order."""
  for path in paths:
    for raw in tf.data.TFRecordDataset([path]):
      yield from_example(raw.numpy())


@dataclasses.dataclass
class Corpus:
  """The videos of feature records that have at least one sentence, in file order."""
  video_ids: list[str]
  features: list[np.ndarray]           # [num_seconds, dim] float16 each (a row a clip)
  sentences: list[list[list[int]]]     # WordPiece ids per sentence
  times: list[np.ndarray]              # [num_sentences, 2] seconds
  skipped: list[dict[str, str]]        # videos left out, with the reason

  def __len__(self) -> int:
    return len(self.video_ids)

  @property
  def feature_dim(self) -> int:
    return int(self.features[0].shape[1])


def load_corpus(files: Sequence[str]) -> Corpus:
  """Reads every record of `files`.

  Raises:
    DataError: a file that cannot be read (named), or no usable video.
  """
  corpus = Corpus([], [], [], [], [])
  for path in files:
    try:
      for record in read([path]):
        if not record.sentences:
          corpus.skipped.append({'video_id': record.video_id, 'file': path,
                                 'reason': 'no sentences'})
          continue
        corpus.video_ids.append(record.video_id)
        corpus.features.append(record.features)
        corpus.sentences.append(record.sentences)
        corpus.times.append(np.asarray(record.sentence_times, np.float64))
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
      raise DataError(f'{path}: corrupt or truncated TFRecord ({e.message})') from e
    except (tf.errors.InvalidArgumentError, ValueError) as e:
      raise DataError(f'{path}: not a feature record (vlm-jax make-records '
                      f'--config.system=videoclip): {e}') from e
  if not corpus.video_ids:
    raise DataError(f'no video with sentences in {len(files)} files ({list(files)[:3]}...)')
  dims = {f.shape[1] for f in corpus.features}
  if len(dims) > 1:
    raise DataError(f'feature widths differ between videos: {sorted(dims)}')
  return corpus


def training_files(config) -> list[str]:
  """The feature TFRecords of `config.data.train_files` (VideoCLIP, CBT); local paths absolute."""
  if not config.data.train_files:
    raise config_checks.ConfigError(
        'config.data.train_files: a glob of feature TFRecords is required '
        '(vlm-jax make-records --config.system=videoclip)')
  return [p if '://' in p else os.path.abspath(p)
          for p in files_lib.list_files(config.data.train_files)]
