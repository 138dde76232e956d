"""YouCook2 evaluation sets: annotated segments as clips, with verb and noun labels.

VideoBERT evaluates on YouCook2's validation videos with the ground-truth
segments (SPEC §1): zero-shot action classification reads a verb and a noun
for each segment, captioning generates the segment's sentence. YouCook2 gives
only the sentences, so the labels are taken from them by a fixed rule.

The annotation file (`youcookii_annotations_trainval.json`) is
{"database": {youtube_id: {"subset": "training" | "validation", "duration",
"recipe_type", "annotations": [{"id", "segment": [start, end], "sentence"}]}}};
every annotation becomes one `Segment`, whose clip id is `<youtube_id>_<id>`.

Label rule (`label_sentence`; the lists are `youcook2_labels/verbs.txt` and
`nouns.txt` beside this file, one lemma a line, '#' comments):
  1. The sentence is lower-cased and cut into words (runs of letters a-z;
     digits and punctuation separate words).
  2. A word matches a listed lemma if the word itself, or one of its simple
     inflection stems, is listed: -s, -es, -ies -> -y, -ves -> -f; for verbs
     also -ed / -ing (with a final -e restored or a doubled consonant undone:
     sliced -> slice, chopped -> chop, frying -> fry, fried -> fry) and a few
     irregular participles (beaten, broken, torn, laid; 'ground' is never a
     verb, as it is nearly always 'ground beef/pepper' in YouCook2). The stems
     are tried in that order and the first listed one is the label.
  3. The verb is the first word of the sentence, in sentence order, that
     matches a listed verb.
  4. The noun is the first word after the verb that matches a listed noun (the
     verb's object in an imperative step); if none follows the verb, the first
     matching word anywhere else in the sentence; with no verb, the first
     matching word.
  5. A segment with no verb or no noun keeps its sentence for captioning but is
     left out of classification (and counted).
"""

import dataclasses
import os
import re
from typing import Any, Iterable, Optional, Sequence

from vlm_jax.data import files as files_lib

SUBSETS = ('training', 'validation')
LABELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'youcook2_labels')

LABEL_RULE = (
    'lower-case the sentence and split it into runs of letters; a word matches a listed lemma '
    'if it, or one of its inflection stems (-s, -es, -ies->-y, -ves->-f; verbs also -ed/-ing '
    'with -e restored or a doubled consonant undone, and beaten/broken/torn/laid; "ground" is '
    'never a verb), is listed; '
    'verb = first word in sentence order matching verbs.txt; noun = first word after the verb '
    'matching nouns.txt, else the first matching word elsewhere; a segment missing either '
    'is kept for captioning and left out of classification')

# Participles the suffix rules cannot undo; only for verbs the lists hold.
# None: never a verb ('ground' is nearly always 'ground beef/pepper' here).
_IRREGULAR = {'beaten': 'beat', 'broken': 'break', 'torn': 'tear', 'laid': 'lay',
              'ground': None}
_WORD = re.compile(r'[a-z]+')


@dataclasses.dataclass(frozen=True)
class Segment:
  """One annotated YouCook2 segment.

  Attributes:
    clip_id: '<video_id>_<segment_id>', unique in the file.
    video_id: the YouTube id.
    segment_id: the annotation's `id` (its index within the video if absent).
    start: segment start, seconds.
    end: segment end, seconds.
    sentence: the caption, whitespace-normalised.
    subset: 'training' or 'validation'.
    recipe_type: YouCook2's recipe type id (a string, as in the file).
    duration: the video's duration, seconds (None if absent).
  """
  clip_id: str
  video_id: str
  segment_id: int
  start: float
  end: float
  sentence: str
  subset: str
  recipe_type: str
  duration: Optional[float]


def load_labels(name: str, folder: str = LABELS_DIR) -> list[str]:
  """The label list `name` ('verbs' or 'nouns'): lemmas in file order."""
  path = os.path.join(folder, f'{name}.txt')
  with open(path, encoding='utf-8') as f:
    words = [line.split('#', 1)[0].strip().lower() for line in f]
  words = [w for w in words if w]
  if len(set(words)) != len(words):
    raise ValueError(f'{path}: repeated labels')
  return words


def _stems(word: str, verb: bool) -> list[str]:
  """`word`, then its candidate lemmas by the module doc's inflection rules."""
  out = [word]

  def add(stem):
    if len(stem) >= 2 and stem not in out:
      out.append(stem)

  if word.endswith('ies'):
    add(word[:-3] + 'y')
  if word.endswith('ves'):
    add(word[:-3] + 'f')
  if word.endswith('es'):
    add(word[:-2])
  if word.endswith('s') and not word.endswith('ss'):
    add(word[:-1])
  if verb:
    if word in _IRREGULAR:
      if _IRREGULAR[word] is None:
        return []
      add(_IRREGULAR[word])
    for suffix in ('ed', 'ing'):
      if word.endswith(suffix) and len(word) > len(suffix) + 1:
        stem = word[:-len(suffix)]
        if suffix == 'ed' and stem.endswith('i'):
          add(stem[:-1] + 'y')  # fried -> fry
        add(stem)  # added -> add, frying -> fry
        add(stem + 'e')  # sliced -> slice, dicing -> dice
        if len(stem) >= 3 and stem[-1] == stem[-2]:
          add(stem[:-1])  # chopped -> chop, stirring -> stir
  return out


def _match(word: str, vocab: set[str], verb: bool) -> Optional[str]:
  for stem in _stems(word, verb):
    if stem in vocab:
      return stem
  return None


def label_sentence(sentence: str, verbs: Iterable[str],
                   nouns: Iterable[str]) -> tuple[Optional[str], Optional[str]]:
  """(verb, noun) of a caption by the module doc's rule; None where nothing matches."""
  verbs, nouns = set(verbs), set(nouns)
  words = _WORD.findall(sentence.lower())
  verb, at = None, -1
  for i, w in enumerate(words):
    verb = _match(w, verbs, verb=True)
    if verb is not None:
      at = i
      break
  matches = [(i, _match(w, nouns, verb=False)) for i, w in enumerate(words) if i != at]
  matches = [(i, n) for i, n in matches if n is not None]
  after = [n for i, n in matches if i > at]
  noun = after[0] if after else (matches[0][1] if matches else None)
  return verb, noun


def read_segments(path: str, subset: Optional[str] = 'validation') -> list[Segment]:
  """Every annotated segment of `subset` ('training', 'validation' or None: all).

  Segments come in file order (videos, then annotations).

  Raises:
    ValueError: the file is not YouCook2 annotations, or an entry is malformed
      (the message names the video), or two segments share a clip id.
  """
  import json  # pylint: disable=import-outside-toplevel
  if subset is not None and subset not in SUBSETS:
    raise ValueError(f'subset must be one of {SUBSETS} or None, not {subset!r}')
  with open(path, encoding='utf-8-sig') as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: invalid JSON ({e.msg}, line {e.lineno})') from e
  database = data.get('database') if isinstance(data, dict) else None
  if not isinstance(database, dict):
    raise ValueError(f'{path}: expected {{"database": {{video_id: ...}}}} (YouCook2 annotations)')
  out, seen = [], set()
  for vid, entry in database.items():
    try:
      if subset is not None and entry['subset'] != subset:
        continue
      duration = entry.get('duration')
      for index, a in enumerate(entry['annotations']):
        start, end = (float(t) for t in a['segment'])
        if not start <= end:
          raise ValueError(f'segment {a.get("id", index)}: bad span [{start}, {end}]')
        segment_id = int(a.get('id', index))
        clip_id = f'{vid}_{segment_id}'
        if clip_id in seen:
          raise ValueError(f'segment id {segment_id} appears twice')
        seen.add(clip_id)
        out.append(Segment(clip_id, str(vid), segment_id, start, end,
                           ' '.join(str(a['sentence']).split()), str(entry['subset']),
                           str(entry.get('recipe_type', '')),
                           None if duration is None else float(duration)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise ValueError(f'{path}: video {vid}: {e.__class__.__name__}: {e}') from e
  return out


def find_videos(folder: str) -> tuple[dict[str, str], list[list[str]]]:
  """{video_id: path} for every video file under `folder` (recursively).

  A file `<youtube_id>.<ext>` with a known video extension (any case) is the
  video of that id, wherever it lies below `folder` (the official download
  nests them as raw_videos/<subset>/<recipe_type>/). When one id has several
  files, the first in sorted path order is used.

  Returns:
    (videos, duplicates): duplicates lists [video_id, used path, other paths...].
  """
  found: dict[str, list[str]] = {}
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in sorted(files):
      stem = os.path.splitext(name)[0]
      if files_lib.is_video(name):
        found.setdefault(stem, []).append(os.path.join(root, name))
  videos = {k: sorted(v)[0] for k, v in found.items()}
  duplicates = [[k] + sorted(v) for k, v in sorted(found.items()) if len(v) > 1]
  return videos, duplicates


def segment_records(segments: Sequence[Segment], verbs: Sequence[str], nouns: Sequence[str],
                    videos: Optional[dict[str, str]]) -> list[dict[str, Any]]:
  """One JSON-ready dict per segment: its fields, video path and labels.

  `video` is the file's path, or None when `videos` is given and lacks it (or
  when `videos` is None: no lookup). `verb_index` / `noun_index` index the label
  lists (None when unlabelled).
  """
  verb_index = {v: i for i, v in enumerate(verbs)}
  noun_index = {n: i for i, n in enumerate(nouns)}
  out = []
  for s in segments:
    verb, noun = label_sentence(s.sentence, verbs, nouns)
    record = dataclasses.asdict(s)
    record.update(video=None if videos is None else videos.get(s.video_id),
                  verb=verb, noun=noun,
                  verb_index=None if verb is None else verb_index[verb],
                  noun_index=None if noun is None else noun_index[noun])
    out.append(record)
  return out
