"""Zero-shot text-to-video retrieval (R@1/5/10, MdR, MnR) over embedding files.

Run by `vlm-jax eval retrieval`; that command's docstring
(vlm_jax/commands/eval_retrieval.py, its --help) documents the annotation
formats, the embedding files and the metrics.
"""

import csv
import json
import time
from typing import Any, Optional

import numpy as np

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import retrieval

KS = (1, 5, 10)


def read_queries(path: str, subset: Optional[str] = 'validation') -> list[dict[str, str]]:
  """[{'query_id', 'text', 'target'}] from any supported annotation file."""
  if path.endswith('.csv'):
    with open(path, encoding='utf-8-sig', newline='') as f:
      rows = list(csv.DictReader(f))
    if rows and not {'video_id', 'sentence'} <= set(rows[0]):
      raise ValueError(f'{path}: expected columns video_id and sentence, got {list(rows[0])}')
    return [{'query_id': r.get('key') or str(i), 'text': r['sentence'], 'target': r['video_id']}
            for i, r in enumerate(rows)]
  if path.endswith('.jsonl'):
    out = []
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        item = json.loads(line)
        text = item.get('sentence', item.get('text'))
        target = item.get('clip_id', item.get('video_id'))
        if text is None or target is None:
          raise ValueError(f'{path}:{number}: needs sentence/text and clip_id/video_id')
        out.append({'query_id': str(item.get('query_id', target)), 'text': text,
                    'target': str(target)})
    return out
  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import youcook2
  return [{'query_id': s.clip_id, 'text': s.sentence, 'target': s.clip_id}
          for s in youcook2.read_segments(path, subset)]


def texts_to_encode(annotations: str, subset: Optional[str] = 'validation') -> list[str]:
  """The query texts of `annotations` (what --write_texts writes)."""
  return [q['text'] for q in read_queries(annotations, subset)]


def run(annotations: str, features: str, text_embeddings: str, output: Optional[str],
        texts: Optional[str] = None, subset: Optional[str] = 'validation',
        backend: str = 'numpy', faiss_k: int = 100,
        ties: str = 'pessimistic') -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  queries = read_queries(annotations, subset)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  targets = list(dict.fromkeys(q['target'] for q in queries))
  gallery, vectors, missing = {}, [], []
  for target in targets:
    array, why = _embeddings.load_video(features, target, per_second=False, dim=table.dim)
    if why:
      missing.append({'video_id': target, 'reason': why})
      continue
    gallery[target] = len(vectors)
    vectors.append(array)
  kept, skipped = [], []
  for q in queries:
    if q['target'] not in gallery:
      skipped.append({'query_id': q['query_id'], 'reason': f'video {q["target"]} unavailable'})
    elif q['text'] not in table:
      skipped.append({'query_id': q['query_id'], 'reason': 'text not encoded'})
    else:
      kept.append(q)
  started = time.perf_counter()
  if kept:
    text = table.stack([q['text'] for q in kept])
    video = np.stack(vectors)
    truth = np.array([gallery[q['target']] for q in kept])
    if backend == 'faiss':
      ranks = retrieval.ranks_from_faiss(text, video, faiss_k, truth, ties)
    else:
      ranks = retrieval.ranks_from_embeddings(text, video, truth, ties)
  else:
    ranks = np.zeros(0)
  metrics = retrieval.retrieval_metrics(ranks, KS)
  return _embeddings.report(
      output, 'retrieval',
      dict(annotations=annotations, features=features, text_embeddings=text_embeddings),
      parameters=dict(backend=backend, faiss_k=faiss_k if backend == 'faiss' else None,
                      ties=ties, subset=subset, median='numpy median of 1-based ranks'),
      metrics=metrics,
      counts=dict(queries=len(queries), evaluated=len(kept), skipped=len(skipped),
                  videos=len(targets), gallery=len(gallery), missing_videos=len(missing)),
      seconds=round(time.perf_counter() - started, 3),
      missing_videos=missing, skipped_queries=skipped)


def summary(result: dict[str, Any], output: str) -> str:
  """The line `vlm-jax eval retrieval` prints for run()'s dict."""
  m, c = result['metrics'], result['counts']
  return (f'retrieval: R@1 {m["R@1"]} R@5 {m["R@5"]} R@10 {m["R@10"]} MdR {m["median_rank"]} '
          f'MnR {m["mean_rank"]} over {c["evaluated"]} of {c["queries"]} queries, gallery '
          f'{c["gallery"]} videos ({c["missing_videos"]} missing); wrote {output}')
