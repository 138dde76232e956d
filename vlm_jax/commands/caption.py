"""vlm-jax caption: VideoBERT or CBT captioning (SPEC sections 1, 2): features, captioner, captions.

  vlm-jax caption --videobert RUN --features FEATURES --codebook codebook.npz \\
      --train_segments train.jsonl --test_segments test.jsonl --output DIR \\
      [--config configs/captioner.py:paper] [--config.features.inputs=s3d] \\
      [--stages features,train,predict]
  vlm-jax caption --cbt RUN --config.features.inputs=cbt+s3d --features FEATURES ...

RUN is a `vlm-jax train` workdir. Segments files have one JSON object a line
with `video_id`, `start`, `end` (seconds) and `sentence` (the caption; needed
for training, and in the test file for scoring), as `vlm-jax prepare-youcook2`
writes them; a segment's id is its `clip_id`, else its `id`, else
`<video_id>_<n>` (n counts the video's segments in file order). FEATURES holds
`<video_id>.npy` clip features and `<video_id>.times.npy` clip times
(extract-features), --test_features those of the test videos if they are
elsewhere; the codebook turns them into visual tokens.

Stages, each skipped or resumed when its output is already there:
  features  per segment: the mean of VideoBERT's outputs over the video tokens
            and over the five masks of "now let's [MASK] the [MASK] to the
            [MASK], and then [MASK] the [MASK].", plus the mean S3D feature of
            its clips (config.features.inputs) -> DIR/features/{train,test}.npz
  train     the transformer captioner on the training segments' captions
            -> DIR/captioner (orbax checkpoints; a re-run resumes)
  predict   greedy captions of the test segments -> DIR/predictions.jsonl, the
            test sentences -> DIR/references.json, and their COCO scores
            (BLEU, METEOR, ROUGE-L, CIDEr) -> DIR/metrics.json; the same as
              vlm-jax eval captioning --references DIR/references.json \\
                  --predictions DIR/predictions.jsonl --output metrics.json
With --cbt and inputs 'cbt+s3d' (or 'cbt'), a segment's features are the mean
of CBT's contextual clip states over its seconds (each video encoded whole,
vlm_jax/cbt/inference.py), plus its mean S3D feature.
DIR/manifest.json records the inputs, counts, skipped segments (no features)
and scores. The captioner reads one feature vector per segment: a sequence of
length one for its encoder, as the paper feeds the pooled feature.
"""

import os

from absl import flags
from ml_collections import config_flags

from configs import common

_VIDEOBERT = flags.DEFINE_string('videobert', None, 'vlm-jax train workdir of the VideoBERT '
                                 '(not needed with --config.features.inputs=s3d).')
_CBT = flags.DEFINE_string('cbt', None, 'vlm-jax train workdir of a CBT run (with '
                           '--config.features.inputs=cbt+s3d or cbt).')
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy clip features and '
                                '<video_id>.times.npy clip times.')
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook (not '
                                'needed with --config.features.inputs=s3d).')
_TEST_FEATURES = flags.DEFINE_string('test_features', None, 'Folder of the test videos\' '
                                     'features when apart from --features (the demo keeps '
                                     'features/train and features/test).')
_TRAIN_SEGMENTS = flags.DEFINE_string('train_segments', None, 'Training segments JSONL '
                                      '(video_id, start, end, sentence).')
_TEST_SEGMENTS = flags.DEFINE_string('test_segments', None, 'Segments to caption (JSONL: '
                                     'video_id, start, end; sentence to score).')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', common.config_file('captioner.py'),
    'Config file, then a preset: FILE[:PRESET], e.g. configs/captioner.py:runlocal; '
    'the default is preset paper.', lock_config=True)
# No default list: the stage module (and its JAX) loads only when the command runs.
_STAGES = flags.DEFINE_list('stages', None, 'Stages to run, in order (those listed above); '
                            'default: all.')
_SCORE = flags.DEFINE_bool('score', True, 'Score the predictions against the test sentences '
                           '(COCO caption code; METEOR needs Java).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['features', 'train_segments', 'test_segments', 'output']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  from vlm_jax.stages import caption  # pylint: disable=import-outside-toplevel
  # Read before running: the predict stage imports the captioning eval binary,
  # whose flags (its own --output among them) are defined on import.
  output = _OUTPUT.value
  try:
    manifest = caption.run(_CONFIG.value, _FEATURES.value, _TRAIN_SEGMENTS.value,
                           _TEST_SEGMENTS.value, output, _VIDEOBERT.value, _CODEBOOK.value,
                           _STAGES.value or caption.STAGES, _SCORE.value, _TEST_FEATURES.value,
                           cbt=_CBT.value)
  except (ValueError, FileNotFoundError) as e:  # SegmentsError is a ValueError
    raise SystemExit(f'vlm-jax caption: {e}') from e
  predict = manifest.get('predict', {})
  scores = predict.get('scores')
  if scores:
    shown = ' '.join(f'{m} {100 * scores[m]:.2f}' if m != 'CIDEr' else f'{m} {scores[m]:.3f}'
                     for m in ('Bleu_3', 'Bleu_4', 'METEOR', 'ROUGE_L', 'CIDEr')
                     if scores.get(m) is not None)
    print(f'{predict["predictions"]} captions: {shown}')
  print(f'wrote {output} (see {os.path.join(output, "manifest.json")})')
