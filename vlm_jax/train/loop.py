"""The one training loop: every system fills in a `Run` and calls `train`.

  run = loop.Run(mesh, abstract_state, create_state, train_step, num_steps, batches, ...)
  last_metrics = loop.train(config, workdir, run)

The loop owns what all systems share: the workdir (a local path or a URL such as
gs://bucket/run; every file goes through tf.io.gfile or Orbax, never os-level
calls that only know the local disk), resuming from the latest checkpoint,
putting host batches on the mesh, metrics (TensorBoard, metrics.jsonl, a tqdm
bar), checkpoint cadence, the NaN stop, SIGTERM, curves.png and manifest.json.

The host never waits for a step it has just dispatched: step s's metrics are
read after step s + 1 is dispatched (and before any log line or checkpoint),
so the device always has the next step queued.

A metrics row at step s means the same in an interrupted run as in a straight
one: the mean over the steps since the previous multiple of train.log_every.
Each checkpoint carries the metrics of the steps not yet in a row (in its Orbax
custom metadata), and a row logged where a run stopped off that cadence
(stop_at, SIGTERM) is redone by the resumed run. After a checkpoint without
them (older ones), the first row is marked `resumed: true` with its
`averaged_steps`.

A resume first compares the config with the checkpoint and the workdir's
config.json (`check_resume`), before anything is restored or compiled: other
array shapes are refused, naming the fields that differ; any other difference
too, unless config.train.allow_config_change is set. Allowed changes are
recorded in manifest.json (`config_changes`: [{step, field, old, new}]) before
config.json takes the new values. Only log_every, checkpoint_every and
keep_checkpoints may change without leave (report.BOOKKEEPING_FIELDS); not
train.num_steps: the learning rate decays linearly to 0 at num_steps, so a run
extended late in its schedule sees its learning rate jump back up.
"""

import dataclasses
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from vlm_jax import config_checks
from vlm_jax.train import checkpoints, partitioning, report

TrainState = partitioning.TrainState
# The key of a checkpoint's custom metadata that holds the metrics of the steps
# since the last logged row (a list of {metric: value}).
WINDOW_KEY = 'metrics_window'


def say(message: str) -> None:
  if jax.process_index() == 0:
    tqdm.tqdm.write(f'[vlm-jax] {message}')


class TrainingDiverged(RuntimeError):
  """The loss or gradients became NaN or infinite."""


# --- What a system fills in.


@dataclasses.dataclass
class Run:
  """One system's training run, as the loop sees it.

  Attributes:
    mesh: the devices; host batches are split over its 'data' axis.
    abstract_state: ShapeDtypeStructs with shardings; checkpoints restore into it.
    create_state: the sharded step-0 state; only called when there is no checkpoint.
    train_step: (state, device batch) -> (next state, scalar device metrics), with at
      least 'loss' and 'l2_grads' (the NaN stop checks them).
    num_steps: steps of the whole run.
    batches: (state getter, start step) -> host batches ({name: [batch, ...] array},
      this process's share) of steps start + 1, start + 2, ... The getter returns the
      state after the step before the batch asked for (for plans made from the current
      parameters); calling it waits for that step.
    examples_per_step: the global batch size (for examples_per_second).
    manifest: system-specific fields of manifest.json (may replace 'command').
    save_data: path prefix -> None: saves the position of `batches` next to a checkpoint.
    restore_data: path prefix -> None: restores it before `batches` is called.
    log_fields: step -> fields logged with step's metrics (e.g. the epoch).
    name: the progress bar's label.
  """
  mesh: Mesh
  abstract_state: TrainState
  create_state: Callable[[], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  num_steps: int
  batches: Callable[[Callable[[], TrainState], int], Iterator[dict[str, np.ndarray]]]
  examples_per_step: int
  manifest: dict[str, Any] = dataclasses.field(default_factory=dict)
  save_data: Callable[[str], None] | None = None
  restore_data: Callable[[str], None] | None = None
  log_fields: Callable[[int], dict[str, Any]] | None = None
  name: str = 'train'


# --- Pieces of the loop.


class PreemptionWatcher:
  """Notices SIGTERM, which a preemptible or spot TPU VM gets before it is taken.

  With several processes, all of them must stop at the same step to save one
  checkpoint together: JAX's preemption sync point decides that step.
  """

  def __init__(self):
    self._signalled = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._signalled = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def check_finite(step: int, metrics: dict, last_good: int | None, workdir: str) -> None:
  for key in ('loss', 'l2_grads'):
    if not np.isfinite(metrics[key]):
      where = (f'the last good checkpoint is step {last_good} in {workdir}/checkpoints'
               if last_good is not None else 'no checkpoint was saved')
      raise TrainingDiverged(f'{key} is {metrics[key]} at step {step}; stopping ({where}). '
                             'Lower config.optim.learning_rate or check the data.')


def make_workdir(workdir: str) -> str:
  """Makes WORKDIR; returns it absolute when local (Orbax wants that), a URL as it is."""
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)
  tf.io.gfile.makedirs(workdir)
  return workdir


def data_state_path(workdir: str, step: int) -> str:
  """Where this process's data position at checkpoint `step` goes (a path prefix)."""
  return os.path.join(workdir, 'data_state', f'step_{step}', f'process_{jax.process_index()}')


def _listed(differences) -> str:
  return ', '.join(f'config.{field} {old!r} -> {new!r}' for field, old, new in differences)


def check_resume(config, workdir: str, manager: ocp.CheckpointManager, step: int,
                 abstract_state: TrainState) -> list[dict[str, Any]]:
  """Checks that `config` may resume the checkpoint at `step`; returns its changes.

  Returns:
    [{step, field, old, new}] of every field that differs from WORKDIR/config.json.

  Raises:
    ConfigError: the config builds arrays of other shapes than the checkpoint
      holds (whatever else is allowed), or it differs from config.json in a
      field outside report.BOOKKEEPING_FIELDS without
      config.train.allow_config_change. One line, naming the fields.
  """
  differences = report.config_differences(workdir, config)
  stored = os.path.join(workdir, 'config.json')
  mismatches = checkpoints.shape_mismatches(manager, step, abstract_state)
  if mismatches:
    fields = (f'this config differs from {stored} in {_listed(differences)}' if differences
              else f'no field differs from {stored}')
    more = f' and {len(mismatches) - 2} more' if len(mismatches) > 2 else ''
    raise config_checks.ConfigError(
        f'the checkpoint at step {step} in {workdir} holds arrays of other shapes than this '
        f'config builds ({"; ".join(mismatches[:2])}{more}); {fields}; resume with the '
        f"checkpoint's values or train in a new --workdir")
  strict = [d for d in differences if d[0] not in report.BOOKKEEPING_FIELDS]
  if strict and not config.train.get('allow_config_change', False):
    raise config_checks.ConfigError(
        f'this config differs from {stored} (the config of the checkpoint at step {step}) in '
        f'{_listed(strict)}; set config.train.allow_config_change=True to resume with the new '
        'values (recorded in manifest.json), or train in a new --workdir')
  return [dict(step=step, field=field, old=old, new=new) for field, old, new in differences]


def _drop_stale_data_states(workdir: str, keep_steps) -> None:
  directory = os.path.join(workdir, 'data_state')
  if not tf.io.gfile.isdir(directory):
    return
  for name in tf.io.gfile.listdir(directory):
    # Object stores list "directories" with a trailing slash.
    name = name.rstrip('/')
    if int(name.split('_')[1]) not in keep_steps:
      tf.io.gfile.rmtree(os.path.join(directory, name))


# --- The loop.


def train(config, workdir: str, run: Run, *, stop_at: int | None = None,
          progress: bool = True) -> dict[str, float]:
  """Trains `run` until run.num_steps (or `stop_at`); returns the last logged metrics.

  Reads config.train.log_every, checkpoint_every, keep_checkpoints and (on a
  resume) allow_config_change; writes config.json (all of `config`),
  metrics.jsonl, tensorboard/, checkpoints/, data_state/, curves.png and
  manifest.json under `workdir`.

  Raises:
    ConfigError: a resume whose config does not fit the checkpoint or differs
      from config.json without leave (`check_resume`); nothing is written.
    TrainingDiverged: a step's loss or gradient norm is not finite; no checkpoint
      is saved after the last finite step.
  """
  workdir = make_workdir(workdir)
  is_chief = jax.process_index() == 0
  end = min(run.num_steps, stop_at) if stop_at else run.num_steps
  train_config = config.train
  log_every = train_config.log_every
  manifest_path = os.path.join(workdir, 'manifest.json')

  # --- Checkpoints: resume from the latest one if there is one, if the config allows.
  manager = checkpoints.manager(workdir, train_config.keep_checkpoints)
  latest = manager.latest_step()
  changes = ([] if latest is None else
             check_resume(config, workdir, manager, latest, run.abstract_state))
  state, start, resumed = checkpoints.restore_or_create(manager, run.abstract_state,
                                                        run.create_state)
  previous = report.read_json(manifest_path) if resumed else {}
  config_changes = previous.get('config_changes', []) + changes
  window, carried = [], False  # the metrics of the steps since the last row
  if resumed:
    say(f'resumed from the checkpoint at step {start} in {workdir}')
    for change in changes:
      say(f'config.{change["field"]}: {change["old"]!r} -> {change["new"]!r} from step {start}')
    saved = manager.metadata(start).custom_metadata or {}
    carried = WINDOW_KEY in saved
    window = list(saved.get(WINDOW_KEY, []))
    if run.restore_data:
      run.restore_data(data_state_path(workdir, start))
  if changes and is_chief:
    # Recorded before config.json takes the new values (in open_run).
    report.write_manifest(manifest_path, dict(previous, config_changes=config_changes))

  # --- Metrics: console, metrics.jsonl and TensorBoard, from process 0.
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  # A row logged off the cadence where the last run stopped averaged steps that
  # are in the carried window now: the next row on the cadence averages them again.
  redo_row = carried and start % log_every != 0 and start < end
  writer = report.open_run(workdir, config, start - 1 if redo_row else start, enabled=is_chief)
  # Without a carried window, the first row averages only the steps of this run.
  mark_row = resumed and not carried and start % log_every != 0

  started = time.time()
  last_good = start if resumed else None
  logged, first_loss = {}, None
  timed, window_start = 0, time.time()  # steps read in this process since the last row
  bar = tqdm.tqdm(total=end, initial=start, desc=run.name, unit='step',
                  disable=not (is_chief and progress), dynamic_ncols=True)
  pending = None  # (step, device metrics) of the last dispatched step, not read yet

  def flush():
    """Reads the pending step's metrics (waiting for that step) into the window."""
    nonlocal pending, first_loss, timed
    if pending is not None:
      step_done, device_metrics = pending
      host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
      check_finite(step_done, host, last_good, workdir)
      first_loss = host['loss'] if first_loss is None else first_loss
      window.append(host)
      timed += 1
      pending = None

  def current_state():
    # A state that is read must not be a diverged one.
    flush()
    return state

  watcher = PreemptionWatcher()
  preempted, step = False, start
  try:
    batches = run.batches(current_state, start)
    for step in range(start + 1, end + 1):
      batch = partitioning.device_batch(next(batches), run.mesh)
      state, metrics = run.train_step(state, batch)
      flush()
      pending = (step, metrics)
      bar.update(1)
      preempted = watcher.reached(step)
      is_last = step == end or preempted
      on_cadence = step % log_every == 0
      if on_cadence or is_last:
        flush()
        elapsed = time.time() - window_start
        logged = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        extra = run.log_fields(step) if run.log_fields else {}
        logged.update(extra, steps_per_second=timed / elapsed,
                      examples_per_second=timed * run.examples_per_step / elapsed)
        if mark_row:
          logged.update(resumed=True, averaged_steps=len(window))
          mark_row = False
        writer.write(step, logged)
        postfix = dict(loss=f'{logged["loss"]:.3f}', **extra)
        if 'learning_rate' in logged:
          postfix['lr'] = f'{logged["learning_rate"]:.2e}'
        bar.set_postfix(postfix)
        if on_cadence:
          # Off the cadence (the last step) the window stays: the checkpoint carries it.
          window, window_start, timed = [], time.time(), 0
      if step % train_config.checkpoint_every == 0 or is_last:
        flush()
        manager.save(step, args=ocp.args.StandardSave(state),
                     custom_metadata={WINDOW_KEY: window})
        if run.save_data:
          run.save_data(data_state_path(workdir, step))
        last_good = step
      if preempted:
        break
  finally:
    # Also on errors: the last good checkpoint must finish writing.
    watcher.close()
    bar.close()
    manager.wait_until_finished()
  if preempted:
    say(f'SIGTERM: saved the checkpoint at step {step}; run the same command to resume')
  _drop_stale_data_states(workdir, set(manager.all_steps()))
  writer.close()

  if is_chief:
    report.plot_curves(metrics_path, os.path.join(workdir, 'curves.png'))
    report.write_manifest(manifest_path, {
        'command': 'train',
        'workdir': workdir,
        **run.manifest,
        'devices': [str(d) for d in jax.devices()],
        'mesh': dict(zip(run.mesh.axis_names, run.mesh.devices.shape)),
        'resumed_from_step': start if resumed else None,
        'final_step': step,
        'preempted': preempted,
        'checkpoint_steps': sorted(int(s) for s in manager.all_steps()),
        'config_changes': config_changes,
        'first_loss_this_run': first_loss,
        'wall_seconds': time.time() - started,
        'last_metrics': logged,
    })
  manager.close()
  return logged
