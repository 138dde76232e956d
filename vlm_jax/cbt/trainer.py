"""The CBT trainer: masked windows of clip features and their sentences, on the one loop.

  vlm-jax train --config configs/cbt.py:tiny --workdir runs/cbt \\
      --config.data.train_files='records/*.tfrecord' --config.model.feature_dim=1024

The batch of step s depends only on (seed, s) (vlm_jax.cbt.pipeline), so a
resumed run sees the batches a straight one would, with no data state to save.
The step is vlm_jax.cbt.step's.
"""

import dataclasses

import jax
import numpy as np

from vlm_jax.cbt import checks
from vlm_jax.data import feature_stats as features_lib
from vlm_jax.cbt import pipeline as cbt_pipeline
from vlm_jax.cbt import step as step_lib
from vlm_jax.data import feature_records
from vlm_jax.train import loop


def window_options(config) -> cbt_pipeline.WindowOptions:
  """The windows of a CBT config: its data fields and its vocab's [CLS] / [SEP] / [MASK]."""
  d, ids = config.data, step_lib.special_ids(config)
  return cbt_pipeline.WindowOptions(
      cls_id=ids['[CLS]'], sep_id=ids['[SEP]'], num_clips=d.num_clips,
      max_text_tokens=d.max_text_tokens, mask_rate=d.mask_rate, mask_span=d.mask_span,
      # The sentence is masked only for the text MLM term (0: no text-mask arrays).
      text_mask_rate=d.text_mask_rate if step_lib.text_mlm(config) else 0.0,
      mask_id=ids['[MASK]'], vocab_size=step_lib.text_config(config).vocab_size)


def make_run(config, files: list[str], corpus: feature_records.Corpus) -> loop.Run:
  """The loop's view of a CBT run of `corpus` (read from `files`)."""
  setup = step_lib.build(config)
  opts = window_options(config)
  t = config.train

  def create_state():
    if config.model.init_checkpoint:
      loop.say(f'the text BERT from {config.model.init_checkpoint}')
    return setup.sharded.create_state(step_lib.initial_params(setup))

  def batches(state, start):
    del state  # batches depend on the step alone
    dataset = cbt_pipeline.make_dataset(corpus, config.seed, t.global_batch_size, opts, start,
                                        t.num_steps, jax.process_index(), jax.process_count())
    for host_batch in dataset.as_numpy_iterator():
      host_batch.pop('video_index')
      yield host_batch

  return loop.Run(
      mesh=setup.mesh, abstract_state=setup.sharded.abstract_state, create_state=create_state,
      train_step=setup.train_step, num_steps=t.num_steps, batches=batches,
      examples_per_step=t.global_batch_size,
      manifest={'system': 'cbt', 'data_files': files, 'videos': len(corpus),
                'videos_skipped': corpus.skipped},
      name='train cbt')


def standardized(corpus: feature_records.Corpus, workdir: str) -> feature_records.Corpus:
  """The corpus with standardised features (vlm_jax.data.feature_stats), by the statistics
  saved in `workdir` or, on a first run, computed from the corpus and saved there."""
  stats = features_lib.load(workdir)
  if stats is None:
    stats = features_lib.corpus_stats(corpus.features)
    features_lib.save(workdir, stats)
  # float16 as the records hold them: a corpus-sized copy at half the bytes.
  return dataclasses.replace(corpus, features=[stats.apply(f).astype(np.float16)
                                               for f in corpus.features])


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains for config.train.num_steps (or until step `stop_at`); returns the last metrics."""
  files = feature_records.training_files(config)
  corpus = feature_records.load_corpus(files)
  checks.validate(config, jax.device_count(), jax.process_count(), len(corpus))
  checks.records(config, corpus.feature_dim, files)
  workdir = loop.make_workdir(workdir)
  if config.data.get('standardize_features', False):
    corpus = standardized(corpus, workdir)
  loop.say(f'{len(corpus)} videos ({len(corpus.skipped)} without sentences skipped), '
           f'{config.train.num_steps} steps of {config.train.global_batch_size} windows x '
           f'{config.data.num_clips} clips')
  return loop.train(config, workdir, make_run(config, files, corpus), stop_at=stop_at)
