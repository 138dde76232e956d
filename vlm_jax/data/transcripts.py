"""Timed sentences from transcripts: WebVTT, SRT, HowTo100M and YouCook2.

VideoBERT and VideoCLIP pair video clips with ASR sentences and their times.
This module turns the common transcript formats into `TimedSentence`s in three
steps, each of which is public:

1. Cues: `read_vtt_cues` / `read_srt_cues` give the file's cues
   (`Cue(start, end, text)`; the text has its tags removed and its lines joined
   with '\n', as webvtt-py does). `read_howto100m` gives HowTo100M's caption
   lines as cues; `read_youcook2` gives YouCook2's annotated segments, which are
   already sentences.
2. Words: `cues_to_words` makes one time-ordered word stream. YouTube
   auto-captions (the raw form of HowTo100M's ASR) repeat each line in the next
   cue ("rolling" captions); those repeats are dropped, and the inline word
   timestamps (`<00:05:04.199>`) give each word its start. Words without their
   own timestamp share their span evenly, so times inside a plain cue are
   estimates.
3. Sentences: `split_sentences` splits the stream at . ! ? when the text is
   punctuated. Raw ASR has no punctuation; the VideoBERT paper restores it with
   an LSTM punctuator, we split at pauses longer than `max_gap` seconds
   instead, and at `max_words` words in any case.

`load_transcripts` does all three for a file or a directory. Malformed input
raises `TranscriptError` naming the file and line; with `lenient=True` the bad
cue (or video) is skipped with a `TranscriptWarning` naming them, and recorded
in the `failures` list when one is given.
"""

import dataclasses
import html
import json
import os
import re
import warnings
from typing import Iterable, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class TimedSentence:
  """A sentence and its time span, in seconds."""
  text: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class TimedWord:
  """One word of a transcript and its (possibly estimated) span, in seconds."""
  text: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class Cue:
  """One subtitle cue.

  Attributes:
    start: start time, seconds.
    end: end time, seconds.
    text: the cue text without tags, lines joined with '\n'.
    raw_text: the cue text as written (with tags and inline timestamps).
    line: 1-based line of the cue's timing line in its file (0: not from a
      text file).
  """
  start: float
  end: float
  text: str
  raw_text: str = dataclasses.field(default='', compare=False)
  line: int = dataclasses.field(default=0, compare=False)


class TranscriptError(ValueError):
  """Malformed transcript; the message starts with `path:line:`."""

  def __init__(self, path: str, line: Optional[int], message: str):
    self.path = str(path)
    self.line = line
    self.reason = message
    where = f'{path}:{line}' if line else f'{path}'
    super().__init__(f'{where}: {message}')


class TranscriptWarning(UserWarning):
  """A malformed item skipped in lenient mode."""


SUPPORTED_EXTENSIONS = ('.vtt', '.srt', '.json')

# Hours optional; SRT writers in the wild drop the zero padding ("00:00:5,000")
# and some use '.' where SRT has ','.
_TIMESTAMP = r'(?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3}'
_TIMESTAMP_RE = re.compile(r'^(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})$')
_TIMING_RE = re.compile(
    rf'^\s*({_TIMESTAMP})\s*-->\s*({_TIMESTAMP})(?:\s+(.*))?\s*$')
_INLINE_TIME_RE = re.compile(r'<((?:\d+:)?\d{2}:\d{2}\.\d{3})>')
_TAG_RE = re.compile(r'<[^>]*>')
# SRT files made from ASS subtitles carry override codes such as {\an8}.
_ASS_TAG_RE = re.compile(r'\{\\[^}]*\}')
_SENTENCE_END_RE = re.compile(r'[.!?]+["\'\u201d\u2019)\]]*$')


class _Reporter:
  """Raises on malformed input, or warns and records it in lenient mode."""

  def __init__(self, lenient: bool, failures: Optional[list]):
    self.lenient = lenient
    self.failures = failures

  def __call__(self, path, line: Optional[int], message: str) -> None:
    error = TranscriptError(path, line, message)
    if not self.lenient:
      raise error
    # stacklevel 3: the caller of the public reader, not this helper.
    warnings.warn(str(error), TranscriptWarning, stacklevel=3)
    if self.failures is not None:
      self.failures.append(str(error))


def parse_timestamp(text: str) -> float:
  """Seconds of `[h:]mm:ss.ttt` (',' accepted for '.', padding optional).

  Raises:
    ValueError: not a timestamp, or minutes/seconds out of range.
  """
  m = _TIMESTAMP_RE.match(text.strip())
  if not m:
    raise ValueError(f'invalid timestamp {text!r}')
  hours, minutes, seconds, fraction = m.groups()
  if int(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
    raise ValueError(f'timestamp out of range {text!r}')
  # The fraction is decimal: ",5" is half a second, not 5 ms.
  return (int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
          + float('0.' + fraction))


def clean_text(raw: str) -> str:
  """Cue text without tags (<c>, <v Name>, <i>, inline times, {\\an8})."""
  return html.unescape(_ASS_TAG_RE.sub('', _TAG_RE.sub('', raw)))


def _read_lines(path, report: _Reporter) -> list[str]:
  """The file's lines (BOM removed); undecodable lines are an error."""
  with open(path, 'rb') as f:
    data = f.read()
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  lines = []
  for number, raw in enumerate(data.splitlines(), start=1):
    try:
      lines.append(raw.decode('utf-8'))
    except UnicodeDecodeError as e:
      report(path, number, f'not UTF-8 ({e.reason})')
      lines.append(raw.decode('utf-8', errors='replace'))
  return lines


def _blocks(lines: Sequence[str]) -> list[tuple[int, list[str]]]:
  """Runs of non-empty lines as (1-based first line, lines).

  Whitespace-only lines at the start of a run are dropped (webvtt-py does the
  same; Netflix files separate cues with them), inside a run they are text.
  """
  blocks = []
  current = None
  for number, line in enumerate(lines, start=1):
    if not line:
      current = None
      continue
    if current is None:
      if not line.strip():
        continue
      current = (number, [])
      blocks.append(current)
    current[1].append(line)
  return blocks


def _parse_timing(path, number: int, line: str,
                  report: _Reporter) -> Optional[tuple[float, float]]:
  """(start, end) of a timing line, or None after reporting it malformed."""
  m = _TIMING_RE.match(line)
  if not m:
    report(path, number, f'invalid cue timing {line.strip()!r}')
    return None
  try:
    start, end = parse_timestamp(m.group(1)), parse_timestamp(m.group(2))
  except ValueError as e:
    report(path, number, str(e))
    return None
  if end < start:
    report(path, number, f'cue ends ({end:.3f}s) before it starts ({start:.3f}s)')
    return None
  return start, end


def _cues_from_block(path, numbered: list[tuple[int, str]],
                     report: _Reporter) -> list[Cue]:
  """Cues of (line number, line) pairs that start with a timing line.

  A further timing line inside the block starts a new cue: YouTube's
  auto-captions omit the blank line between some cues, and webvtt-py (whose
  results we match) reads them this way.
  """
  cues = []
  timing, timing_line, text = None, 0, []

  def flush():
    if timing is not None:
      raw = '\n'.join(text)
      cues.append(Cue(timing[0], timing[1], clean_text(raw), raw, timing_line))

  for number, line in numbered:
    if '-->' in line:
      flush()
      timing_line = number
      timing = _parse_timing(path, number, line, report)
      text = []
    else:
      text.append(line)
  flush()
  return cues


def read_vtt_cues(path, lenient: bool = False,
                  failures: Optional[list] = None) -> list[Cue]:
  """The cues of a WebVTT file, in file order.

  The header block (including YouTube's `Kind:`/`Style:` lines), NOTE, STYLE
  and REGION blocks are skipped; cue settings after the timing are ignored.
  Cue texts keep their line breaks and lose their tags, as in webvtt-py; a cue
  without text has text ''.

  Args:
    path: the .vtt file.
    lenient: skip malformed cues with a warning instead of raising.
    failures: if given, a list that collects the skipped items' messages.

  Raises:
    TranscriptError: (strict mode) malformed file or cue, naming file and line.
  """
  report = _Reporter(lenient, failures)
  lines = _read_lines(path, report)
  if not lines or not re.match(r'WEBVTT(?:[ \t]|$)', lines[0]):
    # Nothing can be read from a file that is not WebVTT: always an error.
    raise TranscriptError(path, 1, 'missing WEBVTT header')
  cues = []
  for first, block in _blocks(lines)[1:]:  # [0] is the header
    if '-->' in block[0] or (len(block) > 1 and '-->' in block[1]):
      skip = 0 if '-->' in block[0] else 1  # a cue identifier
      numbered = list(enumerate(block, start=first))[skip:]
      cues.extend(_cues_from_block(path, numbered, report))
    elif re.match(r'(?:NOTE(?:\s|$)|STYLE[ \t]*$|REGION[ \t]*$)', block[0]):
      continue
    else:
      report(path, first, 'text without a cue timing line')
  return cues


def read_srt_cues(path, lenient: bool = False,
                  failures: Optional[list] = None) -> list[Cue]:
  """The cues of a SubRip (.srt) file, in file order.

  Lenient about what SRT writers get wrong: unpadded timestamps
  (`00:00:5,000`), '.' for ',', missing cue numbers, a missing blank line
  between cues. Tags (<i>, <font ...>, {\\an8}) are removed.

  Args:
    path: the .srt file.
    lenient: skip malformed cues with a warning instead of raising.
    failures: if given, a list that collects the skipped items' messages.

  Raises:
    TranscriptError: (strict mode) malformed cue, naming file and line.
  """
  report = _Reporter(lenient, failures)
  lines = _read_lines(path, report)
  cues = []
  for first, block in _blocks(lines):
    numbered = list(enumerate(block, start=first))
    # A cue number on the line before a timing line belongs to that cue.
    numbered = [(n, line) for i, (n, line) in enumerate(numbered)
                if not (line.strip().isdigit() and i + 1 < len(numbered)
                        and '-->' in numbered[i + 1][1])]
    if '-->' not in numbered[0][1]:
      if not any('-->' in line for _, line in numbered):
        report(path, first, 'text without a cue timing line')
        continue
      report(path, numbered[0][0], 'text before the cue timing line')
      while '-->' not in numbered[0][1]:
        numbered.pop(0)
    cues.extend(_cues_from_block(path, numbered, report))
  return cues


def _rolling(cues: Sequence[Cue]) -> bool:
  """Whether the cues look like YouTube's rolling auto-captions."""
  if any(_INLINE_TIME_RE.search(c.raw_text) for c in cues):
    return True
  previous = None
  for cue in cues:
    lines = [line.strip() for line in cue.text.split('\n') if line.strip()]
    if previous and len(lines) > 1 and lines[0] == previous[-1]:
      return True
    previous = lines
  return False


def _segment_words(segments: list[tuple[float, str]], end: float) -> list[TimedWord]:
  """Words of (start time, text) segments; a segment's words share its span."""
  words = []
  for i, (t0, text) in enumerate(segments):
    t1 = segments[i + 1][0] if i + 1 < len(segments) else end
    tokens = text.split()
    for k, token in enumerate(tokens):
      words.append(TimedWord(token, t0 + (t1 - t0) * k / len(tokens), 0.0))
  return words


def _cue_words(cue: Cue, lines: list[str]) -> list[TimedWord]:
  """Words of some raw lines of one cue, with ends filled in."""
  raw = ' '.join(lines)
  parts = _INLINE_TIME_RE.split(raw)
  segments = [(cue.start, clean_text(parts[0]))]
  previous = cue.start
  for i in range(1, len(parts), 2):
    # Clamp into the cue and keep time order whatever the file says.
    t = min(max(parse_timestamp(parts[i]), previous), cue.end)
    segments.append((t, clean_text(parts[i + 1])))
    previous = t
  words = _segment_words(segments, cue.end)
  return [dataclasses.replace(w, end=words[i + 1].start if i + 1 < len(words) else cue.end)
          for i, w in enumerate(words)]


def cues_to_words(cues: Iterable[Cue], dedup: Optional[bool] = None) -> list[TimedWord]:
  """One time-ordered word stream from cues.

  Args:
    cues: cues (any order; sorted by start here).
    dedup: drop lines repeated from the previous cue (YouTube's rolling
      auto-captions show each line twice). None: when the cues look rolling
      (inline word timestamps, or a cue starting with the previous cue's last
      line).

  Returns:
    Words with start = the inline timestamp, or an even share of the span up
    to the next timed word (the cue start for the first), and end = the next
    word's start in the cue, or the cue end.
  """
  cues = sorted(cues, key=lambda c: c.start)
  if dedup is None:
    dedup = _rolling(cues)
  words = []
  previous_lines = set()
  for cue in cues:
    raw_lines = cue.raw_text.split('\n') if cue.raw_text else cue.text.split('\n')
    keep = []
    for line in raw_lines:
      key = ' '.join(clean_text(line).split())
      if not key or (dedup and key in previous_lines):
        continue
      keep.append(line)
    if dedup:
      previous_lines = {' '.join(clean_text(line).split()) for line in raw_lines}
    if keep:
      words.extend(_cue_words(cue, keep))
  return words


def split_sentences(words: Sequence[TimedWord], max_gap: float = 1.0,
                    max_words: int = 32,
                    punctuated: Optional[bool] = None) -> list[TimedSentence]:
  """Groups a word stream into sentences.

  Punctuated text (subtitles) is split after words ending in . ! or ?
  (closing quotes and brackets allowed). Raw ASR has no punctuation: the
  VideoBERT paper restores it with an off-the-shelf LSTM punctuator; we split
  at pauses (the gap from one word's end to the next word's start) longer than
  `max_gap` seconds instead. Either way a sentence ends at `max_words` words.

  Args:
    words: time-ordered words.
    max_gap: pause, in seconds, that ends an unpunctuated sentence.
    max_words: the most words in one sentence.
    punctuated: None: punctuated when any word ends a sentence.

  Returns:
    Sentences: the words joined by spaces, from the first word's start to the
    last word's end.
  """
  if max_words < 1:
    raise ValueError(f'max_words must be at least 1, got {max_words}')
  if punctuated is None:
    punctuated = any(_SENTENCE_END_RE.search(w.text) for w in words)
  sentences = []
  current: list[TimedWord] = []

  def flush():
    if current:
      sentences.append(TimedSentence(' '.join(w.text for w in current),
                                     current[0].start, current[-1].end))
      current.clear()

  for word in words:
    if current and not punctuated and word.start - current[-1].end > max_gap:
      flush()
    current.append(word)
    if len(current) >= max_words or (punctuated and _SENTENCE_END_RE.search(word.text)):
      flush()
  flush()
  return sentences


def _load_json(path):
  try:
    with open(path, encoding='utf-8-sig') as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise TranscriptError(path, e.lineno, f'invalid JSON ({e.msg})') from e
  except UnicodeDecodeError as e:
    raise TranscriptError(path, None, f'not UTF-8 ({e.reason})') from e


def _howto100m_cues(path, data: dict, report: _Reporter) -> dict[str, list[Cue]]:
  out = {}
  for vid, entry in data.items():
    try:
      starts, ends, texts = entry['start'], entry['end'], entry['text']
      if not len(starts) == len(ends) == len(texts):
        raise ValueError(f'{len(starts)} starts, {len(ends)} ends, {len(texts)} texts')
      cues = []
      for i, (start, end, text) in enumerate(zip(starts, ends, texts)):
        start, end = float(start), float(end)
        if not (start == start and end == end) or end < start:  # NaN or reversed
          raise ValueError(f'caption {i}: bad times [{start}, {end}]')
        text = '' if text is None else str(text)
        cues.append(Cue(start, end, text, text))
    except (KeyError, TypeError, ValueError) as e:
      report(path, None, f'video {vid}: {e.__class__.__name__}: {e}')
      continue
    out[str(vid)] = cues
  return out


def read_howto100m(path, lenient: bool = False,
                   failures: Optional[list] = None) -> dict[str, list[Cue]]:
  """HowTo100M `raw_caption.json`: {video_id: {start, end, text}} -> cues.

  Raises:
    TranscriptError: not JSON, or (strict mode) a malformed video entry.
  """
  data = _load_json(path)
  if not isinstance(data, dict):
    raise TranscriptError(path, None, 'expected a JSON object of videos')
  return _howto100m_cues(path, data, _Reporter(lenient, failures))


def howto100m_words(cues: Sequence[Cue]) -> list[TimedWord]:
  """Word stream of HowTo100M caption lines.

  The lines' spans overlap (each is shown until the next but one begins), so a
  line's words are spread over its start up to the next line's start.
  """
  cues = sorted(cues, key=lambda c: c.start)
  words = []
  for i, cue in enumerate(cues):
    end = cue.end
    if i + 1 < len(cues) and cue.start < cues[i + 1].start < end:
      end = cues[i + 1].start
    words.extend(_cue_words(dataclasses.replace(cue, end=end), [cue.text]))
  return words


def _youcook2_sentences(path, data: dict, report: _Reporter,
                        subset: Optional[str]) -> dict[str, list[TimedSentence]]:
  database = data.get('database')
  if not isinstance(database, dict):
    raise TranscriptError(path, None, 'expected {"database": {video_id: ...}}')
  out = {}
  for vid, entry in database.items():
    try:
      if subset is not None and entry.get('subset') != subset:
        continue
      sentences = []
      for a in entry['annotations']:
        start, end = (float(t) for t in a['segment'])
        if end < start:
          raise ValueError(f'segment {a.get("id")}: ends before it starts')
        sentences.append(TimedSentence(str(a['sentence']).strip(), start, end))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      report(path, None, f'video {vid}: {e.__class__.__name__}: {e}')
      continue
    out[str(vid)] = sentences
  return out


def read_youcook2(path, subset: Optional[str] = None, lenient: bool = False,
                  failures: Optional[list] = None) -> dict[str, list[TimedSentence]]:
  """YouCook2 annotations -> {video_id: annotated segments as sentences}.

  Args:
    path: youcookii_annotations_*.json.
    subset: 'training' or 'validation' to keep one split; None keeps all.
    lenient: skip malformed videos with a warning instead of raising.
    failures: if given, a list that collects the skipped items' messages.
  """
  return _youcook2_sentences(path, _load_json(path), _Reporter(lenient, failures), subset)


def _is_howto100m(data) -> bool:
  return isinstance(data, dict) and bool(data) and all(
      isinstance(v, dict) and {'start', 'end', 'text'} <= v.keys() for v in data.values())


def _load_file(path: str, lenient: bool, max_gap: float, max_words: int,
               failures: Optional[list]) -> dict[str, list[TimedSentence]]:
  ext = os.path.splitext(path)[1].lower()
  stem = os.path.splitext(os.path.basename(path))[0]
  if ext in ('.vtt', '.srt'):
    read = read_vtt_cues if ext == '.vtt' else read_srt_cues
    words = cues_to_words(read(path, lenient=lenient, failures=failures))
    return {stem: split_sentences(words, max_gap, max_words)}
  if ext == '.json':
    data = _load_json(path)
    report = _Reporter(lenient, failures)
    if isinstance(data, dict) and 'database' in data:
      return _youcook2_sentences(path, data, report, None)
    if _is_howto100m(data):
      return {vid: split_sentences(howto100m_words(cues), max_gap, max_words)
              for vid, cues in _howto100m_cues(path, data, report).items()}
    raise TranscriptError(path, None, 'JSON is neither HowTo100M raw captions '
                          '({id: {start, end, text}}) nor YouCook2 annotations')
  raise TranscriptError(path, None, f'unsupported file type {ext!r} '
                        f'(supported: {", ".join(SUPPORTED_EXTENSIONS)})')


def transcript_files(path) -> list[str]:
  """`path` if it is a file, else the supported files in the directory."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} does not exist')
    return [path]
  return [os.path.join(path, name) for name in sorted(os.listdir(path))
          if name.lower().endswith(SUPPORTED_EXTENSIONS)
          and os.path.isfile(os.path.join(path, name))]


def load_transcripts(path, lenient: bool = False, max_gap: float = 1.0,
                     max_words: int = 32,
                     failures: Optional[list] = None) -> dict[str, list[TimedSentence]]:
  """Timed sentences per video from a transcript file or directory.

  .vtt and .srt: one video, id = file stem, sentences from `split_sentences`.
  .json: HowTo100M raw captions (sentences from `split_sentences`) or YouCook2
  annotations (segments kept as they are), told apart by shape. A directory:
  every supported file in it (not recursive).

  Args:
    path: a file or a directory.
    lenient: skip malformed cues/videos (and files that cannot be read, and
      repeated video ids) with a warning instead of raising.
    max_gap: see `split_sentences`.
    max_words: see `split_sentences`.
    failures: if given, a list that collects the skipped items' messages.

  Raises:
    TranscriptError: (strict mode) malformed input, naming file and line.
    FileNotFoundError: `path` does not exist.
  """
  report = _Reporter(lenient, failures)
  out: dict[str, list[TimedSentence]] = {}
  origin: dict[str, str] = {}
  for file in transcript_files(path):
    try:
      videos = _load_file(file, lenient, max_gap, max_words, failures)
    except TranscriptError as e:
      if not lenient:
        raise
      report(e.path, e.line, e.reason)
      continue
    for vid, sentences in videos.items():
      if vid in out:
        report(file, None, f'video id {vid!r} already read from {origin[vid]}; skipped')
        continue
      out[vid] = sentences
      origin[vid] = file
  return out
