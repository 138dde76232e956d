"""vlm-jax eval moment-ranking: zero-shot DiDeMo moment ranking (rank@1, rank@5, mIoU).

  vlm-jax eval moment-ranking --annotations test_data.json --write_texts queries.txt
  vlm-jax eval moment-ranking --annotations test_data.json --features FEATURES \\
      --text_embeddings queries.npy --output metrics.json [--texts queries.txt]

Annotations: DiDeMo's official {train,val,test}_data.json, a JSON list of
  {"annotation_id": 1, "video": "<name>.mov", "description": "the query",
   "times": [[s, e], ... up to 4 annotators], ...}
with s, e the first and last 5-second chunk (0..5, inclusive). JSON Lines of
the same objects are read too.

Embeddings (vlm_jax/evaluate/_embeddings.py): queries.npy [N, D] embeds
queries.txt line by line; FEATURES/<video>.npy holds per-second video states
[T, D]; the video name is tried as given, then without its extension
(`a.mov` -> a.mov.npy, then a.npy).

Protocol (MMPT's DiDeMoPredictor + LocalizingMoments eval, see
vlm_jax/metrics/moments.py): each of the 21 contiguous chunk spans is the mean
of its per-second states (seconds [5 s, 5 (e + 1)) that exist), scored by a
dot product with the query and ranked (ties: the official candidate order);
spans past the end of the video are dropped. A query's rank is the mean of the
3 best ranks of its annotators' moments ("best 3 of 4"); rank@1 / rank@5 =
fraction of queries with that mean <= 1 / <= 5; mIoU = mean over queries of the
mean of the 3 largest IoUs of the top moment. Fractions, not %. A query whose
video features are missing or bad (listed under `missing_videos`) or whose text
was not encoded is skipped and listed.
"""

import json
import os
from typing import Any, Optional

from absl import app, flags

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import moments

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'DiDeMo *_data.json.',
                                   allow_override=True)
_COMMON = _embeddings.define_flags(__name__, 'Folder of <video>.npy per-second states.')
REQUIRED_FLAGS = ['annotations']


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


def main(argv):
  del argv
  result = _embeddings.run_binary(
      'moment-ranking', _COMMON, [_ANNOTATIONS],
      texts=lambda: [q['description'] for q in read_queries(_ANNOTATIONS.value)],
      evaluate=lambda *common: run(_ANNOTATIONS.value, *common))
  if result is None:
    return
  m, c = result['metrics'], result['counts']
  print(f'moment-ranking: rank@1 {m["rank@1"]} rank@5 {m["rank@5"]} mIoU {m["mIoU"]} over '
        f'{c["evaluated"]} of {c["queries"]} queries ({c["missing_videos"]} videos missing); '
        f'wrote {_COMMON.output.value}')


if __name__ == '__main__':
  app.run(main)
