"""Rendered synthetic corpus: determinism, real decodable files, honest narration, resume."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vlm_jax.data import narration, synthetic, synthetic_videos, transcripts, video
from vlm_jax.metrics import purity
from vlm_jax.stages import synth_videos
from vlm_jax.videobert import action_classification


def test_specs_and_frames_are_deterministic_by_seed():
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  a = synthetic_videos.make_spec('v', 'train', 7, verbs, nouns)
  b = synthetic_videos.make_spec('v', 'train', 7, verbs, nouns)
  c = synthetic_videos.make_spec('v', 'train', 8, verbs, nouns)
  assert a == b and a != c
  frames_a = list(synthetic_videos.render_frames(a))
  frames_b = list(synthetic_videos.render_frames(b))
  assert len(frames_a) == round(a.duration * synthetic_videos.FPS)
  np.testing.assert_array_equal(np.stack(frames_a), np.stack(frames_b))
  for step in a.steps:
    assert step.verb in verbs and step.noun in nouns
    assert not step.sentence or (step.verb in step.sentence and step.noun in step.sentence)
    assert step.end - step.start in (3.0, 4.5)


def test_successor_prob_orders_the_verbs_and_nothing_else():
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  follows, pairs = 0, 0
  for seed in range(40):
    free = synthetic_videos.make_spec('v', 'train', seed, verbs, nouns)
    ordered = synthetic_videos.make_spec('v', 'train', seed, verbs, nouns, successor_prob=1.0)
    assert [(s.noun, s.start, s.end) for s in free.steps] == [
        (s.noun, s.start, s.end) for s in ordered.steps]
    assert ordered.steps[0].verb == free.steps[0].verb
    for before, after in zip(ordered.steps, ordered.steps[1:]):
      assert verbs.index(after.verb) == (verbs.index(before.verb) + 1) % len(verbs)
      assert not after.sentence or after.verb in after.sentence
    mixed = synthetic_videos.make_spec('v', 'train', seed, verbs, nouns, successor_prob=0.8)
    for before, after in zip(mixed.steps, mixed.steps[1:]):
      pairs += 1
      follows += verbs.index(after.verb) == (verbs.index(before.verb) + 1) % len(verbs)
  # 0.8 by the rule, plus a sixth of the other draws by chance.
  assert 0.75 < follows / pairs < 0.92


def _words(sentence: str) -> str:
  return ' '.join(sentence.split())


def test_zero_shot_prompt_and_held_out_queries_never_occur_in_training():
  """The corpus the demo renders (its default size): what evaluation reads is never trained on."""
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  specs = synth_videos.specs(72, 66, 0, verbs, nouns, num_dev=32)
  training = {_words(c.text) for s in specs if s.split == 'train' for c in s.cues}
  prompts = {_words(action_classification.TEMPLATE.format(verb=v, noun=n))
             for v in verbs for n in nouns}
  assert action_classification.TEMPLATE == 'now let me show you how to {verb} the {noun}.'
  assert not training & prompts
  prompt_frame = 'show you how to'
  assert not [t for t in training if prompt_frame in t]
  for split in ('dev', 'test'):
    queries = {_words(step.sentence) for s in specs if s.split == split for step in s.steps
               if step.sentence}
    assert len(queries) > 50 and not queries & training and not queries & prompts
  test_steps = sum(len(s.steps) for s in specs if s.split == 'test')
  assert test_steps >= 250
  # ASR-like: some steps unnarrated, fillers, narration off its step by up to a second.
  steps = [step for s in specs for step in s.steps]
  unnarrated = sum(not step.sentence for step in steps) / len(steps)
  assert 0.05 < unnarrated < 0.3
  assert sum(c.text in narration.FILLERS for s in specs for c in s.cues) > 50
  phrasings_used = {c.text.replace(step.verb, '{verb}').replace(step.noun, '{noun}')
                    for s in specs if s.split == 'train' for step in s.steps for c in s.cues
                    if c.text == step.sentence and step.sentence}
  assert len(phrasings_used) >= 25
  # The token-level fixture narrates with training phrasings only.
  rng = np.random.default_rng(0)
  record = synthetic.make_video(rng, 'v', lambda texts: [[len(t)] for t in texts], 144)
  assert record.visual_tokens


def test_cues_follow_their_steps_within_a_second_and_never_overlap():
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  shifted = 0
  for seed in range(40):
    spec = synthetic_videos.make_spec(f'v{seed}', 'train', seed, verbs, nouns)
    ends = [c.end for c in spec.cues]
    starts = [c.start for c in spec.cues]
    assert all(b >= a for a, b in zip(ends, starts[1:])), spec.cues
    for c in spec.cues:
      assert 0 <= c.start < c.end <= spec.duration
    for step in spec.steps:
      if step.sentence:
        cue = min((c for c in spec.cues if c.text == step.sentence),
                  key=lambda c: abs(c.start - step.start))
        assert cue.start >= step.start - 1.0 - 1e-6 and cue.end <= step.end + 1.0 + 1e-6
        shifted += abs(cue.start - step.start - 0.2) > 0.5
  assert shifted > 20


def test_corpus_files_decode_and_parse(tmp_path):
  manifest = synth_videos.run(str(tmp_path), num_videos=2, num_test=1, seed=3, num_dev=1)
  assert manifest['counts']['rendered'] == 4
  steps = [json.loads(line) for line in (tmp_path / 'steps.jsonl').read_text().splitlines()]
  assert [s['split'] for s in steps] == ['train', 'train', 'test', 'dev']
  for item in steps:
    path = tmp_path / 'videos' / f'{item["video_id"]}.mp4'
    frames = video.decode_frames(str(path), fps=20, size=None)
    assert frames.shape == (round(item['duration'] * 20), 128, 128, 3)
    sentences = transcripts.load_transcripts(str(tmp_path / 'transcripts' /
                                                 f'{item["video_id"]}.vtt'))
    (timed,) = sentences.values()
    narrated = [s['sentence'] for s in item['steps'] if s['sentence']]
    spoken = [s.text for s in timed]
    assert [t for t in spoken if t not in narration.FILLERS] == narrated
  assert (tmp_path / 'verbs.txt').read_text().split() == list(synthetic_videos.VERB_LOOKS)[:6]


def test_cheap_features_separate_nouns_and_verbs(tmp_path):
  """Mean colour and frame-difference energy per clip already tell the labels apart."""
  verbs, nouns = synthetic_videos.vocabularies(6, 6)
  rows, verb_labels, noun_labels = [], [], []
  for seed in range(12):
    spec = synthetic_videos.make_spec(f'v{seed}', 'train', seed, verbs, nouns)
    frames = np.stack(list(synthetic_videos.render_frames(spec))).astype(np.float32) / 255
    for step in spec.steps:
      clip = frames[int(step.start * 20):int(step.end * 20)]
      background = np.median(clip[0].reshape(-1, 3), axis=0)
      foreground = np.abs(clip - background).sum(-1) > 0.15
      colours = [(clip[..., c] * foreground).sum() / max(foreground.sum(), 1) for c in range(3)]
      motion = np.abs(np.diff(clip, axis=0)).mean(axis=(0, 3))
      rows.append(np.concatenate([colours, [motion.mean() * 50, motion.std() * 50]]))
      verb_labels.append(step.verb)
      noun_labels.append(step.noun)
  x = np.stack(rows)
  assert purity.clip_purity(x[:, :3], np.array(noun_labels)) > 3 * purity.chance_purity(
      np.array(noun_labels))
  assert purity.clip_purity(x, np.array(verb_labels)) > 1.5 * purity.chance_purity(
      np.array(verb_labels))


def test_purity_across_groups_by_hand():
  x = np.array([[0.0], [0.1], [5.0], [5.1]])
  labels = np.array(['a', 'b', 'a', 'b'])
  assert purity.clip_purity(x, labels) == 0.0  # each row's neighbour is in its own video
  # Without same-video neighbours: 0 -> 5.0 (a), 0.1 -> 5.0 (a: wrong), 5.0 -> 0.1 (b: wrong),
  # 5.1 -> 0.1 (b).
  assert purity.clip_purity(x, labels, groups=np.array([0, 0, 1, 1])) == 0.5


def test_purity_by_hand():
  x = np.array([[0.0], [0.1], [5.0], [5.2], [0.05]])
  # Nearest neighbours: 0 -> 0.05 (b, wrong), 0.1 -> 0.05 (wrong), 5.0 <-> 5.2 (right, right),
  # 0.05 -> 0 (a, wrong): 2 of 5.
  assert purity.clip_purity(x, np.array(['a', 'a', 'b', 'b', 'b'])) == pytest.approx(2 / 5)
  assert purity.chance_purity(np.array(['a', 'a', 'b', 'b'])) == 0.5


def test_cli_resumes_and_refuses_other_parameters(tmp_path):
  command = [sys.executable, '-m', 'vlm_jax.cli', 'synth-videos', f'--output={tmp_path}',
             '--num_videos=2', '--num_dev=0', '--num_test=1']
  subprocess.run(command, check=True, capture_output=True)
  (tmp_path / 'videos' / 'train_0001.mp4').unlink()
  before = (tmp_path / 'videos' / 'train_0000.mp4').stat().st_mtime_ns
  out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  assert '1 videos rendered, 2 already there' in out
  assert (tmp_path / 'videos' / 'train_0000.mp4').stat().st_mtime_ns == before
  bad = subprocess.run(command[:-1] + ['--num_test=5'], capture_output=True, text=True)
  assert bad.returncode != 0 and 'num_test' in bad.stderr
