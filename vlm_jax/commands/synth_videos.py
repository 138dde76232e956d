"""vlm-jax synth-videos: a rendered synthetic cooking corpus, real MP4 + WebVTT files.

  vlm-jax synth-videos --output DIR [--num_videos 72] [--num_test 16] [--seed 0] \\
      [--num_verbs 6] [--num_nouns 6]

Writes DIR/videos/<video_id>.mp4 (H.264, 128 x 128, 20 fps), DIR/transcripts/
<video_id>.vtt (one narration cue per step), DIR/steps.jsonl (per video: split,
duration and its steps with start, end, verb, noun, sentence), DIR/verbs.txt,
DIR/nouns.txt and DIR/manifest.json. Test videos (`test_*`) are new instances
of the same verbs and nouns. Deterministic by seed; a re-run finishes what is
missing and refuses a folder made with other parameters.
"""

from absl import flags

from vlm_jax.stages import synth_videos

_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 72, 'Training videos.')
_NUM_TEST = flags.DEFINE_integer('num_test', 16, 'Held-out test videos.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds every video.')
_NUM_VERBS = flags.DEFINE_integer('num_verbs', 6, 'Verbs used (at most 8).')
_NUM_NOUNS = flags.DEFINE_integer('num_nouns', 6, 'Nouns used (at most 8).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = synth_videos.run(output, _NUM_VIDEOS.value, _NUM_TEST.value, _SEED.value,
                                _NUM_VERBS.value, _NUM_NOUNS.value)
  except ValueError as e:
    raise SystemExit(f'vlm-jax synth-videos: {e}') from e
  print(f'{manifest["counts"]["rendered"]} videos rendered, '
        f'{manifest["counts"]["already_there"]} already there: {output}')
