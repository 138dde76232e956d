"""The parse-transcripts job: timed sentences (JSONL) from subtitle and ASR files.

Used by `vlm-jax parse-transcripts`; see that command for the formats.
"""

import dataclasses
import json
import os
import sys
import warnings

from vlm_jax.data import files as files_lib
from vlm_jax.data import transcripts


def run(input_path: str, output: str, lenient: bool = False, max_gap: float = 1.0,
        max_words: int = 32) -> dict:
  """Parses `input_path`, writes `output` and its manifest; returns the manifest.

  The manifest lists the skipped items (file:line and why) and the encoding
  each subtitle file was read in; encodings other than UTF-8, often guesses,
  are also printed.

  Raises:
    TranscriptError: malformed input (without `lenient`), naming file and line.
    ValueError: (lenient) items were skipped and no sentence was read.
    FileNotFoundError: `input_path` does not exist.
  """
  failures: list[str] = []
  encodings: dict[str, str] = {}
  with warnings.catch_warnings():
    # Collected in `failures`, which the manifest and the command list once.
    warnings.simplefilter('ignore', transcripts.TranscriptWarning)
    videos = transcripts.load_transcripts(input_path, lenient=lenient, max_gap=max_gap,
                                          max_words=max_words, failures=failures,
                                          encodings=encodings)
  for path, encoding in encodings.items():
    if not encoding.startswith('utf-8'):
      # Often a guess: say it where the user looks, not only in the manifest.
      print(f'parse-transcripts: read {path} as {encoding}', file=sys.stderr)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with files_lib.atomic_path(output) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    for vid, sentences in videos.items():
      f.write(json.dumps({'video_id': vid,
                          'sentences': [dataclasses.asdict(s) for s in sentences]},
                         ensure_ascii=False) + '\n')
  manifest = {
      'inputs': transcripts.transcript_files(input_path),
      'output': output,
      'parameters': {'lenient': lenient, 'max_gap': max_gap, 'max_words': max_words},
      'num_videos': len(videos),
      'num_sentences': sum(len(s) for s in videos.values()),
      'num_failures': len(failures),
      'failures': failures,
      'encodings': encodings,
  }
  with open(output + '.manifest.json', 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2, ensure_ascii=False)
  if failures and not manifest['num_sentences']:
    raise ValueError(f'no sentence could be read: {len(failures)} items skipped (first: '
                     f'{failures[0]}; all in {output}.manifest.json)')
  return manifest
