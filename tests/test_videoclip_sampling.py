"""VideoCLIP overlapped sampling parameters over many draws; retrieval batches from neighbours."""

import numpy as np
import pytest

from vlm_jax.videoclip import sampling

CLS, SEP = 101, 102  # BERT uncased's; sampling itself never reads them


def _video(rng, num_sentences=40):
  lengths = rng.integers(2, 15, num_sentences)
  sentences = [list(rng.integers(1000, 2000, n)) for n in lengths]
  starts = np.cumsum(rng.uniform(1.0, 8.0, num_sentences))
  times = np.stack([starts, starts + rng.uniform(0.5, 4.0, num_sentences)], 1)
  return sentences, times, int(times[-1, 1]) + 5


def test_sampling_respects_the_parameters():
  rng = np.random.default_rng(0)
  opts = sampling.SamplingOptions(cls_id=CLS, sep_id=SEP)
  video_lengths, text_lengths = [], []
  for _ in range(60):
    sentences, times, seconds = _video(rng)
    for pair in sampling.sample_video(rng, sentences, times, seconds, opts):
      assert len(pair.text_ids) <= 61
      text_lengths.append(len(pair.text_ids))
      # The text is a run of whole consecutive sentences.
      lo = int(np.flatnonzero(times[:, 0] == pair.text_span[0])[0])
      hi = int(np.flatnonzero(times[:, 1] == pair.text_span[1])[0])
      joined = [t for s in sentences[lo:hi + 1] for t in s]
      assert pair.text_ids == joined[:61]
      assert pair.text_span[1] - pair.text_span[0] <= 256 or lo == hi
      # Each added sentence was needed: without the last one the target (<= 64) was not met.
      assert len(joined) - max(len(sentences[lo]), len(sentences[hi])) < 64 or lo == hi
      length = pair.video_end - pair.video_start
      assert 3 <= length <= 32 and 0 <= pair.video_start < pair.video_end <= seconds
      video_lengths.append(length)
      # Overlap: the clip holds a second inside the text span.
      assert pair.video_start <= pair.text_span[1] and pair.video_end > np.floor(
          pair.text_span[0])
  counts = np.bincount(video_lengths, minlength=33)[3:]
  assert np.all(counts > 0)  # every length 3..32 occurs
  assert counts.max() / counts.min() < 3  # and roughly uniformly (960 draws over 30 values)
  assert min(text_lengths) < 16 and max(text_lengths) == 61


def test_short_videos_and_single_sentences():
  rng = np.random.default_rng(1)
  opts = sampling.SamplingOptions(cls_id=CLS, sep_id=SEP, pairs_per_video=50)
  pairs = sampling.sample_video(rng, [[1, 2, 3]], np.array([[0.0, 2.0]]), 2, opts)
  assert all(p.text_ids == [1, 2, 3] for p in pairs)
  assert all((p.video_start, p.video_end) == (0, 2) for p in pairs)
  with pytest.raises(ValueError):
    sampling.sample_pair(rng, [], np.zeros((0, 2)), 10, opts)


def test_retrieval_batches_come_from_neighbours():
  rng = np.random.default_rng(0)
  groups, per_group, k = 10, 8, 4
  centres = rng.normal(size=(groups, 16)) * 20
  vectors = (np.repeat(centres, per_group, 0) + rng.normal(size=(groups * per_group, 16))
             ).astype(np.float32)
  batches = sampling.retrieval_batches(vectors, k, rng, num_lists=512)
  assert len(batches) == groups * per_group // k
  for batch in batches:
    assert len(set(batch.tolist())) == k
    # 2k = 8 neighbours of any member are exactly its group: a batch never mixes groups.
    assert len({int(i) // per_group for i in batch}) == 1
  with pytest.raises(ValueError):
    sampling.retrieval_batches(vectors[:7], k, rng)
