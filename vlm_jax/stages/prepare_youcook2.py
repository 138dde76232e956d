"""The prepare-youcook2 job: YouCook2 evaluation sets from the official annotation JSON.

Used by `vlm-jax prepare-youcook2`; see that command for the files written.
"""

import collections
import json
import os
from typing import Any, Optional

from vlm_jax.data import files as files_lib
from vlm_jax.data import youcook2


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + '\n')


def _counts(records: list[dict[str, Any]], lookup: bool) -> dict[str, Any]:
  videos = list(dict.fromkeys(r['video_id'] for r in records))
  found = {r['video_id'] for r in records if r['video'] is not None}
  labelled = [r for r in records if r['verb'] is not None and r['noun'] is not None]
  return dict(
      segments=len(records), videos=len(videos), classification=len(labelled),
      unlabelled=len(records) - len(labelled),
      no_verb=sum(r['verb'] is None for r in records),
      no_noun=sum(r['noun'] is None for r in records),
      videos_found=len(found) if lookup else None,
      videos_missing=len(videos) - len(found) if lookup else None,
      segments_with_video=sum(r['video'] is not None for r in records) if lookup else None,
      classification_with_video=(sum(r['video'] is not None for r in labelled)
                                 if lookup else None))


def run(annotations: str, output: str, videos: Optional[str] = None,
        subset: str = 'validation', labels: Optional[str] = None) -> dict[str, Any]:
  """Writes the evaluation sets to `output`; returns the manifest (also written).

  Raises:
    ValueError: bad annotations or label lists, or an unknown subset.
    FileNotFoundError: `annotations`, `videos` or `labels` does not exist.
  """
  if videos is not None and not os.path.isdir(videos):
    raise FileNotFoundError(f'--videos {videos}: not a folder')
  labels_dir = labels or youcook2.LABELS_DIR
  verbs = youcook2.load_labels('verbs', labels_dir)
  nouns = youcook2.load_labels('nouns', labels_dir)
  both = set(verbs) & set(nouns)
  if both:
    raise ValueError(f'{labels_dir}: words in both verbs.txt and nouns.txt: {sorted(both)}')
  segments = youcook2.read_segments(annotations, None if subset == 'all' else subset)
  if not segments:
    raise ValueError(f'{annotations}: no segments in subset {subset!r}')
  found, duplicates = youcook2.find_videos(videos) if videos is not None else (None, [])
  records = youcook2.segment_records(segments, verbs, nouns, found)
  labelled = [r for r in records if r['verb'] is not None and r['noun'] is not None]
  video_ids = list(dict.fromkeys(r['video_id'] for r in records))
  missing = [v for v in video_ids if found is not None and v not in found]

  os.makedirs(output, exist_ok=True)
  _write_jsonl(os.path.join(output, 'segments.jsonl'), records)
  _write_jsonl(os.path.join(output, 'classification.jsonl'), labelled)
  with open(os.path.join(output, 'captioning_references.json'), 'w', encoding='utf-8') as f:
    json.dump({r['clip_id']: [r['sentence']] for r in records}, f, indent=1, ensure_ascii=False)
  for name, words in (('verbs', verbs), ('nouns', nouns)):
    with open(os.path.join(output, f'{name}.txt'), 'w', encoding='utf-8') as f:
      f.write(''.join(w + '\n' for w in words))
  with open(os.path.join(output, 'missing_videos.txt'), 'w', encoding='utf-8') as f:
    f.write(''.join(v + '\n' for v in missing))

  lookup = found is not None
  per_subset = {s: _counts([r for r in records if r['subset'] == s], lookup)
                for s in dict.fromkeys(r['subset'] for r in records)}
  manifest = dict(
      annotations=os.path.abspath(annotations),
      videos=None if videos is None else os.path.abspath(videos),
      output=os.path.abspath(output), subset=subset,
      labels=dict(folder=os.path.abspath(labels_dir), verbs=len(verbs), nouns=len(nouns)),
      rule=youcook2.LABEL_RULE,
      counts=dict(total=_counts(records, lookup), per_subset=per_subset),
      missing_videos=missing, duplicate_videos=duplicates,
      verb_counts=dict(collections.Counter(r['verb'] for r in labelled).most_common()),
      noun_counts=dict(collections.Counter(r['noun'] for r in labelled).most_common()))
  files_lib.write_json(os.path.join(output, 'manifest.json'), manifest, indent=1)
  return manifest
