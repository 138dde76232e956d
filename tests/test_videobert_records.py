"""make-records: features + codebook + transcripts -> TFRecords the pipeline reads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import make_records as make_records_config
from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import transcripts as transcripts_lib
from vlm_jax.stages import make_records
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import make_records as join
from vlm_jax.videobert import pipeline
from vlm_jax.videobert import vocab as vocab_lib

DIM, LEVELS, K = 8, 2, 3
CLIP_SECONDS = 1.5
SRT = """1
00:00:00,500 --> 00:00:03,000
Now let me show you how to clean the pool.

2
00:00:04,000 --> 00:00:07,500
Then scrub the tiles!
"""
HOWTO100M = {'cooking': {'start': [9.0, 1.0], 'end': [11.0, 3.0],
                         'text': ['stir it well', 'add the salt']},
             'no_features': {'start': [0.0], 'end': [1.0], 'text': ['hello there']}}


def _features(rng, num_clips):
  centres = rng.normal(0, 5, (4, DIM))
  return (centres[rng.integers(0, 4, num_clips)] + rng.normal(0, 0.3, (num_clips, DIM))
          ).astype(np.float16)


def _times(num_clips):
  starts = np.arange(num_clips) * CLIP_SECONDS
  return np.stack([starts, starts + CLIP_SECONDS], axis=1)


@pytest.fixture
def corpus(tmp_path):
  rng = np.random.default_rng(0)
  features = tmp_path / 'features'
  features.mkdir()
  arrays = {}
  for video_id, n in (('pool', 7), ('cooking', 9), ('silent', 5)):
    arrays[video_id] = _features(rng, n)
    np.save(features / f'{video_id}.npy', arrays[video_id])
    np.save(features / f'{video_id}.times.npy', _times(n))
  np.save(features / 'no_times.npy', _features(rng, 3))
  (features / 'corrupt.npy').write_bytes(b'\x93NUMPY not really')
  book = codebook_lib.build(np.concatenate(list(arrays.values())).astype(np.float32),
                            levels=LEVELS, k=K, seed=0)
  book.save(str(tmp_path / 'codebook.npz'))
  transcripts = tmp_path / 'transcripts'
  transcripts.mkdir()
  (transcripts / 'pool.srt').write_text(SRT)
  (transcripts / 'captions.json').write_text(json.dumps(HOWTO100M))
  return dict(features=str(features), codebook=str(tmp_path / 'codebook.npz'),
              transcripts=str(transcripts), arrays=arrays, book=book)


def _config(**overrides):
  config = make_records_config.get_config()
  config.num_shards = 2
  config.update(overrides)
  return config


def test_records_read_back_and_feed_the_pipeline(corpus, tmp_path):
  output = str(tmp_path / 'records')
  manifest = make_records.run(corpus['features'], corpus['codebook'], corpus['transcripts'],
                              output, _config(), progress=False)
  assert not manifest['skipped']
  c = manifest['counts']
  assert (c['videos'], c['with_transcript'], c['without_transcript']) == (3, 2, 1)
  assert c['clips'] == 7 + 9 + 5 and c['sentences'] == 4 and c['failed'] == 2
  assert {f['file'] for f in manifest['failures']} == {'corrupt.npy', 'no_times.npy'}
  assert manifest['transcripts_without_features'] == ['no_features']
  assert manifest['num_visual_tokens'] == K**LEVELS

  tokenizer = tokenizer_lib.load()
  sentences = transcripts_lib.load_transcripts(corpus['transcripts'])
  assert [s.text for s in sentences['pool']] == ['Now let me show you how to clean the pool.',
                                                 'Then scrub the tiles!']
  got = {r.video_id: r for r in records.read(manifest['shards'])}
  assert sorted(got) == ['cooking', 'pool', 'silent']
  for video_id, features in corpus['arrays'].items():
    r = got[video_id]
    assert r.visual_tokens == codebook_lib.assign(corpus['book'], features).tolist()
    assert all(0 <= t < K**LEVELS for t in r.visual_tokens)
    np.testing.assert_allclose(r.clip_times, _times(len(features)), rtol=1e-6)
    expected = sorted(sentences.get(video_id, []), key=lambda s: s.start)
    assert r.sentences == tokenizer_lib.wordpieces(tokenizer, [s.text for s in expected])
    np.testing.assert_allclose(np.reshape(r.sentence_times, (-1, 2)),
                               np.reshape([(s.start, s.end) for s in expected], (-1, 2)))
  # Video-only record: no transcript, empty text lists.
  assert got['silent'].sentences == [] and got['silent'].sentence_times == []
  # HowTo100M lines come out in time order (the pipeline joins next neighbours).
  assert got['cooking'].sentences[0] == tokenizer_lib.wordpieces(tokenizer, ['add the salt'])[0]

  vocab = vocab_lib.from_tokenizer(tokenizer, K**LEVELS)
  dataset = pipeline.make_dataset(manifest['shards'], pipeline.PipelineOptions(
      seq_len=32, max_predictions=5, shuffle_buffer=8), vocab, batch_size=4, seed=0)
  for batch in dataset.take(3):
    ids = batch['input_ids'].numpy()
    assert ids.shape == (4, 32) and ids.max() < vocab.size


def test_resume_and_cli(corpus, tmp_path):
  output = str(tmp_path / 'records')
  first = make_records.run(corpus['features'], corpus['codebook'], corpus['transcripts'],
                           output, _config(), progress=False)
  mtimes = [os.stat(p).st_mtime_ns for p in first['shards']]
  # Same inputs and parameters, through the command line: nothing to do.
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'make-records', '--features', corpus['features'],
       '--codebook', corpus['codebook'], '--transcripts', corpus['transcripts'],
       '--output', output, '--config.num_shards=2'],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr
  assert 'up to date' in proc.stdout
  assert [os.stat(p).st_mtime_ns for p in first['shards']] == mtimes
  # Other parameters: rewritten; the old shard set is replaced, not mixed in.
  third = make_records.run(corpus['features'], corpus['codebook'], corpus['transcripts'],
                           output, _config(num_shards=3), progress=False)
  assert not third['skipped'] and len(third['shards']) == 3
  assert sorted(n for n in os.listdir(output) if n.endswith('.tfrecord')) == sorted(
      os.path.basename(p) for p in third['shards'])
  assert len(list(records.read(third['shards']))) == 3
  # No transcripts at all: every record video-only.
  fourth = make_records.run(corpus['features'], corpus['codebook'], None,
                            str(tmp_path / 'video_only'), _config(), progress=False)
  assert fourth['counts']['without_transcript'] == 3
  assert all(not r.sentences for r in records.read(fourth['shards']))


def test_two_processes_write_the_records_of_one_and_merge_its_manifest(corpus, tmp_path):
  args = (corpus['features'], corpus['codebook'], corpus['transcripts'])
  one = make_records.run(*args, str(tmp_path / 'one'), _config(), progress=False)
  output = str(tmp_path / 'records')
  # A one-process set already there is replaced by the merge, not mixed in.
  make_records.run(*args, output, _config(num_shards=1), progress=False)
  parts = [make_records.run(*args, output, _config(), progress=False, process_index=i,
                            process_count=2) for i in range(2)]
  ids = [p['share']['item_ids'] for p in parts]
  assert not set(ids[0]) & set(ids[1])
  assert sorted(ids[0] + ids[1]) == codebook_lib.list_features(corpus['features'])
  assert all(os.path.basename(path).startswith(f'videos-process0000{i}of00002-')
             for i, p in enumerate(parts) for path in p['shards'])
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'make-records', '--features', corpus['features'],
       '--output', output, '--merge'],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr
  merged = json.loads(open(os.path.join(output, 'manifest.json'), encoding='utf-8').read())
  assert sorted(n for n in os.listdir(output) if n.endswith('.tfrecord')) == sorted(
      os.path.basename(p) for p in merged['shards'])
  assert merged['counts'] == dict(one['counts'], missing=0)
  assert merged['transcripts_without_features'] == one['transcripts_without_features']
  assert sorted(f['file'] for f in merged['failures']) == sorted(
      f['file'] for f in one['failures'])
  assert merged['num_visual_tokens'] == one['num_visual_tokens']
  by_id = lambda shards: {r.video_id: r for r in records.read(shards)}
  assert by_id(merged['shards']) == by_id(one['shards'])
  # One process over the same inputs and parameters now has nothing to do.
  assert make_records.run(*args, output, _config(), progress=False)['skipped']


def test_join_checks_clip_times(corpus):
  tokenizer = tokenizer_lib.load()
  features = corpus['arrays']['pool']
  with pytest.raises(ValueError, match='clip times'):
    join.video_record('pool', features, _times(3), corpus['book'], None, tokenizer)
  with pytest.raises(ValueError, match='codebook'):
    join.video_record('pool', features[:, :4], _times(7), corpus['book'], None, tokenizer)
  assert join.match(['a', 'b'], {'b': [], 'c': []}) == (['b'], ['a'], ['c'])
