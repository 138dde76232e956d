"""Cross-encoder evaluation: a hand-made score matrix, the shared ranking oracle, QA accuracy."""

import json

import numpy as np
import pytest

from vlm_jax.evaluate import cross_retrieval

# 5 captions of 3 videos: captions 0, 1 show video 0; 2 video 1; 3, 4 video 2.
TEXT_TO_VIDEO = np.array([0, 0, 1, 2, 2])
SCORES = np.array([
    # video 0  1    2
    [0.9, 0.1, 0.2],   # caption 0: its video first           -> t2v rank 1
    [0.3, 0.8, 0.5],   # caption 1: videos 1 and 2 above      -> 3
    [0.7, 0.6, 0.1],   # caption 2: video 0 above             -> 2
    [0.2, 0.4, 0.3],   # caption 3: video 1 above             -> 2
    [0.1, 0.0, 0.95],  # caption 4: first                     -> 1
])
# Video 0's best own caption is 0 (0.9; caption 1's 0.3 is left out): rank 1.
# Video 1's caption 2 (0.6) is behind captions 1 (0.8): rank 2.
# Video 2's best own is caption 4 (0.95): rank 1, caption 3 left out.
T2V_RANKS, V2T_RANKS = [1, 3, 2, 2, 1], [1, 2, 1]


def test_hand_made_matrix_ranks_both_ways():
  np.testing.assert_array_equal(
      cross_retrieval.text_to_video_ranks(SCORES, TEXT_TO_VIDEO), T2V_RANKS)
  np.testing.assert_array_equal(
      cross_retrieval.video_to_text_ranks(SCORES, TEXT_TO_VIDEO), V2T_RANKS)
  m = cross_retrieval.retrieval_metrics(SCORES, TEXT_TO_VIDEO)
  t2v, v2t = m['text_to_video'], m['video_to_text']
  assert (t2v['R@1'], t2v['R@5'], t2v['median_rank'], t2v['mean_rank'], t2v['count']) == (
      pytest.approx(2 / 5), 1.0, 2.0, pytest.approx(9 / 5), 5)
  assert (v2t['R@1'], v2t['median_rank'], v2t['mean_rank'], v2t['count']) == (
      pytest.approx(2 / 3), 1.0, pytest.approx(4 / 3), 3)
  low, high = t2v['R@1_ci95']
  assert 0.0 <= low <= 0.4 <= high <= 1.0


def test_other_own_captions_never_push_a_video_down_but_ties_with_others_do():
  # Video 0 has captions 0 and 1; caption 1 scores above caption 0 and ties with caption 2.
  scores = np.array([[0.5, 0.0], [0.9, 0.0], [0.9, 1.0]])
  text_to_video = np.array([0, 0, 1])
  # Best own caption (1, 0.9) ties with caption 2 of video 1: pessimistic 2, optimistic 1.
  np.testing.assert_array_equal(cross_retrieval.video_to_text_ranks(scores, text_to_video),
                                [2, 1])
  np.testing.assert_array_equal(
      cross_retrieval.video_to_text_ranks(scores, text_to_video, ties='optimistic'), [1, 1])


def test_a_video_without_captions_is_only_a_distractor():
  scores = np.array([[0.2, 0.9, 0.1], [0.8, 0.3, 0.85]])  # video 2 has no caption
  text_to_video = np.array([0, 1])
  np.testing.assert_array_equal(cross_retrieval.text_to_video_ranks(scores, text_to_video),
                                [2, 3])
  # Queries: videos 0 and 1 only.
  np.testing.assert_array_equal(cross_retrieval.video_to_text_ranks(scores, text_to_video),
                                [2, 2])


@pytest.fixture(scope='module')
def ranking_oracle(realdata):
  with open(realdata / 'oracles' / 'retrieval_ranking_oracle.json', encoding='utf-8') as f:
    return json.load(f)


def test_oracle_similarity_to_ranks(ranking_oracle):
  case = ranking_oracle['case_1_similarity_to_ranks']
  sim = np.array(case['similarity_matrix_rows_are_queries_ground_truth_is_diagonal'])
  m = cross_retrieval.retrieval_metrics(sim)
  ranks = cross_retrieval.text_to_video_ranks(sim, np.arange(5))
  np.testing.assert_array_equal(ranks, case['expected_ranks_1_based'])
  assert m['text_to_video']['mean_rank'] == pytest.approx(np.mean(case['expected_ranks_1_based']))
  # Video -> text of a diagonal matrix is text -> video of its transpose.
  np.testing.assert_array_equal(cross_retrieval.video_to_text_ranks(sim, np.arange(5)),
                                cross_retrieval.text_to_video_ranks(sim.T, np.arange(5)))


def test_oracle_ranks_to_metrics_from_a_matrix_built_to_give_them(ranking_oracle):
  case = ranking_oracle['case_2_ranks_to_metrics']
  ranks = case['ranks_1_based']
  num_videos = max(ranks)  # 15: texts 0 ... 11 show videos 0 ... 11
  scores = np.zeros((len(ranks), num_videos))
  for text, rank in enumerate(ranks):
    scores[text, text] = 0.5
    others = [v for v in range(num_videos) if v != text][:rank - 1]
    scores[text, others] = 1.0
  m = cross_retrieval.retrieval_metrics(scores, np.arange(len(ranks)),
                                        ks=(1, 5, 10, 11, 15))['text_to_video']
  assert m['mean_rank'] == pytest.approx(case['expected_mean_rank'])
  assert m['median_rank'] == 7.5  # numpy's median; the source's upper median is 8
  for k, value in case['recall_at_k_in_source'].items():
    assert m[f'R@{k}'] == pytest.approx(value)
  assert m['count'] == 12


@pytest.mark.parametrize('block', [(2, 2), (3, 1), (5, 3), (8, 4)])
def test_score_matrix_calls_full_blocks_and_drops_the_padding(block):
  calls = []

  def score_fn(texts, videos):
    calls.append((texts.copy(), videos.copy()))
    return SCORES[np.ix_(texts, videos)]

  out = cross_retrieval.score_matrix(score_fn, 5, 3, block)
  np.testing.assert_array_equal(out, SCORES.astype(np.float32))
  assert all(t.shape == (block[0],) and v.shape == (block[1],) for t, v in calls)
  assert len(calls) == -(-5 // block[0]) * -(-3 // block[1])
  assert all(t.max() < 5 and v.max() < 3 for t, v in calls)


def test_score_matrix_rejects_a_scorer_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r'expected \(2, 2\)'):
    cross_retrieval.score_matrix(lambda t, v: np.zeros((2,)), 3, 3, (2, 2))


def test_multiple_choice_accuracy_counts_ties_wrong():
  scores = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.1], [0.3, 0.2, 0.1], [0.0, 0.1, 0.2]])
  answers = np.array([1, 0, 0, 1])  # right, tie (wrong), right, wrong
  m = cross_retrieval.multiple_choice_accuracy(scores, answers)
  assert m['accuracy'] == 0.5 and m['count'] == 4 and m['chance'] == pytest.approx(1 / 3)
  low, high = m['accuracy_ci95']
  assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_open_ended_accuracy_by_exact_answer_and_type():
  labels = ['cat', 'dog', 'red']
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
  predictions = cross_retrieval.predicted_answers(logits, labels)
  assert predictions == ['cat', 'dog', 'cat', 'red']
  # The third answer ('blue') is outside the answer set: always wrong.
  m = cross_retrieval.open_ended_accuracy(predictions, ['cat', 'cat', 'blue', 'red'],
                                          ['what', 'what', 'color', 'color'])
  assert m['accuracy'] == 0.5 and m['count'] == 4
  assert m['by_type'] == {'color': {'accuracy': 0.5, 'count': 2},
                          'what': {'accuracy': 0.5, 'count': 2}}
  assert len(m['accuracy_ci95']) == 2
