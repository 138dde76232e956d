"""vlm-jax eval action-segmentation: zero-shot COIN action segmentation (frame accuracy).

  vlm-jax eval action-segmentation --annotations COIN.json --write_texts labels.txt
  vlm-jax eval action-segmentation --annotations COIN.json --features FEATURES \\
      --text_embeddings labels.npy --output metrics.json [--texts labels.txt] \\
      [--subset testing] [--labels label_list.txt]

Annotations: COIN's COIN.json, `{"database": {video_id: {"subset": "training" |
"testing", "annotation": [{"id": "12", "segment": [start, end], "label":
"pour water"}, ...]}}}`. The label set is every distinct step (`id`, `label`)
of the whole database, all subsets (COIN's 778 steps), ordered by numeric id;
--labels gives it instead (one label text per line; annotations then match by
label text). Only videos of --subset (default testing) are evaluated.

Embeddings (vlm_jax/evaluate/_embeddings.py): labels.npy [N, D] embeds
labels.txt line by line (every label text must be there); FEATURES/<video_id>.npy
holds per-second video states [T, D] (row t = second [t, t + 1)).

Protocol (VideoCLIP; vlm_jax/metrics/segmentation.py): the labels are encoded
once; gamma = the largest dot product between two different label embeddings;
a second takes its best label if that similarity is strictly above gamma, else
background. Ground truth: a segment [start, end] labels seconds floor(start) ..
ceil(end) - 1; other seconds are background. Frame accuracy over every second
of every evaluated video is reported beside the all-background baseline (the
accuracy of predicting background everywhere). A video with a missing or bad
features file is listed under `missing_videos` and skipped.
"""

from typing import Any, Optional

from absl import app, flags

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import segmentation

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'COIN.json.', allow_override=True)
_COMMON = _embeddings.define_flags(__name__, 'Folder of <video_id>.npy per-second states.')
_SUBSET = flags.DEFINE_string('subset', 'testing', 'COIN subset to evaluate.',
                              allow_override=True)
_LABELS = flags.DEFINE_string('labels', None, 'Label list, one text per line (default: from '
                              'the annotations).',
                              allow_override=True)
REQUIRED_FLAGS = ['annotations']


def read_coin(path: str, subset: Optional[str], labels_path: Optional[str] = None) -> tuple[
    list[str], dict[str, list[tuple[float, float, int]]]]:
  """(label texts, {video_id: [(start, end, label index + 1)]}) of `subset` (None: all)."""
  import json  # pylint: disable=import-outside-toplevel
  with open(path, encoding='utf-8-sig') as f:
    data = json.load(f)
  database = data.get('database') if isinstance(data, dict) else None
  if not isinstance(database, dict):
    raise ValueError(f'{path}: expected {{"database": {{video_id: ...}}}} (COIN.json)')
  if labels_path:
    with open(labels_path, encoding='utf-8') as f:
      labels = [_embeddings.normalize_text(x) for x in f if x.strip()]
    index = {t: i for i, t in enumerate(labels)}

    def key(a):
      return _embeddings.normalize_text(a['label'])
  else:
    by_id = {}
    for vid, entry in database.items():
      for a in entry.get('annotation', []):
        step, text = int(a['id']), _embeddings.normalize_text(a['label'])
        if by_id.setdefault(step, text) != text:
          raise ValueError(f'{path}: video {vid}: step id {step} is {text!r} here but '
                           f'{by_id[step]!r} elsewhere')
    order = sorted(by_id)
    labels = [by_id[i] for i in order]
    index = {step: i for i, step in enumerate(order)}

    def key(a):
      return int(a['id'])
  videos = {}
  for vid, entry in database.items():
    if subset is not None and entry.get('subset') != subset:
      continue
    segments = []
    for a in entry.get('annotation', []):
      if key(a) not in index:
        raise ValueError(f'{path}: video {vid}: label {a["label"]!r} not in {labels_path}')
      start, end = (float(t) for t in a['segment'])
      segments.append((start, end, index[key(a)] + 1))
    videos[str(vid)] = segments
  return labels, videos


def run(annotations: str, features: str, text_embeddings: str, output: Optional[str],
        texts: Optional[str] = None, subset: Optional[str] = 'testing',
        labels_path: Optional[str] = None) -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  labels, videos = read_coin(annotations, subset, labels_path)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  absent = [t for t in labels if t not in table]
  if absent:
    # Without every label the label space, gamma and the task change: fatal.
    raise ValueError(f'{len(absent)} label texts not encoded, e.g. {absent[0]!r}')
  label_embeddings = table.stack(labels)
  gamma = segmentation.background_threshold(label_embeddings)
  predictions, targets, missing = [], [], []
  for vid, segments in videos.items():
    states, why = _embeddings.load_video(features, vid, per_second=True, dim=table.dim)
    if why:
      missing.append({'video_id': vid, 'reason': why})
      continue
    predictions.append(segmentation.predict_seconds(states, label_embeddings, gamma))
    targets.append(segmentation.seconds_labels(len(states), segments))
  metrics = segmentation.frame_accuracy(predictions, targets)
  return _embeddings.report(
      output, 'action_segmentation',
      dict(annotations=annotations, features=features, text_embeddings=text_embeddings),
      parameters=dict(subset=subset, labels=labels_path, gamma=gamma,
                      rule='label if max similarity > gamma else background'),
      metrics=dict(metrics, videos=len(targets)),
      counts=dict(labels=len(labels), videos=len(videos), evaluated=len(targets),
                  missing_videos=len(missing)),
      missing_videos=missing)


def main(argv):
  del argv
  result = _embeddings.run_binary(
      'action-segmentation', _COMMON, [_ANNOTATIONS],
      texts=lambda: read_coin(_ANNOTATIONS.value, _SUBSET.value, _LABELS.value)[0],
      evaluate=lambda *common: run(_ANNOTATIONS.value, *common, _SUBSET.value, _LABELS.value))
  if result is None:
    return
  m, c = result['metrics'], result['counts']
  print(f'action-segmentation: frame accuracy {m["frame_accuracy"]} (all-background '
        f'{m["background_baseline_accuracy"]}) over {m["seconds"]} seconds of {c["evaluated"]} '
        f'of {c["videos"]} videos, gamma {result["parameters"]["gamma"]:.4f}; wrote '
        f'{_COMMON.output.value}')


if __name__ == '__main__':
  app.run(main)
