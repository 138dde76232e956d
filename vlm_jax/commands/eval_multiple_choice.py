"""vlm-jax eval multiple-choice: ClipBERT multiple-choice video QA accuracy (MSRVTT-MC, TGIF-QA).

  vlm-jax eval multiple-choice --workdir RUN --items mc.jsonl --videos DIR \\
      --output metrics.json

--workdir is a ClipBERT run: 'matching' scores each option as a caption (its
match probability, as ClipBERT's MSRVTT-MC reuses the retrieval model),
'multiple_choice' gives its option scores. --items: a jsonl of
{"video", "question", "options": [...], "answer": index} (texts "question
option"), or MSR-VTT's msrvtt_mc_test.jsonl ({"clip_name", "options",
"answer"}: the option alone). The prediction is the argmax option; a tie for
the top counts wrong. Accuracy (a fraction, with its 95% bootstrap interval)
beside chance. Questions whose video is missing or does not decode are listed
and skipped; none decoding is an error.
"""

from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'A ClipBERT training workdir.')
_ITEMS = flags.DEFINE_string('items', None, 'Multiple-choice jsonl.')
_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of the videos.')
_OUTPUT = flags.DEFINE_string('output', None, 'Metrics JSON to write.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'items', 'videos', 'output']


def main(argv):
  del argv
  from vlm_jax.clipbert import inference  # pylint: disable=import-outside-toplevel  (JAX, TF)
  inference.run_accuracy_binary('multiple-choice', inference.evaluate_multiple_choice, _WORKDIR.value,
                                _ITEMS.value, _VIDEOS.value, _OUTPUT.value)
