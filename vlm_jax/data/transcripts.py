"""Timed sentences from transcripts: WebVTT, SRT, HowTo100M and YouCook2.

VideoBERT and VideoCLIP pair video clips with ASR sentences and their times.
This module turns the common transcript formats into `TimedSentence`s in three
steps, each of which is public:

1. Cues: `read_vtt_cues` / `read_srt_cues` give the file's cues
   (`Cue(start, end, text)`; the text has its tags removed and its lines joined
   with '\n', as webvtt-py does). Each format's timings follow its grammar,
   lenient only where players are (WebVTT: the W3C parser browsers run; SRT:
   FFmpeg's reader). The file's encoding is detected, legacy ones included
   (`detect_encoding`). `read_howto100m` gives HowTo100M's caption
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
in the `failures` list when one is given. Nothing is dropped unreported: every
timing line gives a cue or such a report, and so does text outside a cue.
"""

import codecs
import dataclasses
import html
import json
import os
import re
import warnings
from typing import Iterable, Optional, Sequence

from vlm_jax.data import storage


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

# WebVTT as browsers parse it (the W3C spec's parser): [hours:]mm:ss.ttt with
# two-digit minutes and seconds, hours of any length and exactly three
# decimals after a '.'.
_VTT_TIMESTAMP = r'(?:\d+:)?\d{2}:\d{2}\.\d{3}'
_VTT_TIMESTAMP_RE = re.compile(r'^(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})$')
# SubRip has no spec; this is FFmpeg's reader (and VLC's): hours required,
# unpadded minutes and seconds ("00:00:5,000"), ',' or '.', and 1-3 digits of
# milliseconds ("1,5" is 1.005 s).
_SRT_TIMESTAMP = r'\d+:\d{1,2}:\d{1,2}[,.]\d{1,3}'
_SRT_TIMESTAMP_RE = re.compile(r'^(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})$')
# A timing line: cue settings (WebVTT) or X1..Y2 positions (SRT) may follow;
# a further digit is a malformed timestamp, not a setting.
_TIMING_RES = {
    fmt: re.compile(rf'^\s*({ts})\s*-->\s*({ts})(?!\d)(.*)$')
    for fmt, ts in (('vtt', _VTT_TIMESTAMP), ('srt', _SRT_TIMESTAMP))}
_TIMING_FORMS = {'vtt': '[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt',
                 'srt': 'hh:mm:ss,mmm --> hh:mm:ss,mmm'}
_INLINE_TIME_RE = re.compile(rf'<({_VTT_TIMESTAMP})>')
_TAG_RE = re.compile(r'<[^>]*>')
# SRT files made from ASS subtitles carry override codes such as {\an8}.
_ASS_TAG_RE = re.compile(r'\{\\[^}]*\}')
_SENTENCE_END_RE = re.compile(r'[.!?]+["\'\u201d\u2019)\]]*$')
# WebVTT's line terminators, which SRT players accept too.
_LINE_BREAK_RE = re.compile(r'\r\n|\r|\n')
_BYTE_LINE_BREAK_RE = re.compile(rb'\r\n|\r|\n')
# Byte-order marks, UTF-32's first: UTF-32-LE's starts with UTF-16-LE's.
_BOMS = ((codecs.BOM_UTF32_LE, 'utf-32-le'), (codecs.BOM_UTF32_BE, 'utf-32-be'),
         (codecs.BOM_UTF8, 'utf-8'), (codecs.BOM_UTF16_LE, 'utf-16-le'),
         (codecs.BOM_UTF16_BE, 'utf-16-be'))
# UTF-16 without a byte-order mark: at least this share of the bytes of one
# parity are NUL (captions are mostly ASCII: digits, arrows, spaces, latin
# text), and ten times fewer of the other.
_UTF16_NUL_SHARE = 0.2


class _Reporter:
  """Raises on malformed input, or warns and records it in lenient mode."""

  def __init__(self, lenient: bool, failures: Optional[list]):
    self.lenient = lenient
    self.failures = failures
    # Lines reported as not text (lenient mode): a cue holding one is never written.
    self.bad_lines: set[int] = set()

  def __call__(self, path, line: Optional[int], message: str) -> None:
    error = TranscriptError(path, line, message)
    if not self.lenient:
      raise error
    # stacklevel 3: the caller of the public reader, not this helper.
    warnings.warn(str(error), TranscriptWarning, stacklevel=3)
    if self.failures is not None:
      self.failures.append(str(error))


def _seconds(text: str, pattern: re.Pattern, milliseconds: bool) -> float:
  m = pattern.match(text.strip())
  if not m:
    raise ValueError(f'invalid timestamp {text!r}')
  hours, minutes, seconds, fraction = m.groups()
  if int(seconds) >= 60 or int(minutes) >= 60:
    raise ValueError(f'timestamp out of range {text!r}')
  fraction = int(fraction) / 1000 if milliseconds else float('0.' + fraction)
  return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + fraction


def parse_vtt_timestamp(text: str) -> float:
  """Seconds of a WebVTT timestamp, `[hh:]mm:ss.ttt`.

  Raises:
    ValueError: not a timestamp, or minutes/seconds out of range.
  """
  return _seconds(text, _VTT_TIMESTAMP_RE, milliseconds=False)


def parse_srt_timestamp(text: str) -> float:
  """Seconds of a SubRip timestamp, `h:m:s,mmm` (see _SRT_TIMESTAMP for the leniency).

  Raises:
    ValueError: not a timestamp, or minutes/seconds out of range.
  """
  return _seconds(text, _SRT_TIMESTAMP_RE, milliseconds=True)


def clean_text(raw: str) -> str:
  """Cue text without tags (<c>, <v Name>, <i>, inline times, {\\an8})."""
  return html.unescape(_ASS_TAG_RE.sub('', _TAG_RE.sub('', raw)))


def _utf16_by_nuls(data: bytes) -> Optional[str]:
  if len(data) < 2 or len(data) % 2:
    return None
  even, odd = data[0::2].count(0), data[1::2].count(0)
  for nuls, other, codec in ((odd, even, 'utf-16-le'), (even, odd, 'utf-16-be')):
    if nuls >= _UTF16_NUL_SHARE * len(data) / 2 and other * 10 <= nuls:
      try:
        data.decode(codec)
      except UnicodeDecodeError:
        return None
      return codec
  return None


def detect_encoding(data: bytes) -> tuple[str, str, int]:
  """(Python codec, how it was chosen, length of its byte-order mark) of caption bytes.

  In order:
  1. a byte-order mark: UTF-8, UTF-16 or UTF-32 (how: 'byte-order mark');
  2. UTF-16 without one, from its NUL bytes: the ASCII characters of a
     caption file (timings, spaces, latin text) put a NUL in every other byte
     ('no byte-order mark; NUL bytes');
  3. UTF-8 when at least as many UTF-8 characters as undecodable bytes
     occur (legacy text hardly ever forms UTF-8 by chance): a UTF-8 file with
     a few corrupt bytes stays UTF-8, and the lines holding them are reported
     ('UTF-8');
  4. else a legacy single-byte encoding ('not UTF-8; assumed'): windows-1252
     when bytes 0x80-0x9f occur (its curly quotes, dashes and euro sign;
     latin-1 has control characters there) and all of them are defined in it;
     otherwise latin-1, which decodes any byte. Other legacy encodings
     (windows-1251, ...) come out as mojibake under the name assumed.

  charset-normalizer is not used: on subtitle-sized texts it names French
  windows-1252 'cp1250' and a short Spanish line 'johab'.
  """
  for bom, codec in _BOMS:
    if data.startswith(bom):
      return codec, 'byte-order mark', len(bom)
  utf16 = _utf16_by_nuls(data)
  if utf16:
    return utf16, 'no byte-order mark; NUL bytes', 0
  try:
    data.decode('utf-8')
    return 'utf-8', 'UTF-8', 0
  except UnicodeDecodeError:
    pass
  text = data.decode('utf-8', errors='replace')
  bad = text.count('\ufffd') - data.count('\ufffd'.encode())
  if sum(ord(c) > 127 for c in text) - bad >= bad:
    return 'utf-8', 'UTF-8', 0
  try:
    if re.search(rb'[\x80-\x9f]', data):
      data.decode('windows-1252')
      return 'windows-1252', 'not UTF-8; assumed', 0
  except UnicodeDecodeError:
    pass
  return 'latin-1', 'not UTF-8; assumed', 0


_SKIPPED = '; its cue is skipped'


def _read_lines(path, report: _Reporter) -> tuple[list[str], str]:
  """The file's lines and 'codec (how it was chosen)'; see detect_encoding.

  Lines that do not decode, and lines with a NUL character (binary data, or
  UTF-32 without a byte-order mark), are errors; in lenient mode they are
  reported, kept as placeholders so the cues around them still parse, and
  marked in `report.bad_lines`, so that the cue holding one is skipped.
  """
  with storage.open_file(path, 'rb') as f:
    data = f.read()
  codec, how, bom = detect_encoding(data)
  data = data[bom:]
  if codec.startswith('utf-16') or codec.startswith('utf-32'):
    try:
      lines = _LINE_BREAK_RE.split(data.decode(codec))
    except UnicodeDecodeError as e:
      raise TranscriptError(path, None, f'not valid {codec} ({how}): {e.reason} at byte '
                            f'{e.start + bom}') from e
  else:
    # ASCII-compatible: the line breaks are bytes, and each line decodes alone.
    lines = []
    for number, raw in enumerate(_BYTE_LINE_BREAK_RE.split(data), start=1):
      try:
        lines.append(raw.decode(codec))
      except UnicodeDecodeError as e:
        report(path, number, f'not {codec} ({e.reason}){_SKIPPED * report.lenient}')
        report.bad_lines.add(number)
        lines.append(raw.decode(codec, errors='replace'))
  for number, line in enumerate(lines, start=1):
    if '\0' in line and number not in report.bad_lines:
      report(path, number, f'NUL character: not text in {codec} ({how}){_SKIPPED * report.lenient}')
      report.bad_lines.add(number)
      lines[number - 1] = line.replace('\0', '')
  return lines, f'{codec} ({how})'


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


def _parse_timing(path, number: int, line: str, fmt: str,
                  report: _Reporter) -> Optional[tuple[float, float]]:
  """(start, end) of a timing line in format `fmt`, or None after reporting it malformed."""
  m = _TIMING_RES[fmt].match(line)
  if not m:
    report(path, number, f'invalid cue timing {line.strip()!r} (expected {_TIMING_FORMS[fmt]})')
    return None
  parse = parse_vtt_timestamp if fmt == 'vtt' else parse_srt_timestamp
  try:
    start, end = parse(m.group(1)), parse(m.group(2))
  except ValueError as e:
    report(path, number, str(e))
    return None
  if end < start:
    report(path, number, f'cue ends ({end:.3f}s) before it starts ({start:.3f}s)')
    return None
  return start, end


def _cues_from_block(path, numbered: list[tuple[int, str]], fmt: str,
                     report: _Reporter) -> list[Cue]:
  """Cues of (line number, line) pairs that start with a timing line.

  A further timing line inside the block starts a new cue: YouTube's
  auto-captions omit the blank line between some cues, and browsers (and
  webvtt-py, whose results we match) read them this way. A cue whose timing
  is malformed is reported, with its text.
  """
  cues = []
  timing, timing_line, text = None, 0, []

  def flush():
    # A cue with a line that is not text was reported with that line.
    if timing is not None and not ({timing_line, *text_lines} & report.bad_lines):
      raw = '\n'.join(text)
      cues.append(Cue(timing[0], timing[1], clean_text(raw), raw, timing_line))

  text_lines = []
  for number, line in numbered:
    if '-->' in line:
      flush()
      timing_line = number
      timing = _parse_timing(path, number, line, fmt, report)
      text, text_lines = [], []
    else:
      text.append(line)
      text_lines.append(number)
  flush()
  return cues


def _vtt_cues(path, lines: list[str], report: _Reporter) -> list[Cue]:
  if not lines or not re.match(r'WEBVTT(?:[ \t]|$)', lines[0]):
    # Nothing can be read from a file that is not WebVTT: always an error.
    raise TranscriptError(path, 1, 'missing WEBVTT header')
  runs = _blocks(lines)
  # The header ends at the first blank line or, as in browsers, at a timing
  # line, which starts the first cue.
  first, header = runs[0]
  k = next((i for i, line in enumerate(header) if '-->' in line), len(header))
  runs = ([(first + k, header[k:])] if k < len(header) else []) + runs[1:]
  cues = []
  for first, run in runs:
    numbered = list(enumerate(run, start=first))
    if len(run) > 1 and '-->' not in run[0] and '-->' in run[1]:
      numbered = numbered[1:]  # a cue identifier
    # A timing line further down starts a cue, as in browsers; the text
    # before it is reported unless it is a NOTE, STYLE or REGION block.
    k = next((i for i, (_, line) in enumerate(numbered) if '-->' in line), len(numbered))
    if k and not re.match(r'(?:NOTE(?:\s|$)|STYLE[ \t]*$|REGION[ \t]*$)', run[0]):
      report(path, first, 'text without a cue timing line')
    if k < len(numbered):
      cues.extend(_cues_from_block(path, numbered[k:], 'vtt', report))
  return cues


def read_vtt_cues(path, lenient: bool = False,
                  failures: Optional[list] = None) -> list[Cue]:
  """The cues of a WebVTT file, in file order.

  The grammar is the W3C parser's, as browsers run it (see _VTT_TIMESTAMP).
  The header block (including YouTube's `Kind:`/`Style:` lines), NOTE, STYLE
  and REGION blocks are skipped; cue identifiers and the cue settings after
  the timing are ignored. Cue texts keep their line breaks and lose their
  tags, as in webvtt-py; a cue without text has text ''. A cue is never
  dropped unreported: every timing line gives a cue or a reported error, and
  so does text outside a cue. The encoding is detected (`detect_encoding`).

  Args:
    path: the .vtt file.
    lenient: skip malformed cues with a warning instead of raising.
    failures: if given, a list that collects the skipped items' messages.

  Raises:
    TranscriptError: (strict mode) malformed file or cue, naming file and line.
  """
  report = _Reporter(lenient, failures)
  return _vtt_cues(path, _read_lines(path, report)[0], report)


def _srt_cues(path, lines: list[str], report: _Reporter) -> list[Cue]:
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
    cues.extend(_cues_from_block(path, numbered, 'srt', report))
  return cues


def read_srt_cues(path, lenient: bool = False,
                  failures: Optional[list] = None) -> list[Cue]:
  """The cues of a SubRip (.srt) file, in file order.

  Lenient where players (FFmpeg, VLC) are: unpadded timestamps
  (`00:00:5,000`), '.' for ',', short milliseconds (`,5` = 5 ms), X1..Y2
  positions after the timing, missing cue numbers, a missing blank line
  between cues. Tags (<i>, <font ...>, {\\an8}) are removed. The encoding is
  detected (`detect_encoding`); every timing line gives a cue or a reported
  error.

  Args:
    path: the .srt file.
    lenient: skip malformed cues with a warning instead of raising.
    failures: if given, a list that collects the skipped items' messages.

  Raises:
    TranscriptError: (strict mode) malformed cue, naming file and line.
  """
  report = _Reporter(lenient, failures)
  return _srt_cues(path, _read_lines(path, report)[0], report)


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
    t = min(max(parse_vtt_timestamp(parts[i]), previous), cue.end)
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
    with storage.open_file(path, 'rb') as f:
      # From bytes, json tells UTF-8 (BOM or not) from UTF-16 and UTF-32.
      return json.loads(f.read())
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
               failures: Optional[list],
               encodings: Optional[dict]) -> dict[str, list[TimedSentence]]:
  ext = os.path.splitext(path)[1].lower()
  stem = os.path.splitext(os.path.basename(path))[0]
  if ext in ('.vtt', '.srt'):
    report = _Reporter(lenient, failures)
    lines, encoding = _read_lines(path, report)
    if encodings is not None:
      encodings[path] = encoding
    cues = (_vtt_cues if ext == '.vtt' else _srt_cues)(path, lines, report)
    return {stem: split_sentences(cues_to_words(cues), max_gap, max_words)}
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
  """`path` if it is a file, else the supported files in the directory (either may be a URL)."""
  path = os.fspath(path)
  if not storage.isdir(path):
    if not storage.exists(path):
      raise FileNotFoundError(f'{path} does not exist')
    return [path]
  return [os.path.join(path, name) for name in storage.list_files(path)
          if name.lower().endswith(SUPPORTED_EXTENSIONS)]


def load_transcripts(path, lenient: bool = False, max_gap: float = 1.0,
                     max_words: int = 32, failures: Optional[list] = None,
                     encodings: Optional[dict] = None) -> dict[str, list[TimedSentence]]:
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
    encodings: if given, a dict that gets {.vtt/.srt path: 'codec (how it was
      chosen)'} (`detect_encoding`), e.g. 'windows-1252 (not UTF-8; assumed)'.

  Raises:
    TranscriptError: (strict mode) malformed input, naming file and line.
    FileNotFoundError: `path` does not exist.
  """
  report = _Reporter(lenient, failures)
  out: dict[str, list[TimedSentence]] = {}
  origin: dict[str, str] = {}
  for file in transcript_files(path):
    try:
      videos = _load_file(file, lenient, max_gap, max_words, failures, encodings)
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
