"""benchmarks/cbt_step.py's parity check: its PyTorch reference is the same CBT model.

Parity only, never timing: `tiny,runlocal` shapes, the Flax weights copied into the
reference, dropout off.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))

import cbt_step  # pylint: disable=wrong-import-position,import-error

# runlocal: visual side 6 tensors + one layer's 16, cross-modal side 7 + 16; the text
# BERT (its pooler is not read, so not in the reference) 5 embedding tensors + 2 x 16.
TRAINED_OUTSIDE_TEXT = 45
TEXT_BERT_TENSORS = 2 * 16 + 5


def _parity(train_text: bool) -> dict:
  config = cbt_step.benchmark_config('tiny', train_text=train_text, runlocal=True)
  setup = cbt_step.cbt_step.build(config, devices=jax.devices()[:1])
  params = jax.device_get(cbt_step.cbt_step.initial_params(setup))
  batch = cbt_step.random_batch(config, np.random.default_rng(0))
  return cbt_step.parity(config, setup, params, batch, tolerance=1e-4)  # asserts inside


def test_parity_with_the_text_bert_frozen():
  report = _parity(train_text=False)
  assert report['frozen_text']
  assert report['loss_diff'] <= 1e-4
  assert report['grad_relative_l2_diff'] < 1e-4
  assert report['trained_tensors'] == TRAINED_OUTSIDE_TEXT


def test_parity_with_the_text_bert_trained():
  report = _parity(train_text=True)
  assert not report['frozen_text']
  assert report['grad_relative_l2_diff'] < 1e-4
  assert report['trained_tensors'] == TRAINED_OUTSIDE_TEXT + TEXT_BERT_TENSORS
