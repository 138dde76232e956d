"""benchmarks/clipbert_step.py's and clipbert_loader.py's checks: parity only, never timing.

The step: `tiny,runlocal` shapes, the Flax weights copied into the PyTorch
reference (torchvision trunk in detectron2's layout + transformers BertModel),
dropout off: loss, every trained gradient and two optimizer updates agree. The
loader: on three rendered synthetic videos, the sparse loader's batch holds the
frames that decoding each whole video picks for the same timestamps.
"""

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))

pytest.importorskip('torch')
pytest.importorskip('torchvision')
pytest.importorskip('transformers')

import clipbert_loader  # pylint: disable=wrong-import-position,import-error
import clipbert_step  # pylint: disable=wrong-import-position,import-error

# runlocal's trained tensors. CNN group: res3 ... res5's one block each, conv1-3 and the
# shortcut (the stem, res2 and every FrozenBN affine are frozen), + the grid conv = 13.
# Transformer group: visual embeddings 5 (row, column, token type, LayerNorm x 2), BERT
# embeddings 5, 2 layers x 16, pooler 2, classifier 4 = 48.
TRAINED_CNN, TRAINED_TRANSFORMER = 13, 48
# Stem 3 (kernel, scale, bias) + res2's block 4 x 3 + res3 ... res5's norms 3 x 4 x 2.
FROZEN_FLAX_LEAVES = 39


def test_step_parity_with_the_pytorch_reference():
  config = clipbert_step.benchmark_config('tiny', runlocal=True)
  setup = clipbert_step.step_lib.build(config, devices=jax.devices()[:1])
  params = jax.device_get(clipbert_step.step_lib.initial_params(setup))
  batch = clipbert_step.random_batch(config, np.random.default_rng(0))
  report = clipbert_step.parity(config, setup, params, batch, tolerance=1e-4)  # asserts inside
  assert report['converter_round_trip_max_diff'] <= 1e-5
  assert report['loss_diff'] <= 1e-4
  assert report['grad_relative_l2_diff'] < 1e-4
  assert report['update_relative_l2_diff'] < 1e-4
  assert report['grad_norm_cnn'] > 0
  assert report['trained_tensors'] == TRAINED_CNN + TRAINED_TRANSFORMER
  assert report['frozen_flax_leaves'] == FROZEN_FLAX_LEAVES


def test_the_split_phases_run_the_same_cnn_on_both_sides():
  """--split's phases: the CNN (no dropout in it) gives the same value on both sides;
  every phase of each side runs to a finite value."""
  config = clipbert_step.benchmark_config('tiny', runlocal=True)
  setup = clipbert_step.step_lib.build(config, devices=jax.devices()[:1])
  params = jax.device_get(clipbert_step.step_lib.initial_params(setup))
  batch = clipbert_step.random_batch(config, np.random.default_rng(0))
  reference = clipbert_step.reference_for(config, setup, params)
  phases = clipbert_step.split_steppers(setup, params, batch, reference)
  assert list(phases) == ['cnn', 'cnn_backward', 'joint', 'joint_backward', 'forward',
                          'backward', 'step']
  cnn = {side: run() for side, run in phases['cnn'].items()}
  assert cnn['vlm_jax'] == pytest.approx(cnn['torch'], rel=1e-4)
  for sides in phases.values():
    assert all(np.isfinite(run()) for run in sides.values())


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  folder = tmp_path_factory.mktemp('clipbert_loader')
  return folder, clipbert_loader.render_videos(str(folder / 'corpus'), num_videos=3, seed=5)


@pytest.mark.parametrize('per', ['video', 'step'])
def test_loader_frames_are_whole_decoding_frames(corpus, per):
  folder, video_dir = corpus
  config = clipbert_step.benchmark_config('tiny', runlocal=True, batch=3)
  items = str(folder / f'items_{per}.jsonl')
  num_items = clipbert_loader.write_items(video_dir, items, per)
  assert num_items == 3 if per == 'video' else num_items > 3
  with clipbert_loader.make_builder(config, items) as builder:
    report = clipbert_loader.check_frames(builder, step=1, batch_size=3)
    assert report['rows_compared'] == 3 and report['rows_mismatched'] == [], report
    o = builder.options
    assert report['frames_compared'] == 3 * o.num_clips * o.num_frames
    # Whole decoding decodes every frame of each row's video; the sparse decoder stops
    # after the last sampled one (these videos have one keyframe, so it starts at 0).
    durations = {item.video: builder._probes[item.video][0]  # pylint: disable=protected-access
                 for item in builder.items}
    rows = clipbert_loader.sampled_rows(builder, 1, 3)
    assert report['decoded_frames_whole'] == sum(
        round(durations[video][0] * durations[video][1]) for _, video, _ in rows)
    assert report['frames_compared'] <= report['decoded_frames_sparse']
    assert report['decoded_frames_sparse'] < report['decoded_frames_whole'], report

    if per == 'video':
      # The benchmark's counts: one batch of each path, the same frames delivered.
      import concurrent.futures  # pylint: disable=import-outside-toplevel
      with concurrent.futures.ThreadPoolExecutor(2) as pool:
        times = clipbert_loader.time_loader(builder, pool, [2], 3, rounds=1)
      assert len(times['loader']) == len(times['whole_decode']) == 1
      assert times['loader_frames'] == times['whole_decode_frames'] == report['frames_compared']
      assert times['whole_decoded_frames'] == report['decoded_frames_whole']
