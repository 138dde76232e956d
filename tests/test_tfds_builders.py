"""tfds builders (vlm_jax.datasets): manual_dir -> examples equal to make-records' records.

Each build goes through tfds itself (`tfds.load(name, data_dir=...)` with a
manual_dir, or the `tfds build` command in a subprocess), and every example is
compared field by field with what make-records writes for the same features,
codebook and transcripts.
"""

import importlib.util
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import make_records as make_records_config
from vlm_jax import datasets  # pylint: disable=unused-import  (registers the builders)
from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.datasets import corpus
from vlm_jax.stages import make_records
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import pipeline
from vlm_jax.videobert import vocab as vocab_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, LEVELS, K = 8, 2, 3
CLIP_SECONDS = 1.5
# video id -> clips of its precomputed features.
CLIPS = {'pool': 7, 'cooking': 9, 'silent': 5}
YOUCOOK2 = {'database': {
    'pool': {'subset': 'training', 'duration': 10.5, 'annotations': [
        {'id': 1, 'segment': [4, 8], 'sentence': 'scrub the tiles'},
        {'id': 0, 'segment': [0, 3], 'sentence': 'clean the pool with a net'}]},
    'cooking': {'subset': 'validation', 'duration': 13.5, 'annotations': [
        {'id': 0, 'segment': [1, 5], 'sentence': 'add the salt and stir'}]},
    'no_features': {'subset': 'training', 'duration': 3.0, 'annotations': [
        {'id': 0, 'segment': [0, 2], 'sentence': 'hello there'}]},
}}
HOWTO100M = {'cooking': {'start': [9.0, 1.0], 'end': [11.0, 3.0],
                         'text': ['stir it well', 'add the salt']},
             'pool': {'start': [0.5, 2.0, 6.0], 'end': [2.5, 4.0, 8.0],
                      'text': ['now let me', 'show you the pool', 'and the tiles']},
             'no_features': {'start': [0.0], 'end': [1.0], 'text': ['hello there']}}


def _times(num_clips):
  starts = np.arange(num_clips) * CLIP_SECONDS
  return np.stack([starts, starts + CLIP_SECONDS], axis=1)


def _write_features(folder, clips, seed=0):
  """Random [n, DIM] float16 features + clip times per video; returns the arrays."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  arrays = {}
  for video_id, n in clips.items():
    centres = rng.normal(0, 5, (4, DIM))
    arrays[video_id] = (centres[rng.integers(0, 4, n)] + rng.normal(0, 0.3, (n, DIM))
                        ).astype(np.float16)
    np.save(os.path.join(folder, f'{video_id}.npy'), arrays[video_id])
    np.save(os.path.join(folder, f'{video_id}.times.npy'), _times(n))
  return arrays


def _manual_dir(root, transcript_name, transcript, clips=None):
  """manual_dir: features/ (and two bad files), codebook.npz, the transcript (a dict or a path)."""
  manual = os.path.join(root, 'manual')
  features = os.path.join(manual, corpus.FEATURES_DIR)
  arrays = _write_features(features, clips or CLIPS)
  np.save(os.path.join(features, 'no_times.npy'), np.ones((3, DIM), np.float16))
  with open(os.path.join(features, 'corrupt.npy'), 'wb') as f:
    f.write(b'\x93NUMPY not really')
  book = codebook_lib.build(np.concatenate(list(arrays.values())).astype(np.float32),
                            levels=LEVELS, k=K, seed=0)
  book.save(os.path.join(manual, corpus.CODEBOOK))
  if isinstance(transcript, dict):
    with open(os.path.join(manual, transcript_name), 'w', encoding='utf-8') as f:
      json.dump(transcript, f)
  else:  # a file to use as it is
    os.symlink(transcript, os.path.join(manual, transcript_name))
  return manual


def _load(name, root, manual):
  """tfds.load of every split, prepared from `manual`; {split: [example as numpy]}."""
  data = tfds.load(name, data_dir=os.path.join(root, 'tfds'), download_and_prepare_kwargs=dict(
      download_config=tfds.download.DownloadConfig(manual_dir=manual)))
  return {split: list(tfds.as_numpy(ds)) for split, ds in data.items()}


def _as_record(example) -> records.VideoRecord:
  """A tfds example (numpy) back into a VideoRecord, as records.read does."""
  text, video = example['text'], example['video']
  bounds = np.cumsum(np.concatenate([[0], text['sentence_lengths']]))
  return records.VideoRecord(
      video_id=example['video_id'].decode(),
      sentences=[text['token_ids'][a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])],
      sentence_times=list(zip(text['start_times'].tolist(), text['end_times'].tolist())),
      visual_tokens=video['token_ids'].tolist(),
      clip_times=list(zip(video['start_times'].tolist(), video['end_times'].tolist())))


def _make_records(features, codebook, transcripts, output):
  config = make_records_config.get_config()
  config.num_shards = 1
  manifest = make_records.run(features, codebook, transcripts, output, config, progress=False)
  return {r.video_id: r for r in records.read(manifest['shards'])}, manifest


def _assert_same(got: dict, expected: dict):
  assert sorted(got) == sorted(expected)
  for video_id, record in expected.items():
    assert got[video_id] == record, video_id


def _check_pipeline_reads(spec, num_visual_tokens):
  """The training pipeline reads the tfds split through `data.train_files`."""
  files = files_lib.list_files(spec)
  vocab = vocab_lib.from_tokenizer(tokenizer_lib.load(), num_visual_tokens)
  dataset = pipeline.make_dataset(files, pipeline.PipelineOptions(
      seq_len=32, max_predictions=5, shuffle_buffer=8), vocab, batch_size=4, seed=0)
  for batch in dataset.take(2):
    ids = batch['input_ids'].numpy()
    assert ids.shape == (4, 32) and ids.max() < vocab.size


def test_youcook2_style_equals_make_records(tmp_path):
  root = str(tmp_path)
  manual = _manual_dir(root, 'youcookii_annotations_trainval.json', YOUCOOK2)
  splits = _load('youcook2_style/demo', root, manual)
  # Splits from the annotation subsets; the unannotated video is video-only, in train.
  assert {s: sorted(e['video_id'].decode() for e in x) for s, x in splits.items()} == {
      'train': ['pool', 'silent'], 'validation': ['cooking']}
  got = {e['video_id'].decode(): _as_record(e) for x in splits.values() for e in x}
  expected, manifest = _make_records(
      os.path.join(manual, 'features'), os.path.join(manual, 'codebook.npz'),
      os.path.join(manual, 'youcookii_annotations_trainval.json'), os.path.join(root, 'records'))
  _assert_same(got, expected)
  assert got['silent'].sentences == [] and len(got['pool'].sentences) == 2
  # The corrupt and time-less feature files are skipped and reported, as make-records does.
  builder = tfds.builder('youcook2_style/demo', data_dir=os.path.join(root, 'tfds'))
  report = builder.info.metadata['report']
  assert {f['video_id'] for f in report['failures']} == {'corrupt', 'no_times'}
  assert {f['video_id'] for f in manifest['failures']} == {'corrupt', 'no_times'}
  counts = report['counts']
  assert (counts['videos'], counts['with_transcript'], counts['without_transcript'],
          counts['failed'], counts['transcripts_without_videos']) == (3, 2, 1, 2, 1)
  assert counts['clips'] == sum(CLIPS.values())

  data_dir = os.path.join(root, 'tfds')
  assert files_lib.tfds_files('youcook2_style/demo', 'validation', data_dir) == sorted(
      str(p) for p in builder.info.splits['validation'].filepaths)
  assert sorted(r.video_id for r in records.read(
      files_lib.list_files(f'tfds:youcook2_style/demo?split=train&data_dir={data_dir}'))) == [
          'pool', 'silent']
  _check_pipeline_reads(f'tfds:youcook2_style/demo?split=train&data_dir={data_dir}',
                        K**LEVELS)
  with pytest.raises(FileNotFoundError, match='no split'):
    files_lib.tfds_files('youcook2_style/demo', 'test', data_dir)
  with pytest.raises(ValueError, match='unknown options'):
    files_lib.list_files(f'tfds:youcook2_style/demo?splits=train&data_dir={data_dir}')


def test_youcook2_style_real_annotations(realdata, tmp_path):
  """The real YouCook2 trainval annotations, with random features for five of its videos."""
  path = realdata / 'youcook2' / 'youcookii_annotations_trainval.json'
  with open(path, encoding='utf-8') as f:
    database = json.load(f)['database']
  train = sorted(v for v, e in database.items() if e['subset'] == 'training')[:3]
  validation = sorted(v for v, e in database.items() if e['subset'] == 'validation')[:2]
  clips = {v: int(database[v]['duration'] // CLIP_SECONDS) for v in train + validation}
  root = str(tmp_path)
  manual = _manual_dir(root, 'youcookii_annotations_trainval.json', str(path), clips=clips)
  splits = _load('youcook2_style', root, manual)  # the default config
  assert {s: sorted(e['video_id'].decode() for e in x) for s, x in splits.items()} == {
      'train': train, 'validation': validation}
  got = {e['video_id'].decode(): _as_record(e) for x in splits.values() for e in x}
  for video_id, record in got.items():
    # Every annotated segment is a sentence, in time order.
    segments = sorted(a['segment'] for a in database[video_id]['annotations'])
    np.testing.assert_allclose(record.sentence_times, segments)
  expected, _ = _make_records(os.path.join(manual, 'features'),
                              os.path.join(manual, 'codebook.npz'), str(path),
                              os.path.join(root, 'records'))
  _assert_same(got, expected)
  report = tfds.builder('youcook2_style', data_dir=os.path.join(root, 'tfds')
                        ).info.metadata['report']
  assert report['counts']['transcripts_without_videos'] == len(database) - 5


def test_howto100m_style_equals_make_records(tmp_path):
  root = str(tmp_path)
  manual = _manual_dir(root, 'raw_caption.json', HOWTO100M)
  splits = _load('howto100m_style/demo', root, manual)
  assert list(splits) == ['train']
  got = {e['video_id'].decode(): _as_record(e) for e in splits['train']}
  expected, _ = _make_records(os.path.join(manual, 'features'),
                              os.path.join(manual, 'codebook.npz'),
                              os.path.join(manual, 'raw_caption.json'),
                              os.path.join(root, 'records'))
  _assert_same(got, expected)
  # Caption lines become sentences in time order; `silent` has no captions.
  assert got['cooking'].sentence_times[0] == (1.0, 3.0)
  assert got['silent'].sentences == [] and got['silent'].visual_tokens
  counts = tfds.builder('howto100m_style/demo', data_dir=os.path.join(root, 'tfds')
                        ).info.metadata['report']['counts']
  assert (counts['videos'], counts['failed'], counts['transcripts_without_videos']) == (3, 2, 1)


def _write_video(path, num_frames, seed, fps=20, size=(48, 40)):
  """An MPEG-4 video of moving noise, `num_frames` frames at `fps`."""
  base = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
    for i in range(num_frames):
      frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def test_videos_go_through_extract_features(tmp_path):
  """manual_dir/videos: S3D features (small clips, random weights), then the join."""
  root = str(tmp_path)
  manual = os.path.join(root, 'manual')
  videos = os.path.join(manual, 'videos')
  os.makedirs(videos)
  _write_video(os.path.join(videos, 'cooking.mp4'), 40, seed=1)  # 2 s: 3 clips of 16
  _write_video(os.path.join(videos, 'pool.mp4'), 20, seed=2)     # 1 s: 2 clips
  with open(os.path.join(videos, 'broken.mp4'), 'wb') as f:
    f.write(b'\x00\x00\x00\x18ftypmp42 not a video at all')
  # The codebook only needs the feature dimension (S3D's 1024) here.
  book = codebook_lib.build(np.random.default_rng(0).normal(size=(32, 1024)).astype(np.float32),
                            levels=1, k=4, seed=0)
  book.save(os.path.join(manual, 'codebook.npz'))
  with open(os.path.join(manual, 'raw_caption.json'), 'w', encoding='utf-8') as f:
    json.dump({'cooking': HOWTO100M['cooking']}, f)
  config = corpus.CorpusConfig(
      name='tiny', features='demo',
      feature_overrides=dict(crop_size=32, clip_frames=16, batch_size=4))
  builder = tfds.builder('howto100m_style', config=config,
                         data_dir=os.path.join(root, 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
  got = {e['video_id'].decode(): _as_record(e)
         for e in tfds.as_numpy(builder.as_dataset(split='train'))}
  assert sorted(got) == ['cooking', 'pool']
  assert len(got['cooking'].visual_tokens) == 3 and len(got['pool'].visual_tokens) == 2
  np.testing.assert_allclose(got['cooking'].clip_times, [(0, 0.8), (0.8, 1.6), (1.6, 2.0)])
  report = builder.info.metadata['report']
  assert [f['video_id'] for f in report['failures']] == ['broken']
  assert 'broken.mp4' in report['failures'][0]['error']
  # The extracted features are kept in the download folder; make-records on
  # them gives the same records.
  cache = os.path.join(root, 'tfds', 'downloads', 'vlm_jax_features', 'howto100m_style')
  (features,) = os.listdir(cache)
  expected, _ = _make_records(os.path.join(cache, features),
                              os.path.join(manual, 'codebook.npz'),
                              os.path.join(manual, 'raw_caption.json'),
                              os.path.join(root, 'records'))
  _assert_same(got, expected)


def _build_command(module_file, manual, data_dir, tfds_script):
  command = ([os.path.join(os.path.dirname(sys.executable), 'tfds'), 'build'] if tfds_script
             else [sys.executable, '-m', 'vlm_jax.datasets.build'])
  return command + [module_file, '--config', 'demo', '--manual_dir', manual,
                    '--data_dir', data_dir]


@pytest.mark.parametrize('tfds_script', [False, True], ids=['module', 'tfds_script'])
def test_tfds_build_command(tmp_path, tfds_script):
  """`tfds build <module file>` (or its beam-free twin) prepares what tfds.load reads."""
  missing = [m for m in ('apache_beam', 'mlcroissant') if importlib.util.find_spec(m) is None]
  if tfds_script and missing:
    pytest.skip(f'the `tfds` script of tensorflow-datasets 4.9.10 imports {missing} at start')
  root = str(tmp_path)
  manual = _manual_dir(root, 'raw_caption.json', HOWTO100M)
  data_dir = os.path.join(root, 'built')
  module_file = os.path.join(REPO, 'vlm_jax', 'datasets', 'howto100m_style.py')
  run = subprocess.run(_build_command(module_file, manual, data_dir, tfds_script),
                       capture_output=True, text=True, timeout=300, cwd=root, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'skipped corrupt' in run.stderr
  got = {e['video_id'].decode(): _as_record(e) for e in tfds.as_numpy(
      tfds.load('howto100m_style/demo', split='train', data_dir=data_dir))}
  expected, _ = _make_records(os.path.join(manual, 'features'),
                              os.path.join(manual, 'codebook.npz'),
                              os.path.join(manual, 'raw_caption.json'),
                              os.path.join(root, 'records'))
  _assert_same(got, expected)
