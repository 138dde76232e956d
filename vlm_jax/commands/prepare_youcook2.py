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

import os

from absl import flags

from vlm_jax.stages import prepare_youcook2

_ANNOTATIONS = flags.DEFINE_string('annotations', None,
                                   'YouCook2 youcookii_annotations_trainval.json.')
_VIDEOS = flags.DEFINE_string('videos', None,
                              'Folder of <youtube_id>.<ext> videos (searched recursively).')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.')
_SUBSET = flags.DEFINE_enum('subset', 'validation', ['validation', 'training', 'all'],
                            'Which YouCook2 subset to prepare.')
_LABELS = flags.DEFINE_string('label_lists', None,
                              'Folder with verbs.txt and nouns.txt to use instead of the '
                              'built-in lists.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations', 'output']


def main(argv):
  del argv
  output = _OUTPUT.value
  try:
    manifest = prepare_youcook2.run(_ANNOTATIONS.value, output, _VIDEOS.value, _SUBSET.value,
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
          f'(listed in {os.path.join(output, "missing_videos.txt")})')
  print(f'wrote {output}')
