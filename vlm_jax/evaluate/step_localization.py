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


# Which (task, video) pairs are evaluated: 'mmpt' (MMPT's zero-shot test set,
# `mmpt_videos`) or 'annotations' (every annotation file of a task, optionally
# restricted to a list: `list_videos`).
SPLITS = ('mmpt', 'annotations')
# MMPT's CrossTask config: n_train videos per primary task held out, np.random.seed(0).
MMPT_N_TRAIN, MMPT_SEED = 30, 0


def read_video_list(path: str) -> dict[str, list[str]]:
  """{task: [video ids in file order]} from CrossTask's `task,video,url` CSV (videos.csv)."""
  out: dict[str, list[str]] = {}
  with open(path, encoding='utf-8', newline='') as f:
    for number, row in enumerate(csv.reader(f), 1):
      if not row or not ''.join(row).strip():
        continue
      if len(row) < 2:
        raise ValueError(f'{path}:{number}: expected task,video,url')
      out.setdefault(row[0].strip(), []).append(row[1].strip())
  return out


def mmpt_videos(all_videos: str, val_videos: str, primary_tasks, annotations: str,
                features: str, n_train: int = MMPT_N_TRAIN,
                seed: int = MMPT_SEED) -> list[tuple[str, str]]:
  """MMPT's zero-shot CrossTask test set (its CrossTaskMetaProcessor), as (task, video) pairs.

  The videos of `all_videos` (videos.csv) that have both a features file and
  an annotation file, minus those of `val_videos` (videos_val.csv); then, task
  by task in file order, a primary task with more than `n_train` videos gives
  `n_train` of them, drawn with NumPy's legacy generator seeded `seed` once, to
  training, and the rest are the test set; other tasks are not tested.
  """
  def available(task, vid):
    return (os.path.exists(os.path.join(features, f'{vid}.npy'))
            and os.path.exists(os.path.join(annotations, f'{task}_{vid}.csv')))

  val = read_video_list(val_videos)
  rng = np.random.RandomState(seed)  # pylint: disable=no-member
  pairs = []
  for task, vids in read_video_list(all_videos).items():
    vids = [v for v in vids if available(task, v) and v not in val.get(task, ())]
    if task in primary_tasks and len(vids) > n_train:
      train = set(rng.choice(vids, n_train, replace=False).tolist())
      pairs += [(task, v) for v in vids if v not in train]
  return pairs


def run(tasks_path: str, annotations: str, features: str, text_embeddings: str,
        output: Optional[str], texts: Optional[str] = None,
        videos: Optional[str] = None, split: str = 'mmpt', all_videos: Optional[str] = None,
        val_videos: Optional[str] = None, n_train: int = MMPT_N_TRAIN) -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict.

  split 'mmpt' needs `all_videos` (videos.csv) and `val_videos`
  (videos_val.csv) and ignores `videos`; 'annotations' uses `videos` (optional).
  """
  if split not in SPLITS:
    raise ValueError(f'split {split!r}; expected one of {SPLITS}')
  if split == 'mmpt' and not (all_videos and val_videos):
    raise ValueError('the mmpt split needs CrossTask\'s videos.csv and videos_val.csv '
                     '(--all_videos, --val_videos), or use --split=annotations')
  tasks = read_task_info(tasks_path)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  absent = [s for t in tasks.values() for s in t['steps'] if s not in table]
  if absent:
    raise ValueError(f'{len(absent)} step texts not encoded, e.g. {absent[0]!r}')
  steps = {task: table.stack(info['steps']) for task, info in tasks.items()}
  counts: dict[str, list[tuple[int, int]]] = {}
  skipped, states_cache = [], {}
  if split == 'mmpt':
    pairs = mmpt_videos(all_videos, val_videos, tasks, annotations, features, n_train)
  else:
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
      parameters=dict(split=split, n_train=n_train if split == 'mmpt' else None,
                      all_videos=all_videos, val_videos=val_videos,
                      videos=videos if split == 'annotations' else None),
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
