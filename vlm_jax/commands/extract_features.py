"""vlm-jax extract-features: S3D clip features of videos, batched and sharded.

  vlm-jax extract-features --videos DIR_OR_LIST --output DIR \\
      [--config configs/extract_features.py:s3d] [--config.weights=s3d.pth ...]

--videos is a folder (searched recursively; every file is probed with FFmpeg,
and the files that hold no video are listed in the manifest with why), one
video file, or a text file with one video path per line (optionally a tab and
the video's duration in seconds after it); the video id is the file stem. Any
path, --output too, may be gs://BUCKET/... Each video is decoded into clips
(config: fps, clip_frames, crop_size; vlm_jax.data.video; in
--config.decode_workers threads), the clips go through S3D (torchvision
layout) or S3D-G (MIL-NCE) in fixed-size batches sharded over all devices,
and --output gets, per video:

  <video_id>.npy        [num_clips, D] float16/float32 (config.dtype) features
  <video_id>.times.npy  [num_clips, 2] float64 clip (start, end) seconds

and manifest.json: parameters, the weights file and its sha256 ('random'
without weights), D, per-video clip counts, failures and non-videos with
reasons, timings. Without --config.weights the features come from seeded
RANDOM weights; the command says so loudly. A video that cannot be decoded is
reported and the batch goes on; the command exits 1 when no video could be
read or when more than --config.max_failures of the listed videos failed. A
re-run skips the videos whose two files exist (they are written under
temporary names and renamed) and retries the failed ones; it refuses an
output folder written with other parameters.

Across hosts: with --process_count=N --process_index=I (any launcher) or
--multihost (jax.distributed on a TPU slice) each process lists the same
videos, takes its share of them balanced by duration (the list file's, else
one header read per video), writes their files and manifest-0000I-of-0000N.json, and resumes on
its own as above. Then `--merge` (same --videos, --output and --config)
writes manifest.json over all of them: every video done, failed or missing
(a process that did not finish), exiting 1 when any is missing.
"""

import os

from absl import flags
from ml_collections import config_flags

from configs import common
from vlm_jax.commands import _share_flags

_VIDEOS = flags.DEFINE_string(
    'videos', None, 'Folder of videos (recursive), one video, or a text file of paths (each '
    'optionally followed by a tab and its duration in seconds); local or gs://.')
_OUTPUT = flags.DEFINE_string('output', None,
                              'Output folder for <video_id>.npy features; local or gs://.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', common.config_file('extract_features.py'),
    'Config file, then a preset: FILE[:PRESET], e.g. configs/extract_features.py:s3dg; '
    'the default is preset s3d.', lock_config=True)
_SHARE = _share_flags.define_flags(__name__, 'videos', 'duration')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['videos', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need no JAX.
  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import shares
  from vlm_jax.stages import extract_features
  # pylint: enable=import-outside-toplevel
  output = _OUTPUT.value
  try:
    if _SHARE.merge.value:
      manifest = extract_features.merge(_VIDEOS.value, output, _CONFIG.value)
      c = manifest['counts']
      print(f'{output}: merged {manifest["merged"]["processes"]} process manifests: '
            f'{c["done"]} of {c["videos"]} videos done, {c["failed"]} failed '
            f'(see {os.path.join(output, extract_features.MANIFEST)})')
      return
    index, count = _SHARE.resolve()
    manifest = extract_features.run(_VIDEOS.value, output, _CONFIG.value,
                                    process_index=index, process_count=count)
  except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
    raise SystemExit(f'vlm-jax extract-features: {e}') from e
  written = shares.written_manifest(manifest)
  c, t = manifest['counts'], manifest['timings']
  rate = f', {t["clips_per_second"]} clips/s' if c['clips_this_run'] else ''
  print(f'{output}: wrote {c["written_this_run"]} videos ({c["clips_this_run"]} clips{rate}), '
        f'kept {c["skipped_existing"]} existing, {c["failed"]} failed, '
        f'{c["not_videos"]} files not videos; D = {manifest["feature_dim"]}'
        f'{", RANDOM weights" if manifest["random_weights"] else ""} '
        f'(see {os.path.join(output, written)})')
  if count > 1:
    print(f'then, once every process is done: vlm-jax extract-features --videos {_VIDEOS.value} '
          f'--output {output} --merge (with the same --config)')
