"""Zero-shot CrossTask step localization (recall) over embedding files.

Run by `vlm-jax eval step-localization`; that command's docstring
(vlm_jax/commands/eval_step_localization.py, its --help) documents CrossTask's
input files, the embedding files and the protocol.
"""

import csv
import os
from typing import Any, Optional

import numpy as np

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import step_localization


def read_task_info(path: str) -> dict[str, dict[str, Any]]:
  """{task id: {'title', 'url', 'steps': [K texts]}} from a CrossTask task info file."""
  with open(path, encoding='utf-8') as f:
    lines = [line.strip() for line in f]
  tasks, i = {}, 0
  while i < len(lines):
    if not lines[i]:
      i += 1
      continue
    if i + 4 >= len(lines):
      raise ValueError(f'{path}:{i + 1}: task {lines[i]!r} has fewer than 5 lines')
    task, title, url, count, steps = lines[i:i + 5]
    steps = steps.split(',')
    if int(count) != len(steps):
      raise ValueError(f'{path}:{i + 4}: task {task}: {count} steps announced, '
                       f'{len(steps)} listed')
    tasks[task] = {'title': title, 'url': url, 'steps': steps}
    i += 5
  return tasks


def texts_to_encode(tasks_path: str) -> list[str]:
  """The step texts of every task (what --write_texts writes)."""
  return [s for t in read_task_info(tasks_path).values() for s in t['steps']]


def read_segments(path: str) -> list[tuple[int, float, float]]:
  """(step 1-based, start, end) rows of one annotation CSV."""
  out = []
  with open(path, encoding='utf-8', newline='') as f:
    for number, row in enumerate(csv.reader(f), 1):
      if not row or not ''.join(row).strip():
        continue
      if len(row) != 3:
        raise ValueError(f'{path}:{number}: expected step,start,end')
      out.append((int(row[0]), float(row[1]), float(row[2])))
  return out


def list_videos(annotations: str, tasks: dict[str, Any],
                videos: Optional[str] = None) -> list[tuple[str, str]]:
  """(task, video) pairs with an annotation file, restricted to --tasks / --videos."""
  pairs = []
  for name in sorted(os.listdir(annotations)):
    stem, ext = os.path.splitext(name)
    if ext == '.csv' and '_' in stem:
      task, vid = stem.split('_', 1)
      if task in tasks:
        pairs.append((task, vid))
  if videos:
    with open(videos, encoding='utf-8', newline='') as f:
      wanted = {(r[0].strip(), r[1].strip()) for r in csv.reader(f) if len(r) >= 2}
    pairs = [p for p in pairs if p in wanted]
  return pairs


def run(tasks_path: str, annotations: str, features: str, text_embeddings: str,
        output: Optional[str], texts: Optional[str] = None,
        videos: Optional[str] = None) -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  tasks = read_task_info(tasks_path)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  absent = [s for t in tasks.values() for s in t['steps'] if s not in table]
  if absent:
    raise ValueError(f'{len(absent)} step texts not encoded, e.g. {absent[0]!r}')
  steps = {task: table.stack(info['steps']) for task, info in tasks.items()}
  counts: dict[str, list[tuple[int, int]]] = {}
  skipped, states_cache = [], {}
  pairs = list_videos(annotations, tasks, videos)
  for task, vid in pairs:
    if vid not in states_cache:
      states_cache[vid] = _embeddings.load_video(features, vid, per_second=True, dim=table.dim)
    states, why = states_cache[vid]
    k = len(tasks[task]['steps'])
    if states is not None and len(states) < k:
      why = f'{len(states)} seconds for {k} steps'
    if why:
      skipped.append({'task': task, 'video_id': vid, 'reason': why})
      continue
    cost = -step_localization.log_softmax(states @ steps[task].T, axis=1)
    seconds = step_localization.ordered_assignment(cost)
    y_pred = step_localization.assignment_matrix(seconds, len(states))
    y_true = step_localization.ground_truth_matrix(
        len(states), k, read_segments(os.path.join(annotations, f'{task}_{vid}.csv')))
    counts.setdefault(task, []).append(step_localization.video_counts(y_true, y_pred))
  recalls = step_localization.task_recalls(counts)
  return _embeddings.report(
      output, 'step_localization',
      dict(tasks=tasks_path, annotations=annotations, features=features,
           text_embeddings=text_embeddings),
      metrics=dict(recall=float(np.mean(list(recalls.values()))) if recalls else None,
                   per_task=recalls, tasks=len(recalls)),
      counts=dict(tasks=len(tasks), videos=len(pairs),
                  evaluated=sum(len(v) for v in counts.values()), skipped=len(skipped),
                  annotated_steps={t: sum(n for _, n in v) for t, v in counts.items()}),
      skipped_videos=skipped)


def summary(result: dict[str, Any], output: str) -> str:
  """The line `vlm-jax eval step-localization` prints for run()'s dict."""
  m, c = result['metrics'], result['counts']
  return (f'step-localization: recall {m["recall"]} over {m["tasks"]} tasks, {c["evaluated"]} '
          f'of {c["videos"]} videos ({c["skipped"]} skipped); wrote {output}')
