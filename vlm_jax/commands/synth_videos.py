"""vlm-jax synth-videos: a rendered synthetic cooking corpus, real MP4 + WebVTT files.

  vlm-jax synth-videos --output DIR [--num_videos 72] [--num_dev 32] [--num_test 66] \\
      [--seed 0] [--num_verbs 6] [--num_nouns 6] [--successor_prob 0]

Writes DIR/videos/<video_id>.mp4 (H.264, 128 x 128, 20 fps), DIR/transcripts/
<video_id>.vtt (the narration: most steps narrated, some fillers, cues up to
1 s off their steps), DIR/steps.jsonl (per video: split, duration and its
steps with start, end, verb, noun and the narration, '' when none),
DIR/verbs.txt, DIR/nouns.txt and DIR/manifest.json. Dev (`dev_*`) and test
(`test_*`) videos are new instances of the same verbs and nouns, narrated in
phrasings no training video uses (vlm_jax/data/narration.py). Deterministic by seed; a re-run finishes what is
missing and refuses a folder made with other parameters. With --successor_prob p,
a step after the first shows, with probability p, the verb that follows its
predecessor's (verbs.txt order, cyclic): an order that next-step anticipation
can learn (the CBT demo's anticipation corpus); 0 leaves steps independent.
"""

from absl import flags

from vlm_jax.stages import synth_videos

_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 72, 'Training videos.')
_NUM_DEV = flags.DEFINE_integer('num_dev', 32, 'Held-out dev videos (choosing configs).')
_NUM_TEST = flags.DEFINE_integer('num_test', 66, 'Held-out test videos (~4 steps each).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds every video.')
_NUM_VERBS = flags.DEFINE_integer('num_verbs', 6, 'Verbs used (at most 8).')
_NUM_NOUNS = flags.DEFINE_integer('num_nouns', 6, 'Nouns used (at most 8).')
_SUCCESSOR_PROB = flags.DEFINE_float('successor_prob', 0.0, 'Probability that a step shows '
                                     'the verb after its predecessor\'s (an order of steps).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = synth_videos.run(output, _NUM_VIDEOS.value, _NUM_TEST.value, _SEED.value,
                                _NUM_VERBS.value, _NUM_NOUNS.value, _NUM_DEV.value,
                                _SUCCESSOR_PROB.value)
  except ValueError as e:
    raise SystemExit(f'vlm-jax synth-videos: {e}') from e
  print(f'{manifest["counts"]["rendered"]} videos rendered, '
        f'{manifest["counts"]["already_there"]} already there: {output}')
