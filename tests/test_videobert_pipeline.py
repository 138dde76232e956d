"""The TFRecord schema and the tf.data pipeline, on hand-made records."""

import collections

import numpy as np
import pytest

from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.videobert import pipeline
from vlm_jax.videobert import vocab as vocab_lib

VOCAB = vocab_lib.JointVocab(text_vocab_size=30522, num_visual_tokens=512)

# Video "a": three sentences at 0-3 s, 3-6 s, 6-9 s; 12 clips of 0.75 s, tokens 0..11.
SENTENCES_A = [[2000, 2001, 2002], [2010, 2011], [2020, 2021, 2022, 2023]]
RECORD_A = records.VideoRecord(
    'a', SENTENCES_A, [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)],
    list(range(12)), [(i * 0.75, (i + 1) * 0.75) for i in range(12)])
# Video "b": no ASR, 100 clips with tokens 100..199.
RECORD_B = records.VideoRecord('b', [], [], list(range(100, 200)),
                               [(i * 1.5, (i + 1) * 1.5) for i in range(100)])
# Video "c": like "a" but tokens 300..311 and other words.
RECORD_C = records.VideoRecord(
    'c', [[3000, 3001], [3010, 3011, 3012]], [(0.0, 4.5), (4.5, 9.0)],
    list(range(300, 312)), [(i * 0.75, (i + 1) * 0.75) for i in range(12)])


def write(tmp_path, *recs, shards=1):
  return records.write_shards(recs, str(tmp_path), shards)


def options(**overrides):
  fields = dict(seq_len=64, max_predictions=12, shuffle_buffer=8)
  fields.update(overrides)
  return pipeline.PipelineOptions(**fields)


def batches(files, opts, n, batch_size=8, seed=0):
  it = pipeline.BatchIterator(pipeline.make_dataset(files, opts, VOCAB, batch_size, seed), files)
  return [next(it) for _ in range(n)]


def examples(files, opts, n_batches, seed=0):
  """Per-example dicts with the unmasked ids restored and split into parts."""
  out = []
  for b in batches(files, opts, n_batches, seed=seed):
    for i in range(b['input_ids'].shape[0]):
      ids = b['input_ids'][i].copy()
      weights = b['masked_weights'][i] > 0
      ids[b['masked_positions'][i][weights]] = b['masked_ids'][i][weights]
      length = int(b['attention_mask'][i].sum())
      ids = ids[:length]
      visual = ids[ids >= VOCAB.visual_offset] - VOCAB.visual_offset
      text = ids[(ids < VOCAB.text_vocab_size) & ~np.isin(ids, VOCAB.special_ids)]
      out.append(dict(ids=ids, text=text.tolist(), visual=visual.tolist(),
                      types=b['token_type_ids'][i][:length], regime=int(b['regime'][i]),
                      label=int(b['alignment_label'][i]),
                      masked=b['masked_ids'][i][weights], replaced=b['input_ids'][i][
                          b['masked_positions'][i][weights]]))
  return out


def test_records_round_trip(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B, shards=2)
  back = {r.video_id: r for r in records.read(files)}
  assert back['a'].sentences == SENTENCES_A
  assert back['a'].visual_tokens == RECORD_A.visual_tokens
  assert back['b'].sentences == [] and len(back['b'].clip_times) == 100
  np.testing.assert_allclose(back['a'].sentence_times, RECORD_A.sentence_times)


def test_shapes_and_layout(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B)
  b = batches(files, options(), 1)[0]
  assert b['input_ids'].shape == (8, 64) and b['masked_ids'].shape == (8, 12)
  for ex in examples(files, options(), 4):
    ids = ex['ids']
    assert ids[0] == VOCAB.cls_id and ids[-1] == VOCAB.sep_id
    if ex['regime'] == pipeline.TEXT:
      assert VOCAB.video_sep_id not in ids and not ex['visual']
      assert not ex['types'].any()
    else:
      sep = int(np.where(ids == VOCAB.video_sep_id)[0][0])
      assert (ids[sep + 1:-1] >= VOCAB.visual_offset).all()
      assert not ex['types'][:sep + 1].any() and ex['types'][sep + 1:].all()
    if ex['regime'] == pipeline.VIDEO:
      assert not ex['text']


def test_deterministic_given_seed(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B, RECORD_C, shards=2)
  first = batches(files, options(), 4, seed=3)
  again = batches(files, options(), 4, seed=3)
  other = batches(files, options(), 4, seed=4)
  for x, y in zip(first, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any((x['input_ids'] != y['input_ids']).any() for x, y in zip(first, other))


def test_resumed_iterator_sees_the_same_batches(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B, RECORD_C, shards=2)
  opts = options()
  it = pipeline.BatchIterator(pipeline.make_dataset(files, opts, VOCAB, 4, 0), files)
  for _ in range(5):
    next(it)
  it.save_state(str(tmp_path / 'state' / 'ckpt'))
  expected = [next(it) for _ in range(5)]
  resumed = pipeline.BatchIterator(pipeline.make_dataset(files, opts, VOCAB, 4, 0), files)
  resumed.restore_state(str(tmp_path / 'state' / 'ckpt'))
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_masking_statistics(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B, RECORD_C)
  exs = examples(files, options(max_predictions=64, concat_prob=1.0), 60)
  candidates = sum(int((~np.isin(e['ids'], VOCAB.special_ids)).sum()) for e in exs)
  masked = np.concatenate([e['masked'] for e in exs])
  replaced = np.concatenate([e['replaced'] for e in exs])
  assert 0.13 < len(masked) / candidates < 0.18
  assert not np.isin(masked, VOCAB.special_ids).any()  # specials never masked
  is_mask = replaced == VOCAB.mask_id
  kept = replaced == masked
  random = ~is_mask & ~kept
  assert 0.75 < is_mask.mean() < 0.85
  assert 0.06 < kept.mean() < 0.14
  assert 0.06 < random.mean() < 0.14
  # A random replacement stays in the modality of the token it replaces.
  visual = masked >= VOCAB.visual_offset
  assert ((replaced[random] >= VOCAB.visual_offset) == visual[random]).all()


def test_regime_weights(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_C)
  only_text = examples(files, options(regime_weights=(1.0, 0.0, 0.0)), 4)
  assert {e['regime'] for e in only_text} == {pipeline.TEXT}
  mixed = examples(files, options(regime_weights=(1.0, 1.0, 2.0)), 40)
  counts = collections.Counter(e['regime'] for e in mixed)
  shares = np.array([counts[r] for r in range(3)]) / len(mixed)
  np.testing.assert_allclose(shares, [0.25, 0.25, 0.5], atol=0.06)
  # A video without ASR can only give video-only examples.
  no_asr = examples(write(tmp_path / 'b', RECORD_B), options(regime_weights=(1.0, 1.0, 1.0)), 2)
  assert {e['regime'] for e in no_asr} == {pipeline.VIDEO}


def _sentence_spans(text, sentences):
  """(first, count) if `text` is consecutive whole sentences, else None."""
  for first in range(len(sentences)):
    for count in range(1, len(sentences) - first + 1):
      if sum(sentences[first:first + count], []) == text:
        return first, count
  return None


def test_sentence_concatenation(tmp_path):
  files = write(tmp_path, RECORD_A)
  text_only = (1.0, 0.0, 0.0)
  single = examples(files, options(regime_weights=text_only, concat_prob=0.0), 3)
  assert all(_sentence_spans(e['text'], SENTENCES_A)[1] == 1 for e in single)
  joined = examples(files, options(regime_weights=text_only, concat_prob=1.0), 6)
  spans = [_sentence_spans(e['text'], SENTENCES_A) for e in joined]
  assert all(s is not None for s in spans)  # always neighbouring sentences, in order
  # Joined unless the draw starts at the last sentence.
  assert all(count >= 2 for first, count in spans if first < len(SENTENCES_A) - 1)
  assert {count for _, count in spans} >= {2, 3}


def test_subsampling_without_asr(tmp_path):
  files = write(tmp_path, RECORD_B)
  rates = collections.Counter()
  for e in examples(files, options(), 10):
    visual = np.array(e['visual'])
    assert len(visual) == 16  # `segment_len_no_asr` tokens per segment
    steps = np.diff(visual)
    assert len(set(steps)) == 1 and 1 <= steps[0] <= 5
    rates[int(steps[0])] += 1
  assert set(rates) == {1, 2, 3, 4, 5}


def test_segments_follow_asr_times(tmp_path):
  files = write(tmp_path, RECORD_A)
  exs = examples(files, options(regime_weights=(0.0, 0.0, 1.0), concat_prob=0.0,
                                max_subsample_rate=1, negative_prob=0.0), 3)
  inside = {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11]}  # clip midpoints in span
  for e in exs:
    first, _ = _sentence_spans(e['text'], SENTENCES_A)
    assert e['visual'] == inside[first]
    assert e['label'] == 1


def test_alignment_negatives_come_from_other_videos(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_C)
  tokens = {'a': set(RECORD_A.visual_tokens), 'c': set(RECORD_C.visual_tokens)}
  exs = examples(files, options(regime_weights=(0.0, 0.0, 1.0), negative_prob=1.0), 8)
  negatives = 0
  for e in exs:
    own = 'a' if e['text'][0] in sum(SENTENCES_A, []) else 'c'
    other = 'c' if own == 'a' else 'a'
    expected = tokens[other] if e['label'] == 0 else tokens[own]
    assert set(e['visual']) <= expected
    negatives += e['label'] == 0
  assert negatives >= len(exs) // 4
  # With negative_prob=0 every pair is aligned.
  aligned = examples(files, options(regime_weights=(0.0, 0.0, 1.0), negative_prob=0.0), 2)
  assert all(e['label'] == 1 for e in aligned)


def test_truncated_tfrecord_names_the_file(tmp_path):
  good = write(tmp_path / 'good', RECORD_A, RECORD_B)
  data = open(good[0], 'rb').read()
  bad = tmp_path / 'bad.tfrecord'
  bad.write_bytes(data[:len(data) - 7])
  files = good + [str(bad)]
  it = pipeline.BatchIterator(pipeline.make_dataset(files, options(), VOCAB, 4, 0), files)
  with pytest.raises(files_lib.DataError, match='bad.tfrecord'):
    for _ in range(20):
      next(it)


def test_per_host_file_sharding(tmp_path):
  files = write(tmp_path, RECORD_A, RECORD_B, RECORD_C, RECORD_A, shards=4)
  seen = []
  for host in range(2):
    ds = pipeline.make_dataset(files, options(regime_weights=(0.0, 1.0, 0.0)), VOCAB, 4, 0,
                               process_index=host, process_count=2)
    ids = np.concatenate([b['input_ids'] for b in ds.take(3).as_numpy_iterator()])
    seen.append({int(t) for t in ids.ravel() if t >= VOCAB.visual_offset})
  # Host 0 reads shards 0 and 2 (videos a, c); host 1 shards 1 and 3 (b, a).
  assert not seen[0] & {VOCAB.visual_id(t) for t in RECORD_B.visual_tokens}
  assert not seen[1] & {VOCAB.visual_id(t) for t in RECORD_C.visual_tokens}
