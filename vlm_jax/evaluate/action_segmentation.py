"""Zero-shot COIN action segmentation (frame accuracy) over embedding files.

Run by `vlm-jax eval action-segmentation`; that command's docstring
(vlm_jax/commands/eval_action_segmentation.py, its --help) documents the
annotations, the label set, the embedding files and the protocol.
"""

from typing import Any, Optional


from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import segmentation


# How the label list is built without --labels: 'testing' (MMPT's
# COINActionSegmentationMetaProcessor: the steps annotated in the testing subset,
# label id i at position i - 1) or 'all' (every distinct step of every subset,
# ordered by id).
LABEL_SETS = ('testing', 'all')


def label_list(database: dict[str, Any], label_set: str = 'testing') -> tuple[
    list[str], dict[int, int]]:
  """(label texts, {step id: position in them}) from COIN's database.

  Raises:
    ValueError: a step id named by two texts, or (for 'testing') step ids
      that are not 1..N, the positions MMPT's list gives them.
  """
  if label_set not in LABEL_SETS:
    raise ValueError(f'label set {label_set!r}; expected one of {LABEL_SETS}')
  by_id = {}
  for vid, entry in database.items():
    if label_set == 'testing' and entry.get('subset') != 'testing':
      continue
    for a in entry.get('annotation', []):
      step, text = int(a['id']), _embeddings.normalize_text(a['label'])
      if by_id.setdefault(step, text) != text:
        raise ValueError(f'video {vid}: step id {step} is {text!r} here but '
                         f'{by_id[step]!r} elsewhere')
  order = sorted(by_id)
  if label_set == 'testing' and order != list(range(1, len(order) + 1)):
    raise ValueError(f'the testing subset\'s step ids are not 1..{len(order)} (e.g. '
                     f'{sorted(set(order) - set(range(1, len(order) + 1)))[:3]}): MMPT\'s '
                     'label list has no place for them; use label set "all" or --labels')
  return [by_id[i] for i in order], {step: i for i, step in enumerate(order)}


def read_coin(path: str, subset: Optional[str], labels_path: Optional[str] = None,
              label_set: str = 'testing') -> tuple[
    list[str], dict[str, list[tuple[float, float, int]]]]:
  """(label texts, {video_id: [(start, end, label index + 1)]}) of `subset` (None: all).

  The labels are `labels_path`'s lines when given (annotations then match by
  text), else `label_list(database, label_set)`.
  """
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
    source = labels_path
  else:
    try:
      labels, index = label_list(database, label_set)
    except ValueError as e:
      raise ValueError(f'{path}: {e}') from e

    def key(a):
      return int(a['id'])
    source = f'the {label_set} label set'
  videos = {}
  for vid, entry in database.items():
    if subset is not None and entry.get('subset') != subset:
      continue
    segments = []
    for a in entry.get('annotation', []):
      if key(a) not in index:
        raise ValueError(f'{path}: video {vid}: label {a["label"]!r} not in {source}')
      start, end = (float(t) for t in a['segment'])
      segments.append((start, end, index[key(a)] + 1))
    videos[str(vid)] = segments
  return labels, videos


def texts_to_encode(annotations: str, subset: Optional[str] = 'testing',
                    labels_path: Optional[str] = None, label_set: str = 'testing') -> list[str]:
  """The label texts (what --write_texts writes)."""
  return read_coin(annotations, subset, labels_path, label_set)[0]


def run(annotations: str, features: str, text_embeddings: str, output: Optional[str],
        texts: Optional[str] = None, subset: Optional[str] = 'testing',
        labels_path: Optional[str] = None, label_set: str = 'testing') -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  labels, videos = read_coin(annotations, subset, labels_path, label_set)
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
      parameters=dict(subset=subset, labels=labels_path,
                      label_set=None if labels_path else label_set, gamma=gamma,
                      rule='label if max similarity > gamma else background'),
      metrics=dict(metrics, videos=len(targets)),
      counts=dict(labels=len(labels), videos=len(videos), evaluated=len(targets),
                  missing_videos=len(missing)),
      missing_videos=missing)


def summary(result: dict[str, Any], output: str) -> str:
  """The line `vlm-jax eval action-segmentation` prints for run()'s dict."""
  m, c = result['metrics'], result['counts']
  return (f'action-segmentation: frame accuracy {m["frame_accuracy"]} (all-background '
          f'{m["background_baseline_accuracy"]}) over {m["seconds"]} seconds of '
          f'{c["evaluated"]} of {c["videos"]} videos, gamma '
          f'{result["parameters"]["gamma"]:.4f}; wrote {output}')
