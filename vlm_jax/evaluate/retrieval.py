"""vlm-jax eval retrieval: zero-shot text-to-video retrieval (R@1/5/10, MdR, MnR).

  vlm-jax eval retrieval --annotations MSRVTT_JSFUSION_test.csv --write_texts texts.txt
  (encode texts.txt -> texts.npy, each video -> FEATURES/<id>.npy)
  vlm-jax eval retrieval --annotations MSRVTT_JSFUSION_test.csv \\
      --features FEATURES --text_embeddings texts.npy --output metrics.json \\
      [--texts texts.txt] [--backend numpy|faiss] [--faiss_k 100] \\
      [--ties pessimistic|optimistic|mean] [--subset validation]

Annotations (one query text and one target video per row):
  * `.csv` with columns `video_id` and `sentence` (MSR-VTT 1k-A,
    MSRVTT_JSFUSION_test.csv; query id = `key` when present, else the row);
  * `.json` YouCook2 official annotations (`{"database": ...}`): every segment
    of --subset (default validation: 3,305 pairs from the val videos whose
    segments are kept); the target is the segment clip `<youtube_id>_<id>`, as
    named by `vlm-jax prepare-youcook2`;
  * `.jsonl`, one object per line with `sentence` (or `text`) and `clip_id`
    (or `video_id`): the target is `clip_id` when present, e.g.
    prepare-youcook2's segments.jsonl.

Embeddings (see vlm_jax/evaluate/_embeddings.py): FEATURES/<target>.npy is a
pooled [D] video embedding; texts.npy [N, D] embeds texts.txt line by line.
The gallery is every distinct target with a usable file; the similarity is the
raw dot product text @ video (VideoCLIP: no L2 norm). A target whose file is
missing or bad is listed under `missing_videos` and its queries are skipped; a
query whose text was not encoded is listed under `skipped_queries`.

Metrics (vlm_jax/metrics/retrieval.py): 1-based rank of the right video per
query, ties pessimistic by default; R@k = fraction with rank <= k; median rank =
numpy median of 1-based ranks (MMPT / CLIP4Clip, 7.5 not 8 for an even count);
mean rank. `--backend faiss` ranks with an exact IndexFlatIP top-k (k =
--faiss_k) for large sets: R@k up to k are exact, ranks beyond k are unknown, so
mean_rank is null and median_rank is null unless half the queries are within k.
"""

import csv
import json
import time
from typing import Any, Optional

import numpy as np
from absl import app, flags

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import retrieval

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'MSR-VTT CSV, YouCook2 JSON or JSONL '
                                   'query list.', allow_override=True)
_COMMON = _embeddings.define_flags(__name__, 'Folder of <video_id>.npy embeddings.')
_SUBSET = flags.DEFINE_string('subset', 'validation', 'YouCook2 subset (JSON annotations).',
                              allow_override=True)
_BACKEND = flags.DEFINE_enum('backend', 'numpy', ['numpy', 'faiss'], 'Ranking backend.',
                             allow_override=True)
_FAISS_K = flags.DEFINE_integer('faiss_k', 100, 'Top-k depth of the faiss backend.',
                                allow_override=True)
_TIES = flags.DEFINE_enum('ties', 'pessimistic', list(retrieval.TIES), 'Tie convention.',
                          allow_override=True)
REQUIRED_FLAGS = ['annotations']

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


def main(argv):
  del argv
  result = _embeddings.run_binary(
      'retrieval', _COMMON, [_ANNOTATIONS],
      texts=lambda: [q['text'] for q in read_queries(_ANNOTATIONS.value, _SUBSET.value)],
      evaluate=lambda *common: run(_ANNOTATIONS.value, *common, _SUBSET.value, _BACKEND.value,
                                   _FAISS_K.value, _TIES.value))
  if result is None:
    return
  m, c = result['metrics'], result['counts']
  print(f'retrieval: R@1 {m["R@1"]} R@5 {m["R@5"]} R@10 {m["R@10"]} MdR {m["median_rank"]} '
        f'MnR {m["mean_rank"]} over {c["evaluated"]} of {c["queries"]} queries, gallery '
        f'{c["gallery"]} videos ({c["missing_videos"]} missing); wrote {_COMMON.output.value}')


if __name__ == '__main__':
  app.run(main)
