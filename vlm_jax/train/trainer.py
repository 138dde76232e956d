"""The VideoBERT trainer: mesh, data, model, sharded init, step, checkpoints, loop.

  vlm-jax train --config configs/videobert.py:tiny --workdir /tmp/vb

A re-run with the same workdir resumes from the latest checkpoint, at the same
step and the same position of the data stream.
"""

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax import config_checks
from vlm_jax import vocab as vocab_lib
from vlm_jax.convert import hf_bert
from vlm_jax.data import pipeline, synthetic, tokenizer
from vlm_jax.models import videobert
from vlm_jax.train import objectives, optim, partitioning, report

# Random numbers that shard: sharded and unsharded init give the same values.
jax.config.update('jax_threefry_partitionable', True)


def _say(message: str) -> None:
  if jax.process_index() == 0:
    tqdm.tqdm.write(f'[vlm-jax] {message}')


class TrainingDiverged(RuntimeError):
  """The loss or gradients became NaN or infinite."""


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


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass
class Setup:
  """Everything a training step needs, built from a config."""
  config: Any
  vocab: vocab_lib.JointVocab
  mesh: Mesh
  model: videobert.VideoBert
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  param_shardings: Any
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
  init_params: Callable[[jax.Array], Any]
  create_state: Callable[[Any], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  compile_step: Callable[[dict], Any]  # abstract batch -> compiled executable


def load_vocab(config):
  """The WordPiece tokenizer and the joint vocabulary; checks their sizes agree."""
  vocab_file = config.data.vocab_file
  if not vocab_file and config.model.init_checkpoint:
    vocab_file = os.path.join(hf_bert.resolve(config.model.init_checkpoint), 'vocab.txt')
  tok = tokenizer.load(vocab_file)
  vocab = tokenizer.joint_vocab(tok, config.model.num_visual_tokens)
  if vocab.text_vocab_size != config.model.text_vocab_size:
    raise config_checks.ConfigError(
        f'config.model.text_vocab_size: {config.model.text_vocab_size}, but the vocab file '
        f'{vocab_file or tokenizer.default_vocab_file()} has {vocab.text_vocab_size} entries')
  return tok, vocab


def _dummy_inputs(config, batch_size: int = 1):
  seq = jnp.ones((batch_size, config.data.seq_len), jnp.int32)
  positions = jnp.zeros((batch_size, config.data.max_predictions), jnp.int32)
  return seq, seq, seq, positions


def _model_inputs(batch):
  return (batch['input_ids'], batch['token_type_ids'], batch['attention_mask'],
          batch['masked_positions'])


def build(config, vocab: vocab_lib.JointVocab, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings and the jitted init and train step."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  model = videobert.build(config.model, vocab)
  tx, schedule = optim.make(config.optim, config.train.num_steps)

  def boxed_init(rng):
    return model.init({'params': rng}, *_dummy_inputs(config))['params']

  abstract_boxed = jax.eval_shape(boxed_init, jax.random.key(0))
  param_shardings = partitioning.param_shardings(abstract_boxed, mesh, axis_rules)
  abstract_params = nn.meta.unbox(abstract_boxed)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  state_shardings = TrainState(
      step=NamedSharding(mesh, PartitionSpec()), params=param_shardings,
      opt_state=partitioning.opt_state_shardings(tx, abstract_opt, param_shardings, mesh))
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      TrainState(jax.ShapeDtypeStruct((), jnp.int32), abstract_params, abstract_opt),
      state_shardings)

  def in_mesh(jitted):
    """Calls (and so traces) `jitted` with the mesh and the logical axis rules set."""
    def call(*args):
      with jax.set_mesh(mesh), nn.logical_axis_rules(axis_rules):
        return jitted(*args)
    return call

  init_params = in_mesh(jax.jit(lambda rng: nn.meta.unbox(boxed_init(rng)),
                                out_shardings=param_shardings))
  create_state = jax.jit(
      lambda params: TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)),
      in_shardings=(param_shardings,), out_shardings=state_shardings)

  loss_weights = dict(config.loss_weights)
  accum = config.optim.grad_accum_steps
  dropout_seed = config.seed

  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    norms = objectives.normalizers(batch)
    rng = jax.random.fold_in(jax.random.key(dropout_seed), state.step)

    def loss_fn(params, micro, micro_rng):
      outputs = model.apply({'params': params}, *_model_inputs(micro), deterministic=False,
                            rngs={'dropout': micro_rng})
      return objectives.videobert_loss(outputs, micro, loss_weights, norms,
                                       vocab.visual_offset)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (_, metrics), grads = grad_fn(state.params, batch, rng)
    else:
      micro_batches = jax.tree.map(
          lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

      def accumulate(carry, inputs):
        index, micro = inputs
        (_, m), g = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (g, m)), None

      metric_shapes = jax.eval_shape(
          lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro_batches), rng)[0][1])
      zeros = (jax.tree.map(jnp.zeros_like, state.params),
               jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes))
      (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), micro_batches))

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(
        l2_grads=optax.tree.norm(grads), l2_params=optax.tree.norm(params),
        l2_updates=optax.tree.norm(updates), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  jitted_step = jax.jit(
      step_fn, in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
      out_shardings=(state_shardings, None), donate_argnums=0)
  train_step = in_mesh(jitted_step)
  # Compiles without any array in memory (for memory reports of large configs).
  compile_step = in_mesh(lambda batch: jitted_step.lower(abstract_state, batch).compile())
  return Setup(config, vocab, mesh, model, tx, schedule, param_shardings, state_shardings,
               abstract_state, init_params, create_state, train_step, compile_step)


def initial_params(setup: Setup) -> Any:
  """Random init, then the pretrained text weights and centroids the config names."""
  config = setup.config
  params = setup.init_params(jax.random.key(config.seed))
  if not (config.model.init_checkpoint or config.model.visual_init):
    return params
  host = jax.device_get(params)
  if config.model.init_checkpoint:
    overrides = dict(dropout_rate=config.model.dropout_rate,
                     attention_dropout_rate=config.model.attention_dropout_rate)
    _, bert_params, sd = hf_bert.load(config.model.init_checkpoint, **overrides)
    host = videobert.with_pretrained_text(host, bert_params, hf_bert.mlm_head_to_flax(sd),
                                          setup.vocab)
    _say(f'text weights from {config.model.init_checkpoint}')
  if config.model.visual_init:
    host = videobert.with_visual_init(host, np.load(config.model.visual_init))
  return jax.device_put(host, setup.param_shardings)


def training_files(config, tok) -> list[str]:
  """The configured TFRecords, or the synthetic corpus (made once, then reused)."""
  if config.data.train_files:
    return pipeline.list_files(config.data.train_files)
  root = os.environ.get('VLM_JAX_DATA', 'data')
  name = (f'synthetic_tokens_v{synthetic.VERSION}_k{config.model.num_visual_tokens}_'
          f'n{config.data.synthetic_videos}_s{config.seed}')
  directory = os.path.join(root, name)
  done = os.path.join(directory, 'DONE')
  if not os.path.exists(done):
    _say(f'writing the synthetic corpus ({config.data.synthetic_videos} videos) to {directory}')
    files = synthetic.write_corpus(
        directory, config.data.synthetic_videos, lambda texts: tokenizer.wordpieces(tok, texts),
        config.model.num_visual_tokens, seed=config.seed)
    with open(done, 'w') as f:
      json.dump({'files': [os.path.basename(p) for p in files]}, f)
  with open(done) as f:
    return [os.path.join(directory, p) for p in json.load(f)['files']]


def _data_state_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, 'data_state', f'step_{step}', f'process_{jax.process_index()}')


def _drop_stale_data_states(workdir: str, keep_steps) -> None:
  directory = os.path.join(workdir, 'data_state')
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if int(name.split('_')[1]) not in keep_steps:
      path = os.path.join(directory, name)
      for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
          os.remove(os.path.join(root, f))
        for d in dirs:
          os.rmdir(os.path.join(root, d))
      os.rmdir(path)


def _check_finite(step: int, metrics: dict, last_good: int | None, workdir: str) -> None:
  for key in ('loss', 'l2_grads'):
    if not np.isfinite(metrics[key]):
      where = (f'the last good checkpoint is step {last_good} in {workdir}/checkpoints'
               if last_good is not None else 'no checkpoint was saved')
      raise TrainingDiverged(f'{key} is {metrics[key]} at step {step}; stopping ({where}). '
                             'Lower config.optim.learning_rate or check the data.')


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains until config.train.num_steps (or `stop_at`); returns the last logged metrics."""
  config_checks.validate(config, jax.device_count(), jax.process_count())
  tok, vocab = load_vocab(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  files = training_files(config, tok)
  setup = build(config, vocab)
  num_steps = config.train.num_steps
  end = min(num_steps, stop_at) if stop_at else num_steps

  # --- Checkpoints: resume from the latest one if there is one.
  manager = ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                           create=True))
  latest = manager.latest_step()
  if latest is None:
    state = setup.create_state(initial_params(setup))
    start = 0
  else:
    state = manager.restore(latest, args=ocp.args.StandardRestore(setup.abstract_state))
    start = int(latest)
    _say(f'resumed from the checkpoint at step {start} in {workdir}')

  # --- Data: each process reads its own files; the iterator resumes too.
  per_process_batch = config.train.global_batch_size // jax.process_count()
  dataset = pipeline.make_dataset(
      files, pipeline.PipelineOptions.from_config(config.data), vocab, per_process_batch,
      seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipeline.BatchIterator(dataset, files)
  if latest is not None:
    batches.restore_state(_data_state_path(workdir, start))

  # --- Metrics: console, metrics.jsonl and TensorBoard, from process 0.
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if is_chief:
    report.truncate_metrics(metrics_path, after_step=start)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = report.MetricWriter(workdir, enabled=is_chief)

  started = time.time()
  last_good = start if latest is not None else None
  window, window_start, logged = [], time.time(), {}
  progress = tqdm.tqdm(total=end, initial=start, desc='train', unit='step',
                       disable=not is_chief, dynamic_ncols=True)
  pending = None  # the previous step's device metrics: read after the next dispatch

  def flush():
    nonlocal pending
    if pending is not None:
      step_done, device_metrics = pending
      host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
      _check_finite(step_done, host, last_good, workdir)
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
    _say(f'SIGTERM: saved the checkpoint at step {step}; run the same command to resume')
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
        'resumed_from_step': start if latest is not None else None,
        'final_step': step,
        'preempted': preempted,
        'checkpoint_steps': sorted(int(s) for s in manager.all_steps()),
        'wall_seconds': time.time() - started,
        'last_metrics': logged,
    })
  manager.close()
  return logged
