"""vlm-jax eval action-segmentation: zero-shot COIN action segmentation (frame accuracy).

  vlm-jax eval action-segmentation --annotations COIN.json --write_texts labels.txt
  vlm-jax eval action-segmentation --annotations COIN.json --features FEATURES \\
      --text_embeddings labels.npy --output metrics.json [--texts labels.txt] \\
      [--subset testing] [--label_set testing|all] [--labels label_list.txt]

Annotations: COIN's COIN.json, `{"database": {video_id: {"subset": "training" |
"testing", "annotation": [{"id": "12", "segment": [start, end], "label":
"pour water"}, ...]}}}`. The label set, as MMPT builds it (its
COINActionSegmentationMetaProcessor; --label_set testing, the default): the
steps (`id`, `label`) annotated in the testing subset, step id i being label i
(ids must then run 1..N). --label_set all: every distinct step of the whole
database, all subsets, ordered by numeric id (this binary's earlier default).
--labels gives the list instead (one label text per line; annotations then
match by label text). Only videos of --subset (default testing) are evaluated.

Embeddings (vlm_jax/evaluate/_embeddings.py): labels.npy [N, D] embeds
labels.txt line by line (every label text must be there); FEATURES/<video_id>.npy
holds per-second video states [T, D] (row t = second [t, t + 1)).

Protocol (VideoCLIP; vlm_jax/metrics/segmentation.py): the labels are encoded
once; gamma = the largest dot product between two different label embeddings;
a second takes its best label if that similarity is strictly above gamma, else
background. Ground truth: a segment [start, end] labels seconds floor(start) ..
ceil(end) - 1; other seconds are background. Frame accuracy over every second
of every evaluated video is reported beside the all-background baseline (the
accuracy of predicting background everywhere). A video with a missing or bad
features file is listed under `missing_videos` and skipped. The per-second
states come from `vlm-jax encode-video --per_second`, which by default runs
MMPT's 32-s windows at stride 16 and averages overlapping seconds (so their
logits; vlm_jax/videoclip/inference.py, config field eval.states_stride).
"""

from absl import flags

from vlm_jax.commands import _eval_flags
from vlm_jax.evaluate import action_segmentation

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'COIN.json.')
_COMMON = _eval_flags.define_flags(__name__, 'Folder of <video_id>.npy per-second states.')
_SUBSET = flags.DEFINE_string('subset', 'testing', 'COIN subset to evaluate.')
_LABELS = flags.DEFINE_string('labels', None, 'Label list, one text per line (default: from '
                              'the annotations).')
_LABEL_SET = flags.DEFINE_enum('label_set', 'testing', list(action_segmentation.LABEL_SETS),
                               'Label list without --labels: MMPT\'s (the testing subset\'s '
                               'steps) or every subset\'s.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations']


def main(argv):
  del argv
  result = _eval_flags.run_binary(
      'action-segmentation', _COMMON, [_ANNOTATIONS],
      texts=lambda: action_segmentation.texts_to_encode(_ANNOTATIONS.value, _SUBSET.value,
                                                        _LABELS.value, _LABEL_SET.value),
      evaluate=lambda *common: action_segmentation.run(_ANNOTATIONS.value, *common,
                                                       _SUBSET.value, _LABELS.value,
                                                       _LABEL_SET.value))
  if result is not None:
    print(action_segmentation.summary(result, _COMMON.output.value))
