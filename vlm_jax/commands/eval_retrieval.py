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

from absl import flags

from vlm_jax.commands import _eval_flags
from vlm_jax.evaluate import retrieval
from vlm_jax.metrics import retrieval as retrieval_metrics

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'MSR-VTT CSV, YouCook2 JSON or JSONL '
                                   'query list.')
_COMMON = _eval_flags.define_flags(__name__, 'Folder of <video_id>.npy embeddings.')
_SUBSET = flags.DEFINE_string('subset', 'validation', 'YouCook2 subset (JSON annotations).')
_BACKEND = flags.DEFINE_enum('backend', 'numpy', ['numpy', 'faiss'], 'Ranking backend.')
_FAISS_K = flags.DEFINE_integer('faiss_k', 100, 'Top-k depth of the faiss backend.')
_TIES = flags.DEFINE_enum('ties', 'pessimistic', list(retrieval_metrics.TIES), 'Tie convention.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations']


def main(argv):
  del argv
  result = _eval_flags.run_binary(
      'retrieval', _COMMON, [_ANNOTATIONS],
      texts=lambda: retrieval.texts_to_encode(_ANNOTATIONS.value, _SUBSET.value),
      evaluate=lambda *common: retrieval.run(_ANNOTATIONS.value, *common, _SUBSET.value,
                                             _BACKEND.value, _FAISS_K.value, _TIES.value))
  if result is not None:
    print(retrieval.summary(result, _COMMON.output.value))
