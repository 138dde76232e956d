"""vlm-jax make-records: TFRecords from features, a codebook and transcripts.

  vlm-jax make-records --features DIR --codebook codebook.npz \\
      --transcripts DIR_OR_FILE --output DIR [--config configs/make_records.py] \\
      [--config.num_shards=16 ...]

For every `<video_id>.npy` in --features (extract-features' output, with its
`<video_id>.times.npy` clip times): visual tokens = the codebook leaves of its
clips (vlm_jax.videobert.codebook.assign; the .npz of build-codebook), sentences =
the video's timed transcript sentences (vlm_jax.data.transcripts: VTT, SRT,
HowTo100M or YouCook2 JSON; matched by video id) as BERT WordPieces. Videos
without a transcript give video-only records; --transcripts may be left out
altogether. Writes `<prefix>-NNNNN-of-MMMMM.tfrecord` (schema:
vlm_jax.data.records) and manifest.json: inputs, parameters, counts (videos,
with and without transcripts, sentences, clips), the transcripts that have no
features, failures. A file that cannot be used is reported and skipped. A
re-run with the same inputs and parameters does nothing; otherwise the shards
are rewritten (written aside, then renamed into place).

VideoCLIP's records (`--config.system=videoclip`, no --codebook): per-second
features (row t = the clip holding second t + 0.5; extract-features' s3dg preset
makes 1-s clips) and the same timed sentences (vlm_jax.data.feature_records).

Across hosts: each of N processes (--process_index=I --process_count=N, or
--multihost) takes its share of the feature files (balanced by size), writes
ceil(num_shards / N) shards `<prefix>-process0000IofN-...` and
manifest-0000I-of-0000N.json; then --merge (--features and --output only)
writes manifest.json as one process would have over all the files, which
`vlm-jax train` reads beside the shards.
"""

import os

from absl import flags
from ml_collections import config_flags

from configs import common
from vlm_jax.commands import _share_flags

_FEATURES = flags.DEFINE_string(
    'features', None, 'Folder of <video_id>.npy features and <video_id>.times.npy clip times.')
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook '
                                '(not with --config.system=videoclip).')
_TRANSCRIPTS = flags.DEFINE_string(
    'transcripts', None, 'Transcript file or folder (.vtt, .srt, HowTo100M/YouCook2 .json); '
    'optional: without it every record is video-only.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Output folder for the TFRecord shards; local or gs:// (as every path).')
_CONFIG = config_flags.DEFINE_config_file(
    'config', common.config_file('make_records.py'),
    'Config file, then a preset: FILE[:PRESET], e.g. configs/make_records.py:videoclip; '
    'the default is preset videobert.', lock_config=True)
_SHARE = _share_flags.define_flags(__name__, 'feature files', 'size')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['features', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import shares
  from vlm_jax.stages import make_records
  # pylint: enable=import-outside-toplevel
  output = _OUTPUT.value
  try:
    if _SHARE.merge.value:
      manifest = make_records.merge(_FEATURES.value, output)
      print(f'{output}: merged {manifest["merged"]["processes"]} processes\' records: '
            f'{manifest["counts"]["videos"]} videos in {len(manifest["shards"])} shards '
            f'(see {os.path.join(output, make_records.MANIFEST)})')
      return
    index, count = _SHARE.resolve()
    manifest = make_records.run(_FEATURES.value, _CODEBOOK.value, _TRANSCRIPTS.value, output,
                                _CONFIG.value, process_index=index, process_count=count)
  except (ValueError, FileNotFoundError, KeyError) as e:  # TranscriptError is a ValueError
    raise SystemExit(f'vlm-jax make-records: {e}') from e
  if manifest['skipped']:
    print(f'{output} is up to date (same inputs and parameters); nothing to do')
    return
  c = manifest['counts']
  name = shares.written_manifest(manifest)
  print(f'{output}: {c["videos"]} videos ({c["with_transcript"]} with transcripts, '
        f'{c["without_transcript"]} video-only), {c["sentences"]} sentences, {c["clips"]} '
        f'clips in {len(manifest["shards"])} shards; {c["failed"]} failed, '
        f'{c["transcripts_without_features"]} transcripts without features '
        f'(see {os.path.join(output, name)})')
