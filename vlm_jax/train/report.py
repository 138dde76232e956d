"""What a training run leaves for people: metrics files, curves, config.json and a manifest,
and what it reads back: its own config.json, the records' make-records manifests.

All files go through tf.io.gfile, so a workdir may be a local path or a URL
(gs://bucket/run).
"""

import json
import os

import ml_collections
import tensorflow as tf


class MetricWriter:
  """One JSON object per logged step in metrics.jsonl, plus TensorBoard events."""

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if enabled:
      # On an object store, appending re-uploads the file at each flush: fine
      # for one line per logged step.
      self._jsonl = tf.io.gfile.GFile(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tensorboard = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self._jsonl.flush()
    with self._tensorboard.as_default(step=step):
      for key, value in metrics.items():
        # Markers such as `resumed: true` are for the JSON rows, not curves.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          tf.summary.scalar(key, value)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()


def read_metrics(path: str) -> list[dict]:
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(path: str, after_step: int) -> None:
  """Drops lines logged after the checkpoint a run resumes from (they are redone)."""
  rows = [r for r in read_metrics(path) if r['step'] <= after_step]
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows))  # GFile has no writelines


BASELINE_SUFFIX = '_baseline'


def curves_figure(rows: list[dict]):
  """Loss and accuracy panels of metrics rows (the keys of the first row) as a Figure.

  A metric `<key>_baseline` is the score of the obvious baseline on the same examples,
  drawn dashed in `<key>`'s colour (in its own colour when `<key>` is not logged).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  steps = [r['step'] for r in rows]
  fig, (losses, accuracies) = plt.subplots(1, 2, figsize=(11, 4))

  def panel(key):
    return losses if key.startswith('loss') else accuracies if 'accuracy' in key else None

  for key in sorted(rows[0]):
    metric = key.removesuffix(BASELINE_SUFFIX)
    if panel(key) is None or (key != metric and metric in rows[0]):
      continue  # not a curve, or a baseline drawn with its metric
    if key != metric:
      panel(key).plot(steps, [r[key] for r in rows], '--', label=f'{metric} baseline')
      continue
    (line,) = panel(key).plot(steps, [r[key] for r in rows], label=key)
    if key + BASELINE_SUFFIX in rows[0]:
      panel(key).plot(steps, [r[key + BASELINE_SUFFIX] for r in rows], '--',
                      color=line.get_color(), label=f'{key} baseline')
  losses.set(xlabel='step', ylabel='loss', title='losses')
  accuracies.set(xlabel='step', ylabel='accuracy', title='accuracies', ylim=(0, 1))
  for ax in (losses, accuracies):
    if ax.lines:  # a run may log no accuracy
      ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def plot_curves(metrics_path: str, output_png: str) -> None:
  """Loss and accuracy curves of a run as one PNG (`curves_figure`); nothing without rows."""
  rows = read_metrics(metrics_path)
  if not rows:
    return
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig = curves_figure(rows)
  # Through a gfile handle: matplotlib itself only writes local files.
  with tf.io.gfile.GFile(output_png, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)
  plt.close(fig)


def write_manifest(path: str, manifest: dict) -> None:
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(manifest, f, indent=2, default=str)


def read_json(path: str) -> dict:
  """A JSON file (a manifest) as a dict; {} when there is none."""
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def records_manifests(files) -> dict[str, dict]:
  """{path: manifest} of the make-records manifest.json beside the training files, if any.

  make-records writes one per output folder, with the records' vocabulary
  (num_visual_tokens, text_vocab_size, feature_dim); third-party and older
  records may have none.
  """
  paths = sorted({os.path.join(os.path.dirname(f), 'manifest.json') for f in files})
  return {p: m for p in paths if (m := read_json(p))}


def open_run(workdir: str, config, keep_through: int, enabled: bool = True) -> MetricWriter:
  """The metric writer of a run that starts (or resumes) after step `keep_through`.

  Drops metrics.jsonl lines past `keep_through` (a resumed run logs them again)
  and writes config.json; nothing is written when not `enabled` (processes but 0).
  """
  if enabled:
    truncate_metrics(os.path.join(workdir, 'metrics.jsonl'), after_step=keep_through)
    with tf.io.gfile.GFile(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  return MetricWriter(workdir, enabled=enabled)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's config.json as a ConfigDict; local or gs:// (FileNotFoundError naming it)."""
  path = os.path.join(workdir, 'config.json')
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} does not exist: not a vlm-jax train workdir')
  with tf.io.gfile.GFile(path) as f:
    data = json.load(f)
  if 'logical_axis_rules' in data:
    # JSON turns the rules' tuples into lists; partitioning expects (name, axis) pairs.
    data['logical_axis_rules'] = tuple(tuple(rule) for rule in data['logical_axis_rules'])
  return ml_collections.ConfigDict(data)


def read_inference_config(workdir: str, system: str, title: str) -> ml_collections.ConfigDict:
  """A `system` run's config, set to one device (mesh 1 x 1) for inference.

  Args:
    workdir: the run's workdir.
    system: its expected config.system (runs from before configs named it: 'videobert').
    title: the system's name in the error, e.g. 'CBT'.

  Raises:
    ValueError: the workdir holds another system's run.
  """
  config = read_config(workdir)
  found = config.get('system', 'videobert')
  if found != system:
    raise ValueError(f'{workdir} holds a {found} run, not {title}')
  config.mesh.data, config.mesh.model = 1, 1
  return config


# Config fields that may change on a resume without train.allow_config_change: they
# decide what a run writes and when, never what it computes (still recorded).
BOOKKEEPING_FIELDS = ('train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints')
# The permission itself: a one-off, never a difference.
ALLOW_CHANGE_FIELD = 'train.allow_config_change'


def _flat(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def config_differences(workdir: str, config) -> list[tuple[str, object, object]]:
  """(field, value in WORKDIR/config.json, value in `config`) of every field that differs.

  Both sides compared as JSON (tuples become lists alike); a field one side lacks
  is None there; train.allow_config_change is left out. Empty without config.json.
  """
  stored = _flat(read_json(os.path.join(workdir, 'config.json')))
  if not stored:
    return []
  new = _flat(json.loads(config.to_json_best_effort()))
  return [(field, stored.get(field), new.get(field))
          for field in sorted(stored.keys() | new.keys())
          if field != ALLOW_CHANGE_FIELD and stored.get(field) != new.get(field)]
