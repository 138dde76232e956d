"""VideoBERT zero-shot verb and noun classification of labelled segments (the paper's protocol).

Used by `vlm-jax eval action-classification` and the demo; see that command for
the inputs. Here rather than in vlm_jax/evaluate: it needs VideoBERT, and the
evaluation layer is shared by every system.
"""

import os
from typing import Any

import numpy as np

from vlm_jax.data import files as files_lib
from vlm_jax.data import segments as segments_lib
from vlm_jax.metrics import classification, intervals
from vlm_jax.videobert import action_classification
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import inference as videobert_inference

TOP_K = (1, 5)


def read_labels(path: str) -> list[str]:
  """The non-empty lines of a label file (ValueError when there are none)."""
  with open(path, encoding='utf-8') as f:
    labels = [line.strip() for line in f if line.strip()]
  if not labels:
    raise ValueError(f'{path}: no labels')
  return labels


def video_tokens(features_dir: str, codebook: codebook_lib.Codebook, video_ids) -> tuple[
    dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
  """{video_id: (tokens [clips], times [clips, 2])} and {video_id: why it is missing}."""
  found, missing = {}, {}
  for video_id in sorted(set(video_ids)):
    path, times_path = files_lib.feature_paths(features_dir, video_id)
    if not (os.path.exists(path) and os.path.exists(times_path)):
      missing[video_id] = f'no {video_id}.npy and {video_id}{files_lib.TIMES_SUFFIX} in {features_dir}'
      continue
    features = codebook_lib.load_features(path, codebook.dim)
    found[video_id] = (codebook_lib.assign(codebook, features), np.load(times_path))
  return found, missing


def accuracies(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | list[float]]:
  """Top-k accuracy for each k of TOP_K, and its 95% bootstrap interval over the segments.

  Args:
    scores: [N, num_labels].
    labels: [N].

  Returns:
    {'top1': accuracy, 'top1_ci95': [low, high], 'top5': ...}; no interval when N < 2.
  """
  out: dict[str, float | list[float]] = {}
  for k in TOP_K:
    correct = classification.topk_correct(scores, labels, k)
    out[f'top{k}'] = float(correct.mean())
    if len(correct) >= 2:
      out[f'top{k}_ci95'] = list(intervals.bootstrap_interval(correct))
  return out


def evaluate(loaded, segments: list[dict], tokens: dict, verbs: list[str],
             nouns: list[str]) -> dict[str, Any]:
  """Metrics of the model and the language prior on labelled segments with tokens."""
  skipped, kept = [], []
  for s in segments:
    if s['video_id'] not in tokens:
      skipped.append({**s, 'reason': 'no features'})
    elif s['verb'] not in verbs or s['noun'] not in nouns:
      skipped.append({**s, 'reason': 'label not in the vocabulary files'})
    else:
      kept.append(s)
  if not kept:
    raise ValueError('no segment has both features and labels in the vocabularies')
  visual = [segments_lib.tokens_in(*tokens[s['video_id']], float(s['start']), float(s['end']))
            for s in kept]
  verb_labels = np.array([verbs.index(s['verb']) for s in kept])
  noun_labels = np.array([nouns.index(s['noun']) for s in kept])
  result: dict[str, Any] = {'num_segments': len(kept), 'num_verbs': len(verbs),
                            'num_nouns': len(nouns)}
  predictions = {}
  for name, with_video in (('videobert', True), ('language_prior', False)):
    verb_scores, noun_scores = action_classification.scores(loaded, visual, verbs, nouns,
                                                            with_video)
    result[name] = {'verb': accuracies(verb_scores, verb_labels),
                    'noun': accuracies(noun_scores, noun_labels)}
    predictions[name] = (verb_scores.argmax(1), noun_scores.argmax(1))
  result['chance'] = {
      'verb': {f'top{k}': classification.chance(len(verbs), k) for k in TOP_K},
      'noun': {f'top{k}': classification.chance(len(nouns), k) for k in TOP_K}}
  result['predictions'] = [
      {'video_id': s['video_id'], 'start': s['start'], 'end': s['end'], 'verb': s['verb'],
       'noun': s['noun'], 'predicted_verb': verbs[int(predictions['videobert'][0][i])],
       'predicted_noun': nouns[int(predictions['videobert'][1][i])]}
      for i, s in enumerate(kept)]
  result['skipped'] = skipped
  return result


def run(workdir: str, segments_path: str, features: str, codebook_path: str, verbs_path: str,
        nouns_path: str, output: str) -> dict[str, Any]:
  """Evaluates and writes the metrics JSON; returns it."""
  segments = segments_lib.load(segments_path, ('video_id', 'start', 'end', 'verb', 'noun'))
  verbs, nouns = read_labels(verbs_path), read_labels(nouns_path)
  codebook = codebook_lib.Codebook.load(codebook_path)
  tokens, missing = video_tokens(features, codebook, [s['video_id'] for s in segments])
  loaded = videobert_inference.load(workdir)
  if loaded.vocab.num_visual_tokens != codebook.num_leaves:
    raise ValueError(f'{codebook_path}: {codebook.num_leaves} leaves, but the model in '
                     f'{workdir} has {loaded.vocab.num_visual_tokens} visual tokens')
  result = evaluate(loaded, segments, tokens, verbs, nouns)
  result.update(workdir=os.path.abspath(workdir), checkpoint_step=loaded.step,
                segments_file=os.path.abspath(segments_path), missing_videos=missing)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  files_lib.write_json(output, result)
  return result


def summary(result: dict[str, Any]) -> str:
  """The metrics as a Markdown table (the paper's layout)."""
  lines = [f'{result["num_segments"]} segments, {len(result["skipped"])} skipped; '
           '[95% bootstrap interval]',
           '| | verb top-1 | verb top-5 | noun top-1 | noun top-5 |', '|---|---|---|---|---|']
  for name in ('videobert', 'language_prior', 'chance'):
    cells = [intervals.describe(result[name][w], k)
             for w in ('verb', 'noun') for k in ('top1', 'top5')]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)

