"""Zero-shot evaluation metrics: hand-computed cases, the ranking oracle, DP vs brute force."""

import itertools
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax.data import windows as windows_lib
from vlm_jax.metrics import moments
from vlm_jax.metrics import retrieval
from vlm_jax.metrics import segmentation
from vlm_jax.metrics import step_localization
from vlm_jax.videoclip import inference as videoclip_inference


# Retrieval ----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def ranking_oracle(realdata):
  with open(realdata / 'oracles' / 'retrieval_ranking_oracle.json', encoding='utf-8') as f:
    return json.load(f)


def test_ranks_match_oracle_case_1(ranking_oracle):
  case = ranking_oracle['case_1_similarity_to_ranks']
  sim = np.array(case['similarity_matrix_rows_are_queries_ground_truth_is_diagonal'])
  # No ties in this case, so every convention agrees.
  for ties in retrieval.TIES:
    np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim, ties=ties),
                                  case['expected_ranks_1_based'])
  np.testing.assert_array_equal(retrieval.ranks_from_embeddings(sim, np.eye(5), block=2),
                                case['expected_ranks_1_based'])


def test_metrics_match_oracle_case_2(ranking_oracle):
  case = ranking_oracle['case_2_ranks_to_metrics']
  ranks = np.array(case['ranks_1_based'], np.float64)
  m = retrieval.retrieval_metrics(ranks, ks=(1, 5, 10, 11, 15))
  assert m['mean_rank'] == pytest.approx(case['expected_mean_rank'])
  # Our convention: numpy median (MMPT / CLIP4Clip); the source's upper median is 8.
  assert m['median_rank'] == 7.5
  assert retrieval.median_rank(ranks, 'upper') == case['expected_median_rank_in_source']
  for k, value in case['recall_at_k_in_source'].items():
    assert m[f'R@{k}'] == pytest.approx(value)
  assert m['count'] == 12


def test_ties_by_hand():
  sim = np.array([[0.5, 0.5, 0.1],
                  [0.2, 0.9, 0.9],
                  [0.0, 0.3, 0.2]])
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim), [2, 2, 2])
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim, ties='optimistic'),
                                [1, 1, 2])
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim, ties='mean'),
                                [1.5, 1.5, 2])
  # A collapsed model (all scores equal) ranks last, not first.
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(np.ones((3, 3))), [3, 3, 3])


def test_id_mapping_ground_truth():
  sim = np.array([[0.1, 0.7, 0.3],
                  [0.9, 0.8, 0.0]])
  # Query 0 -> item 2 (rank 2), query 1 -> item 1 (rank 2), query 1 -> item 0 (rank 1).
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim, np.array([2, 1])), [2, 2])
  np.testing.assert_array_equal(retrieval.ranks_from_similarity(sim, np.array([2, 0])), [2, 1])


def test_faiss_agrees_with_numpy():
  rng = np.random.default_rng(0)
  text = rng.standard_normal((200, 16)).astype(np.float32)
  video = rng.standard_normal((300, 16)).astype(np.float32)
  truth = rng.permutation(300)[:200]
  exact = retrieval.ranks_from_embeddings(text, video, truth, block=64)
  np.testing.assert_array_equal(retrieval.ranks_from_faiss(text, video, 300, truth), exact)
  top10 = retrieval.ranks_from_faiss(text, video, 10, truth)
  within = exact <= 10
  np.testing.assert_array_equal(top10[within], exact[within])
  assert np.all(np.isinf(top10[~within]))
  a, b = retrieval.retrieval_metrics(exact), retrieval.retrieval_metrics(top10)
  for k in (1, 5, 10):
    assert a[f'R@{k}'] == b[f'R@{k}']
  assert b['mean_rank'] is None  # unknown beyond the top 10
  assert a['mean_rank'] == pytest.approx(float(np.mean(exact)))


def test_faiss_censors_a_tie_at_the_cut():
  text = np.array([[1.0, 0.0]], np.float32)
  video = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
  # Three equal scores, k = 2: the pessimistic rank (3) lies beyond the list.
  assert np.isinf(retrieval.ranks_from_faiss(text, video, 2)[0])
  assert retrieval.ranks_from_faiss(text, video, 2, ties='optimistic')[0] == 1
  assert retrieval.ranks_from_faiss(text, video, 3)[0] == 3


def test_median_with_censored_ranks():
  assert retrieval.median_rank(np.array([1, 2, 3, np.inf])) == 2.5
  assert retrieval.median_rank(np.array([1, np.inf, np.inf])) is None


def test_multiple_choice_by_hand():
  scores = np.array([[0.1, 0.9, 0.3],
                     [0.5, 0.5, 0.2],
                     [0.7, 0.1, 0.0]])
  answers = np.array([1, 0, 1])
  assert retrieval.multiple_choice_accuracy(scores, answers) == pytest.approx(1 / 3)
  assert retrieval.multiple_choice_accuracy(scores, answers, 'optimistic') == pytest.approx(2 / 3)
  assert retrieval.multiple_choice_accuracy(scores, answers, 'mean') == pytest.approx(0.5)


# Action segmentation ------------------------------------------------------------------------

# Exactly representable values, so that "== gamma" is an exact tie.
LABELS = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.75]], np.float32)


def test_background_threshold_by_hand():
  # Pairwise dots: 0, 0.5, 0.75.
  assert segmentation.background_threshold(LABELS) == 0.75


def test_predict_seconds_by_hand():
  states = np.array([[2, 0], [0, 1], [0.5, 0.5], [1, 1], [0, 0.75]], np.float32)
  # Best scores: 2 (label 0), 1 (label 1), 0.625 < gamma, 1.25 (label 2), 0.75 == gamma.
  np.testing.assert_array_equal(segmentation.predict_seconds(states, LABELS, 0.75),
                                [1, 2, 0, 3, 0])


def test_seconds_labels_by_hand():
  np.testing.assert_array_equal(
      segmentation.seconds_labels(6, [(0.5, 2.2, 1), (4.0, 5.0, 3), (5.5, 9.0, 2)]),
      [1, 1, 1, 0, 3, 2])


def test_frame_accuracy_by_hand():
  m = segmentation.frame_accuracy([np.array([1, 0, 1]), np.array([0, 0])],
                                  [np.array([1, 1, 1]), np.array([0, 2])])
  assert m == dict(frame_accuracy=0.6, background_baseline_accuracy=0.2, seconds=5,
                   labelled_fraction_predicted=0.4)


# Step localization --------------------------------------------------------------------------


def brute_force(cost: np.ndarray) -> tuple[float, tuple[int, ...]]:
  t_len, k_len = cost.shape
  return min((sum(cost[t, k] for k, t in enumerate(seconds)), seconds)
             for seconds in itertools.combinations(range(t_len), k_len))


def test_dp_by_hand():
  # Per-step argmins (second 1 for step 0, second 0 for step 1) break the order;
  # the best ordered placement is (1, 2) with cost 9.
  cost = np.array([[5.0, 0.0], [0.0, 9.0], [9.0, 9.0]])
  np.testing.assert_array_equal(step_localization.ordered_assignment(cost), [1, 2])


def test_dp_matches_brute_force():
  rng = np.random.default_rng(1)
  for _ in range(300):
    t_len = int(rng.integers(1, 9))
    k_len = int(rng.integers(1, t_len + 1))
    cost = -step_localization.log_softmax(rng.standard_normal((t_len, k_len)) * 3, axis=1)
    seconds = step_localization.ordered_assignment(cost)
    best, best_seconds = brute_force(cost)
    assert cost[seconds, np.arange(k_len)].sum() == pytest.approx(best)
    assert tuple(seconds) == best_seconds  # continuous random costs: a unique optimum
  with pytest.raises(ValueError):
    step_localization.ordered_assignment(np.zeros((2, 3)))


def test_log_softmax_by_hand():
  np.testing.assert_allclose(step_localization.log_softmax(np.array([[0.0, math.log(3)]])),
                             [[math.log(0.25), math.log(0.75)]])


def test_recall_by_hand():
  y_true = step_localization.ground_truth_matrix(5, 2, [(1, 0.4, 1.5), (2, 3.0, 10.0)])
  np.testing.assert_array_equal(y_true, [[1, 0], [1, 0], [0, 0], [0, 1], [0, 1]])
  y_pred = step_localization.assignment_matrix(np.array([1, 2]), 5)
  assert step_localization.video_counts(y_true, y_pred) == (1, 2)
  recalls = step_localization.task_recalls({'a': [(1, 2), (2, 2)], 'b': [(0, 3)],
                                            'c': [(0, 0)]})
  assert recalls == {'a': 0.75, 'b': 0.0}


# Moment ranking -----------------------------------------------------------------------------


def test_candidates():
  assert len(moments.CANDIDATES) == 21
  assert moments.CANDIDATES[:7] == ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (0, 1))
  assert moments.CANDIDATES[-1] == (4, 5)


def test_iou_by_hand():
  assert moments.iou((0, 1), (1, 2)) == pytest.approx(1 / 3)
  assert moments.iou((0, 0), (2, 3)) == 0
  assert moments.iou((2, 4), (2, 4)) == 1


def test_query_scores_by_hand():
  ranking = list(moments.CANDIDATES)
  # Ranks 1, 1, 2, 20 -> mean of the best three 4/3; IoUs 1, 1, 0, 0 -> 2/3.
  rank, overlap = moments.query_scores(ranking, [(0, 0), (0, 0), (1, 1), (3, 5)])
  assert rank == pytest.approx(4 / 3)
  assert overlap == pytest.approx(2 / 3)
  ranking = [(2, 2)] + [m for m in moments.CANDIDATES if m != (2, 2)]
  assert moments.query_scores(ranking, [(2, 2), (2, 2), (2, 2), (0, 5)]) == (1.0, 1.0)
  m = moments.didemo_metrics([4 / 3, 1.0, 6.0], [2 / 3, 1.0, 0.0])
  assert m['rank@1'] == pytest.approx(1 / 3)
  assert m['rank@5'] == pytest.approx(2 / 3)
  assert m['mIoU'] == pytest.approx(5 / 9)


def test_moment_embeddings_short_video():
  states = np.arange(12, dtype=np.float32)[:, None]  # 12 s: chunks 0, 1 and 2 (partial)
  vectors, valid = moments.moment_embeddings(states)
  index = {m: i for i, m in enumerate(moments.CANDIDATES)}
  assert vectors[index[(0, 0)], 0] == 2 and vectors[index[(2, 2)], 0] == 10.5
  assert vectors[index[(0, 1)], 0] == 4.5 and vectors[index[(0, 5)], 0] == 5.5
  assert valid.sum() == 3 + 12 and not valid[index[(3, 3)]]
  ranking = moments.rank_moments(vectors[:, 0], valid)
  assert len(ranking) == 15 and ranking[0] == (2, 2)
  # A ground-truth moment past the end ranks after every candidate.
  assert moments.query_scores(ranking, [(4, 4)])[0] == 16


# MMPT's windows (what `vlm-jax encode-video` writes for these metrics) -------------------


class _ContextModel:
  """A stand-in VideoCLIP whose outputs depend on the whole window, so overlaps differ.

  video_states: each second's features plus the mean of its window's real
  seconds; encode_video: that mean.
  """

  def apply(self, variables, features, mask, method):
    del variables
    weights = mask[..., None].astype(features.dtype)
    context = ((features * weights).sum(1, keepdims=True)
               / jnp.maximum(weights.sum(1, keepdims=True), 1))
    return features + context if method == 'video_states' else context[:, 0]


def _loaded(**eval_fields):
  from configs import videoclip as videoclip_config  # pylint: disable=import-outside-toplevel
  config = videoclip_config.get_config('tiny,runlocal')
  config.data.max_video_seconds = 4
  for name, value in eval_fields.items():
    config.eval[name] = value
  return videoclip_inference.Loaded(config, _ContextModel(), {}, 0, None)


def test_window_starts_follow_mmpts_aligner():
  assert windows_lib.window_starts(70, 32, 16) == [0, 16, 32, 48]
  assert windows_lib.window_starts(32, 32, 16) == [0]
  assert windows_lib.window_starts(33, 32, 16) == [0, 16]
  assert windows_lib.window_starts(70, 32, 32) == [0, 32, 64]


def test_per_second_logits_average_overlapping_windows():
  rng = np.random.default_rng(0)
  video = rng.normal(size=(7, 2)).astype(np.float32)
  labels = rng.normal(size=(3, 2))

  def window_logits(start, end):
    piece = video[start:end].astype(np.float64)
    return (piece + piece.mean(0)) @ labels.T

  # Window 4 s, stride 2: windows [0, 4), [2, 6), [4, 7).
  w0, w1, w2 = window_logits(0, 4), window_logits(2, 6), window_logits(4, 7)
  expected = np.concatenate([w0[:2], (w0[2:] + w1[:2]) / 2, (w1[2:] + w2[:2]) / 2, w2[2:]])
  states = videoclip_inference.video_states(_loaded(states_stride=2), [video])[0]
  np.testing.assert_allclose(states @ labels.T, expected, atol=1e-5)
  # Stride = window (the earlier protocol): consecutive windows [0, 4), [4, 7).
  states = videoclip_inference.video_states(_loaded(states_stride=4), [video])[0]
  np.testing.assert_allclose(states @ labels.T,
                             np.concatenate([w0, window_logits(4, 7)]), atol=1e-5)


def test_pooled_embedding_keeps_the_first_window():
  video = np.arange(14, dtype=np.float32).reshape(7, 2)
  # MMPT: the first 4 s only -> mean of rows 0..3 = [3, 4].
  np.testing.assert_allclose(videoclip_inference.encode_videos(_loaded(), [video])[0], [3, 4])
  # 'mean': windows [0, 4) and [4, 7) -> ([3, 4] + [10, 11]) / 2.
  np.testing.assert_allclose(
      videoclip_inference.encode_videos(_loaded(pooled_windows='mean'), [video])[0], [6.5, 7.5])
