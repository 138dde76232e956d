"""vlm-jax eval captioning: COCO caption scores of predicted captions.

  vlm-jax eval captioning --references captioning_references.json \\
      --predictions predictions.jsonl --output metrics.json \\
      [--tokenizer auto|ptb|simple|none] [--nometeor]

Scores BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) with the COCO caption code
(see vlm_jax.metrics.caption: PTB tokenisation and METEOR need Java; without
it the tokenizer falls back to a pure-Python one and METEOR is skipped, and
metrics.json says so).

--references, one of:
  * a JSON object {id: "caption"} or {id: ["caption", ...]} (what
    `vlm-jax prepare-youcook2` writes as captioning_references.json);
  * COCO annotations {"annotations": [{"image_id": id, "caption": "..."}]};
  * a JSON list, or JSONL, of {"id": id, "caption": "..."} or
    {"id": id, "references": ["...", ...]}.
--predictions, one of:
  * JSONL, one {"id": id, "caption": "..."} a line (also accepted for the id:
    clip_id, image_id, video_id; for the text: prediction, sentence, text);
  * a JSON list of such objects (COCO results), or a JSON object {id: "caption"}.
A file is read as JSONL when its name ends in .jsonl or .ndjson, else as JSON
(falling back to JSONL). Ids are compared as strings. Predictions whose id has
no reference are not scored; they are counted and listed in metrics.json
(`skipped_no_reference`), as are references with no prediction (counted
only). Two predictions for one id are an error.
"""

import json
import os
from typing import Any, Iterable, Optional

from absl import flags

from vlm_jax.data import files as files_lib
from vlm_jax.metrics import caption

# allow_override: evaluation binaries share flag names and tests may import
# several into one process (the CLI imports only one).
_REFERENCES = flags.DEFINE_string('references', None, 'Reference captions (JSON or JSONL).',
                                  allow_override=True)
_PREDICTIONS = flags.DEFINE_string('predictions', None, 'Predicted captions (JSONL or JSON).',
                                   allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write metrics.json.',
                              allow_override=True)
_TOKENIZER = flags.DEFINE_enum('tokenizer', 'auto', ['auto', 'ptb', 'simple', 'none'],
                               "Caption tokenisation; 'auto': COCO's PTB tokenizer if Java "
                               "is found, else 'simple' (pure Python).", allow_override=True)
_METEOR = flags.DEFINE_bool('meteor', True, 'Compute METEOR (needs Java; skipped without).',
                            allow_override=True)
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['references', 'predictions', 'output']

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
  """{id: [reference caption, ...]} from any of the formats in the module doc."""
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
  """{id: predicted caption} from any of the formats in the module doc."""
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


def main(argv):
  del argv
  try:
    result = run(_REFERENCES.value, _PREDICTIONS.value, _OUTPUT.value, _TOKENIZER.value,
                 _METEOR.value)
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(f'vlm-jax eval captioning: {e}') from e
  s, c = result['scores'], result['counts']
  shown = ' '.join(f'{m} {100 * s[m]:.2f}' if m != 'CIDEr' else f'{m} {s[m]:.3f}'
                   for m in ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr') if s[m] is not None)
  print(f'{c["scored"]} captions scored ({result["tokenizer"]} tokenizer): {shown}')
  if result['meteor_skipped']:
    print(f'METEOR skipped: {result["meteor_skipped"]}')
  if c['skipped_no_reference']:
    print(f'{c["skipped_no_reference"]} predictions have no reference and were skipped '
          f'(listed in {_OUTPUT.value})')
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  from absl import app  # pylint: disable=import-outside-toplevel
  flags.mark_flags_as_required(REQUIRED_FLAGS)
  app.run(main)
