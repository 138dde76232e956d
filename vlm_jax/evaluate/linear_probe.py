"""Supervised linear probes of per-second features on COIN-format annotations (CBT).

Run by `vlm-jax eval linear-probe`; that command's docstring
(vlm_jax/commands/eval_linear_probe.py, its --help) documents the annotations,
the features, the three tasks and the protocol. The probe is
vlm_jax/metrics/linear_probe.py; it loads JAX, so it is imported when a probe
is fitted, not with this module (`--help` stays free of JAX).
"""

import json
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import intervals
from vlm_jax.metrics import segmentation

TASKS = ('segment', 'clip', 'anticipation')
# Training examples fit the probe, validation ones choose l2, testing ones score it.
SUBSETS = ('training', 'validation', 'testing')
# The clip task's label for a second no segment covers.
BACKGROUND = 'background'
# The l2 candidates without --l2_grid: decades around scikit-learn's default C = 1,
# which is l2 = 1 / n (1e-4 for 10k training examples; vlm_jax/metrics/linear_probe.py).
DEFAULT_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

Segments = list[tuple[float, float, str]]
Loader = Callable[[str], tuple[Optional[np.ndarray], Optional[str]]]


def read_annotations(path: str) -> dict[str, tuple[str, Segments]]:
  """{video_id: (subset, [(start, end, label)] in file order)} from a COIN-format JSON.

  Labels are whitespace-normalised. Videos of a subset other than SUBSETS are
  kept (and later ignored).

  Raises:
    ValueError: naming the file and the field (`database.<id>.annotation[2].label`).
  """
  try:
    with open(path, encoding='utf-8-sig') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not JSON ({e})') from e
  database = data.get('database') if isinstance(data, dict) else None
  if not isinstance(database, dict):
    raise ValueError(f'{path}: database: expected {{"database": {{video_id: ...}}}}')
  videos = {}
  for vid, entry in database.items():
    where = f'{path}: database.{vid}'
    if not isinstance(entry, dict):
      raise ValueError(f'{where}: expected an object')
    if not isinstance(entry.get('subset'), str):
      raise ValueError(f'{where}.subset: missing')
    annotation = entry.get('annotation', [])
    if not isinstance(annotation, list):
      raise ValueError(f'{where}.annotation: expected a list')
    segments = []
    for i, a in enumerate(annotation):
      field = f'{where}.annotation[{i}]'
      if not isinstance(a, dict):
        raise ValueError(f'{field}: expected an object')
      label = _embeddings.normalize_text(a['label']) if isinstance(a.get('label'), str) else ''
      if not label:
        raise ValueError(f'{field}.label: missing')
      segment = a.get('segment')
      try:
        start, end = (float(t) for t in segment)
      except (TypeError, ValueError):
        raise ValueError(f'{field}.segment: expected [start, end] seconds, got '
                         f'{segment!r}') from None
      if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
        raise ValueError(f'{field}.segment: expected 0 <= start <= end, got {segment!r}')
      segments.append((start, end, label))
    videos[str(vid)] = (entry['subset'], segments)
  return videos


def covered_seconds(start: float, end: float, num_seconds: int) -> range:
  """Seconds floor(start) .. ceil(end) - 1 of a [start, end] segment, clipped to [0, T)."""
  return range(min(num_seconds, max(0, math.floor(start))),
               min(num_seconds, max(0, math.ceil(end))))


def segment_examples(states: np.ndarray, segments: Segments) -> tuple[
    np.ndarray, list[str], list[int]]:
  """One example per segment: the mean of its seconds' states.

  Args:
    states: [T, D] per-second features.
    segments: (start, end, label).

  Returns:
    (features [n, D] float32, n labels, indices of the segments skipped because
    none of their seconds is inside the video).
  """
  rows, labels, skipped = [], [], []
  for i, (start, end, label) in enumerate(segments):
    seconds = covered_seconds(start, end, len(states))
    if not seconds:
      skipped.append(i)
      continue
    rows.append(states[seconds.start:seconds.stop].mean(axis=0))
    labels.append(label)
  return _stack(rows, states.shape[1]), labels, skipped


def clip_examples(states: np.ndarray, segments: Segments) -> tuple[np.ndarray, list[str]]:
  """One example per second: its state, and the label of the segment covering it or BACKGROUND.

  A second covered by two segments takes the later one in `segments`
  (segmentation.seconds_labels, the zero-shot action segmentation's rule).

  Args:
    states: [T, D]; segments: (start, end, label).

  Returns:
    (features [T, D] float32, T labels).
  """
  names = [BACKGROUND] + [label for _, _, label in segments]
  ids = segmentation.seconds_labels(len(states), [(start, end, i + 1) for i, (start, end, _)
                                                   in enumerate(segments)])
  return np.asarray(states, np.float32), [names[i] for i in ids]


def anticipation_examples(states: np.ndarray, segments: Segments,
                          observe_seconds: Optional[int] = None) -> tuple[
    np.ndarray, list[str], list[int]]:
  """Next-step anticipation: for each segment k >= 1 (by start), the seconds before it.

  The observed seconds end before the second segment k starts in (t + 1 <=
  start_k, so none of segment k is seen): the `observe_seconds` seconds before
  it, or (None) those of segment k - 1 (covered_seconds) before it.

  Args:
    states: [T, D]; segments: (start, end, label), any order.
    observe_seconds: seconds observed, >= 1, or None.

  Returns:
    (features [n, D] float32: the mean of the observed seconds' states, n labels
    of the segments k, indices into `segments` of the k skipped because no
    observed second is inside the video).
  """
  order = sorted(range(len(segments)), key=lambda i: segments[i][0])
  rows, labels, skipped = [], [], []
  for previous, k in zip(order, order[1:]):
    stop = min(len(states), math.floor(segments[k][0]))
    if observe_seconds is None:
      first = covered_seconds(*segments[previous][:2], len(states)).start
    else:
      first = max(0, stop - observe_seconds)
    if first >= stop:
      skipped.append(k)
      continue
    rows.append(states[first:stop].mean(axis=0))
    labels.append(segments[k][2])
  return _stack(rows, states.shape[1]), labels, skipped


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
  return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def examples(task: str, videos: Mapping[str, tuple[str, Segments]], load: Loader,
             observe_seconds: Optional[int] = None) -> tuple[
    dict[str, tuple[np.ndarray, list[str]]], list[dict[str, str]], list[dict[str, Any]]]:
  """Every subset's examples of `task`.

  Args:
    task: one of TASKS.
    videos: read_annotations' dict.
    load: video_id -> ([T, D] states, None) or (None, why).
    observe_seconds: the anticipation task's, or None.

  Returns:
    ({subset: (features [n, D], n labels)} for each of SUBSETS,
     missing videos [{'video_id', 'reason'}], skipped segments
     [{'video_id', 'segment' (its index in the annotation), 'reason'}]).
  """
  if task not in TASKS:
    raise ValueError(f'task {task!r}; expected one of {", ".join(TASKS)}')
  if observe_seconds is not None and observe_seconds < 1:
    raise ValueError(f'observe_seconds = {observe_seconds}; expected >= 1')
  rows = {s: [] for s in SUBSETS}
  labels = {s: [] for s in SUBSETS}
  missing, skipped = [], []
  dim = None
  for vid, (subset, segments) in videos.items():
    # Without segments only the clip task has examples (all background).
    if subset not in SUBSETS or (task != 'clip' and not segments):
      continue
    states, why = load(vid)
    if states is None:
      missing.append({'video_id': vid, 'reason': why})
      continue
    if dim is None:
      dim = states.shape[1]
    elif states.shape[1] != dim:
      missing.append({'video_id': vid, 'reason': f'D = {states.shape[1]}, but the first '
                      f'video read has D = {dim}'})
      continue
    if task == 'clip':
      x, y = clip_examples(states, segments)
      dropped, reason = [], None
    elif task == 'segment':
      x, y, dropped = segment_examples(states, segments)
      reason = f'no second of the segment inside the video ({len(states)} s)'
    else:
      x, y, dropped = anticipation_examples(states, segments, observe_seconds)
      reason = f'no observed second inside the video ({len(states)} s)'
    skipped += [{'video_id': vid, 'segment': i, 'reason': reason} for i in dropped]
    rows[subset].append(x)
    labels[subset] += y
  dim = dim or 0
  splits = {s: (np.concatenate(rows[s]) if rows[s] else np.zeros((0, dim), np.float32),
                labels[s]) for s in SUBSETS}
  return splits, missing, skipped


def folder_loader(folder: str) -> Loader:
  """Loads `<folder>/<video_id>.npy` [T, D] (a bad file gives its reason, _embeddings)."""
  if not os.path.isdir(folder):
    raise ValueError(f'{folder}: no such features folder')
  return lambda vid: _embeddings.load_video(folder, vid, per_second=True)


def arrays_loader(arrays: Mapping[str, np.ndarray]) -> Loader:
  """Looks video ids up in {video_id: [T, D] states}, with folder_loader's checks."""

  def load(vid):
    if vid not in arrays:
      return None, 'missing'
    array = np.asarray(arrays[vid])
    if array.ndim != 2 or array.shape[0] == 0:
      return None, f'expected per-second states [T, D], got shape {list(array.shape)}'
    if not np.all(np.isfinite(array)):
      return None, 'non-finite values'
    return array.astype(np.float32), None

  return load


def run(annotations: str, features: str, output: Optional[str], task: str,
        l2_grid: Sequence[float] = DEFAULT_GRID, l2: Optional[float] = None,
        observe_seconds: Optional[int] = None) -> dict[str, Any]:
  """Evaluates features in folder `features`; writes `output` (if given); returns the metrics dict.

  Args:
    annotations: the COIN-format JSON.
    features: folder of `<video_id>.npy` [T, D].
    output: the metrics JSON to write, or None.
    task: one of TASKS.
    l2_grid: the candidates chosen among on the validation subset.
    l2: this strength instead of choosing one (no validation subset needed).
    observe_seconds: the anticipation task's (default: all of the previous segment).

  Raises:
    ValueError: an unusable input, in one line naming the file or field.
  """
  return _evaluate(annotations, folder_loader(features), dict(features=features), output,
                   task, l2_grid, l2, observe_seconds)


def run_arrays(annotations: str, features: Mapping[str, np.ndarray], output: Optional[str],
               task: str, l2_grid: Sequence[float] = DEFAULT_GRID, l2: Optional[float] = None,
               observe_seconds: Optional[int] = None) -> dict[str, Any]:
  """run() with the features in memory: {video_id: [T, D] states}."""
  return _evaluate(annotations, arrays_loader(features), {}, output, task, l2_grid, l2,
                   observe_seconds)


def _evaluate(annotations: str, load: Loader, inputs: dict[str, str], output: Optional[str],
              task: str, l2_grid: Sequence[float], l2: Optional[float],
              observe_seconds: Optional[int]) -> dict[str, Any]:
  videos = read_annotations(annotations)
  splits, missing, skipped = examples(task, videos, load, observe_seconds)
  (train_x, train_text), (dev_x, dev_text), (test_x, test_text) = (splits[s] for s in SUBSETS)
  for subset, text in (('training', train_text), ('testing', test_text)):
    if not text:
      raise ValueError(f'{annotations}: no {subset} examples for task {task} '
                       f'({len(missing)} videos without features)')
  if l2 is None and not dev_text:
    raise ValueError(f'{annotations}: no validation examples to choose l2 on; give --l2')
  # The label space: every label of the task's examples in any subset (the clip
  # task's background first); one never seen in training is never predicted.
  found = set(train_text) | set(dev_text) | set(test_text)
  if task == 'clip':
    names = [BACKGROUND] + sorted(found - {BACKGROUND})
  else:
    names = sorted(found)
  index = {t: i for i, t in enumerate(names)}
  # After the inputs are checked: a bad one fails before JAX loads.
  from vlm_jax.metrics import linear_probe  # pylint: disable=import-outside-toplevel
  train_y, dev_y, test_y = (np.array([index[t] for t in text], np.int64)
                            for text in (train_text, dev_text, test_text))
  dev_accuracy = {}
  chosen = l2 is None
  if chosen:
    selection = linear_probe.select_l2(train_x, train_y, dev_x, dev_y, len(names), l2_grid)
    probe, l2, dev_accuracy = selection.probe, selection.l2, selection.dev_accuracy
  else:
    probe = linear_probe.fit(train_x, train_y, len(names), l2)
    if dev_text:
      dev_accuracy = {l2: linear_probe.accuracy(probe, dev_x, dev_y)}
  correct = probe.predict(test_x) == test_y
  # The most frequent training label; a tie goes to the first in label order.
  majority = int(np.bincount(train_y, minlength=len(names)).argmax())
  metrics = dict(_scored('accuracy', correct), chance=1 / len(names),
                 majority_baseline_accuracy=float(np.mean(test_y == majority)),
                 majority_label=names[majority])
  if task == 'clip':
    foreground = test_y != index[BACKGROUND]
    metrics.update(background_baseline_accuracy=float(np.mean(~foreground)),
                   **_scored('foreground_accuracy', correct[foreground]),
                   foreground_seconds=int(foreground.sum()))
  metrics['dev_accuracy'] = {str(k): v for k, v in dev_accuracy.items()}
  return _embeddings.report(
      output, 'linear_probe', dict(annotations=annotations, **inputs),
      parameters=dict(probe_task=task, l2=l2, l2_chosen_on='validation' if chosen else None,
                      l2_grid=[float(g) for g in l2_grid] if chosen else None,
                      observe_seconds=observe_seconds,
                      standardised_with='training mean and std',
                      interval=f'{intervals.CONFIDENCE:.0%} percentile bootstrap over the '
                      'test examples'),
      metrics=metrics,
      probe=dict(iterations=probe.iterations, converged=probe.converged,
                 gradient_norm=probe.gradient_norm, training_classes=len(probe.classes)),
      counts=dict(train=len(train_y), dev=len(dev_y), test=len(test_y), classes=len(names),
                  videos=sum(s in SUBSETS for s, _ in videos.values()),
                  missing_videos=len(missing), skipped_segments=len(skipped)),
      labels=names, missing_videos=missing, skipped_segments=skipped)


def _scored(key: str, correct: np.ndarray) -> dict[str, Any]:
  """{key: mean, key_ci95: [low, high] or None (fewer than 2 items or none)}."""
  if not len(correct):
    return {key: None, f'{key}_ci95': None}
  interval = intervals.bootstrap_interval(correct) if len(correct) >= 2 else None
  return {key: float(np.mean(correct)), f'{key}_ci95': list(interval) if interval else None}


def summary(result: dict[str, Any], output: str) -> str:
  """The lines `vlm-jax eval linear-probe` prints for run()'s dict."""
  m, c, p = result['metrics'], result['counts'], result['parameters']
  name = 'frame accuracy' if p['probe_task'] == 'clip' else 'accuracy'
  lines = [f'linear-probe {p["probe_task"]}: {name} {intervals.describe(m, "accuracy")} over '
           f'{c["test"]} test examples; chance {100 * m["chance"]:.1f}%, majority '
           f'({m["majority_label"]}) {100 * m["majority_baseline_accuracy"]:.1f}%']
  if p['probe_task'] == 'clip':
    fg = intervals.describe(m, 'foreground_accuracy') if m['foreground_accuracy'] is not None \
        else 'n/a'
    lines.append(f'  all-background {100 * m["background_baseline_accuracy"]:.1f}%; top-1 over '
                 f'the {m["foreground_seconds"]} non-background seconds {fg}')
  chosen = (f'chosen on {c["dev"]} validation examples' if p['l2_chosen_on'] else 'given')
  lines.append(f'  l2 {p["l2"]:g} ({chosen}); {c["train"]} training examples, {c["classes"]} '
               f'classes; videos without features: {c["missing_videos"]}, segments '
               f'skipped: {c["skipped_segments"]}; wrote {output}')
  if not result['probe']['converged']:
    lines.append(f'  warning: L-BFGS stopped after {result["probe"]["iterations"]} steps at '
                 f'gradient norm {result["probe"]["gradient_norm"]:.1e}, not converged')
  return '\n'.join(lines)
