"""VideoCLIP records, pipeline, trainer, encoders and their CLI, on a small hand-made corpus."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import make_records as make_records_config
from configs import videoclip as videoclip_config
from vlm_jax import config_checks
from vlm_jax.data import files as files_lib
from vlm_jax.data import records
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import transcripts
from vlm_jax.data import windows as windows_lib
from vlm_jax.stages import encode_video, make_records
from vlm_jax.train import partitioning
from vlm_jax.videoclip import checks as videoclip_checks
from vlm_jax.videoclip import inference as videoclip_inference
from vlm_jax.videoclip import pipeline as videoclip_pipeline
from vlm_jax.data import feature_records
from vlm_jax.videoclip import step as videoclip_step
from vlm_jax.videoclip import trainer as videoclip_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 16


def _corpus(num_videos: int, seed: int = 0) -> list[feature_records.FeatureRecord]:
  """Videos of 4 topics: features offset by topic, WordPieces drawn from the topic's 10."""
  rng = np.random.default_rng(seed)
  out = []
  for v in range(num_videos):
    topic, seconds = v % 4, int(rng.integers(20, 40))
    features = rng.normal(size=(seconds, DIM)).astype(np.float32) + topic
    sentences, times, t = [], [], 0.0
    while t < seconds - 3:
      sentences.append([2000 + 10 * topic + int(x) for x in rng.integers(0, 10, rng.integers(3, 10))])
      times.append((t, t + 3.0))
      t += 3.5
    out.append(feature_records.FeatureRecord(f'v{v:03d}', features, sentences, times))
  return out


@pytest.fixture(scope='module')
def record_files(tmp_path_factory):
  directory = tmp_path_factory.mktemp('videoclip_records')
  return records.write_shards(_corpus(24), str(directory), 2,
                              serialize=feature_records.to_example)


def _config(files, **train):
  c = videoclip_config.get_config('tiny,runlocal')
  c.data.train_files = ','.join(files)
  c.model.feature_dim = DIM
  for key, value in train.items():
    c.train[key] = value
  return c


def test_per_second_takes_the_clip_holding_each_second():
  features = np.arange(4)[:, None] * np.ones((1, 2))
  clip_times = np.array([[0, 1.5], [1.5, 3.0], [3.0, 4.5], [4.5, 6.0]])
  rows = feature_records.per_second(features, clip_times)[:, 0]
  # Middles 0.5, 1.5, 2.5, 3.5, 4.5, 5.5 -> clips 0, 1, 1, 2, 3, 3.
  np.testing.assert_array_equal(rows, [0, 1, 1, 2, 3, 3])


def test_records_round_trip_as_float16(tmp_path):
  original = _corpus(3)
  paths = records.write_shards(original, str(tmp_path), 2, serialize=feature_records.to_example)
  back = sorted(feature_records.read(paths), key=lambda r: r.video_id)
  for a, b in zip(original, back):
    assert a.video_id == b.video_id and a.sentences == b.sentences
    np.testing.assert_allclose(a.sentence_times, b.sentence_times)
    np.testing.assert_array_equal(b.features, a.features.astype(np.float16))


def test_truncated_record_file_is_named(tmp_path, record_files):
  data = open(record_files[0], 'rb').read()
  bad = tmp_path / 'bad.tfrecord'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(files_lib.DataError, match='bad.tfrecord'):
    feature_records.load_corpus([str(bad)])


def test_make_records_videoclip_format(tmp_path):
  features, transcript_dir = tmp_path / 'features', tmp_path / 'transcripts'
  features.mkdir()
  transcript_dir.mkdir()
  rng = np.random.default_rng(0)
  clips = rng.normal(size=(6, DIM)).astype(np.float32)
  np.save(features / 'vid.npy', clips)
  np.save(features / 'vid.times.npy', np.stack([np.arange(6) * 1.5, np.arange(1, 7) * 1.5], 1))
  np.save(features / 'silent.npy', clips[:2])
  np.save(features / 'silent.times.npy', np.array([[0, 1.5], [1.5, 3.0]]))
  (transcript_dir / 'vid.vtt').write_text(
      'WEBVTT\n\n00:00:00.000 --> 00:00:03.000\nnow let me show you how to slice the tomato.\n\n'
      '00:00:04.000 --> 00:00:08.000\nnext we boil the egg.\n')
  c = make_records_config.get_config('videoclip')
  manifest = make_records.run(str(features), None, str(transcript_dir), str(tmp_path / 'out'), c,
                              progress=False)
  assert manifest['counts']['videos'] == 2 and manifest['codebook'] is None
  by_id = {r.video_id: r for r in feature_records.read(manifest['shards'])}
  np.testing.assert_array_equal(
      by_id['vid'].features, feature_records.per_second(clips, np.load(
          features / 'vid.times.npy')).astype(np.float16))
  assert by_id['vid'].features.shape == (9, DIM)
  tok = tokenizer_lib.load()
  expected = tokenizer_lib.wordpieces(tok, [s.text for s in transcripts.load_transcripts(
      str(transcript_dir))['vid']])
  assert by_id['vid'].sentences == expected
  assert by_id['silent'].sentences == []
  # A video without sentences cannot give pairs: left out of training, and said so.
  corpus = feature_records.load_corpus(manifest['shards'])
  assert corpus.video_ids == ['vid'] and corpus.skipped[0]['video_id'] == 'silent'


def test_batches_follow_the_sampling_and_split_over_processes(record_files):
  corpus = feature_records.load_corpus(record_files)
  opts = videoclip_pipeline.sampling_options(_config(record_files))
  plan = videoclip_pipeline.random_plan(len(corpus), 4, np.random.default_rng(0))
  whole = list(videoclip_pipeline.make_dataset(corpus, plan, 3, 7, opts).as_numpy_iterator())
  halves = [list(videoclip_pipeline.make_dataset(corpus, plan, 3, 7, opts, 0, p, 2)
                 .as_numpy_iterator()) for p in range(2)]
  assert len(whole) == len(plan) == 6
  for b, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(batch[key],
                                    np.concatenate([halves[0][b][key], halves[1][b][key]]))
    np.testing.assert_array_equal(np.unique(batch['video_index']), np.sort(plan[b]))
    for row in range(len(batch['input_ids'])):
      video = batch['video_index'][row]
      seconds = batch['feature_mask'][row].sum()
      assert opts.min_video_seconds <= seconds <= opts.max_video_seconds
      clip = batch['features'][row, :seconds]
      source = corpus.features[video].astype(np.float32)
      # The clip is a contiguous run of the video's own seconds.
      starts = [s for s in range(len(source) - seconds + 1)
                if np.array_equal(source[s:s + seconds], clip)]
      assert starts
      ids = batch['input_ids'][row][batch['attention_mask'][row] > 0]
      assert ids[0] == 101 and ids[-1] == 102 and len(ids) <= opts.text_tokens_cap + 2
      vocab = {t for s in corpus.sentences[video] for t in s}
      assert set(ids[1:-1]) <= vocab


def test_retrieval_plan_batches_come_from_one_neighbourhood():
  rng = np.random.default_rng(0)
  # 6 tight clusters of 8 far-apart videos; k = 4 drawn from a seed's 8 neighbours.
  vectors = np.repeat(rng.normal(size=(6, 8)) * 100, 8, axis=0) + rng.normal(size=(48, 8))
  plan = videoclip_pipeline.retrieval_plan(vectors.astype(np.float32), 4, rng, 512)
  assert plan.shape == (12, 4)
  for row in plan:
    assert len(set(row // 8)) == 1 and len(set(row)) == 4


def test_sharded_step_equals_single_device(record_files):
  config = _config(record_files)
  corpus = feature_records.load_corpus(record_files)
  config = videoclip_trainer.with_corpus_size(config, len(corpus))
  opts = videoclip_pipeline.sampling_options(config)
  batch = videoclip_pipeline.batch_of_videos(corpus, [0, 5, 9, 14], 0, 0, opts)
  batch.pop('video_index')
  losses = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    c = config.copy_and_resolve_references()
    setup = videoclip_step.build(c, devices)
    state = setup.sharded.create_state(videoclip_step.initial_params(setup))
    state, metrics = setup.train_step(state, partitioning.device_batch(batch, setup.mesh))
    losses.append((float(metrics['loss']), jax.device_get(state.params)))
  assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-5)
  for a, b in zip(jax.tree.leaves(losses[0][1]), jax.tree.leaves(losses[1][1])):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_config_checks_name_the_field(record_files):
  config = videoclip_trainer.with_corpus_size(_config(record_files), 24)
  config.data.videos_per_batch = 16
  with pytest.raises(config_checks.ConfigError, match='data.videos_per_batch'):
    videoclip_checks.validate(config, 4, 1, 24)
  config.data.videos_per_batch = 4
  config.optim.grad_accum_steps = 2
  with pytest.raises(config_checks.ConfigError, match='optim.grad_accum_steps'):
    videoclip_checks.validate(config, 4, 1, 24)


@pytest.fixture(scope='module')
def trained(record_files, tmp_path_factory):
  """A full run, and one stopped mid-epoch then resumed by the CLI."""
  straight = tmp_path_factory.mktemp('vc_straight')
  videoclip_trainer.train(_config(record_files), str(straight))
  resumed = tmp_path_factory.mktemp('vc_resumed')
  videoclip_trainer.train(_config(record_files), str(resumed), stop_at=3)
  out = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/videoclip.py:tiny,runlocal', f'--workdir={resumed}',
       f'--config.data.train_files={",".join(record_files)}', f'--config.model.feature_dim={DIM}'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), check=True)
  return straight, resumed, out.stdout + out.stderr


def test_resume_mid_epoch_equals_a_straight_run(trained):
  straight, resumed, log = trained
  assert 'resumed from the checkpoint at step 3' in log
  a, b = videoclip_inference.load(str(straight)), videoclip_inference.load(str(resumed))
  assert a.step == b.step == 12
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, atol=1e-6)
  plans = sorted(os.listdir(straight / 'plans'))
  assert plans == ['epoch_0000.npy', 'epoch_0001.npy']
  manifest = json.loads((straight / 'manifest.json').read_text())
  assert manifest['retrieval'] and manifest['steps_per_epoch'] == 6


def test_encoders_feed_the_retrieval_binary(trained, record_files, tmp_path):
  run = str(trained[0])
  corpus = feature_records.load_corpus(record_files)
  features = tmp_path / 'features'
  features.mkdir()
  for video_id, f in zip(corpus.video_ids[:6], corpus.features[:6]):
    np.save(features / f'{video_id}.npy', f.astype(np.float32))
  segments = tmp_path / 'segments.jsonl'
  segments.write_text(''.join(json.dumps({'clip_id': f'{v}_0', 'video_id': v, 'start': 0,
                                          'end': 40.0, 'sentence': f'text {v}'}) + '\n'
                              for v in corpus.video_ids[:6]))
  texts = tmp_path / 'texts.txt'
  texts.write_text(''.join(f'text {v}\n' for v in corpus.video_ids[:6]))
  cli = [sys.executable, '-m', 'vlm_jax.cli']
  env = dict(os.environ)
  for args in (['encode-video', f'--workdir={run}', f'--features={features}',
                f'--segments={segments}', f'--output={tmp_path / "clips"}'],
               ['encode-video', f'--workdir={run}', f'--features={features}', '--per_second',
                f'--output={tmp_path / "states"}'],
               ['encode-text', f'--workdir={run}', f'--input={texts}',
                f'--output={tmp_path / "texts.npy"}'],
               ['eval', 'retrieval', f'--annotations={segments}', f'--features={tmp_path / "clips"}',
                f'--text_embeddings={tmp_path / "texts.npy"}',
                f'--output={tmp_path / "metrics.json"}']):
    subprocess.run(cli + args, cwd=REPO, check=True, capture_output=True, env=env)
  loaded = videoclip_inference.load(run)
  # Oracle: the model applied directly to each video's 32-s windows.
  for video_id, f in zip(corpus.video_ids[:2], corpus.features[:2]):
    f = f.astype(np.float32)
    # MMPT's protocol (eval.pooled_windows = 'first'): the segment's first 32 s.
    windows, masks = windows_lib.windows(f[:loaded.window], loaded.window)
    direct = loaded.model.apply({'params': loaded.params}, windows, masks,
                                method='encode_video')[0]
    np.testing.assert_allclose(np.load(tmp_path / 'clips' / f'{video_id}_0.npy'), direct,
                               atol=1e-5)
    assert np.load(tmp_path / 'states' / f'{video_id}.npy').shape == (len(f), 64)
  text_rows = np.load(tmp_path / 'texts.npy')
  assert (tmp_path / 'texts.txt').read_text().split('\n')[0] == f'text {corpus.video_ids[0]}'
  ids, mask = videoclip_inference.text_inputs(loaded, [f'text {corpus.video_ids[0]}'])
  direct = loaded.model.apply({'params': loaded.params}, ids, mask, method='encode_text')
  np.testing.assert_allclose(text_rows[0], np.asarray(direct)[0], atol=1e-5)
  # The binary's recalls against ranks computed by hand from the files it read
  # (pessimistic ties: every item scoring at least the ground truth's counts).
  metrics = json.loads((tmp_path / 'metrics.json').read_text())['metrics']
  clips = np.stack([np.load(tmp_path / 'clips' / f'{v}_0.npy') for v in corpus.video_ids[:6]])
  similarity = text_rows.astype(np.float64) @ clips.astype(np.float64).T
  ranks = (similarity >= np.diag(similarity)[:, None]).sum(1)
  for k in (1, 5, 10):
    assert metrics[f'R@{k}'] == pytest.approx(np.mean(ranks <= k))
  assert metrics['median_rank'] == pytest.approx(np.median(ranks))


def test_encode_video_over_two_processes_is_the_one_process_output(trained, record_files,
                                                                    tmp_path):
  corpus = feature_records.load_corpus(record_files)
  features = tmp_path / 'features'
  features.mkdir()
  for video_id, f in zip(corpus.video_ids[:5], corpus.features[:5]):
    np.save(features / f'{video_id}.npy', f.astype(np.float32))
  run, features = str(trained[0]), str(features)
  one = encode_video.run(run, features, str(tmp_path / 'one'), progress=False)
  two = str(tmp_path / 'two')
  parts = [encode_video.run(run, features, two, progress=False, process_index=i,
                            process_count=2) for i in range(2)]
  ids = [p['share']['item_ids'] for p in parts]
  assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == sorted(
      corpus.video_ids[:5])
  assert [p['written'] for p in parts] == [len(i) for i in ids] and one['written'] == 5
  merged = encode_video.merge(features, two)
  assert (merged['done'], merged['failed'], merged['missing']) == (5, 0, 0)
  for video_id in corpus.video_ids[:5]:
    np.testing.assert_array_equal(np.load(os.path.join(two, f'{video_id}.npy')),
                                  np.load(tmp_path / 'one' / f'{video_id}.npy'))
