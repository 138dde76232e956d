"""Zero-shot DiDeMo moment ranking (rank@1, rank@5, mIoU) over embedding files.

Run by `vlm-jax eval moment-ranking`; that command's docstring
(vlm_jax/commands/eval_moment_ranking.py, its --help) documents the
annotations, the embedding files and the protocol.
"""

import json
import os
from typing import Any, Optional


from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import moments


def read_queries(path: str) -> list[dict[str, Any]]:
  """[{'annotation_id', 'video', 'description', 'times': [(s, e)]}] of a DiDeMo file."""
  with open(path, encoding='utf-8-sig') as f:
    text = f.read()
  if text.lstrip().startswith('['):
    items = json.loads(text)
  else:
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
  out = []
  for i, item in enumerate(items):
    try:
      times = [(int(s), int(e)) for s, e in item['times']]
      bad = [t for t in times if not 0 <= t[0] <= t[1] < moments.NUM_CHUNKS]
      if bad or not times:
        raise ValueError(f'times must be chunk spans 0 <= s <= e <= 5, got {item["times"]}')
      out.append({'annotation_id': str(item.get('annotation_id', i)),
                  'video': str(item['video']), 'description': str(item['description']),
                  'times': times})
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f'{path}: item {i}: {e.__class__.__name__}: {e}') from e
  return out


def texts_to_encode(annotations: str) -> list[str]:
  """The query descriptions (what --write_texts writes)."""
  return [q['description'] for q in read_queries(annotations)]


def _load(features: str, video: str, dim: int):
  array, why = _embeddings.load_video(features, video, per_second=True, dim=dim)
  stem = os.path.splitext(video)[0]
  if why == 'missing' and stem != video:
    array, why = _embeddings.load_video(features, stem, per_second=True, dim=dim)
  return array, why


def run(annotations: str, features: str, text_embeddings: str, output: Optional[str],
        texts: Optional[str] = None) -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  queries = read_queries(annotations)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  videos, missing, skipped, ranks, ious, top = {}, [], [], [], [], {}
  for q in queries:
    video = q['video']
    if video not in videos:
      states, why = _load(features, video, table.dim)
      videos[video] = None if why else moments.moment_embeddings(states)
      if why:
        missing.append({'video': video, 'reason': why})
    if videos[video] is None:
      skipped.append({'annotation_id': q['annotation_id'], 'reason': f'video {video} unavailable'})
      continue
    if q['description'] not in table:
      skipped.append({'annotation_id': q['annotation_id'], 'reason': 'text not encoded'})
      continue
    vectors, valid = videos[video]
    ranking = moments.rank_moments(vectors @ table.get(q['description']), valid)
    rank, overlap = moments.query_scores(ranking, q['times'])
    ranks.append(rank)
    ious.append(overlap)
    top[q['annotation_id']] = list(ranking[0])
  return _embeddings.report(
      output, 'moment_ranking',
      dict(annotations=annotations, features=features, text_embeddings=text_embeddings),
      metrics=moments.didemo_metrics(ranks, ious),
      counts=dict(queries=len(queries), evaluated=len(ranks), skipped=len(skipped),
                  videos=len(videos), missing_videos=len(missing)),
      missing_videos=missing, skipped_queries=skipped, top_moment=top)


def summary(result: dict[str, Any], output: str) -> str:
  """The line `vlm-jax eval moment-ranking` prints for run()'s dict."""
  m, c = result['metrics'], result['counts']
  return (f'moment-ranking: rank@1 {m["rank@1"]} rank@5 {m["rank@5"]} mIoU {m["mIoU"]} over '
          f'{c["evaluated"]} of {c["queries"]} queries ({c["missing_videos"]} videos missing); '
          f'wrote {output}')
