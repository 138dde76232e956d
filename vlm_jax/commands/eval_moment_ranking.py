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

from absl import flags

from vlm_jax.commands import _eval_flags
from vlm_jax.evaluate import moment_ranking

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'DiDeMo *_data.json.')
_COMMON = _eval_flags.define_flags(__name__, 'Folder of <video>.npy per-second states.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations']


def main(argv):
  del argv
  result = _eval_flags.run_binary(
      'moment-ranking', _COMMON, [_ANNOTATIONS],
      texts=lambda: moment_ranking.texts_to_encode(_ANNOTATIONS.value),
      evaluate=lambda *common: moment_ranking.run(_ANNOTATIONS.value, *common))
  if result is not None:
    print(moment_ranking.summary(result, _COMMON.output.value))
