"""vlm-jax prepare-youcook2: YouCook2 evaluation sets from the official annotations.

  vlm-jax prepare-youcook2 --annotations youcookii_annotations_trainval.json \\
      --videos DIR --output DIR [--subset validation|training|all]

Every annotated segment of the subset (validation by default, the set VideoBERT
reports on) becomes one clip: video id, segment id, start and end (seconds),
sentence, the video file (a `<youtube_id>.<ext>` anywhere under --videos, any
common video extension) and a verb and a noun label taken from the sentence by
a fixed rule over fixed lists (vlm_jax/data/youcook2.py; the lists are
vlm_jax/data/youcook2_labels/{verbs,nouns}.txt). Writes to --output:

  segments.jsonl              every segment (video: null when its file is missing)
  classification.jsonl        the segments with both a verb and a noun
                              (zero-shot action classification)
  captioning_references.json  {clip_id: [sentence]} (for `vlm-jax eval captioning`)
  verbs.txt, nouns.txt        the label lists; verb_index/noun_index index them
  missing_videos.txt          video ids of the subset with no file under --videos
  manifest.json               inputs, the label rule, counts per subset (segments,
                              videos, classification, unlabelled, missing), the
                              missing videos and label histograms

Missing videos are listed, not fatal; without --videos no lookup is done (every
`video` is null and missing_videos.txt is empty). Clip ids are
`<youtube_id>_<segment id>`.
"""

import collections
import json
import os
from typing import Any, Optional

from absl import flags

from vlm_jax.data import youcook2

# allow_override: subcommands share flag names and tests import several into
# one process (the CLI imports only one).
_ANNOTATIONS = flags.DEFINE_string('annotations', None,
                                   'YouCook2 youcookii_annotations_trainval.json.',
                                   allow_override=True)
_VIDEOS = flags.DEFINE_string('videos', None,
                              'Folder of <youtube_id>.<ext> videos (searched recursively).',
                              allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.', allow_override=True)
_SUBSET = flags.DEFINE_enum('subset', 'validation', ['validation', 'training', 'all'],
                            'Which YouCook2 subset to prepare.', allow_override=True)
_LABELS = flags.DEFINE_string('label_lists', None,
                              'Folder with verbs.txt and nouns.txt to use instead of the '
                              'built-in lists.', allow_override=True)
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['annotations', 'output']


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
  tmp = os.path.join(output, 'manifest.json.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(output, 'manifest.json'))
  return manifest


def main(argv):
  del argv
  try:
    manifest = run(_ANNOTATIONS.value, _OUTPUT.value, _VIDEOS.value, _SUBSET.value,
                   _LABELS.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax prepare-youcook2: {e}') from e
  c = manifest['counts']['total']
  print(f'{c["segments"]} segments from {c["videos"]} videos ({manifest["subset"]}); '
        f'{c["classification"]} labelled for classification, {c["unlabelled"]} unlabelled '
        f'({c["no_verb"]} no verb, {c["no_noun"]} no noun)')
  if manifest['videos'] is None:
    print('no --videos given: video paths not looked up')
  else:
    print(f'{c["videos_found"]} videos found, {c["videos_missing"]} missing '
          f'(listed in {os.path.join(_OUTPUT.value, "missing_videos.txt")})')
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  from absl import app  # pylint: disable=import-outside-toplevel
  flags.mark_flags_as_required(REQUIRED_FLAGS)
  app.run(main)
