"""What both demos share: the stage timer, the corpus and feature stages, small file helpers.

The front end (a rendered corpus or the user's videos, then S3D clip features
per split) is the same for every system, so a workdir's `corpus/` and
`features/` serve the VideoBERT and the VideoCLIP demo alike. A rendered
corpus has three splits: train, dev (where configs are chosen) and test
(what is reported); the user's videos have train and test.
"""

import json
import os
import re
import resource
import time
from typing import Any, Callable

import numpy as np

from vlm_jax import config_checks
from vlm_jax.data import files as files_lib
from vlm_jax.stages import extract_features, make_records, synth_videos


def say(message: str) -> None:
  print(f'[vlm-jax demo] {message}', flush=True)


class Stages:
  """Runs named stages, recording wall time and the process's peak memory after each."""

  def __init__(self):
    self.timings: dict[str, dict[str, float]] = {}

  def run(self, name: str, fn: Callable[[], Any], section: str | None = None) -> Any:
    """Runs `fn` as stage `name`; `section`: the demo config's section `fn` trains with.

    A stage trains on a section of the demo's config (config.videobert, ...),
    whose checks name fields from that section's root: with `section`, a
    ConfigError names them as the demo's --config flags do, e.g. a refused
    resume says config.videobert.train.allow_config_change.
    """
    say(f'stage {name}')
    start = time.perf_counter()
    try:
      result = fn()
    except config_checks.ConfigError as e:
      if section is None:
        raise
      raise config_checks.ConfigError(in_section(str(e), section)) from e
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    self.timings[name] = {'seconds': round(time.perf_counter() - start, 1),
                          'peak_rss_gib_so_far': round(peak, 2)}
    return result


def in_section(message: str, section: str) -> str:
  """`message` with each config.<field> as config.<section>.<field> (config.json untouched)."""
  return re.sub(r'\bconfig\.(?!json\b)', f'config.{section}.', message)


def write_list(path: str, paths: list[str]) -> str:
  """Writes one path a line (extract-features' video list); returns `path`."""
  with open(path, 'w') as f:
    f.write(''.join(p + '\n' for p in paths))
  return path


def read_steps(corpus: str) -> list[dict]:
  """The rendered corpus's steps.jsonl: one record per video (split, duration, steps)."""
  with open(os.path.join(corpus, 'steps.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_labels(path: str) -> list[str]:
  """The non-empty lines of a label file (the corpus's verbs.txt, nouns.txt)."""
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def user_corpus(videos_dir: str, transcripts: str, test_fraction: float,
                seed: int) -> list[dict]:
  """The user's videos as the demo's video records, split into train and held-out test.

  Args:
    videos_dir: a folder of videos, searched as extract-features searches it
      (files_lib.find_videos); id = file stem.
    transcripts: a transcript file or folder (vlm_jax.data.transcripts), matched by id.
    test_fraction: share of the videos held out (at least one when there are two or more).
    seed: seeds the split.

  Returns:
    [{video_id, split, path, steps: [{start, end, sentence}]}], steps = timed sentences.
  """
  from vlm_jax.data import transcripts as transcripts_lib  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(videos_dir):
    raise FileNotFoundError(f'--videos {videos_dir}: not a folder')
  listing = files_lib.find_videos(videos_dir)
  paths = dict(listing.videos)
  if not paths:
    raise ValueError(f'--videos {videos_dir}: no videos (of {len(listing.not_videos)} files '
                     'looked at, none holds a video stream)')
  sentences = transcripts_lib.load_transcripts(transcripts, lenient=True)
  ids = sorted(paths)
  order = np.random.default_rng(seed).permutation(len(ids))
  num_test = 0 if len(ids) < 2 else max(1, int(round(test_fraction * len(ids))))
  test = {ids[i] for i in order[:num_test]}
  return [dict(video_id=i, split='test' if i in test else 'train', path=paths[i],
               steps=[dict(start=t.start, end=t.end, sentence=t.text)
                      for t in sentences.get(i, [])])
          for i in ids]


def corpus_videos(workdir: str, config, stages: Stages, videos_dir: str | None = None,
                  transcripts: str | None = None, corpus_config=None,
                  suffix: str = '') -> dict[str, list[dict]]:
  """The corpus alone, without features: `front_end`'s arguments and result."""
  if videos_dir:
    videos = user_corpus(videos_dir, transcripts, config.corpus.test_fraction, config.seed)
    splits = ('train', 'test')
  else:
    corpus = os.path.join(workdir, 'corpus' + suffix)
    c = corpus_config or config.corpus
    stages.run('corpus' + suffix, lambda: synth_videos.run(
        corpus, c.num_videos, c.num_test, config.seed, num_dev=c.num_dev,
        successor_prob=c.get('successor_prob', 0.0)))
    videos = [dict(v, path=os.path.join(corpus, 'videos', v['video_id'] + '.mp4'))
              for v in read_steps(corpus)]
    splits = ('train', 'dev', 'test')
  return {split: [v for v in videos if v['split'] == split] for split in splits}


def front_end(workdir: str, config, stages: Stages, videos_dir: str | None = None,
              transcripts: str | None = None, corpus_config=None,
              suffix: str = '') -> dict[str, list[dict]]:
  """The corpus and its clip features (WORKDIR/features/<split>).

  The corpus is rendered (WORKDIR/corpus), or with `videos_dir` it is the
  user's videos and `transcripts` (`user_corpus`).

  Args:
    workdir, config, stages: the demo's.
    videos_dir, transcripts: the user's videos instead of a rendered corpus.
    corpus_config: the rendered corpus's sizes (num_videos, num_dev, num_test,
      optional successor_prob); default config.corpus.
    suffix: appended to the folders (corpus<suffix>, features<suffix>) and the
      stage names, for a second corpus in the same workdir.

  Returns:
    {'train': videos, 'dev': videos (rendered corpus only), 'test': videos}, each video a
    steps.jsonl-like record with `path`.
  """
  by_split = corpus_videos(workdir, config, stages, videos_dir, transcripts, corpus_config,
                           suffix)

  def features():
    for split, items in by_split.items():
      if not items:
        continue
      listing = write_list(os.path.join(workdir, f'{split}_videos{suffix}.txt'),
                           [v['path'] for v in items])
      extract_features.run(listing, os.path.join(workdir, 'features' + suffix, split),
                           config.features)
  stages.run('features' + suffix, features)
  return by_split


def feature_records(workdir: str, config, stages: Stages) -> tuple[str, dict]:
  """The training videos' per-second feature records (VideoCLIP's and CBT's demos share
  them): (WORKDIR/records_videoclip, the make-records manifest)."""
  records_dir = os.path.join(workdir, 'records_videoclip')
  records_config = config.records.copy_and_resolve_references()
  with records_config.unlocked():
    records_config.system = 'videoclip'
  manifest = stages.run('records', lambda: make_records.run(
      os.path.join(workdir, 'features', 'train'), None,
      os.path.join(workdir, 'corpus', 'transcripts'), records_dir, records_config,
      progress=True))
  return records_dir, manifest


def caption_segment_files(workdir: str, by_split: dict[str, list[dict]]) -> dict[str, str]:
  """WORKDIR/{train,test}_steps.jsonl, the narrated steps the caption job reads; {split: path}.

  Rewritten only when their text changes: the caption job compares its inputs' mtimes to
  know whether its features (and so its captioner) still hold. Every demo writes the same
  files.
  """
  files = {}
  for split in ('train', 'test'):
    files[split] = os.path.join(workdir, f'{split}_steps.jsonl')
    text = ''.join(json.dumps(s) + '\n' for s in segments(by_split[split], narrated=True))
    if not os.path.exists(files[split]) or open(files[split]).read() != text:
      files_lib.write_text(files[split], text)
  return files


def segments(videos: list[dict], narrated: bool = False) -> list[dict]:
  """Every step of `videos` (with `narrated`, those with a sentence): video_id, start, end,
  verb, noun, sentence ('' when the step is not narrated)."""
  return [dict(video_id=v['video_id'], start=s['start'], end=s['end'], verb=s.get('verb'),
               noun=s.get('noun'), sentence=s['sentence'])
          for v in videos for s in v['steps'] if s['sentence'] or not narrated]
