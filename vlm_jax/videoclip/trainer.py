"""The VideoCLIP trainer: retrieval-augmented epochs of overlapped pairs, on the loop.

  vlm-jax train --config configs/videoclip.py:tiny --workdir runs/vc \\
      --config.data.train_files='records/*.tfrecord'

Each epoch starts with a plan made from the current parameters
(vlm_jax.videoclip.plan): with `data.retrieval`, batches of neighbouring videos;
without it, a random partition. The plan is saved in the workdir, and the batches
of an epoch depend only on (plan, epoch, seed), so a resumed run continues the
same epoch with the same batches. The step is vlm_jax.videoclip.step's.
"""

import jax

from vlm_jax.data import feature_records
from vlm_jax.train import loop, report
from vlm_jax.videoclip import checks
from vlm_jax.videoclip import pipeline as videoclip_pipeline
from vlm_jax.videoclip import plan as plan_lib
from vlm_jax.videoclip import step as step_lib


def with_corpus_size(config, num_videos: int):
  """`config` with train.steps_per_epoch = num_videos // k filled in."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.steps_per_epoch = num_videos // config.data.videos_per_batch
  return config


def make_run(config, workdir: str, files: list[str],
             corpus: feature_records.Corpus) -> loop.Run:
  """The loop's view of a VideoCLIP run of `corpus` (read from `files`); `config` has
  train.steps_per_epoch filled in."""
  setup = step_lib.build(config)
  steps_per_epoch = config.train.steps_per_epoch
  opts = videoclip_pipeline.sampling_options(config)

  def create_state():
    if config.model.init_checkpoint:
      loop.say(f'both towers from {config.model.init_checkpoint}')
    return setup.sharded.create_state(step_lib.initial_params(setup))

  def batches(state, start):
    """Host batches of steps start + 1, ...: each epoch planned as it begins."""
    step = start
    while True:
      epoch, first = divmod(step, steps_per_epoch)
      plan = plan_lib.epoch_plan(setup, state().params, corpus, epoch, workdir)
      dataset = videoclip_pipeline.make_dataset(
          corpus, plan, epoch, config.seed, opts, first, jax.process_index(),
          jax.process_count())
      for host_batch in dataset.as_numpy_iterator():
        host_batch.pop('video_index')
        step += 1
        yield host_batch

  return loop.Run(
      mesh=setup.mesh, abstract_state=setup.sharded.abstract_state, create_state=create_state,
      train_step=setup.train_step, num_steps=config.train.num_epochs * steps_per_epoch,
      batches=batches,
      examples_per_step=config.data.videos_per_batch * config.data.pairs_per_video,
      manifest={'system': 'videoclip', 'data_files': files,
                'videos': len(corpus), 'videos_skipped': corpus.skipped,
                'steps_per_epoch': steps_per_epoch, 'retrieval': bool(config.data.retrieval)},
      log_fields=lambda step: {'epoch': (step - 1) // steps_per_epoch},
      name='train videoclip')


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains for config.train.num_epochs (or until step `stop_at`); returns the last metrics."""
  files = feature_records.training_files(config)
  corpus = feature_records.load_corpus(files)
  config = with_corpus_size(config, len(corpus))
  checks.validate(config, jax.device_count(), jax.process_count(), len(corpus))
  checks.records(config, corpus.feature_dim, step_lib.bert_config(config).vocab_size, files,
                 report.records_manifests(files))
  workdir = loop.make_workdir(workdir)
  loop.say(f'{len(corpus)} videos ({len(corpus.skipped)} without sentences skipped), '
           f'{config.train.steps_per_epoch} batches of {config.data.videos_per_batch} videos x '
           f'{config.data.pairs_per_video} pairs per epoch, {config.train.num_epochs} epochs')
  return loop.train(config, workdir, make_run(config, workdir, files, corpus), stop_at=stop_at)
