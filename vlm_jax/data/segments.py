"""Labelled video segments (JSONL) and the visual tokens that fall inside them.

A segments file has one JSON object per line with at least `video_id`, `start`
and `end` (seconds); classification adds `verb` and `noun`, captioning
`sentence`. Other fields are kept and ignored.
"""

import json
from typing import Any

import numpy as np


class SegmentsError(ValueError):
  """A malformed segments file; the message names the file, line and field."""


def load(path: str, required: tuple[str, ...] = ('video_id', 'start', 'end')) -> list[dict]:
  """The segments of a JSONL file, each checked for the `required` fields."""
  out = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        item: Any = json.loads(line)
      except json.JSONDecodeError as e:
        raise SegmentsError(f'{path}:{number}: not JSON ({e.msg})') from e
      if not isinstance(item, dict):
        raise SegmentsError(f'{path}:{number}: expected an object, got {type(item).__name__}')
      for field in required:
        if field not in item:
          raise SegmentsError(f'{path}:{number}: missing field {field!r}')
      if float(item['end']) < float(item['start']):
        raise SegmentsError(f'{path}:{number}: field end={item["end"]} is before '
                            f'start={item["start"]}')
      out.append(item)
  return out


def tokens_in(tokens: np.ndarray, times: np.ndarray, start: float, end: float) -> np.ndarray:
  """The tokens of clips whose centre lies in [start, end]; the nearest clip if none does.

  Args:
    tokens: [num_clips] visual token ids of one video.
    times: [num_clips, 2] clip start and end seconds.
    start, end: the segment, in seconds.
  """
  centres = times.mean(axis=1)
  inside = (centres >= start) & (centres <= end)
  if inside.any():
    return tokens[inside]
  return tokens[[int(np.argmin(np.abs(centres - (start + end) / 2)))]]
