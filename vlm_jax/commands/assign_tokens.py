"""vlm-jax assign-tokens: clip features to VideoBERT visual-token ids.

  vlm-jax assign-tokens --features DIR --codebook codebook.npz --output DIR

For every `<video_id>.npy` in --features ([num_clips, D] float16 or float32),
writes `<video_id>.npy` [num_clips] int32 leaf ids (0 .. k**levels - 1, by
hierarchical descent of the tree; see vlm_jax.videobert.codebook.assign) to
--output. Existing outputs are kept, so an interrupted run resumes; a bad input
file is reported and skipped. `manifest.json` in --output lists the codebook,
counts and failures.
"""

import json
import os
from typing import Any

import numpy as np
import tqdm
from absl import flags

from vlm_jax.videobert import codebook as codebook_lib

# allow_override: build-codebook, assign-tokens and encode-text share flag
# names, and tests import them into one process (the CLI imports only one).
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features.',
                                allow_override=True)
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder for <video_id>.npy token ids.',
                              allow_override=True)
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['features', 'codebook', 'output']


def run(features: str, codebook: str, output: str) -> dict[str, Any]:
  """Writes the token files; returns the manifest (also written to output)."""
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
    # Written under a temporary name so that a crash never leaves a partial
    # file that the next run would take as done.
    tmp = target + '.tmp'
    with open(tmp, 'wb') as f:
      np.save(f, tokens)
    os.replace(tmp, target)
    written += 1
    clips += len(tokens)
  manifest = dict(
      features=os.path.abspath(features), codebook=os.path.abspath(codebook),
      output=os.path.abspath(output),
      codebook_shape=dict(levels=book.levels, k=book.k, dim=book.dim),
      counts=dict(files=len(names), written=written, skipped_existing=skipped,
                  failed=len(failures), clips_written=clips),
      failures=failures)
  path = os.path.join(output, 'manifest.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + '.tmp', path)
  return manifest


def main(argv):
  del argv
  try:
    manifest = run(_FEATURES.value, _CODEBOOK.value, _OUTPUT.value)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f'vlm-jax assign-tokens: {e}') from e
  c = manifest['counts']
  print(f'{_OUTPUT.value}: wrote {c["written"]} videos ({c["clips_written"]} clips), '
        f'kept {c["skipped_existing"]} existing, {c["failed"]} failed '
        f'(see {os.path.join(_OUTPUT.value, "manifest.json")})')
