"""ClipBERT's data path: seek decoding of sampled frames, readers, batches, resume."""

import json
import os
import shutil

import av
import numpy as np
import pytest

from vlm_jax.clipbert import data
from vlm_jax.clipbert import sampling
from vlm_jax.data import frames
from vlm_jax.data import tokenizer
from vlm_jax.data import video
from vlm_jax.data.files import DataError

SIDE = 32


def _write_video(path, seconds, fps=25, size=(64, 48), gop=25):
  """An H.264 MP4 (B-frames on, a keyframe every `gop` frames) of a moving, fading bar."""
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
    stream.codec_context.gop_size = gop
    stream.options = {'bf': '2', 'sc_threshold': '0'}  # keyframes at the gop only
    for i in range(int(round(seconds * fps))):
      image = np.full((size[1], size[0], 3), (i * 5) % 200, np.uint8)
      image[:, (i * 2) % size[0]] = 255
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


def _reference(path, times, side):
  """The frames a full sequential decode (vlm_jax.data.video's) shows at `times`, and its count."""
  container, stream = video._open(path)  # pylint: disable=protected-access
  tolerance = video.PTS_TOLERANCE / float(stream.average_rate or stream.guessed_rate)
  flat = np.asarray(times, np.float64).reshape(-1)
  picked = [None] * flat.size
  origin, count = None, 0
  for time, _, frame in video._timed_frames(path, container, stream):  # pylint: disable=protected-access
    origin = time if origin is None else origin
    count += 1
    for i, t in enumerate(flat):
      if picked[i] is None or time - origin <= t + tolerance:
        picked[i] = frame
  arrays = [frames.square_frame(frame, side) for frame in picked]
  container.close()
  return np.stack(arrays).reshape(np.shape(times) + (side, side, 3)), count


def _sparse_times(path, num_clips=3, step=1):
  duration, fps = frames.probe(path)
  return sampling.train_timestamps(duration, fps, num_clips=num_clips, num_frames=2, fps=2.0,
                                   seed=0, step=step, video_index=0)


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """Six 3 s MP4s, a 0.2 s one, a corrupt one (random bytes) in one folder."""
  folder = tmp_path_factory.mktemp('videos')
  for i in range(6):
    _write_video(folder / f'clip{i}.mp4', 3.0, size=(48 + 8 * i, 32))
  _write_video(folder / 'short.mp4', 0.2)
  (folder / 'corrupt.mp4').write_bytes(np.random.default_rng(0).bytes(4096))
  return folder


@pytest.fixture(scope='module')
def vocab():
  return tokenizer.load()


# --- seek decoding ---------------------------------------------------------------

def test_decode_at_generated_mp4_decodes_few_frames_and_matches(tmp_path):
  path = _write_video(tmp_path / 'long.mp4', 12.0, gop=25)
  times = _sparse_times(path)
  stats = frames.DecodeStats()
  got = frames.decode_at(path, times, SIDE, stats=stats)
  want, total = _reference(path, times, SIDE)
  assert total == 300 and got.shape == (3, 2, SIDE, SIDE, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, want)
  # 3 clips of 1 s from 1 s GOPs: at most ~2 GOPs each, not the 300 frames.
  assert stats.decoded_frames <= 160, stats
  assert stats.seeks >= 1


def test_probe_reads_packets_not_headers(realdata):
  # WebM without a container duration: 74 frames at 15000/1001 fps.
  duration, fps = frames.probe(str(realdata / 'moviepy/no_duration.webm'))
  assert fps == pytest.approx(15000 / 1001)
  assert duration == pytest.approx(74 / fps, abs=0.01)
  duration, fps = frames.probe(str(realdata / 'mmaction2/test.mp4'))
  assert (duration, fps) == (pytest.approx(10.0), 30.0)


@pytest.mark.parametrize('name, most', [
    ('mkv/test.mkv', 0.25),  # 1999 frames, keyframes every few seconds
    ('moviepy/big_buck_bunny_0_30.webm', 0.5),  # VP8
    ('mmaction2/test.avi', 1.0),  # decode-order timestamps, re-paired
    ('imageio/cockatoo.mp4', 1.0),  # High 4:4:4: needs x264's SEI before a seek
])
def test_decode_at_real_files_match_a_full_decode(realdata, name, most):
  path = str(realdata / name)
  times = _sparse_times(path, num_clips=4)
  stats = frames.DecodeStats()
  got = frames.decode_at(path, times, SIDE, stats=stats)
  want, total = _reference(path, times, SIDE)
  np.testing.assert_array_equal(got, want)
  # + 1: the first packet, decoded once for its SEI (frames.py).
  assert stats.decoded_frames <= most * total + 1, (stats, total)


def test_decode_at_square_padding(tmp_path):
  path = _write_video(tmp_path / 'wide.mp4', 1.0, size=(64, 32))
  got = frames.decode_at(path, np.zeros((1, 1)), 16)[0, 0]
  assert got[:8].any() and not got[8:].any()  # 64 x 32 -> 16 x 8, padded below


def test_unreadable_videos_raise_data_error(videos, realdata):
  for path in (str(videos / 'corrupt.mp4'), str(realdata / 'edge_cases/truncated_header_only.mkv')):
    with pytest.raises(DataError, match=os.path.basename(path)):
      frames.decode_at(path, np.zeros((1, 1)), SIDE)
    with pytest.raises(DataError, match=os.path.basename(path)):
      frames.probe(path)


# --- readers -----------------------------------------------------------------------

def _jsonl(path, lines):
  path.write_text('\n'.join(l if isinstance(l, str) else json.dumps(l) for l in lines) + '\n')
  return str(path)


def test_read_jsonl_kinds_ids_paths_and_missing(videos, tmp_path):
  pairs = data.read_jsonl(_jsonl(tmp_path / 'pairs.jsonl', [
      {'video': 'clip0', 'text': 'a bar moves'},
      {'video': str(videos / 'clip1.mp4'), 'text': 'another', 'start': 0.5, 'end': 2.0},
      '',
      {'video': 'nowhere', 'text': 'lost'}]), str(videos))
  assert [i.video for i in pairs.items] == [str(videos / 'clip0.mp4'), str(videos / 'clip1.mp4')]
  assert pairs.items[1].span == (0.5, 2.0) and pairs.items[0].kind == data.MATCHING
  assert pairs.missing == [(f'{tmp_path}/pairs.jsonl:4', 'nowhere')]
  mc = data.read_jsonl(_jsonl(tmp_path / 'mc.jsonl', [
      {'video': 'clip2', 'question': 'what?', 'options': ['a', 'b', 'c'], 'answer': 2}]),
      str(videos))
  assert mc.items[0].kind == data.MULTIPLE_CHOICE and mc.items[0].answer == 2
  qa = data.read_jsonl(_jsonl(tmp_path / 'qa.jsonl', [
      {'video': 'clip3', 'question': 'what?', 'answer': 'a bar'}]), str(videos))
  assert qa.items[0].kind == data.QA


@pytest.mark.parametrize('line, message', [
    ('{"video": "clip0", "text": ', 'not JSON'),
    ({'video': 'clip0'}, "missing key 'question'"),
    ({'video': 'clip0', 'question': 'q', 'options': ['a', 'b'], 'answer': 5}, 'option index'),
    ({'text': 'no video'}, '"video"'),
    ([1, 2], 'non-empty string'),
])
def test_read_jsonl_malformed_line_names_file_and_line(videos, tmp_path, line, message):
  path = _jsonl(tmp_path / 'bad.jsonl', [{'video': 'clip0', 'text': 'fine'}, line])
  with pytest.raises(DataError, match=f'bad.jsonl:2: .*{message}') as error:
    data.read_jsonl(path, str(videos))
  assert '\n' not in str(error.value)


def test_read_jsonl_refuses_mixed_kinds(videos, tmp_path):
  path = _jsonl(tmp_path / 'mixed.jsonl', [
      {'video': 'clip0', 'text': 'a'}, {'video': 'clip0', 'question': 'q', 'answer': 'x'}])
  with pytest.raises(DataError, match='several kinds'):
    data.read_jsonl(path, str(videos))


def test_msrvtt_readers_on_the_real_files(realdata, videos, tmp_path):
  folder = tmp_path / 'msrvtt'
  folder.mkdir()
  for vid in ('video9770', 'video9771'):
    shutil.copy(videos / 'clip0.mp4', folder / f'{vid}.mp4')
  retrieval = data.read_msrvtt_retrieval(str(realdata / 'msrvtt/MSRVTT_JSFUSION_test.csv'),
                                         str(folder))
  assert len(retrieval.items) + len(retrieval.missing) == 1000
  assert [i.text for i in retrieval.items] == ['a person is connecting something to system',
                                               'a little girl does gymnastics']
  mc = data.read_msrvtt_mc(str(realdata / 'msrvtt/msrvtt_mc_test.jsonl'), str(folder))
  assert len(mc.items) + len(mc.missing) == 2990
  first = mc.items[0]
  assert first.video == str(folder / 'video9770.mp4') and first.answer == 0
  assert len(first.options) == 5 and first.text == '' and first.kind == data.MULTIPLE_CHOICE
  bad = tmp_path / 'bad.csv'
  bad.write_text('key,vid_key,video_id,sentence\nret0,msr1,video1\n')
  with pytest.raises(DataError, match='bad.csv:2: expected 4 fields'):
    data.read_msrvtt_retrieval(str(bad), str(folder))


def test_youcook2_reader_gives_segment_spans(realdata, videos, tmp_path):
  annotations = realdata / 'youcook2/youcookii_annotations_trainval.json'
  with open(annotations, encoding='utf-8') as f:
    first = next(iter(json.load(f)['database'].items()))
  folder = tmp_path / 'yc2' / 'training' / '101'
  folder.mkdir(parents=True)
  shutil.copy(videos / 'clip0.mp4', folder / f'{first[0]}.mp4')
  items = data.read_youcook2(str(annotations), str(tmp_path / 'yc2'), subset=None)
  assert len(items.items) == len(first[1]['annotations'])
  assert items.items[0].span == tuple(float(t) for t in first[1]['annotations'][0]['segment'])
  assert len(items.missing) > 10000


# --- batches -----------------------------------------------------------------------

def _options(**overrides):
  return data.BatchOptions(num_clips=2, num_frames=2, longest_side=SIDE, max_text_len=8,
                           min_duration=1.0, **overrides)


def _items(videos):
  items = [data.Item(str(videos / f'clip{i}.mp4'), f'caption {i}') for i in range(6)]
  return items + [data.Item(str(videos / 'corrupt.mp4'), 'corrupt'),
                  data.Item(str(videos / 'short.mp4'), 'short')]


def test_batch_is_deterministic_and_process_shares_partition_it(videos, vocab):
  items = _items(videos)
  with data.BatchBuilder(items, vocab, _options(), seed=3) as a, \
       data.BatchBuilder(items, vocab, _options(pool='process'), seed=3) as b:
    first, _ = a.batch(5, 4)
    again, _ = b.batch(5, 4)
    halves = [a.batch(5, 4, p, 2)[0] for p in range(2)]
    other, _ = a.batch(6, 4)
  assert first['frames'].shape == (4, 2, 2, SIDE, SIDE, 3)
  assert first['frames'].dtype == np.float32
  assert first['input_ids'].shape == (4, 2, 8) and first['labels'].tolist() == [[1, 0]] * 4
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
    np.testing.assert_array_equal(first[key], np.concatenate([h[key] for h in halves]))
  assert not np.array_equal(first['frames'], other['frames'])
  # The negative caption is another video's.
  texts = [tokenizer.wordpieces(vocab, [item.text])[0] for item in items]
  for row, index in enumerate(first['item_index']):
    negative = first['input_ids'][row, 1, 1:3].tolist()
    assert negative != texts[index]


def test_bad_and_short_videos_are_skipped_and_reported(videos, vocab):
  items = _items(videos)
  with data.BatchBuilder(items, vocab, _options(), seed=0) as builder:
    batch, skips = builder.batch(1, len(items))  # every item is in the batch
  reasons = {os.path.basename(s.video): s.reason for s in skips}
  assert set(reasons) == {'corrupt.mp4', 'short.mp4'}
  assert 'too short' in reasons['short.mp4'] and 'corrupt.mp4' in reasons['corrupt.mp4']
  assert builder.skipped == skips and batch['num_skipped'].sum() >= 2
  assert batch['frames'].shape == (len(items), 2, 2, SIDE, SIDE, 3)
  for row in np.flatnonzero(batch['num_skipped']):
    # Replaced by the next usable item of the list.
    assert os.path.basename(items[batch['item_index'][row]].video).startswith('clip')


def test_multiple_choice_and_qa_batches(videos, vocab):
  options = ['a bar', 'a dog', 'a cat']
  mc = [data.Item(str(videos / f'clip{i}.mp4'), 'what moves?', tuple(options), i % 3)
        for i in range(4)]
  with data.BatchBuilder(mc, vocab, _options(), seed=0) as builder:
    batch, _ = builder.batch(1, 2)
  assert batch['input_ids'].shape == (2, 3, 8)
  assert batch['labels'].tolist() == [mc[i].answer for i in batch['item_index']]
  qa = [data.Item(str(videos / f'clip{i}.mp4'), 'what moves?', answer=a)
        for i, a in enumerate(['bar', 'bar', 'dog', 'unseen'])]
  answers = data.answer_vocabulary(qa[:3], 2)
  assert answers == ('bar', 'dog')
  with data.BatchBuilder(qa, vocab, _options(answers=answers), seed=0) as builder:
    batch, _ = builder.batch(1, 4)
  assert batch['input_ids'].shape == (4, 8)
  want = [{'bar': 0, 'dog': 1}.get(qa[i].answer, -1) for i in batch['item_index']]
  assert batch['labels'].tolist() == want


def test_normalisations():
  pixel = np.array([[[10, 20, 30]]], np.uint8)
  np.testing.assert_allclose(data.normalize(pixel, 'detectron2')[0, 0],
                             [30 - 103.53, 20 - 116.28, 10 - 123.675], rtol=1e-6)
  np.testing.assert_allclose(data.normalize(pixel, 'imagenet')[0, 0],
                             (np.array([10, 20, 30]) / 255 - [0.485, 0.456, 0.406])
                             / [0.229, 0.224, 0.225], rtol=1e-5)


def test_resumed_dataset_rebuilds_the_same_batches(videos, vocab):
  items = _items(videos)
  with data.BatchBuilder(items, vocab, _options(), seed=1) as builder:
    straight = list(data.make_dataset(builder, 4, start_step=0, num_steps=4).as_numpy_iterator())
  with data.BatchBuilder(items, vocab, _options(), seed=1) as builder:
    resumed = list(data.make_dataset(builder, 4, start_step=2, num_steps=4).as_numpy_iterator())
  assert len(straight) == 4 and len(resumed) == 2
  for fresh, old in zip(resumed, straight[2:]):
    assert fresh.keys() == set(data.NAMES)
    for key in fresh:
      np.testing.assert_array_equal(fresh[key], old[key])
