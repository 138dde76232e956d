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

import dataclasses
import json
import os

from absl import flags

from vlm_jax.data import transcripts

_INPUT = flags.DEFINE_string('input', None, 'Transcript file, or a directory of them.',
    allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output .jsonl path.',
    allow_override=True)
_LENIENT = flags.DEFINE_bool('lenient', False, 'Skip malformed cues/videos instead of failing.')
_MAX_GAP = flags.DEFINE_float('max_gap', 1.0, 'Pause (s) that ends an unpunctuated sentence.')
_MAX_WORDS = flags.DEFINE_integer('max_words', 32, 'Most words in one sentence.')
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['input', 'output']


def run(input_path: str, output: str, lenient: bool = False, max_gap: float = 1.0,
        max_words: int = 32) -> dict:
  """Parses `input_path`, writes `output` and its manifest; returns the manifest."""
  failures: list[str] = []
  videos = transcripts.load_transcripts(input_path, lenient=lenient, max_gap=max_gap,
                                        max_words=max_words, failures=failures)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  # Write to a temporary name first, so a crash never leaves a partial output
  # that looks complete.
  tmp = output + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    for vid, sentences in videos.items():
      f.write(json.dumps({'video_id': vid,
                          'sentences': [dataclasses.asdict(s) for s in sentences]},
                         ensure_ascii=False) + '\n')
  os.replace(tmp, output)
  manifest = {
      'inputs': transcripts.transcript_files(input_path),
      'output': output,
      'parameters': {'lenient': lenient, 'max_gap': max_gap, 'max_words': max_words},
      'num_videos': len(videos),
      'num_sentences': sum(len(s) for s in videos.values()),
      'num_failures': len(failures),
      'failures': failures,
  }
  with open(output + '.manifest.json', 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2, ensure_ascii=False)
  return manifest


def main(argv):
  del argv
  try:
    manifest = run(_INPUT.value, _OUTPUT.value, _LENIENT.value, _MAX_GAP.value,
                   _MAX_WORDS.value)
  except (transcripts.TranscriptError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f'vlm-jax parse-transcripts: {e}') from e
  print(f'wrote {_OUTPUT.value}: {manifest["num_videos"]} videos, '
        f'{manifest["num_sentences"]} sentences from {len(manifest["inputs"])} files')
  if manifest['failures']:
    print(f'skipped {len(manifest["failures"])} malformed items:')
    for failure in manifest['failures']:
      print(f'  {failure}')
