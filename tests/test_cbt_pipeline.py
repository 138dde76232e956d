"""CBT's windows, masks and sentences on hand-made feature records."""

import dataclasses
import hashlib

import numpy as np
import pytest

from vlm_jax.cbt import pipeline as cbt_pipeline
from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data import feature_records
from vlm_jax.data import text_masking

CLS, SEP, MASK, VOCAB = 101, 102, 103, 30522
OPTS = cbt_pipeline.WindowOptions(cls_id=CLS, sep_id=SEP, num_clips=8, max_text_tokens=3,
                                  mask_rate=0.25)
# With the text MLM term: half of each sentence's (at most 3) WordPieces, P = 2 slots.
MLM_OPTS = dataclasses.replace(OPTS, text_mask_rate=0.5, mask_id=MASK, vocab_size=VOCAB)


def _video(video_id, clips, sentence_times, seed=0):
  """Clip c's features are all c + 100 * video number; sentence k is [k + 1] * (k + 2)."""
  number = int(video_id[1:])
  features = (np.arange(clips)[:, None] + 100.0 * number) * np.ones((1, 4), np.float32)
  sentences = [[k + 1] * (k + 2) for k in range(len(sentence_times))]
  return feature_records.FeatureRecord(video_id, features, sentences, sentence_times)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  videos = [_video('v0', 20, [(10.0, 12.0)]),                 # centre 11: clips 7..14
            _video('v1', 5, [(1.0, 2.0)]),                    # shorter than a window
            _video('v2', 20, [(18.0, 20.0), (0.0, 1.0)]),     # near the end, near the start
            _video('v3', 12, []),                             # no sentence: skipped
            _video('v4', 10, [(3.0, 4.0)])]
  paths = records.write_shards(videos, str(tmp_path_factory.mktemp('cbt_records')), 1,
                               serialize=feature_records.to_example)
  return feature_records.load_corpus(paths)


class _Fixed:
  """A stand-in generator: integers() answers from a list (the sentence, then mask starts)."""

  def __init__(self, *answers):
    self.answers = list(answers)

  def integers(self, high):
    value = self.answers.pop(0)
    assert 0 <= value < high
    return value


def test_corpus_reads_videoclip_records_and_names_the_skipped(corpus):
  assert corpus.video_ids == ['v0', 'v1', 'v2', 'v4']
  assert corpus.skipped[0]['video_id'] == 'v3' and 'no sentences' in corpus.skipped[0]['reason']
  assert corpus.feature_dim == 4
  np.testing.assert_array_equal(corpus.times[2], [[18, 20], [0, 1]])
  assert corpus.sentences[2] == [[1, 1], [2, 2, 2]]


@pytest.mark.parametrize('video,sentence,first,length', [
    (0, 0, 7, 8),   # centre clip 11 -> 11 - 4 .. 11 + 3
    (1, 0, 0, 5),   # 5 clips: all of them, padded to 8
    (2, 0, 12, 8),  # centre 19 -> shifted back to end at the last clip
    (2, 1, 0, 8),   # centre 0 -> starts at the first clip
])
def test_window_is_the_sentence_centred_run_of_clips(corpus, video, sentence, first, length):
  mask_starts = [0, 1]  # 25% of 8 clips = 2 (of 5: round(1.25) = 1)
  out = cbt_pipeline.window(corpus, video, _Fixed(sentence, *mask_starts), OPTS)
  clip_numbers = out['features'][:, 0] - 100 * int(corpus.video_ids[video][1:])
  np.testing.assert_array_equal(clip_numbers[:length], np.arange(first, first + length))
  np.testing.assert_array_equal(out['features'][length:], 0)
  np.testing.assert_array_equal(out['clip_mask'], [1] * length + [0] * (8 - length))
  np.testing.assert_array_equal(out['masked'][:2], [1, 1] if length == 8 else [1, 0])
  assert out['masked'].sum() == (2 if length == 8 else 1)
  words = corpus.sentences[video][sentence][:3]
  ids = [CLS] + words + [SEP]
  np.testing.assert_array_equal(out['input_ids'], ids + [0] * (5 - len(ids)))
  np.testing.assert_array_equal(out['attention_mask'], [1] * len(ids) + [0] * (5 - len(ids)))


def test_masks_cover_the_rate_in_spans_inside_the_real_clips():
  rng = np.random.default_rng(0)
  for length in (1, 3, 10, 32):
    for span in (1, 3):
      masked = cbt_pipeline.mask_clips(rng, length, 0.15, span)
      target = max(1, round(0.15 * length))
      assert masked.shape == (length,)
      # Whole spans until the target: it may overshoot by less than one span.
      assert target <= masked.sum() < target + span
      assert set(np.unique(masked)) <= {0, 1}


def test_batches_are_distinct_videos_keyed_by_seed_and_step_and_split_over_processes(corpus):
  a = cbt_pipeline.batch_at(corpus, 5, 7, 4, OPTS)
  assert sorted(a['video_index']) == [0, 1, 2, 3]
  for key, value in cbt_pipeline.batch_at(corpus, 5, 7, 4, OPTS).items():
    np.testing.assert_array_equal(value, a[key])
  halves = [cbt_pipeline.batch_at(corpus, 5, 7, 4, OPTS, p, 2) for p in range(2)]
  for key in a:
    np.testing.assert_array_equal(a[key], np.concatenate([halves[0][key], halves[1][key]]))
  assert any(not np.array_equal(a[k], cbt_pipeline.batch_at(corpus, 6, 7, 4, OPTS)[k])
             for k in a)
  # The dataset from a start step yields exactly those steps' batches (a resume).
  batches = list(cbt_pipeline.make_dataset(corpus, 7, 4, OPTS, 4, 6).as_numpy_iterator())
  assert len(batches) == 2
  for key in a:
    np.testing.assert_array_equal(batches[0][key], a[key])
  assert batches[0]['features'].dtype == np.float32 and batches[0]['masked'].shape == (4, 8)


def test_a_file_that_is_not_a_feature_record_is_named(tmp_path):
  video = records.VideoRecord('x', [[5]], [(0.0, 1.0)], [3], [(0.0, 1.0)])
  paths = records.write_shards([video], str(tmp_path), 1)
  with pytest.raises(files_lib.DataError, match='not a feature record'):
    feature_records.load_corpus(paths)


def _digest(batches) -> str:
  h = hashlib.sha256()
  for batch in batches:
    for key in sorted(batch):
      value = batch[key]
      for part in (key, str(value.dtype), str(value.shape)):
        h.update(part.encode())
      h.update(value.tobytes())
  return h.hexdigest()


def test_without_the_mlm_term_batches_are_the_bits_they_were_before_it(corpus):
  batches = [cbt_pipeline.batch_at(corpus, step, 7, 4, OPTS) for step in (1, 2, 3)]
  assert all(set(b) == set(cbt_pipeline.NAMES) for b in batches)  # no text-mask arrays
  # Recorded from the pipeline as it was before the text MLM term existed.
  assert _digest(batches) == '801afc3c1cc3dd1031216ee6e522e3542d6021adfbd1615da3fea5df857919fe'
  dataset = next(cbt_pipeline.make_dataset(corpus, 7, 4, OPTS, 0, 1).as_numpy_iterator())
  assert sorted(dataset) == sorted(cbt_pipeline.NAMES)


def _row(words, length=32):
  ids = np.zeros(length, np.int32)
  ids[:len(words) + 2] = [CLS] + list(words) + [SEP]
  return ids


def test_text_masking_predicts_the_rate_of_words_and_never_cls_sep_or_padding():
  rng = np.random.default_rng(0)
  for n in range(0, 31):
    ids = _row(2000 + np.arange(n))
    out = text_masking.mask_text(rng, ids, n, 0.15, MASK, VOCAB, num_predictions=4)
    count = min(n, max(1, round(0.15 * n)))
    assert out['mlm_weights'].sum() == count and out['mlm_weights'].dtype == np.float32
    positions = out['mlm_positions'][:count]
    assert len(set(positions)) == count and all(1 <= p <= n for p in positions)
    np.testing.assert_array_equal(out['mlm_labels'][:count], ids[positions])
    np.testing.assert_array_equal(out['mlm_positions'][count:], 0)  # padding slots
    np.testing.assert_array_equal(out['mlm_labels'][count:], 0)
    unchanged = np.ones(len(ids), bool)
    unchanged[positions] = False  # [CLS], [SEP], padding and unpredicted words stay
    np.testing.assert_array_equal(out['masked_ids'][unchanged], ids[unchanged])
  assert text_masking.text_predictions(0.15, 30) == 4  # round(4.5): the most any row has


def test_text_masking_is_deterministic_and_80_10_10_in_aggregate():
  ids = _row(2000 + np.arange(30))
  masks = lambda seed: text_masking.mask_text(np.random.default_rng(seed), ids, 30, 0.15, MASK,
                                              VOCAB, 4)
  for key, value in masks(5).items():
    np.testing.assert_array_equal(value, masks(5)[key])
  replaced = []
  for seed in range(3000):  # 12,000 predictions
    out = masks(seed)
    replaced.append(out['masked_ids'][out['mlm_positions']])
  replaced = np.concatenate(replaced)
  original = ids[1:31]
  assert replaced.size == 12000
  is_mask = replaced == MASK
  kept = np.isin(replaced, original) & ~is_mask  # a word of the sentence: itself, as drawn
  # Binomial sd at 12,000 draws: 0.4% (80%), 0.3% (10%); the bounds are ~4 sd.
  assert abs(is_mask.mean() - 0.8) < 0.015
  assert abs(kept.mean() - 0.1) < 0.012
  assert abs((~is_mask & ~kept).mean() - 0.1) < 0.012


def test_mlm_batches_add_the_masked_text_and_leave_every_other_array_alone(corpus):
  plain = cbt_pipeline.batch_at(corpus, 5, 7, 4, OPTS)
  masked = cbt_pipeline.batch_at(corpus, 5, 7, 4, MLM_OPTS)
  assert sorted(masked) == sorted(cbt_pipeline.NAMES + cbt_pipeline.TEXT_MASK_NAMES)
  for key in plain:  # the text draws come last from each row's generator
    np.testing.assert_array_equal(masked[key], plain[key])
  assert masked['mlm_positions'].shape == masked['mlm_labels'].shape == (4, 2)
  for row in range(4):
    length = int(plain['attention_mask'][row].sum())
    words = length - 2
    count = int(masked['mlm_weights'][row].sum())
    assert count == min(words, max(1, round(0.5 * words)))
    positions = masked['mlm_positions'][row, :count]
    assert all(1 <= p <= length - 2 for p in positions)
    np.testing.assert_array_equal(masked['mlm_labels'][row, :count],
                                  plain['input_ids'][row, positions])
  # Keyed by (seed, step, row): the same again, split over processes, or from the dataset.
  again = cbt_pipeline.batch_at(corpus, 5, 7, 4, MLM_OPTS)
  halves = [cbt_pipeline.batch_at(corpus, 5, 7, 4, MLM_OPTS, p, 2) for p in range(2)]
  dataset = list(cbt_pipeline.make_dataset(corpus, 7, 4, MLM_OPTS, 4, 5).as_numpy_iterator())
  for key in masked:
    np.testing.assert_array_equal(again[key], masked[key])
    np.testing.assert_array_equal(np.concatenate([halves[0][key], halves[1][key]]), masked[key])
    np.testing.assert_array_equal(dataset[0][key], masked[key])
    assert dataset[0][key].dtype == masked[key].dtype
  assert not np.array_equal(cbt_pipeline.batch_at(corpus, 6, 7, 4, MLM_OPTS)['masked_ids'],
                            masked['masked_ids'])
  with pytest.raises(ValueError, match='needs a mask_id'):
    dataclasses.replace(OPTS, text_mask_rate=0.15)
