"""Zero-shot action classification: template, masks, language prior, the eval binary."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vlm_jax.data import tokenizer
from vlm_jax.videobert import action_classification
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import inference as videobert_inference
from vlm_jax.videobert import vocab as vocab_lib

VERBS = ['slice', 'stir', 'peel', 'pour']
NOUNS = ['tomato', 'onion', 'egg']


def test_template_and_mask_positions():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  ids, (verb_at, noun_at) = action_classification.template_ids(tok, vocab)
  words = [tok.id_to_token(i) for i in ids]
  assert words == ['now', 'let', 'me', 'show', 'you', 'how', 'to', '[MASK]', 'the', '[MASK]',
                   '.']
  assert (verb_at, noun_at) == (7, 9)
  (query,) = action_classification.queries(tok, vocab, [[3, 4, 5]], seq_len=48)
  assert [query.ids[p] for p in query.positions] == [vocab.mask_id, vocab.mask_id]
  assert query.ids[0] == vocab.cls_id and query.ids[-1] == vocab.sep_id
  assert query.ids[12] == vocab.video_sep_id
  assert list(query.ids[13:16]) == [vocab.visual_id(t) for t in (3, 4, 5)]
  assert list(query.types) == [0] * 13 + [1] * 4


def test_another_template_for_diagnostics():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  ids, positions = action_classification.template_ids(tok, vocab, 'next we {verb} the {noun}.')
  assert [tok.id_to_token(i) for i in ids] == ['next', 'we', '[MASK]', 'the', '[MASK]', '.']
  assert positions == (2, 4)


def test_long_videos_are_cut_to_the_sequence_length():
  tok = tokenizer.load()
  vocab = vocab_lib.from_tokenizer(tok, 144)
  (query,) = action_classification.queries(tok, vocab, [list(range(100))], seq_len=48)
  assert len(query.ids) == 48


def test_language_prior_sees_no_video(loaded):
  vocab = loaded.vocab
  prior = action_classification.queries(loaded.tokenizer, vocab, [[1, 2], [7, 8, 9]], 48,
                                        with_video=False)
  for q in prior:
    assert max(q.ids) < vocab.text_vocab_size and set(q.types) == {0}
  tokens = [[1, 2, 3, 4], [100, 90, 80, 70]]
  verb_prior, noun_prior = action_classification.scores(loaded, tokens, VERBS, NOUNS, False)
  np.testing.assert_array_equal(verb_prior[0], verb_prior[1])
  np.testing.assert_array_equal(noun_prior[0], noun_prior[1])
  verb, noun = action_classification.scores(loaded, tokens, VERBS, NOUNS, True)
  assert not np.allclose(verb[0], verb[1]) and not np.allclose(noun[0], noun[1])
  # Log-probabilities over the whole text vocabulary, read at the label pieces.
  assert np.all(verb < 0) and np.all(noun < 0)


def test_labels_sharing_a_first_piece_are_rejected():
  tok = tokenizer.load()
  with pytest.raises(ValueError, match='share their first WordPiece'):
    action_classification.label_token_ids(tok, ['cut', 'cut'], 'verb')


def test_eval_binary_end_to_end(run_dir, tmp_path):
  rng = np.random.default_rng(0)
  features = tmp_path / 'features'
  features.mkdir()
  codebook = codebook_lib.build(rng.normal(size=(3000, 8)).astype(np.float32), levels=2, k=12,
                                seed=0)
  codebook.save(str(tmp_path / 'codebook.npz'))
  for video in ('a', 'b'):
    np.save(features / f'{video}.npy', rng.normal(size=(6, 8)).astype(np.float32))
    np.save(features / f'{video}.times.npy', np.stack([np.arange(6) * 1.5,
                                                       np.arange(1, 7) * 1.5], 1))
  lines = [dict(video_id='a', start=0, end=4, verb='slice', noun='tomato'),
           dict(video_id='a', start=4, end=9, verb='stir', noun='egg'),
           dict(video_id='b', start=0, end=9, verb='pour', noun='onion'),
           dict(video_id='b', start=0, end=3, verb='peel', noun='onion'),
           dict(video_id='missing', start=0, end=3, verb='peel', noun='egg'),
           dict(video_id='b', start=3, end=6, verb='fly', noun='egg')]
  (tmp_path / 'segments.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
  (tmp_path / 'verbs.txt').write_text('\n'.join(VERBS) + '\n')
  (tmp_path / 'nouns.txt').write_text('\n'.join(NOUNS) + '\n')
  output = tmp_path / 'out' / 'metrics.json'
  subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'eval', 'action-classification',
       f'--workdir={run_dir}', f'--segments={tmp_path / "segments.jsonl"}',
       f'--features={features}', f'--codebook={tmp_path / "codebook.npz"}',
       f'--verbs={tmp_path / "verbs.txt"}', f'--nouns={tmp_path / "nouns.txt"}',
       f'--output={output}'], check=True, capture_output=True, text=True)
  result = json.loads(output.read_text())
  assert result['num_segments'] == 4
  assert {s['reason'] for s in result['skipped']} == {
      'no features', 'label not in the vocabulary files'}
  assert 'missing' in result['missing_videos']
  # The prior predicts one verb for every segment: its top-1 is that verb's share of labels.
  kept = lines[:4]
  loaded = videobert_inference.load(str(run_dir))
  verb_prior, _ = action_classification.scores(loaded, [[0]], VERBS, NOUNS, with_video=False)
  prior_verb = VERBS[int(verb_prior[0].argmax())]
  assert result['language_prior']['verb']['top1'] == pytest.approx(
      np.mean([x['verb'] == prior_verb for x in kept]))
  top1 = np.mean([p['predicted_verb'] == p['verb'] for p in result['predictions']])
  assert result['videobert']['verb']['top1'] == pytest.approx(top1)
  assert result['chance']['verb']['top1'] == 0.25
  assert result['videobert']['verb']['top5'] == 1.0  # 4 verbs: every label is in the top 5


def _write_two_colour_video(path, fps=20, clip_frames=30):
  """Clip 0 red, clip 1 green (64 x 64, mpeg4)."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width = stream.height = 64
    stream.pix_fmt = 'yuv420p'
    for colour in ((220, 20, 20), (20, 220, 20)):
      for _ in range(clip_frames):
        image = np.zeros((64, 64, 3), np.uint8) + np.array(colour, np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(stream.encode())


def test_generate_command(run_dir, tmp_path):
  from vlm_jax.stages import generate  # pylint: disable=import-outside-toplevel
  from vlm_jax.videobert import generation  # pylint: disable=import-outside-toplevel
  videos = tmp_path / 'videos'
  videos.mkdir()
  _write_two_colour_video(videos / 'v1.mp4')
  rng = np.random.default_rng(0)
  codebook = codebook_lib.build(rng.normal(size=(3000, 8)).astype(np.float32), levels=2, k=12,
                                seed=0)
  codebook.extras['nearest_video_id'] = np.array(['v1'] * 143 + [''])
  codebook.extras['nearest_clip_index'] = np.array([t % 2 for t in range(143)] + [-1])
  codebook.save(str(tmp_path / 'codebook.npz'))
  result = generate.run(str(run_dir), str(tmp_path / 'codebook.npz'), str(videos),
                        str(tmp_path / 'out'), sentences=['slice the tomato', 'stir the egg'],
                        tokens=[5, 143], num_tokens=3, rates=[1, 3])
  for item in result['text_to_video']:
    assert len(set(item['tokens'])) == 3 and all(0 <= t < 144 for t in item['tokens'])
  assert len(result['forecast']) == 4
  assert all(len(f['next']) == 3 and all(0 <= t < 144 for t in f['next'])
             for f in result['forecast'])
  assert (tmp_path / 'out' / 'text_to_video.png').stat().st_size > 1000
  assert (tmp_path / 'out' / 'forecast.png').stat().st_size > 1000
  frames = generation.TokenFrames(codebook_lib.Codebook.load(str(tmp_path / 'codebook.npz')),
                                  str(videos), size=32)
  red, green, none = frames(4), frames(5), frames(143)
  assert red[..., 0].mean() > 0.7 and red[..., 1].mean() < 0.2
  assert green[..., 1].mean() > 0.7 and green[..., 0].mean() < 0.2
  np.testing.assert_allclose(none, 0.5)
