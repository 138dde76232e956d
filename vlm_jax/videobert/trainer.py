"""The VideoBERT trainer: mesh, data, model, sharded init, step, checkpoints, loop.

  vlm-jax train --config configs/videobert.py:tiny --workdir /tmp/vb

A re-run with the same workdir resumes from the latest checkpoint, at the same
step and the same position of the data stream.

The workdir and the data may be local paths or URLs such as gs://bucket/run:
every file goes through tf.io.gfile (or Orbax, for checkpoints), never through
os-level calls that only know the local disk.
"""

import json
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
import tqdm

from vlm_jax import config_checks
from vlm_jax.data import files as files_lib
from vlm_jax.data import synthetic, tokenizer
from vlm_jax.train import checkpoints, partitioning, report
from vlm_jax.train.loop import PreemptionWatcher, check_finite, say
from vlm_jax.videobert import pipeline
from vlm_jax.videobert import step as step_lib


def training_files(config, tok) -> list[str]:
  """The configured TFRecords, or the synthetic corpus (made once, then reused)."""
  if config.data.train_files:
    return files_lib.list_files(config.data.train_files)
  root = os.environ.get('VLM_JAX_DATA', 'data')
  name = (f'synthetic_tokens_v{synthetic.VERSION}_k{config.model.num_visual_tokens}_'
          f'n{config.data.synthetic_videos}_s{config.seed}')
  directory = os.path.join(root, name)
  done = os.path.join(directory, 'DONE')
  if not tf.io.gfile.exists(done):
    say(f'writing the synthetic corpus ({config.data.synthetic_videos} videos) to {directory}')
    files = synthetic.write_corpus(
        directory, config.data.synthetic_videos, lambda texts: tokenizer.wordpieces(tok, texts),
        config.model.num_visual_tokens, seed=config.seed)
    with tf.io.gfile.GFile(done, 'w') as f:
      json.dump({'files': [os.path.basename(p) for p in files]}, f)
  with tf.io.gfile.GFile(done) as f:
    return [os.path.join(directory, p) for p in json.load(f)['files']]


def _is_url(path: str) -> bool:
  return '://' in path


def _data_state_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, 'data_state', f'step_{step}', f'process_{jax.process_index()}')


def _drop_stale_data_states(workdir: str, keep_steps) -> None:
  directory = os.path.join(workdir, 'data_state')
  if not tf.io.gfile.isdir(directory):
    return
  for name in tf.io.gfile.listdir(directory):
    # Object stores list "directories" with a trailing slash.
    name = name.rstrip('/')
    if int(name.split('_')[1]) not in keep_steps:
      tf.io.gfile.rmtree(os.path.join(directory, name))


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains until config.train.num_steps (or `stop_at`); returns the last logged metrics."""
  config_checks.validate(config, jax.device_count(), jax.process_count())
  tok, vocab = step_lib.load_vocab(config)
  if not _is_url(workdir):
    # Orbax wants absolute local paths; a URL (gs://...) is passed on as it is.
    workdir = os.path.abspath(workdir)
  tf.io.gfile.makedirs(workdir)
  is_chief = jax.process_index() == 0
  files = training_files(config, tok)
  setup = step_lib.build(config, vocab)
  num_steps = config.train.num_steps
  end = min(num_steps, stop_at) if stop_at else num_steps

  # --- Checkpoints: resume from the latest one if there is one.
  manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  state, start, resumed = checkpoints.restore_or_create(
      manager, setup.abstract_state,
      lambda: setup.create_state(step_lib.initial_params(setup)))
  if resumed:
    say(f'resumed from the checkpoint at step {start} in {workdir}')
  elif config.model.init_checkpoint:
    say(f'text weights from {config.model.init_checkpoint}')

  # --- Data: each process reads its own files; the iterator resumes too.
  per_process_batch = config.train.global_batch_size // jax.process_count()
  dataset = pipeline.make_dataset(
      files, pipeline.PipelineOptions.from_config(config.data), vocab, per_process_batch,
      seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipeline.BatchIterator(dataset, files)
  if resumed:
    batches.restore_state(_data_state_path(workdir, start))

  # --- Metrics: console, metrics.jsonl and TensorBoard, from process 0.
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  writer = report.open_run(workdir, config, start, enabled=is_chief)

  started = time.time()
  last_good = start if resumed else None
  window, window_start, logged = [], time.time(), {}
  progress = tqdm.tqdm(total=end, initial=start, desc='train', unit='step',
                       disable=not is_chief, dynamic_ncols=True)
  pending = None  # the previous step's device metrics: read after the next dispatch

  def flush():
    nonlocal pending
    if pending is not None:
      step_done, device_metrics = pending
      host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
      check_finite(step_done, host, last_good, workdir)
      window.append(host)
      pending = None

  watcher = PreemptionWatcher()
  preempted, step = False, start
  try:
    for step in range(start + 1, end + 1):
      batch = partitioning.device_batch(next(batches), setup.mesh)
      state, metrics = setup.train_step(state, batch)
      flush()
      pending = (step, metrics)
      progress.update(1)
      preempted = watcher.reached(step)
      is_last = step == end or preempted
      if step % config.train.log_every == 0 or is_last:
        flush()
        elapsed = time.time() - window_start
        logged = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        logged.update(steps_per_second=len(window) / elapsed,
                      examples_per_second=len(window) * config.train.global_batch_size / elapsed)
        writer.write(step, logged)
        progress.set_postfix(loss=f'{logged["loss"]:.3f}', lr=f'{logged["learning_rate"]:.2e}')
        window, window_start = [], time.time()
      if step % config.train.checkpoint_every == 0 or is_last:
        flush()
        manager.save(step, args=ocp.args.StandardSave(state))
        batches.save_state(_data_state_path(workdir, step))
        last_good = step
      if preempted:
        break
    flush()
  finally:
    # Also on errors: the last good checkpoint must finish writing.
    watcher.close()
    progress.close()
    manager.wait_until_finished()
  if preempted:
    say(f'SIGTERM: saved the checkpoint at step {step}; run the same command to resume')
  _drop_stale_data_states(workdir, set(manager.all_steps()))
  writer.close()

  if is_chief:
    report.plot_curves(metrics_path, os.path.join(workdir, 'curves.png'))
    report.write_manifest(os.path.join(workdir, 'manifest.json'), {
        'command': 'train',
        'workdir': workdir,
        'data_files': files,
        'devices': [str(d) for d in jax.devices()],
        'mesh': dict(zip(setup.mesh.axis_names, setup.mesh.devices.shape)),
        'resumed_from_step': start if resumed else None,
        'final_step': step,
        'preempted': preempted,
        'checkpoint_steps': sorted(int(s) for s in manager.all_steps()),
        'wall_seconds': time.time() - started,
        'last_metrics': logged,
    })
  manager.close()
  return logged
