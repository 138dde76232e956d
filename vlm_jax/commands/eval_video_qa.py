"""vlm-jax eval video-qa: zero-shot multiple-choice video QA (MSR-VTT MC) accuracy.

  vlm-jax eval video-qa --annotations msrvtt_mc_test.jsonl --write_texts options.txt
  vlm-jax eval video-qa --annotations msrvtt_mc_test.jsonl --features FEATURES \\
      --text_embeddings options.npy --output metrics.json [--texts options.txt] \\
      [--ties pessimistic|optimistic|mean]

Annotations: the MSR-VTT multiple-choice test set as distributed by JSFusion /
Frozen-in-Time / VideoCLIP, either JSON Lines (msrvtt_mc_test.jsonl, one
question per line) or one JSON list of the same objects:
  {"qid": "mc0", "clip_name": "video9770", "options": [5 captions],
   "answer": 0}
`video_id` may replace `clip_name`; `answer` is the 0-based index of the right
option, an int or a numeric string ("0", as in msrvtt_mc_test.jsonl); `qid`
defaults to the line / list position.

Embeddings (vlm_jax/evaluate/_embeddings.py): FEATURES/<clip_name>.npy is a
pooled [D] video embedding; options.npy [N, D] embeds options.txt line by line.
Each option is scored by its dot product with the video and the argmax is the
prediction (VideoCLIP); a tie for the top counts as wrong by default
(--ties). Questions whose video is missing or bad (listed under
`missing_videos`) or with an option that was not encoded are skipped and listed.
Accuracy is a fraction in [0, 1] over the evaluated questions, reported beside
chance (the mean of 1 / number of options).
"""

from absl import flags

from vlm_jax.commands import _eval_flags
from vlm_jax.evaluate import video_qa
from vlm_jax.metrics import retrieval as retrieval_metrics

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'Multiple-choice JSONL or JSON list.')
_COMMON = _eval_flags.define_flags(__name__, 'Folder of <video_id>.npy embeddings.')
_TIES = flags.DEFINE_enum('ties', 'pessimistic', list(retrieval_metrics.TIES), 'Tie convention.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations']


def main(argv):
  del argv
  result = _eval_flags.run_binary(
      'video-qa', _COMMON, [_ANNOTATIONS],
      texts=lambda: video_qa.texts_to_encode(_ANNOTATIONS.value),
      evaluate=lambda *common: video_qa.run(_ANNOTATIONS.value, *common, _TIES.value))
  if result is not None:
    print(video_qa.summary(result, _COMMON.output.value))
