"""Top-k accuracy on hand-made cases."""

import numpy as np
import pytest

from vlm_jax.metrics import classification, intervals


def test_topk_by_hand():
  scores = np.array([[0.1, 0.7, 0.2],   # label 1: rank 1
                     [0.5, 0.3, 0.2],   # label 2: rank 3
                     [0.2, 0.5, 0.3]])  # label 2: rank 2
  labels = np.array([1, 2, 2])
  assert classification.topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
  assert classification.topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
  assert classification.topk_accuracy(scores, labels, 3) == 1.0


def test_ties_count_against_the_label():
  constant = np.zeros((4, 5))
  labels = np.array([0, 1, 2, 3])
  assert classification.topk_accuracy(constant, labels, 1) == 0.0
  assert classification.topk_accuracy(constant, labels, 5) == 1.0


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError):
    classification.topk_accuracy(np.zeros((3, 2)), np.zeros(4, int), 1)


def test_chance():
  assert classification.chance(8, 1) == 0.125
  assert classification.chance(8, 5) == 0.625
  assert classification.chance(3, 5) == 1.0


def test_segment_tokens_and_file_errors(tmp_path):
  from vlm_jax.data import segments  # pylint: disable=import-outside-toplevel
  tokens = np.array([5, 6, 7, 8])
  times = np.array([[0, 1.5], [1.5, 3], [3, 4.5], [4.5, 6]])
  np.testing.assert_array_equal(segments.tokens_in(tokens, times, 1.0, 4.0), [6, 7])
  np.testing.assert_array_equal(segments.tokens_in(tokens, times, 5.9, 6.0), [8])
  good = tmp_path / 'good.jsonl'
  good.write_text('{"video_id": "a", "start": 0, "end": 2, "verb": "cut"}\n\n')
  assert segments.load(str(good))[0]['verb'] == 'cut'
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"video_id": "a", "start": 0, "end": 2}\n{"video_id": "b", "start": 1}\n')
  with pytest.raises(segments.SegmentsError, match=r'bad.jsonl:2: missing field .end.'):
    segments.load(str(bad))


def test_topk_correct_by_hand():
  scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
  labels = np.array([0, 2, 1])
  # Row 1: the label (0.3) is second; row 2: tied with class 0, so counted after it.
  np.testing.assert_array_equal(classification.topk_correct(scores, labels, 1),
                                [True, False, False])
  np.testing.assert_array_equal(classification.topk_correct(scores, labels, 2),
                                [True, True, True])


def test_bootstrap_interval_matches_a_plain_resampling_and_the_normal_approximation():
  rng = np.random.default_rng(3)
  correct = rng.random(260) < 0.4
  low, high = intervals.bootstrap_interval(correct)
  # Oracle 1: resample the items with NumPy and take the 2.5 and 97.5 percentiles.
  means = correct[rng.integers(0, len(correct), (20000, len(correct)))].mean(1)
  np.testing.assert_allclose([low, high], np.percentile(means, [2.5, 97.5]), atol=0.01)
  # Oracle 2: p +- 1.96 sqrt(p (1 - p) / n), about +-6 points at n = 260.
  p = correct.mean()
  half = 1.96 * np.sqrt(p * (1 - p) / len(correct))
  np.testing.assert_allclose([low, high], [p - half, p + half], atol=0.01)
  assert 0.05 < high - low < 0.13
  assert intervals.bootstrap_interval(np.zeros(10)) == (0.0, 0.0)
  assert intervals.describe({'top1': 0.5, 'top1_ci95': [0.4, 0.61]}, 'top1') == '50.0% [40.0, 61.0]'
  with pytest.raises(ValueError, match='N >= 2'):
    intervals.bootstrap_interval(np.ones(1))
