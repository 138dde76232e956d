"""vlm-jax preview-video: decode videos into clips and save a contact sheet each.

  vlm-jax preview-video --videos FILE_OR_DIR --output DIR
      [--fps 20] [--clip_frames 30] [--size 224] [--columns 6]

Decodes each video (a directory: every video file under it) at --fps into
clips of --clip_frames frames, short side resized to --size and centre-cropped
(the frames VideoBERT's S3D features see; use --fps 30 for S3D-G/VideoCLIP),
and writes <output>/<video_id>.png: one row per clip, --columns frames spread
over the clip, its start time drawn in the corner. <output>/manifest.json
records the inputs, parameters, per-video clip and frame counts and the
failures. A video that cannot be decoded is reported (manifest and stderr) and
skipped; a re-run skips videos whose PNG already exists.
"""

from absl import flags

from vlm_jax.stages import preview_video

_VIDEOS = flags.DEFINE_string('videos', None, 'Video file, or a directory searched recursively.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output directory (PNGs and manifest.json).')
_FPS = flags.DEFINE_float('fps', 20.0, 'Output frame rate: 20 for VideoBERT, 30 for S3D-G.')
_CLIP_FRAMES = flags.DEFINE_integer('clip_frames', 30, 'Frames per clip.')
_SIZE = flags.DEFINE_integer('size', 224, 'Frame side after short-side resize and centre crop.')
_COLUMNS = flags.DEFINE_integer('columns', 6, 'Frames shown per clip (one row per clip).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['videos', 'output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = preview_video.run(_VIDEOS.value, output, _FPS.value, _CLIP_FRAMES.value,
                                 _SIZE.value, _COLUMNS.value)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f'vlm-jax preview-video: {e}') from e
  print(f'wrote {manifest["num_videos"]} previews to {output} '
        f'({manifest["num_failures"]} failed; see manifest.json)')
