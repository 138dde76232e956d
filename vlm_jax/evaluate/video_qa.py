"""Zero-shot multiple-choice video QA (MSR-VTT MC) accuracy over embedding files.

Run by `vlm-jax eval video-qa`; that command's docstring
(vlm_jax/commands/eval_video_qa.py, its --help) documents the annotation
format, the embedding files and the scoring.
"""

import json
from typing import Any, Optional

import numpy as np

from vlm_jax.evaluate import _embeddings
from vlm_jax.metrics import retrieval


def read_questions(path: str) -> list[dict[str, Any]]:
  """[{'qid', 'video_id', 'options': [str], 'answer': int}] from JSONL or a JSON list."""
  with open(path, encoding='utf-8-sig') as f:
    text = f.read()
  stripped = text.lstrip()
  if stripped.startswith('['):
    items = json.loads(text)
    where = [f'{path}[{i}]' for i in range(len(items))]
  else:
    items, where = [], []
    for number, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          items.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}:{number}: not JSON ({e.msg})') from e
        where.append(f'{path}:{number}')
  out = []
  for i, (item, at) in enumerate(zip(items, where)):
    video = item.get('clip_name', item.get('video_id')) if isinstance(item, dict) else None
    if video is None or not isinstance(item.get('options'), list) or 'answer' not in item:
      raise ValueError(f'{at}: needs clip_name (or video_id), options (a list) and answer')
    answer = int(item['answer'])
    if not 0 <= answer < len(item['options']):
      raise ValueError(f'{at}: answer {answer} outside 0..{len(item["options"]) - 1}')
    out.append({'qid': str(item.get('qid', i)), 'video_id': str(video),
                'options': [str(o) for o in item['options']], 'answer': answer})
  return out


def texts_to_encode(annotations: str) -> list[str]:
  """The answer options of `annotations` (what --write_texts writes)."""
  return [o for q in read_questions(annotations) for o in q['options']]


def run(annotations: str, features: str, text_embeddings: str, output: Optional[str],
        texts: Optional[str] = None, ties: str = 'pessimistic') -> dict[str, Any]:
  """Evaluates and writes `output` (if given); returns the metrics JSON dict."""
  questions = read_questions(annotations)
  table = _embeddings.TextEmbeddings(text_embeddings, texts)
  videos, missing, skipped, correct, chance, predictions = {}, [], [], [], [], {}
  for q in questions:
    vid = q['video_id']
    if vid not in videos:
      videos[vid], why = _embeddings.load_video(features, vid, per_second=False, dim=table.dim)
      if why:
        missing.append({'video_id': vid, 'reason': why})
    if videos[vid] is None:
      skipped.append({'qid': q['qid'], 'reason': f'video {vid} unavailable'})
      continue
    absent = [o for o in q['options'] if o not in table]
    if absent:
      skipped.append({'qid': q['qid'], 'reason': f'option not encoded: {absent[0]!r}'})
      continue
    scores = table.stack(q['options']) @ videos[vid]
    correct.append(float(retrieval.multiple_choice_correct(
        scores[None], np.array([q['answer']]), ties)[0]))
    chance.append(1.0 / len(q['options']))
    predictions[q['qid']] = int(np.argmax(scores))
  return _embeddings.report(
      output, 'video_qa',
      dict(annotations=annotations, features=features, text_embeddings=text_embeddings),
      parameters=dict(ties=ties),
      metrics=dict(accuracy=float(np.mean(correct)) if correct else None,
                   chance=float(np.mean(chance)) if chance else None, count=len(correct)),
      counts=dict(questions=len(questions), evaluated=len(correct), skipped=len(skipped),
                  videos=len(videos), missing_videos=len(missing)),
      missing_videos=missing, skipped_questions=skipped, predictions=predictions)


def summary(result: dict[str, Any], output: str) -> str:
  """The line `vlm-jax eval video-qa` prints for run()'s dict."""
  m, c = result['metrics'], result['counts']
  return (f'video-qa: accuracy {m["accuracy"]} (chance {m["chance"]}) over {c["evaluated"]} of '
          f'{c["questions"]} questions ({c["missing_videos"]} videos missing); wrote {output}')
