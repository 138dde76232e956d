"""The make-records job: features, a codebook and transcripts into sharded TFRecords.

Used by `vlm-jax make-records` and the demos; see that command for the details.
`config.system` picks the schema: 'videobert' (visual tokens from a codebook,
vlm_jax.data.records) or 'videoclip' (per-second features, no codebook,
vlm_jax.data.feature_records).
"""

import json
import os
import sys
from typing import Any, Optional

import ml_collections
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data import shares as shares_lib
from vlm_jax.data import storage
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import transcripts as transcripts_lib
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import make_records as join
from vlm_jax.data import feature_records


def _describe(path: str) -> list[Any]:
  return [storage.absolute(path), *storage.size_and_mtime(path)]


def describe_inputs(features: str, names: list[str], codebook: Optional[str],
                    transcripts: Optional[str], vocab_file: str) -> dict[str, Any]:
  """Sizes and mtimes of every input file: what a re-run compares to skip."""
  feature_files = []
  present = set(storage.listdir(features))
  for name in names:
    for base in (name, name[:-len('.npy')] + files_lib.TIMES_SUFFIX):
      if base in present:
        feature_files.append([base, *storage.size_and_mtime(os.path.join(features, base))])
  return dict(
      features=feature_files, codebook=_describe(codebook) if codebook else None,
      vocab=_describe(vocab_file),
      transcripts=([_describe(p) for p in transcripts_lib.transcript_files(transcripts)]
                   if transcripts else []))


def _shard_files(output: str, prefix: str) -> list[str]:
  return storage.glob(os.path.join(storage.glob_escape(output), f'{prefix}-*-of-*.tfrecord'))


def _videoclip_record(video_id, features, clip_times, sentences, tokenizer):
  times = join.check_clip_times(clip_times, features.shape[0])
  ids, sentence_times, empty = join.tokenize_sentences(tokenizer, sentences or [])
  record = feature_records.FeatureRecord(
      video_id, feature_records.per_second(features, times), ids, sentence_times)
  record.validate()
  return record, join.JoinStats(clips=len(features), sentences=len(ids), empty_sentences=empty)


MANIFEST = 'manifest.json'


def process_prefix(prefix: str, process_index: int, process_count: int) -> str:
  """The shard prefix of one process's records: videos-process00001of00004."""
  return f'{prefix}-process{process_index:05d}of{process_count:05d}'


def run(features: str, codebook: Optional[str], transcripts: Optional[str], output: str,
        config: ml_collections.ConfigDict, progress: bool = True, process_index: int = 0,
        process_count: int = 1) -> dict[str, Any]:
  """Writes the shards and manifest.json into `output`; returns the manifest.

  With the same inputs and parameters as the manifest already there (and its
  shards present), nothing is written and the manifest comes back with
  `skipped: True`. With `process_count` > 1 this process takes its share of
  the feature files (`shares.take`, by size), writes ceil(num_shards /
  process_count) shards named by `process_prefix` and
  `shares.manifest_name(process_index, process_count)`; `merge` then writes
  manifest.json over all of them.
  """
  shares_lib.check(process_index, process_count)
  names = codebook_lib.list_features(features)
  share, prefix, num_shards = None, config.prefix, config.num_shards
  if process_count > 1:
    taken, share = shares_lib.take(
        [(n,) for n in names], [storage.getsize(os.path.join(features, n)) for n in names],
        'bytes', process_index, process_count)
    names = [n for n, in taken]
    prefix = process_prefix(config.prefix, process_index, process_count)
    num_shards = -(-num_shards // process_count)
  vocab_file = config.vocab_file or tokenizer_lib.default_vocab_file()
  params = config.to_dict()
  inputs = describe_inputs(features, names, codebook, transcripts, vocab_file)
  manifest_file = os.path.join(
      output, shares_lib.manifest_name(process_index, process_count) if share else MANIFEST)
  if storage.exists(manifest_file):
    previous = files_lib.read_json(manifest_file)
    if (previous.get('inputs') == inputs and previous.get('parameters') == params
        and all(storage.exists(p) for p in previous.get('shards', []))):
      return dict(previous, skipped=True)

  system = config.system
  videoclip = system == 'videoclip'
  if system not in ('videobert', 'videoclip'):
    raise ValueError(f"config.system: 'videobert' or 'videoclip', got {system!r}")
  if not videoclip and not codebook:
    raise ValueError("--codebook is required for config.system='videobert'")
  book = None if videoclip else codebook_lib.Codebook.load(codebook)
  tokenizer = tokenizer_lib.load(vocab_file, config.lowercase)
  transcript_failures: list = []
  sentences_by_video = (transcripts_lib.load_transcripts(
      transcripts, lenient=config.lenient, max_gap=config.max_gap, max_words=config.max_words,
      failures=transcript_failures) if transcripts else {})
  video_ids = [n[:-len('.npy')] for n in names]
  _, _, orphans = join.match(video_ids, sentences_by_video)

  failures: list[dict[str, str]] = []
  # VideoCLIP's: the first record's width; a video of another is a failure.
  feature_dim = book.dim if book else None
  counts = dict(feature_files=len(names), videos=0, with_transcript=0, without_transcript=0,
                sentences=0, empty_sentences_dropped=0, clips=0, failed=0,
                transcripts_without_features=len(orphans))

  def video_records():
    nonlocal feature_dim
    for name, video_id in zip(tqdm.tqdm(names, desc='make-records', unit='video',
                                        disable=not progress), video_ids):
      try:
        array = codebook_lib.load_features(os.path.join(features, name),
                                           book.dim if book else None)
        times_path = os.path.join(features, video_id + files_lib.TIMES_SUFFIX)
        if not storage.exists(times_path):
          raise ValueError(f'no {video_id}{files_lib.TIMES_SUFFIX} clip times next to the features')
        times = storage.load_npy(times_path)
        if videoclip:
          if feature_dim not in (None, array.shape[1]):
            raise ValueError(f'{array.shape[1]}-d features, but the first record\'s are '
                             f'{feature_dim}-d')
          record, stats = _videoclip_record(video_id, array, times,
                                            sentences_by_video.get(video_id), tokenizer)
          feature_dim = array.shape[1]
        else:
          record, stats = join.video_record(video_id, array, times, book,
                                            sentences_by_video.get(video_id), tokenizer)
      except ValueError as e:
        failures.append({'video_id': video_id, 'file': name, 'error': str(e)})
        print(f'make-records: skipped {name}: {e}', file=sys.stderr)
        continue
      counts['videos'] += 1
      counts['with_transcript' if video_id in sentences_by_video else 'without_transcript'] += 1
      counts['sentences'] += stats.sentences
      counts['empty_sentences_dropped'] += stats.empty_sentences
      counts['clips'] += stats.clips
      yield record

  # Shards are written aside and renamed into place, so a crash leaves the
  # previous complete set (or none), never a partial shard under a final name.
  storage.makedirs(output)
  staging = os.path.join(output, f'.staging-{os.getpid()}')
  storage.rmtree(staging)
  num_shards = max(1, min(num_shards, len(names)))
  try:
    staged = records.write_shards(video_records(), staging, num_shards, prefix=prefix,
                                  serialize=feature_records.to_example if videoclip else None)
    stale = set(_shard_files(output, prefix))
    shards = []
    for path in staged:
      target = os.path.join(output, os.path.basename(path))
      storage.replace(path, target)
      shards.append(target)
      stale.discard(target)
    for path in stale:
      storage.remove(path)
  finally:
    storage.rmtree(staging)
  counts['failed'] = len(failures)

  manifest = dict(
      system=system, features=storage.absolute(features),
      codebook=storage.absolute(codebook) if codebook else None,
      transcripts=storage.absolute(transcripts) if transcripts else None,
      output=storage.absolute(output), vocab_file=storage.absolute(vocab_file),
      parameters=params, inputs=inputs,
      # The records' vocabulary, which `vlm-jax train` checks against the model.
      num_visual_tokens=book.num_leaves if book else None,
      text_vocab_size=tokenizer.get_vocab_size(),
      feature_dim=feature_dim,
      codebook_shape=dict(levels=book.levels, k=book.k, dim=book.dim) if book else None,
      shards=shards, counts=counts, transcripts_without_features=orphans,
      failures=failures, transcript_failures=[str(f) for f in transcript_failures])
  if share:
    manifest['share'] = share
  files_lib.write_json(manifest_file, manifest, indent=1)
  return dict(manifest, skipped=False)


# What every process's manifest must agree on to make one set of records.
_AGREED = ('system', 'codebook', 'transcripts', 'vocab_file', 'parameters', 'num_visual_tokens',
           'text_vocab_size', 'codebook_shape')


def merge(features: str, output: str) -> dict[str, Any]:
  """manifest.json of `output` over its processes' records; returns it.

  The result is what one process would have written over all the feature
  files (shards: every process's; counts summed; transcripts without features:
  those without features in every share), so `vlm-jax train` checks the
  records' vocabulary from it, and a later run with the same inputs skips.
  Shards of an earlier run under the same prefix (another process count, or
  one process) are removed.

  Raises:
    ValueError: process manifests absent or incomplete (`shares.read_manifests`),
      disagreeing on the parameters, inputs or vocabulary, or of VideoCLIP
      features of different widths; feature files in no process's share.
  """
  manifests = shares_lib.read_manifests(output)
  for key in _AGREED:
    values = {json.dumps(m[key], sort_keys=True) for m in manifests}
    if len(values) > 1:
      raise ValueError(f'{output}: the process manifests differ in {key}; rerun every process '
                       'with the same inputs and --config')
  dims = {m['feature_dim'] for m in manifests} - {None}
  if len(dims) > 1:
    raise ValueError(f'{output}: the processes wrote features of widths {sorted(dims)}')
  names = codebook_lib.list_features(features)
  missing = shares_lib.missing_items(
      names, {n for m in manifests for n in m['share']['item_ids']}, manifests)
  first = manifests[0]
  shards = sorted(p for m in manifests for p in m['shards'])
  for path in set(_shard_files(output, first['parameters']['prefix'])) - set(shards):
    storage.remove(path)
  orphans = sorted(set.intersection(*[set(m['transcripts_without_features'])
                                      for m in manifests]))
  counts = {k: sum(m['counts'][k] for m in manifests) for k in first['counts']}
  counts.update(transcripts_without_features=len(orphans), missing=len(missing))
  # As one run would describe them, so that it skips when nothing changed since.
  inputs = describe_inputs(features, names, first['codebook'], first['transcripts'],
                           first['vocab_file'])
  manifest = dict(
      {k: first[k] for k in _AGREED},
      features=storage.absolute(features), output=storage.absolute(output), inputs=inputs,
      feature_dim=dims.pop() if dims else None, shards=shards, counts=counts,
      transcripts_without_features=orphans,
      failures=[f for m in manifests for f in m['failures']],
      transcript_failures=first['transcript_failures'], missing=missing,
      merged=dict(processes=len(manifests)))
  manifest_file = os.path.join(output, MANIFEST)
  files_lib.write_json(manifest_file, manifest, indent=1)
  shares_lib.check_missing(missing, len(names), 'feature files', manifest_file)
  return manifest
