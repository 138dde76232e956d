"""The assign-tokens job: clip features to VideoBERT visual-token ids, one file per video.

Used by `vlm-jax assign-tokens`; see that command for the file layout.
"""

import os
from typing import Any

import numpy as np
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.videobert import codebook as codebook_lib


def run(features: str, codebook: str, output: str) -> dict[str, Any]:
  """Writes `<video_id>.npy` [num_clips] int32 tokens per feature file; returns the manifest.

  Existing outputs are kept (a re-run resumes); a bad input file is recorded
  in the manifest (also written to output/manifest.json) and skipped.
  """
  names = codebook_lib.list_features(features)
  book = codebook_lib.Codebook.load(codebook)
  if book.num_leaves > np.iinfo(np.int32).max:
    raise ValueError(f'{codebook}: {book.num_leaves} leaves do not fit int32')
  os.makedirs(output, exist_ok=True)
  written, skipped, clips, failures = 0, 0, 0, []
  for name in tqdm.tqdm(names, desc='assign-tokens', unit='video'):
    target = os.path.join(output, name)
    if os.path.exists(target):
      skipped += 1
      continue
    try:
      array = codebook_lib.load_features(os.path.join(features, name), book.dim)
    except ValueError as e:
      failures.append({'file': name, 'error': str(e)})
      continue
    tokens = codebook_lib.assign(book, array).astype(np.int32)
    # A file object: np.save would append '.npy' to the temporary name.
    with files_lib.atomic_path(target) as tmp, open(tmp, 'wb') as f:
      np.save(f, tokens)
    written += 1
    clips += len(tokens)
  manifest = dict(
      features=os.path.abspath(features), codebook=os.path.abspath(codebook),
      output=os.path.abspath(output),
      codebook_shape=dict(levels=book.levels, k=book.k, dim=book.dim),
      counts=dict(files=len(names), written=written, skipped_existing=skipped,
                  failed=len(failures), clips_written=clips),
      failures=failures)
  files_lib.write_json(os.path.join(output, 'manifest.json'), manifest, indent=1)
  return manifest
