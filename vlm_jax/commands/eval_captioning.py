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

from absl import flags

from vlm_jax.evaluate import captioning

_REFERENCES = flags.DEFINE_string('references', None, 'Reference captions (JSON or JSONL).')
_PREDICTIONS = flags.DEFINE_string('predictions', None, 'Predicted captions (JSONL or JSON).')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write metrics.json.')
_TOKENIZER = flags.DEFINE_enum('tokenizer', 'auto', ['auto', 'ptb', 'simple', 'none'],
                               "Caption tokenisation; 'auto': COCO's PTB tokenizer if Java "
                               "is found, else 'simple' (pure Python).")
_METEOR = flags.DEFINE_bool('meteor', True, 'Compute METEOR (needs Java; skipped without).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['references', 'predictions', 'output']


def main(argv):
  del argv
  try:
    result = captioning.run(_REFERENCES.value, _PREDICTIONS.value, _OUTPUT.value,
                            _TOKENIZER.value, _METEOR.value)
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(f'vlm-jax eval captioning: {e}') from e
  print(captioning.summary(result, _OUTPUT.value))
