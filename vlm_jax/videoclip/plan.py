"""Epoch plans of VideoCLIP training: which videos share a batch, from the current model.

With `data.retrieval`, every training video is embedded by the current model
(mean over sampled pairs of (z_video + z_text) / 2), a faiss IVF index clusters
them and each batch is k videos of one seed's 2k neighbours
(vlm_jax.videoclip.pipeline.retrieval_plan); without it, a random partition.
Each epoch's plan is saved in the workdir, so a resumed run continues the same
epoch with the same batches.
"""

import io
import os

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding

from vlm_jax.data import feature_records
from vlm_jax.train import partitioning
from vlm_jax.videoclip import pipeline as videoclip_pipeline
from vlm_jax.videoclip import step as step_lib


def global_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array every process holds in full -> a sharded global array."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def encode_in_batches(setup: step_lib.Setup, params, inputs: dict[str, np.ndarray],
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


def retrieval_vectors(setup: step_lib.Setup, params, corpus: feature_records.Corpus,
                      epoch: int) -> np.ndarray:
  """[num_videos, hidden]: per video, the mean over sampled pairs of (z_video + z_text) / 2."""
  config = setup.config
  opts = videoclip_pipeline.sampling_options(config)
  per_video = config.data.retrieval_pairs
  parts = [videoclip_pipeline.video_pairs(
      corpus, v, videoclip_pipeline.pair_rng(config.seed, epoch, v, purpose=1), opts, per_video)
           for v in range(len(corpus))]
  inputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  z_video, z_text = encode_in_batches(setup, params, inputs, config.train.encode_batch_size)
  joint = (z_video + z_text) / 2
  return joint.reshape(len(corpus), per_video, -1).mean(axis=1)


def plan_path(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, 'plans', f'epoch_{epoch:04d}.npy')


def epoch_plan(setup: step_lib.Setup, params, corpus: feature_records.Corpus, epoch: int,
               workdir: str) -> np.ndarray:
  """The epoch's [num_batches, k] video indices: read back if saved, else made and saved."""
  path = plan_path(workdir, epoch)
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
