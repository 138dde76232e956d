"""vlm-jax eval step-localization: zero-shot CrossTask step localization (recall).

  vlm-jax eval step-localization --tasks tasks_primary.txt --annotations annotations/ \\
      --write_texts steps.txt
  vlm-jax eval step-localization --tasks tasks_primary.txt --annotations annotations/ \\
      --all_videos videos.csv --val_videos videos_val.csv \\
      --features FEATURES --text_embeddings steps.npy --output metrics.json \\
      [--texts steps.txt] [--n_train 30] [--split mmpt|annotations] [--videos LIST]

Inputs, in CrossTask's release format:
  * --tasks: task info (tasks_primary.txt), per task 6 lines: task id, title,
    URL, number of steps K, the K step texts comma-separated, a blank line;
  * --annotations: folder of `<task id>_<video id>.csv`, one `step,start,end`
    row per annotated step (step 1-based, seconds); task ids are numeric, so
    the file name splits at its first underscore;
  * --split mmpt (default), MMPT's zero-shot test set (its
    CrossTaskMetaProcessor): the videos of --all_videos (videos.csv, `task,
    video,url` rows) with a features file and an annotation file, minus those
    of --val_videos (videos_val.csv); of each --tasks task with more than
    --n_train (30) such videos, 30 drawn by np.random.seed(0) (one generator,
    tasks in file order) are held out as training and the rest evaluated;
  * --split annotations: every annotation file of a task in --tasks,
    restricted to the `task,video,url` rows of --videos when given (this
    binary's earlier default). In both, only videos with an annotation file
    count.
Embeddings (vlm_jax/evaluate/_embeddings.py): steps.npy [N, D] embeds steps.txt
line by line (every step text of the tasks); FEATURES/<video id>.npy holds
per-second video states [T, D]; `vlm-jax encode-video --per_second` writes them
by default as MMPT does: 32-s windows at stride 16, overlapping seconds (so
their logits) averaged (vlm_jax/videoclip/inference.py, eval.states_stride).

Protocol (vlm_jax/metrics/step_localization.py, CrossTask's official eval):
scores = states @ step embeddings [T, K], log-softmax over the task's steps,
ordered DP decode placing each step on exactly one second, in order; recall
per task = matched / annotated steps over its videos; `recall` = mean over the
tasks evaluated. A video with a missing or bad features file, or with fewer
seconds than steps, is listed under `skipped_videos` and skipped.
"""

from absl import flags

from vlm_jax.commands import _eval_flags
from vlm_jax.evaluate import step_localization

_TASKS = flags.DEFINE_string('tasks', None, 'CrossTask task info (tasks_primary.txt).')
_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'Folder of <task>_<video>.csv step '
                                   'annotations.')
_VIDEOS = flags.DEFINE_string('videos', None, 'With --split=annotations: optional '
                              'task,video,url list to evaluate.')
_SPLIT = flags.DEFINE_enum('split', 'mmpt', list(step_localization.SPLITS),
                           'Videos evaluated: MMPT\'s zero-shot test set or every annotation.')
_ALL_VIDEOS = flags.DEFINE_string('all_videos', None, 'CrossTask videos.csv (--split=mmpt).')
_VAL_VIDEOS = flags.DEFINE_string('val_videos', None, 'CrossTask videos_val.csv (--split=mmpt).')
_N_TRAIN = flags.DEFINE_integer('n_train', step_localization.MMPT_N_TRAIN,
                                'Videos per task held out as training (--split=mmpt).')
_COMMON = _eval_flags.define_flags(__name__, 'Folder of <video_id>.npy per-second states.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['tasks', 'annotations']


def main(argv):
  del argv
  result = _eval_flags.run_binary(
      'step-localization', _COMMON, [_TASKS, _ANNOTATIONS],
      texts=lambda: step_localization.texts_to_encode(_TASKS.value),
      evaluate=lambda *common: step_localization.run(
          _TASKS.value, _ANNOTATIONS.value, *common, _VIDEOS.value, _SPLIT.value,
          _ALL_VIDEOS.value, _VAL_VIDEOS.value, _N_TRAIN.value))
  if result is not None:
    print(step_localization.summary(result, _COMMON.output.value))
