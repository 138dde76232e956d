"""COCO caption scores (BLEU, METEOR, ROUGE-L, CIDEr) of predicted captions against references.

Run by `vlm-jax eval captioning` and the caption stage; that command's
docstring (vlm_jax/commands/eval_captioning.py, its --help) documents the
accepted reference and prediction formats and what metrics.json holds.
"""

import json
import os
from typing import Any, Iterable, Optional

from vlm_jax.data import files as files_lib
from vlm_jax.metrics import caption

_ID_KEYS = ('id', 'clip_id', 'image_id', 'video_id')
_TEXT_KEYS = ('caption', 'prediction', 'sentence', 'text')


def _read_records(path: str) -> Any:
  """A .jsonl/.ndjson file's objects as a list; any other file's JSON value.

  The extension decides because a one-line JSONL file is also valid JSON. A
  file of another extension that is not one JSON value is read as JSONL.
  """
  with open(path, encoding='utf-8-sig') as f:
    text = f.read()
  if not path.lower().endswith(('.jsonl', '.ndjson')):
    try:
      return json.loads(text)
    except json.JSONDecodeError:
      pass  # not one JSON value: read it as JSONL
  records = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{number}: not JSON ({e.msg})') from e
  return records


def _field(record: Any, keys: Iterable[str], what: str, where: str) -> Any:
  if isinstance(record, dict):
    for key in keys:
      if key in record:
        return record[key]
  raise ValueError(f'{where}: no {what} field (one of {", ".join(keys)})')


def load_references(path: str) -> dict[str, list[str]]:
  """{id: [reference caption, ...]} from any of the formats of `vlm-jax eval captioning`."""
  data = _read_records(path)
  out: dict[str, list[str]] = {}
  if isinstance(data, dict) and 'annotations' in data and isinstance(data['annotations'], list):
    data = data['annotations']  # COCO annotation file
  if isinstance(data, dict):
    for key, value in data.items():
      value = [value] if isinstance(value, str) else value
      if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{path}: id {key!r}: expected a caption or a list of captions')
      out.setdefault(str(key), []).extend(value)
    return out
  if not isinstance(data, list):
    raise ValueError(f'{path}: expected a JSON object, a list or JSONL of references')
  for i, record in enumerate(data):
    where = f'{path}: record {i}'
    key = str(_field(record, _ID_KEYS, 'id', where))
    value = _field(record, ('references',) + _TEXT_KEYS, 'caption', where)
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise ValueError(f'{where}: expected a caption or a list of captions')
    out.setdefault(key, []).extend(value)
  return out


def load_predictions(path: str) -> dict[str, str]:
  """{id: predicted caption} from any of the formats of `vlm-jax eval captioning`."""
  data = _read_records(path)
  if isinstance(data, dict):
    items = list(data.items())
    where = [f'{path}: id {k!r}' for k, _ in items]
  elif isinstance(data, list):
    items, where = [], []
    for i, record in enumerate(data):
      w = f'{path}: record {i}'
      items.append((_field(record, _ID_KEYS, 'id', w), _field(record, _TEXT_KEYS, 'caption', w)))
      where.append(w)
  else:
    raise ValueError(f'{path}: expected JSONL, a JSON list or a JSON object of predictions')
  out: dict[str, str] = {}
  for (key, text), w in zip(items, where):
    if not isinstance(text, str):
      raise ValueError(f'{w}: the caption is not a string')
    key = str(key)
    if key in out:
      raise ValueError(f'{w}: a second prediction for id {key!r}')
    out[key] = text
  return out


def run(references: str, predictions: str, output: str, tokenizer: str = 'auto',
        meteor: bool = True, java: Optional[str] = None) -> dict[str, Any]:
  """Scores `predictions` against `references`; writes and returns metrics.json's dict."""
  refs = load_references(references)
  preds = load_predictions(predictions)
  skipped = sorted(k for k in preds if k not in refs)
  scored = {k: v for k, v in preds.items() if k in refs}
  if not scored:
    raise ValueError(f'none of the {len(preds)} predictions has a reference in {references}')
  scores = caption.caption_scores(refs, scored, tokenizer=tokenizer, meteor=meteor, java=java)
  result = dict(
      scores={m: scores[m] for m in caption.METRICS},
      tokenizer=scores['tokenizer'], meteor_skipped=scores['meteor_skipped'],
      counts=dict(predictions=len(preds), scored=scores['count'], skipped_no_reference=len(skipped),
                  references=len(refs),
                  references_without_prediction=sum(k not in preds for k in refs)),
      skipped_no_reference=skipped,
      references=os.path.abspath(references), predictions=os.path.abspath(predictions))
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  files_lib.write_json(output, result, indent=1)
  return result


def summary(result: dict[str, Any], output: str) -> str:
  """The lines `vlm-jax eval captioning` prints for run()'s dict."""
  s, c = result['scores'], result['counts']
  shown = ' '.join(f'{m} {100 * s[m]:.2f}' if m != 'CIDEr' else f'{m} {s[m]:.3f}'
                   for m in ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr') if s[m] is not None)
  lines = [f'{c["scored"]} captions scored ({result["tokenizer"]} tokenizer): {shown}']
  if result['meteor_skipped']:
    lines.append(f'METEOR skipped: {result["meteor_skipped"]}')
  if c['skipped_no_reference']:
    lines.append(f'{c["skipped_no_reference"]} predictions have no reference and were skipped '
                 f'(listed in {output})')
  lines.append(f'wrote {output}')
  return '\n'.join(lines)
