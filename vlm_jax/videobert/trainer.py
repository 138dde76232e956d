"""The VideoBERT trainer: the training files, the sharded step and tf.data batches, on the loop.

  vlm-jax train --config configs/videobert.py:tiny --workdir /tmp/vb

A re-run with the same workdir resumes from the latest checkpoint, at the same
step and the same position of the data stream (the tf.data iterator's state is
saved next to each checkpoint).

Without config.data.train_files it trains on the token-level synthetic corpus
(vlm_jax.data.synthetic), written once under $VLM_JAX_DATA, else WORKDIR/data.

The workdir and the data may be local paths or URLs such as gs://bucket/run:
every file goes through tf.io.gfile (or Orbax, for checkpoints), never through
os-level calls that only know the local disk.
"""

import functools
import json
import os

import jax
import tensorflow as tf
from jax.experimental import multihost_utils

from vlm_jax.data import files as files_lib
from vlm_jax.data import synthetic, tokenizer
from vlm_jax.train import loop, report
from vlm_jax.videobert import checks, pipeline
from vlm_jax.videobert import step as step_lib


def training_files(config, tok, workdir: str | None = None) -> list[str]:
  """The configured TFRecords, or the synthetic corpus (made once, then reused).

  Local paths come back absolute. The synthetic corpus lives under
  synthetic.data_root(workdir): $VLM_JAX_DATA, else WORKDIR/data.
  """
  if config.data.train_files:
    return [p if '://' in p else os.path.abspath(p)
            for p in files_lib.list_files(config.data.train_files)]
  name = (f'synthetic_tokens_v{synthetic.VERSION}_k{config.model.num_visual_tokens}_'
          f'n{config.data.synthetic_videos}_s{config.seed}')
  directory = os.path.join(synthetic.data_root(workdir), name)
  done = os.path.join(directory, 'DONE')

  def write():
    loop.say(f'writing the synthetic corpus ({config.data.synthetic_videos} videos) to '
             f'{directory}')
    files = synthetic.write_corpus(
        directory, config.data.synthetic_videos, lambda texts: tokenizer.wordpieces(tok, texts),
        config.model.num_visual_tokens, seed=config.seed)
    with tf.io.gfile.GFile(done, 'w') as f:
      json.dump({'files': [os.path.basename(p) for p in files]}, f)

  # Process 0 writes it; the others wait, then write their own only if the root
  # is not shared with process 0.
  if jax.process_index() == 0 and not tf.io.gfile.exists(done):
    write()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic corpus')
  if not tf.io.gfile.exists(done):
    write()
  with tf.io.gfile.GFile(done) as f:
    return [os.path.join(directory, p) for p in json.load(f)['files']]


def make_run(config, workdir: str) -> loop.Run:
  """The loop's view of a VideoBERT run: the sharded step and the tf.data batch iterator.

  Raises:
    ConfigError: records whose make-records manifest says their vocabulary does
      not fit the model (checks.records_vocab), before anything is built.
  """
  tok, vocab = step_lib.load_vocab(config)
  files = training_files(config, tok, workdir)
  if config.data.train_files:
    manifests = report.records_manifests(files)
    if not manifests:
      loop.say('no make-records manifest.json beside the training files: their vocabulary '
               'is not checked against the model')
    checks.records_vocab(config, manifests)
  setup = step_lib.build(config, vocab)

  def create_state():
    if config.model.init_checkpoint:
      loop.say(f'text weights from {config.model.init_checkpoint}')
    return setup.create_state(step_lib.initial_params(setup))

  # Each process reads its own share of the files. Made on first use: after the
  # checkpoint is restored, so that the iterator state restored next applies to it.
  @functools.cache
  def iterator() -> pipeline.BatchIterator:
    per_process_batch = config.train.global_batch_size // jax.process_count()
    dataset = pipeline.make_dataset(
        files, pipeline.PipelineOptions.from_config(config.data), vocab, per_process_batch,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
    return pipeline.BatchIterator(dataset, files)

  return loop.Run(
      mesh=setup.mesh, abstract_state=setup.abstract_state, create_state=create_state,
      train_step=setup.train_step, num_steps=config.train.num_steps,
      batches=lambda state, start: iterator(),
      examples_per_step=config.train.global_batch_size,
      manifest={'data_files': files},
      save_data=lambda path: iterator().save_state(path),
      restore_data=lambda path: iterator().restore_state(path))


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains until config.train.num_steps (or `stop_at`); returns the last logged metrics."""
  checks.validate(config, jax.device_count(), jax.process_count())
  workdir = loop.make_workdir(workdir)
  return loop.train(config, workdir, make_run(config, workdir), stop_at=stop_at)
