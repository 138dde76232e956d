"""vlm-jax eval cross-retrieval: ClipBERT text <-> video retrieval, every pair through the model.

  vlm-jax eval cross-retrieval --workdir RUN --items MSRVTT_JSFUSION_test.csv \\
      --videos DIR --output metrics.json [--scores scores.npy] [--ties pessimistic]

--workdir is a `vlm-jax train --config configs/clipbert.py` run ('matching'
task). --items: MSR-VTT's csv (key, vid_key, video_id, sentence), or a jsonl
of {"video": path or id, "text": caption} (optional "start" / "end" seconds);
videos are looked up in --videos. Each video's inference clips
(data.eval_clips) go through the frame encoder once; every caption x video
pair then goes through the joint transformer (vlm_jax.clipbert.inference),
scored by its match probability.

Metrics (vlm_jax.evaluate.cross_retrieval), both directions: R@1/5/10 as
fractions with 95% bootstrap intervals, median and mean rank (1-based, ties
pessimistic by default), beside chance. A video that is missing or does not
decode is listed (`missing_videos`, `failed_videos`) and its captions are
skipped; none decoding is an error.
"""

from absl import flags

from vlm_jax.metrics import retrieval as retrieval_metrics

_WORKDIR = flags.DEFINE_string('workdir', None, 'A ClipBERT training workdir.')
_ITEMS = flags.DEFINE_string('items', None, 'MSR-VTT csv or a jsonl of {"video", "text"}.')
_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of the videos.')
_OUTPUT = flags.DEFINE_string('output', None, 'Metrics JSON to write.')
_SCORES = flags.DEFINE_string('scores', None, 'Also save the [captions, videos] scores (.npy).')
_TIES = flags.DEFINE_enum('ties', 'pessimistic', list(retrieval_metrics.TIES), 'Tie convention.')
_TEXT_BLOCK = flags.DEFINE_integer('text_block', 32, 'Captions per forward pass.')
_VIDEO_BLOCK = flags.DEFINE_integer('video_block', 8, 'Videos per forward pass.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir', 'items', 'videos', 'output']


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel  (JAX and TensorFlow after flag parsing)
  import numpy as np
  from vlm_jax.clipbert import inference
  from vlm_jax.data.files import DataError
  try:
    result, scores = inference.evaluate_retrieval(
        _WORKDIR.value, _ITEMS.value, _VIDEOS.value, (_TEXT_BLOCK.value, _VIDEO_BLOCK.value),
        _TIES.value)
    inference.write_metrics(result, _OUTPUT.value)
    if _SCORES.value:
      np.save(_SCORES.value, scores)
  except (ValueError, OSError, KeyError, DataError) as e:
    raise SystemExit(f'vlm-jax eval cross-retrieval: {e}') from e
  print(inference.retrieval_summary(result, _OUTPUT.value))
