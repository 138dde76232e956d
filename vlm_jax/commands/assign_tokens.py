"""vlm-jax assign-tokens: clip features to VideoBERT visual-token ids.

  vlm-jax assign-tokens --features DIR --codebook codebook.npz --output DIR

For every `<video_id>.npy` in --features ([num_clips, D] float16 or float32),
writes `<video_id>.npy` [num_clips] int32 leaf ids (0 .. k**levels - 1, by
hierarchical descent of the tree; see vlm_jax.videobert.codebook.assign) to
--output. Existing outputs are kept, so an interrupted run resumes; a bad input
file is reported and skipped. `manifest.json` in --output lists the codebook,
counts and failures.

Across hosts: each of N processes (--process_index=I --process_count=N, or
--multihost) takes its share of the files, balanced by size, and writes
manifest-0000I-of-0000N.json; then --merge writes manifest.json, every file
done, failed or missing (exit 1 when any is missing).
"""

import os

from absl import flags

from vlm_jax.commands import _share_flags
from vlm_jax.data import shares
from vlm_jax.stages import assign_tokens

_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features.')
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Output folder for <video_id>.npy token ids; local or gs:// (as every path).')
_SHARE = _share_flags.define_flags(__name__, 'feature files', 'size')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['features', 'codebook', 'output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    if _SHARE.merge.value:
      manifest = assign_tokens.merge(_FEATURES.value, _CODEBOOK.value, output)
    else:
      index, count = _SHARE.resolve()
      manifest = assign_tokens.run(_FEATURES.value, _CODEBOOK.value, output, index, count)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f'vlm-jax assign-tokens: {e}') from e
  c = manifest['counts']
  name = shares.written_manifest(manifest)
  print(f'{output}: wrote {c["written"]} videos ({c["clips_written"]} clips), '
        f'kept {c["skipped_existing"]} existing, {c["failed"]} failed '
        f'(see {os.path.join(output, name)})')
