"""VideoBERT captioning: the feature template, the pooled features, the captioner, the CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import captioner as captioner_config
from configs import videobert as videobert_config
from vlm_jax.captioning import model as captioner_model
from vlm_jax.captioning import train as captioner_train
from vlm_jax.data import tokenizer
from vlm_jax.stages import caption as caption_command
from vlm_jax.videobert import caption_features
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import vocab as vocab_lib

SENTENCES = ['slice the tomato', 'stir the soup in the pot', 'peel the onion and chop it',
             'pour the eggs into the pan']


def test_template_and_positions():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  ids, masks = caption_features.template_ids(tok, vocab)
  words = [tok.id_to_token(i) for i in ids]
  assert words == ['now', 'let', "'", 's', '[MASK]', 'the', '[MASK]', 'to', 'the', '[MASK]',
                   ',', 'and', 'then', '[MASK]', 'the', '[MASK]', '.']
  assert masks == [4, 6, 9, 13, 15]
  (query,) = caption_features.queries(tok, vocab, [[3, 4, 5]], seq_len=48)
  # [CLS] template(17) [>] video(3) [SEP]
  assert len(query.ids) == 23
  assert query.ids[0] == vocab.cls_id and query.ids[18] == vocab.video_sep_id
  assert query.ids[-1] == vocab.sep_id
  assert query.mask_positions == (5, 7, 10, 14, 16)
  assert [query.ids[p] for p in query.mask_positions] == [vocab.mask_id] * 5
  assert query.video_positions == (19, 20, 21)
  assert [query.ids[p] for p in query.video_positions] == [vocab.visual_id(t) for t in (3, 4, 5)]
  assert list(query.types) == [0] * 19 + [1] * 4


def test_long_videos_are_cut_and_empty_ones_rejected():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  (query,) = caption_features.queries(tok, vocab, [list(range(100))], seq_len=48)
  assert len(query.ids) == 48 and query.video_positions == tuple(range(19, 47))
  with pytest.raises(ValueError, match='no visual tokens'):
    caption_features.queries(tok, vocab, [[1], []], seq_len=48)


def test_features_are_means_of_the_hidden_states(loaded):
  tokens = [[1, 2, 3], list(range(10, 40)), [143]]
  # batch_size 2: the second chunk is padded with an empty row.
  features = caption_features.videobert_features(loaded, tokens, batch_size=2)
  hidden_size = loaded.config.model.hidden_size
  assert features.shape == (3, 2 * hidden_size)
  queries = caption_features.queries(loaded.tokenizer, loaded.vocab, tokens,
                                     loaded.config.data.seq_len)
  for row, q in enumerate(queries):
    # One unpadded sequence at a time, straight from the model.
    ids = jnp.asarray([q.ids], jnp.int32)
    hidden = np.asarray(loaded.model.apply(
        {'params': loaded.params}, ids, jnp.asarray([q.types], jnp.int32), jnp.ones_like(ids),
        jnp.zeros((1, 1), jnp.int32))['hidden'][0])
    expected = np.concatenate([hidden[list(q.video_positions)].mean(0),
                               hidden[list(q.mask_positions)].mean(0)])
    np.testing.assert_allclose(features[row], expected, rtol=1e-4, atol=1e-5)
  assert not np.allclose(features[0], features[1])


def test_pooled_clip_features_and_concatenation(loaded):
  clip_features = np.arange(12, dtype=np.float32).reshape(4, 3)
  times = np.stack([np.arange(4) * 1.5, np.arange(1, 5) * 1.5], 1)  # centres .75 2.25 3.75 5.25
  np.testing.assert_allclose(caption_features.pooled_clip_features(clip_features, times, 1, 4),
                             clip_features[1:3].mean(0))
  # No clip centre inside: the nearest clip.
  np.testing.assert_allclose(caption_features.pooled_clip_features(clip_features, times, 5, 5.1),
                             clip_features[3])
  videos = {'v': caption_features.VideoClips(clip_features, times, np.array([5, 6, 7, 8]))}
  segments = [dict(video_id='v', start=0, end=3), dict(video_id='v', start=3, end=6)]
  both = caption_features.segment_features(segments, videos, loaded, 'videobert+s3d')
  videobert = caption_features.videobert_features(loaded, [[5, 6], [7, 8]])
  np.testing.assert_allclose(both[:, :-3], videobert, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(both[:, -3:], [clip_features[:2].mean(0), clip_features[2:].mean(0)])
  s3d = caption_features.segment_features(segments, videos, None, 's3d')
  assert s3d.shape == (2, 3)


def _small_config(steps: int):
  config = captioner_config.get_config('runlocal')
  config.model.dropout_rate = 0.0
  config.train.num_steps, config.train.batch_size = steps, 8
  config.train.log_every, config.train.checkpoint_every = 10, 20
  return config


def test_decoder_is_causal_and_ignores_padded_inputs():
  config = captioner_model.CaptionerConfig(feature_dim=6, vocab_size=20, hidden_size=16,
                                           num_heads=2, mlp_dim=32, max_inputs=3,
                                           max_caption_len=5, dropout_rate=0.0)
  model = captioner_model.Captioner(config)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(1, 3, 6)).astype(np.float32)
  mask = np.array([[1, 1, 0]], np.float32)
  tokens = np.array([[2, 5, 6, 7, 8]], np.int32)
  params = model.init(jax.random.key(0), features, mask, tokens)['params']
  logits = model.apply({'params': params}, features, mask, tokens)
  later = tokens.copy()
  later[0, 3:] = [9, 10]
  changed = model.apply({'params': params}, features, mask, later)
  np.testing.assert_allclose(logits[:, :3], changed[:, :3], atol=1e-5)
  assert not np.allclose(logits[:, 3:], changed[:, 3:])
  padded = features.copy()
  padded[0, 2] = 100.0
  np.testing.assert_allclose(logits, model.apply({'params': params}, padded, mask, tokens),
                             atol=1e-5)


def test_batches_cover_each_epoch_once():
  steps = [captioner_train.batch_indices(10, 4, step, seed=3) for step in range(1, 6)]
  flat = np.concatenate(steps)
  assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
  np.testing.assert_array_equal(steps[2], captioner_train.batch_indices(10, 4, 3, seed=3))


def test_captioner_overfits_and_resumes_exactly(tmp_path):
  features = np.random.default_rng(0).normal(size=(4, 24)).astype(np.float32)
  config = _small_config(steps=60)
  config.model.dropout_rate = 0.1  # the resumed run must draw the same dropout masks
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  captioner_train.train(config, features, SENTENCES, str(straight), progress=False)
  rows = [json.loads(line) for line in (straight / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [10, 20, 30, 40, 50, 60]
  # Means over 10 steps, with dropout on: the first already falls from ~ln(vocab).
  assert rows[-1]['loss'] < 0.2 * rows[0]['loss'] and rows[-1]['accuracy'] > 0.9
  trained = captioner_train.load(str(straight))
  assert trained.step == 60
  assert captioner_train.captions(trained, features) == SENTENCES

  # Interrupted at step 30, then resumed: the same batches, masks and parameters.
  captioner_train.train(config, features, SENTENCES, str(resumed), progress=False, stop_at=30)
  captioner_train.train(config, features, SENTENCES, str(resumed), progress=False)
  manifest = json.loads((resumed / 'manifest.json').read_text())
  assert manifest['resumed_from_step'] == 30 and manifest['final_step'] == 60
  rows = [json.loads(line) for line in (resumed / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [10, 20, 30, 40, 50, 60]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               trained.params, captioner_train.load(str(resumed)).params)


def test_segment_ids():
  segments = [dict(video_id='a', start=0, end=1), dict(video_id='b', start=0, end=1),
              dict(video_id='a', start=1, end=2), dict(video_id='c', clip_id='c_7', start=0,
                                                       end=1)]
  assert caption_command.segment_ids(segments) == ['a_0', 'b_0', 'a_1', 'c_7']


def _corpus(tmp_path, rng):
  """Clip features where each sentence's action has its own direction; segments JSONL."""
  directions = rng.normal(size=(len(SENTENCES), 8)) * 3
  features_dir = tmp_path / 'features'
  features_dir.mkdir()
  files = {}
  for split, num_videos in (('train', 6), ('test', 2)):
    lines = []
    for v in range(num_videos):
      video_id = f'{split}{v}'
      order = rng.permutation(len(SENTENCES))
      # Two 1.5 s clips per step.
      clips = np.concatenate([directions[a] + 0.3 * rng.normal(size=(2, 8)) for a in order])
      times = np.stack([np.arange(len(clips)) * 1.5, np.arange(1, len(clips) + 1) * 1.5], 1)
      np.save(features_dir / f'{video_id}.npy', clips.astype(np.float32))
      np.save(features_dir / f'{video_id}.times.npy', times)
      lines += [dict(video_id=video_id, start=3.0 * i, end=3.0 * i + 3, sentence=SENTENCES[a])
                for i, a in enumerate(order)]
    lines.append(dict(video_id='missing', start=0, end=3, sentence=SENTENCES[0]))
    files[split] = tmp_path / f'{split}.jsonl'
    files[split].write_text(''.join(json.dumps(x) + '\n' for x in lines))
  codebook = codebook_lib.build(rng.normal(size=(3000, 8)).astype(np.float32) * 3, levels=2,
                                k=12, seed=0)
  codebook.save(str(tmp_path / 'codebook.npz'))
  return features_dir, files


def test_cli_end_to_end(run_dir, tmp_path):
  features_dir, files = _corpus(tmp_path, np.random.default_rng(0))
  output = tmp_path / 'caption'
  command = [sys.executable, '-m', 'vlm_jax.cli', 'caption', f'--videobert={run_dir}',
             f'--features={features_dir}', f'--codebook={tmp_path / "codebook.npz"}',
             f'--train_segments={files["train"]}', f'--test_segments={files["test"]}',
             f'--output={output}', f'--config={captioner_config.__file__}:runlocal',
             '--config.train.num_steps=80', '--noscore']
  done = subprocess.run(command, check=True, capture_output=True, text=True)
  assert 'wrote' in done.stdout
  manifest = json.loads((output / 'manifest.json').read_text())
  hidden_size = videobert_config.get_config('tiny,runlocal').model.hidden_size
  assert manifest['features']['train']['feature_dim'] == 2 * hidden_size + 8
  assert manifest['features']['train']['segments'] == 24
  assert [s['video_id'] for s in manifest['features']['test']['skipped']] == ['missing']
  predictions = [json.loads(line) for line in
                 (output / 'predictions.jsonl').read_text().splitlines()]
  assert len(predictions) == 8 and {p['id'] for p in predictions} == {
      f'test{v}_{i}' for v in range(2) for i in range(4)}
  references = json.loads((output / 'references.json').read_text())
  assert set(references) == {p['id'] for p in predictions}

  # The eval binary scores them; each action's own direction makes them learnable.
  metrics_path = tmp_path / 'metrics.json'
  scored = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'eval', 'captioning',
       f'--references={output / "references.json"}',
       f'--predictions={output / "predictions.jsonl"}', f'--output={metrics_path}'],
      check=True, capture_output=True, text=True)
  assert 'Bleu_4' in scored.stdout
  scores = json.loads(metrics_path.read_text())['scores']
  assert scores['Bleu_4'] > 0.5 and scores['CIDEr'] > 1.0, scores

  # A re-run finds the features up to date and the captioner trained (in-process:
  # a second interpreter start would double the test's time).
  config = captioner_config.get_config('runlocal')
  config.train.num_steps = 80
  rerun = caption_command.run(config, str(features_dir), str(files['train']),
                              str(files['test']), str(output), str(run_dir),
                              str(tmp_path / 'codebook.npz'), stages=('features', 'train'))
  assert rerun['features']['test'] == manifest['features']['test']
  assert rerun['train']['resumed_from_step'] == 80
  assert rerun['train']['first_loss_this_run'] is None
