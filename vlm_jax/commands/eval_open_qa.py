"""vlm-jax eval open-qa: ClipBERT open-ended video QA accuracy (FrameQA, MSRVTT-QA).

  vlm-jax eval open-qa --workdir RUN --items qa.jsonl --videos DIR --output metrics.json

--workdir is a ClipBERT 'qa' run (its answer classes in WORKDIR/answers.json).
--items: a jsonl of {"video", "question", "answer": "text"}. The predicted
answer is the class of the largest consensus-reduced logit; accuracy is exact
match with the annotated answer (ClipBERT's evaluate_tgif_qa), so an answer
outside the run's classes always counts wrong (their number is reported).
metrics.json lists each prediction. Questions whose video is missing or does
not decode are listed and skipped; none decoding is an error.
"""

from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'A ClipBERT qa training workdir.')
_ITEMS = flags.DEFINE_string('items', None, 'Open-ended QA jsonl.')
_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of the videos.')
_OUTPUT = flags.DEFINE_string('output', None, 'Metrics JSON to write.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'items', 'videos', 'output']


def main(argv):
  del argv
  from vlm_jax.clipbert import inference  # pylint: disable=import-outside-toplevel  (JAX, TF)
  inference.run_accuracy_binary('open-qa', inference.evaluate_open_qa, _WORKDIR.value,
                                _ITEMS.value, _VIDEOS.value, _OUTPUT.value)
