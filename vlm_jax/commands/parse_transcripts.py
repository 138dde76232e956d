"""vlm-jax parse-transcripts: timed sentences from subtitles and ASR captions.

  vlm-jax parse-transcripts --input FILE_OR_DIR --output sentences.jsonl
      [--lenient] [--max_gap 1.0] [--max_words 32]

Reads WebVTT (YouTube auto-captions included), SRT, HowTo100M raw_caption.json
and YouCook2 annotation JSON (a directory: every such file in it) and writes
one JSON object per video: {"video_id", "sentences": [{"text", "start",
"end"}, ...]}, times in seconds. Unpunctuated ASR is split at pauses longer
than --max_gap seconds; every sentence has at most --max_words words.
Malformed input stops the command with file:line; --lenient skips the bad cue
or video instead, lists what was skipped and records it in
<output>.manifest.json.
"""

from absl import flags

from vlm_jax.data import transcripts
from vlm_jax.stages import parse_transcripts

_INPUT = flags.DEFINE_string('input', None, 'Transcript file, or a directory of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output .jsonl path.')
_LENIENT = flags.DEFINE_bool('lenient', False, 'Skip malformed cues/videos instead of failing.')
_MAX_GAP = flags.DEFINE_float('max_gap', 1.0, 'Pause (s) that ends an unpunctuated sentence.')
_MAX_WORDS = flags.DEFINE_integer('max_words', 32, 'Most words in one sentence.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['input', 'output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = parse_transcripts.run(_INPUT.value, output, _LENIENT.value, _MAX_GAP.value,
                                     _MAX_WORDS.value)
  except (transcripts.TranscriptError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f'vlm-jax parse-transcripts: {e}') from e
  print(f'wrote {output}: {manifest["num_videos"]} videos, '
        f'{manifest["num_sentences"]} sentences from {len(manifest["inputs"])} files')
  if manifest['failures']:
    print(f'skipped {len(manifest["failures"])} malformed items:')
    for failure in manifest['failures']:
      print(f'  {failure}')
