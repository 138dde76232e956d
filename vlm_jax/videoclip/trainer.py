"""The VideoCLIP trainer: retrieval-augmented epochs of overlapped pairs, contrastive loss.

  vlm-jax train --config configs/videoclip.py:tiny --workdir runs/vc \\
      --config.data.train_files='records/*.tfrecord'

Each epoch starts with a plan (vlm_jax.videoclip.pipeline): with
`data.retrieval`, every training video is embedded by the current model (mean
over sampled pairs of (z_video + z_text) / 2), a faiss IVF index clusters them
and each batch is k videos of one seed's 2k neighbours; without it, a random
partition. The plan is saved in the workdir, so a resumed run continues the
same epoch with the same batches. The loss spans the global batch: with the
batch sharded over the mesh's data axis, XLA gathers the embeddings.
"""

import dataclasses
import io
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow as tf
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax import config_checks
from vlm_jax.convert import hf_bert
from vlm_jax.data import files as files_lib
from vlm_jax.models import bert
from vlm_jax.train import checkpoints, contrastive, optim, partitioning, report
from vlm_jax.train.loop import PreemptionWatcher, check_finite, say
from vlm_jax.videoclip import model as videoclip
from vlm_jax.videoclip import pipeline as videoclip_pipeline


@dataclasses.dataclass
class Setup:
  """A VideoCLIP model on a mesh, its optimizer and its jitted functions."""
  config: Any
  mesh: Mesh
  model: videoclip.VideoClip
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  sharded: partitioning.ShardedState
  train_step: Callable[[partitioning.TrainState, dict], tuple[partitioning.TrainState, dict]]
  # (params, features, feature_mask, input_ids, attention_mask) -> (z_video, z_text), replicated
  encode_pairs: Callable[..., tuple[jax.Array, jax.Array]]


def bert_config(config) -> bert.BertConfig:
  """The text tower's shape: the init checkpoint's when there is one, else the config's."""
  m = config.model
  numerics = dict(dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
                  dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype), remat=m.remat,
                  attention_impl=m.attention_impl)
  if m.init_checkpoint:
    return hf_bert.read_config(hf_bert.resolve(m.init_checkpoint), **numerics)
  return dataclasses.replace(bert.BertConfig.from_model_config(m, m.text_vocab_size), **numerics)


def build(config, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings, and the jitted train step and pair encoder."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  model = videoclip.VideoClip(bert_config(config), config.model.video_layers)
  d = config.data
  num_steps = config.train.num_epochs * max(1, config.train.steps_per_epoch)
  tx, schedule = optim.make(config.optim, num_steps)
  seconds, text_len = d.max_video_seconds, d.text_tokens_cap + 2

  def boxed_init(rng):
    return model.init({'params': rng}, jnp.zeros((1, seconds, config.model.feature_dim)),
                      jnp.ones((1, seconds), jnp.int32), jnp.ones((1, text_len), jnp.int32),
                      jnp.ones((1, text_len), jnp.int32))['params']

  sharded = partitioning.sharded_state(boxed_init, tx, mesh, axis_rules)
  temperature, seed, rng_impl = config.model.temperature, config.seed, config.train.dropout_rng

  def step_fn(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=rng_impl), state.step)

    def loss_fn(params):
      z_video, z_text = model.apply(
          {'params': params}, batch['features'], batch['feature_mask'], batch['input_ids'],
          batch['attention_mask'], deterministic=False, rngs={'dropout': rng})
      return contrastive.symmetric_infonce(z_video, z_text, temperature)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(loss=loss, l2_grads=optax.tree.norm(grads),
                   l2_params=optax.tree.norm(params), learning_rate=schedule(state.step))
    return partitioning.TrainState(state.step + 1, params, opt_state), metrics

  batch_sharding = partitioning.batch_sharding(mesh)
  train_step = sharded.in_mesh(jax.jit(
      step_fn, in_shardings=(sharded.state_shardings, batch_sharding),
      out_shardings=(sharded.state_shardings, None), donate_argnums=0))
  replicated = NamedSharding(mesh, PartitionSpec())
  encode_pairs = sharded.in_mesh(jax.jit(
      lambda params, *inputs: model.apply({'params': params}, *inputs),
      in_shardings=(sharded.param_shardings,) + (batch_sharding,) * 4,
      out_shardings=(replicated, replicated)))
  return Setup(config, mesh, model, tx, schedule, sharded, train_step, encode_pairs)


def initial_params(setup: Setup) -> Any:
  """Random init, then both towers from the config's BERT checkpoint (if any)."""
  config = setup.config
  params = setup.sharded.init_params(jax.random.key(config.seed))
  if not config.model.init_checkpoint:
    return params
  _, bert_params, _ = hf_bert.load(config.model.init_checkpoint)
  host = videoclip.with_pretrained(jax.device_get(params), bert_params,
                                   config.model.video_layers)
  return jax.device_put(host, setup.sharded.param_shardings)


def global_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array every process holds in full -> a sharded global array."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def encode_in_batches(setup: Setup, params, inputs: dict[str, np.ndarray],
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(z_video, z_text) [n, hidden] of n pairs, in fixed-size padded batches."""
  data_size = setup.mesh.shape['data']
  batch_size = -(-batch_size // data_size) * data_size
  names = ('features', 'feature_mask', 'input_ids', 'attention_mask')
  n = len(inputs['input_ids'])
  sharding = partitioning.batch_sharding(setup.mesh)
  outputs = []
  for start in range(0, n, batch_size):
    chunk = [inputs[k][start:start + batch_size] for k in names]
    pad = batch_size - len(chunk[0])
    # Padding rows get one second and [CLS] so that no mean divides by zero.
    chunk = [np.concatenate([c, np.ones((pad,) + c.shape[1:], c.dtype)]) for c in chunk]
    z_video, z_text = setup.encode_pairs(params, *(global_array(c, sharding) for c in chunk))
    outputs.append((np.asarray(z_video)[:batch_size - pad], np.asarray(z_text)[:batch_size - pad]))
  return (np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))


def retrieval_vectors(setup: Setup, params, corpus: videoclip_pipeline.Corpus,
                      epoch: int) -> np.ndarray:
  """[num_videos, hidden]: per video, the mean over sampled pairs of (z_video + z_text) / 2."""
  config = setup.config
  opts = videoclip_pipeline.sampling_options(config.data)
  per_video = config.data.retrieval_pairs
  parts = [videoclip_pipeline.video_pairs(
      corpus, v, videoclip_pipeline.pair_rng(config.seed, epoch, v, purpose=1), opts, per_video)
           for v in range(len(corpus))]
  inputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  z_video, z_text = encode_in_batches(setup, params, inputs, config.train.encode_batch_size)
  joint = (z_video + z_text) / 2
  return joint.reshape(len(corpus), per_video, -1).mean(axis=1)


def _plan_path(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, 'plans', f'epoch_{epoch:04d}.npy')


def epoch_plan(setup: Setup, params, corpus: videoclip_pipeline.Corpus, epoch: int,
               workdir: str) -> np.ndarray:
  """The epoch's [num_batches, k] video indices: read back if saved, else made and saved."""
  path = _plan_path(workdir, epoch)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      return np.load(io.BytesIO(f.read()))
  d, seed = setup.config.data, setup.config.seed
  rng = np.random.default_rng([seed, epoch, 2])
  if d.retrieval:
    vectors = retrieval_vectors(setup, params, corpus, epoch)
    plan = videoclip_pipeline.retrieval_plan(vectors, d.videos_per_batch, rng, d.retrieval_lists)
  else:
    plan = videoclip_pipeline.random_plan(len(corpus), d.videos_per_batch, rng)
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(os.path.dirname(path))
    buffer = io.BytesIO()
    np.save(buffer, plan)
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(buffer.getvalue())
  return plan


def load_training_corpus(config) -> videoclip_pipeline.Corpus:
  if not config.data.train_files:
    raise config_checks.ConfigError(
        'config.data.train_files: a glob of VideoCLIP TFRecords is required '
        '(vlm-jax make-records --config.format=videoclip)')
  return videoclip_pipeline.load_corpus(files_lib.list_files(config.data.train_files))


def with_corpus_size(config, num_videos: int):
  """`config` with train.steps_per_epoch = num_videos // k filled in."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.steps_per_epoch = num_videos // config.data.videos_per_batch
  return config


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains for config.train.num_epochs (or until step `stop_at`); returns the last metrics."""
  corpus = load_training_corpus(config)
  config = with_corpus_size(config, len(corpus))
  config_checks.validate_videoclip(config, jax.device_count(), jax.process_count(), len(corpus))
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)  # Orbax wants absolute local paths
  tf.io.gfile.makedirs(workdir)
  is_chief = jax.process_index() == 0
  setup = build(config)
  steps_per_epoch = config.train.steps_per_epoch
  num_steps = config.train.num_epochs * steps_per_epoch
  end = min(num_steps, stop_at) if stop_at else num_steps
  opts = videoclip_pipeline.sampling_options(config.data)

  manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  state, start, resumed = checkpoints.restore_or_create(
      manager, setup.sharded.abstract_state,
      lambda: setup.sharded.create_state(initial_params(setup)))
  if resumed:
    say(f'resumed from the checkpoint at step {start} in {workdir}')
  elif config.model.init_checkpoint:
    say(f'both towers from {config.model.init_checkpoint}')

  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  writer = report.open_run(workdir, config, start, enabled=is_chief)
  say(f'{len(corpus)} videos ({len(corpus.skipped)} without sentences skipped), '
      f'{steps_per_epoch} batches of {config.data.videos_per_batch} videos x '
      f'{config.data.pairs_per_video} pairs per epoch, {config.train.num_epochs} epochs')

  started = time.time()
  last_good = start if resumed else None
  window, window_start, logged = [], time.time(), {}
  progress = tqdm.tqdm(total=end, initial=start, desc='train videoclip', unit='step',
                       disable=not is_chief, dynamic_ncols=True)
  watcher = PreemptionWatcher()
  preempted, step = False, start
  try:
    while step < end and not preempted:
      epoch, first = divmod(step, steps_per_epoch)
      plan = epoch_plan(setup, state.params, corpus, epoch, workdir)
      dataset = videoclip_pipeline.make_dataset(
          corpus, plan, epoch, config.seed, opts, first, jax.process_index(),
          jax.process_count())
      for host_batch in dataset.as_numpy_iterator():
        step += 1
        host_batch.pop('video_index')
        state, metrics = setup.train_step(state, partitioning.device_batch(host_batch,
                                                                           setup.mesh))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step, metrics, last_good, workdir)
        window.append(metrics)
        progress.update(1)
        preempted = watcher.reached(step)
        is_last = step == end or preempted
        if step % config.train.log_every == 0 or is_last:
          elapsed = time.time() - window_start
          logged = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
          logged.update(epoch=epoch, steps_per_second=len(window) / elapsed)
          writer.write(step, logged)
          progress.set_postfix(loss=f'{logged["loss"]:.3f}', epoch=epoch)
          window, window_start = [], time.time()
        if step % config.train.checkpoint_every == 0 or is_last:
          manager.save(step, args=ocp.args.StandardSave(state))
          last_good = step
        if is_last:
          break
  finally:
    watcher.close()
    progress.close()
    manager.wait_until_finished()
  if preempted:
    say(f'SIGTERM: saved the checkpoint at step {step}; run the same command to resume')
  writer.close()
  if is_chief:
    report.plot_curves(metrics_path, os.path.join(workdir, 'curves.png'))
    report.write_manifest(os.path.join(workdir, 'manifest.json'), {
        'command': 'train', 'system': 'videoclip', 'workdir': workdir,
        'data_files': config.data.train_files, 'videos': len(corpus),
        'videos_skipped': corpus.skipped, 'steps_per_epoch': steps_per_epoch,
        'retrieval': bool(config.data.retrieval),
        'devices': [str(d) for d in jax.devices()],
        'mesh': dict(zip(setup.mesh.axis_names, setup.mesh.devices.shape)),
        'resumed_from_step': start if resumed else None, 'final_step': step,
        'preempted': preempted, 'checkpoint_steps': sorted(int(s) for s in manager.all_steps()),
        'wall_seconds': time.time() - started, 'last_metrics': logged,
    })
  manager.close()
  return logged

