"""Top-k accuracy on hand-made cases."""

import numpy as np
import pytest

from vlm_jax.metrics import classification


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
