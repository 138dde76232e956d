"""vlm-jax eval linear-probe: supervised linear probes of frozen per-second features (CBT).

  vlm-jax eval linear-probe --annotations COIN.json --features FEATURES \\
      --task segment|clip|anticipation --output metrics.json \\
      [--l2_grid 1e-5,1e-4,1e-3,1e-2,1e-1,1 | --l2 0.001] [--observe_seconds 5]

Annotations: COIN-format JSON, `{"database": {video_id: {"subset": "training" |
"validation" | "testing", "annotation": [{"segment": [start, end], "label":
"pour water"}, ...]}}}` (labels matched by whitespace-normalised text; other
subsets are ignored). Features: FEATURES/<video_id>.npy, per-second states
[T, D] (row t = second [t, t + 1)), float16 or float32; a missing, unreadable,
wrongly shaped or non-finite file (or one whose D differs from the first read)
is listed under `missing_videos` and its video skipped.

Tasks (a segment [start, end] covers seconds floor(start) .. ceil(end) - 1,
clipped to the video):
  segment       one example per segment: the mean of its seconds' features,
                labelled with its label (CBT's representation protocol).
  clip          one example per second, labelled with the segment covering it
                (the later one where two overlap) or `background` (an annotated
                `background` is that class too): COIN action segmentation as a
                per-clip classifier. The accuracy is frame accuracy over every
                second of the test videos, reported beside the all-background
                baseline and the probe's top-1 over the non-background seconds.
  anticipation  next-step anticipation: for each segment k >= 1 of a video (by
                start), the mean of the features of the --observe_seconds
                seconds before segment k starts (default: the seconds of
                segment k - 1), only seconds ending by segment k's start,
                labelled with segment k's label.
A segment (or anticipated step) with no such second inside the video is listed
under `skipped_segments`.

Protocol (vlm_jax/metrics/linear_probe.py): features standardised with the
training examples' mean and std; multinomial logistic regression (mean
cross-entropy + l2 / 2 * ||W||^2, bias unpenalised; scikit-learn's C = 1 / (l2
n)) fitted by L-BFGS on the training subset; l2 chosen among --l2_grid by
accuracy on the validation subset (ties: the larger), never on the test
subset; with no validation examples --l2 must be given. The label space is
every label the task's examples carry in any subset (`background` first for
clip); one absent from training is never predicted. Reported on the testing
subset: accuracy with its 95% percentile-bootstrap interval over the test
examples (for clip, seconds of one video are correlated, so the interval is
narrower than one over videos would be), chance (1 / classes), the
majority-class baseline (the most frequent training label), the chosen l2
and the dev accuracy of each candidate, the example and class counts, and the
L-BFGS iterations and convergence.
"""

from absl import flags

from vlm_jax.evaluate import linear_probe

_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'COIN-format annotations JSON.')
_FEATURES = flags.DEFINE_string('features', None, 'Folder of <video_id>.npy per-second '
                                'features [T, D].')
_TASK = flags.DEFINE_enum('task', None, list(linear_probe.TASKS), 'What one example is.')
_OUTPUT = flags.DEFINE_string('output', None, 'Metrics JSON to write.')
_L2_GRID = flags.DEFINE_list('l2_grid', [f'{g:g}' for g in linear_probe.DEFAULT_GRID],
                             'l2 candidates, chosen among on the validation subset.')
_L2 = flags.DEFINE_float('l2', None, 'Use this l2 instead of choosing one on validation.',
                         lower_bound=0)
_OBSERVE = flags.DEFINE_integer('observe_seconds', None, 'anticipation: seconds observed '
                                'before the step (default: all of the previous step).',
                                lower_bound=1)
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['annotations', 'features', 'task', 'output']


def main(argv):
  del argv
  try:
    try:
      grid = [float(g) for g in _L2_GRID.value]
    except ValueError:
      grid = []
    if not grid or min(grid) < 0:
      raise ValueError(f'--l2_grid {",".join(_L2_GRID.value)}: expected l2 values >= 0, '
                       'comma-separated')
    result = linear_probe.run(_ANNOTATIONS.value, _FEATURES.value, _OUTPUT.value, _TASK.value,
                              grid, _L2.value, _OBSERVE.value)
  except (ValueError, OSError, KeyError) as e:
    raise SystemExit(f'vlm-jax eval linear-probe: {e}') from e
  print(linear_probe.summary(result, _OUTPUT.value))
