"""The assign-tokens job: clip features to VideoBERT visual-token ids, one file per video.

Used by `vlm-jax assign-tokens`; see that command for the file layout.
"""

import os
from typing import Any

import numpy as np
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import shares as shares_lib
from vlm_jax.data import storage
from vlm_jax.videobert import codebook as codebook_lib

MANIFEST = 'manifest.json'


def _load_codebook(codebook: str) -> codebook_lib.Codebook:
  book = codebook_lib.Codebook.load(codebook)
  if book.num_leaves > np.iinfo(np.int32).max:
    raise ValueError(f'{codebook}: {book.num_leaves} leaves do not fit int32')
  return book


def run(features: str, codebook: str, output: str, process_index: int = 0,
        process_count: int = 1, progress: bool = True) -> dict[str, Any]:
  """Writes `<video_id>.npy` [num_clips] int32 tokens per feature file; returns the manifest.

  Existing outputs are kept (a re-run resumes); a bad input file is recorded
  in the manifest (also written to output/manifest.json) and skipped. With
  `process_count` > 1 this process takes only its share of the files
  (`shares.take`, by size) and writes `shares.manifest_name(process_index,
  process_count)`; `merge` then writes manifest.json.
  """
  shares_lib.check(process_index, process_count)
  names = codebook_lib.list_features(features)
  share = None
  if process_count > 1:
    items, share = shares_lib.take(
        [(n,) for n in names], [storage.getsize(os.path.join(features, n)) for n in names],
        'bytes', process_index, process_count)
    names = [n for n, in items]
  book = _load_codebook(codebook)
  storage.makedirs(output)
  present = set(storage.listdir(output))
  written, skipped, clips, failures = 0, 0, 0, []
  for name in tqdm.tqdm(names, desc='assign-tokens', unit='video', disable=not progress):
    target = os.path.join(output, name)
    if name in present:
      skipped += 1
      continue
    try:
      array = codebook_lib.load_features(os.path.join(features, name), book.dim)
    except ValueError as e:
      failures.append({'file': name, 'error': str(e)})
      continue
    tokens = codebook_lib.assign(book, array).astype(np.int32)
    files_lib.save_npy(target, tokens)
    written += 1
    clips += len(tokens)
  manifest = dict(
      features=storage.absolute(features), codebook=storage.absolute(codebook),
      output=storage.absolute(output),
      codebook_shape=dict(levels=book.levels, k=book.k, dim=book.dim),
      counts=dict(files=len(names), written=written, skipped_existing=skipped,
                  failed=len(failures), clips_written=clips),
      failures=failures)
  if share:
    manifest['share'] = share
  name = shares_lib.manifest_name(process_index, process_count) if share else MANIFEST
  files_lib.write_json(os.path.join(output, name), manifest, indent=1)
  return manifest


def merge(features: str, codebook: str, output: str) -> dict[str, Any]:
  """manifest.json of `output` from its processes' manifests; returns it.

  Every feature file is done (its tokens are there), failed (in a process's
  manifest, still without tokens) or missing.

  Raises:
    ValueError: the process manifests are absent or incomplete
      (`shares.read_manifests`), or some file is missing (after manifest.json
      is written).
  """
  names = codebook_lib.list_features(features)
  book = _load_codebook(codebook)
  manifests = shares_lib.read_manifests(output)
  done = set(names) & set(storage.listdir(output))
  failures = [f for m in manifests for f in m['failures'] if f['file'] not in done]
  missing = shares_lib.missing_items(names, done | {f['file'] for f in failures}, manifests)
  total = lambda key: sum(m['counts'][key] for m in manifests)
  manifest = dict(
      features=storage.absolute(features), codebook=storage.absolute(codebook),
      output=storage.absolute(output),
      codebook_shape=dict(levels=book.levels, k=book.k, dim=book.dim),
      counts=dict(files=len(names), done=len(done), written=total('written'),
                  skipped_existing=total('skipped_existing'), failed=len(failures),
                  missing=len(missing), clips_written=total('clips_written')),
      failures=failures, missing=missing, merged=dict(processes=len(manifests)))
  manifest_file = os.path.join(output, MANIFEST)
  files_lib.write_json(manifest_file, manifest, indent=1)
  shares_lib.check_missing(missing, len(names), 'feature files', manifest_file)
  return manifest
