"""vlm-jax extract-features: S3D clip features of videos, batched and sharded.

  vlm-jax extract-features --videos DIR_OR_LIST --output DIR \\
      --config configs/extract_features.py:s3d [--config.weights=s3d.pth ...]

--videos is a folder (searched recursively for common video extensions), one
video file, or a text file with one video path per line; the video id is the
file stem. Each video is decoded into clips (config: fps, clip_frames,
crop_size; vlm_jax.data.video), the clips go through S3D (torchvision layout)
or S3D-G (MIL-NCE) in fixed-size batches sharded over all devices, and
--output gets, per video:

  <video_id>.npy        [num_clips, D] float16/float32 (config.dtype) features
  <video_id>.times.npy  [num_clips, 2] float64 clip (start, end) seconds

and manifest.json: parameters, the weights file and its sha256 ('random'
without weights), D, per-video clip counts, failures with reasons, timings.
Without --config.weights the features come from seeded RANDOM weights; the
command says so loudly. A video that cannot be decoded is reported and
skipped. A re-run skips the videos whose two files exist (they are written
under temporary names and renamed) and retries the failed ones; it refuses an
output folder written with other parameters.
"""

import os

from absl import flags
from ml_collections import config_flags

from vlm_jax.stages import extract_features

_VIDEOS = flags.DEFINE_string(
    'videos', None, 'Folder of videos (recursive), one video, or a text file of paths.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder for <video_id>.npy features.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file and preset, e.g. configs/extract_features.py:s3d.',
    lock_config=True)
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['videos', 'output', 'config']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = extract_features.run(_VIDEOS.value, output, _CONFIG.value)
  except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
    raise SystemExit(f'vlm-jax extract-features: {e}') from e
  c, t = manifest['counts'], manifest['timings']
  print(f'{output}: wrote {c["written_this_run"]} videos ({c["clips_this_run"]} clips, '
        f'{t["clips_per_second"]} clips/s), kept {c["skipped_existing"]} existing, '
        f'{c["failed"]} failed; D = {manifest["feature_dim"]}'
        f'{", RANDOM weights" if manifest["random_weights"] else ""} '
        f'(see {os.path.join(output, "manifest.json")})')
