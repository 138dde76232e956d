"""Linear probes: the JAX L-BFGS probe against scikit-learn, the tasks' examples, the binary."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from vlm_jax.evaluate import linear_probe as probe_eval
from vlm_jax.metrics import linear_probe


def _blobs(seed, n, d, c, noise=1.5):
  """n points of c Gaussian blobs in d dimensions, offset and unevenly scaled."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  features = rng.normal(size=(c, d))[labels] + noise * rng.normal(size=(n, d))
  return features * rng.uniform(0.5, 4, d) + rng.normal(size=d) * 5, labels


@pytest.mark.parametrize('n,d,c,l2', [(300, 8, 4, 1e-2), (1000, 32, 6, 1e-4)])
def test_probe_matches_scikit_learn(n, d, c, l2):
  x, y = _blobs(0, n, d, c)
  probe = linear_probe.fit(x, y, c, l2)
  assert probe.converged and probe.gradient_norm <= linear_probe.TOLERANCE
  mean, std = linear_probe.standardisation(x)
  np.testing.assert_allclose(mean, x.mean(0))
  np.testing.assert_allclose(std, x.std(0))
  z = (x - mean) / std
  reference = LogisticRegression(C=1 / (l2 * n), tol=1e-12, max_iter=10_000).fit(z, y)
  # Measured apart: coefficients 5e-8 and 5e-6, biases 4e-8 and 1e-5,
  # probabilities 6e-8 and 4e-7. In the second case (l2 = 1e-4, nearly
  # separable) both gradients are under 1e-8: the objective is that flat.
  np.testing.assert_allclose(probe.weights, reference.coef_.T, atol=2e-5)
  np.testing.assert_allclose(probe.bias, reference.intercept_, atol=1e-4)
  np.testing.assert_allclose(probe.predict_proba(x), reference.predict_proba(z), atol=1e-6)
  np.testing.assert_array_equal(probe.predict(x), reference.predict(z))
  held_out, _ = _blobs(1, 200, d, c)
  np.testing.assert_array_equal(probe.predict(held_out),
                                reference.predict((held_out - mean) / std))


def test_classes_absent_from_training_are_never_predicted():
  x, y = _blobs(2, 240, 5, 3)
  labels = np.array([0, 2, 4])[y]  # classes 1 and 3 of 5 never occur
  probe = linear_probe.fit(x, labels, 5, 1e-2)
  np.testing.assert_array_equal(probe.classes, [0, 2, 4])
  proba = probe.predict_proba(x)
  assert proba.shape == (240, 5) and not proba[:, [1, 3]].any()
  np.testing.assert_allclose(proba.sum(1), 1)
  # The same probe as scikit-learn's over the three seen classes.
  mean, std = linear_probe.standardisation(x)
  reference = LogisticRegression(C=1 / (1e-2 * 240), tol=1e-12, max_iter=10_000).fit(
      (x - mean) / std, labels)
  np.testing.assert_allclose(proba[:, [0, 2, 4]], reference.predict_proba((x - mean) / std),
                             atol=1e-6)
  # One class: constant.
  single = linear_probe.fit(x, np.full(240, 3), 5, 1e-2)
  np.testing.assert_array_equal(single.predict(x[:4]), [3, 3, 3, 3])
  np.testing.assert_array_equal(single.predict_proba(x[:1]), [[0, 0, 0, 1, 0]])


def test_select_l2_chooses_on_dev_and_ties_go_to_the_larger():
  x, y = _blobs(3, 800, 4, 2, noise=0.3)
  zeros, ones = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
  # Training 2:1 in favour of class 0; a balanced dev set from the same blobs.
  train = np.concatenate([zeros[:200], ones[:100]])
  dev = np.concatenate([zeros[200:300], ones[100:200]])
  grid = [1e-4, 1e-2, 1e3]
  # The fitted probes are right on dev; l2 = 1e3 shrinks W to ~1e-3 and predicts
  # the majority class everywhere.
  chosen = linear_probe.select_l2(x[train], y[train], x[dev], y[dev], 2, grid)
  assert chosen.dev_accuracy == {1e-4: 1.0, 1e-2: 1.0, 1e3: 0.5}
  assert chosen.l2 == 1e-2
  np.testing.assert_array_equal(chosen.probe.weights,
                                linear_probe.fit(x[train], y[train], 2, 1e-2).weights)
  # A dev set of class-1 items labelled 0: only the majority probe scores.
  flipped = ones[100:200]
  chosen = linear_probe.select_l2(x[train], y[train], x[flipped], np.zeros(100, int), 2, grid)
  assert chosen.l2 == 1e3 and chosen.dev_accuracy == {1e-4: 0.0, 1e-2: 0.0, 1e3: 1.0}


# Six seconds of two features, row t = [t, 10 t]: a mean of seconds reads off which ones.
_STATES = np.array([[t, 10 * t] for t in range(6)], np.float32)
_SEGMENTS = [(0.5, 2.2, 'a'), (3.0, 4.0, 'b'), (5.5, 9.0, 'c'), (7.0, 8.0, 'd')]


def test_segment_examples():
  x, labels, skipped = probe_eval.segment_examples(_STATES, _SEGMENTS)
  # a: seconds 0..2; b: 3 (ceil(4) - 1); c: 5 (clipped to T = 6); d: none inside.
  np.testing.assert_array_equal(x, [[1, 10], [3, 30], [5, 50]])
  assert labels == ['a', 'b', 'c'] and skipped == [3]


def test_clip_examples():
  x, labels = probe_eval.clip_examples(_STATES, _SEGMENTS)
  np.testing.assert_array_equal(x, _STATES)
  assert labels == ['a', 'a', 'a', 'b', 'background', 'c']
  # Overlaps: the later segment wins, as in zero-shot action segmentation.
  _, labels = probe_eval.clip_examples(_STATES, [(0, 4, 'x'), (2, 3, 'y')])
  assert labels == ['x', 'x', 'y', 'x', 'background', 'background']


def test_anticipation_examples():
  shuffled = [_SEGMENTS[i] for i in (2, 0, 3, 1)]  # ordered by start inside
  x, labels, skipped = probe_eval.anticipation_examples(_STATES, shuffled)
  # b from a's seconds 0..2; c from b's, 3..4 (up to c's start, 5.5 -> second 5
  # excluded); d from c's second 5 (the seconds inside the video).
  np.testing.assert_array_equal(x, [[1, 10], [3.5, 35], [5, 50]])
  assert labels == ['b', 'c', 'd'] and skipped == []
  x, labels, _ = probe_eval.anticipation_examples(_STATES, shuffled, observe_seconds=1)
  np.testing.assert_array_equal(x, [[2, 20], [4, 40], [5, 50]])
  x, labels, _ = probe_eval.anticipation_examples(_STATES, shuffled, observe_seconds=4)
  np.testing.assert_array_equal(x, [[1, 10], [2.5, 25], [3.5, 35]])
  # A step starting inside the first second has nothing before it.
  x, labels, skipped = probe_eval.anticipation_examples(
      _STATES, [(0.0, 0.5, 'x'), (0.5, 2.0, 'y'), (2.0, 3.0, 'z')])
  np.testing.assert_array_equal(x, [[0.5, 5]])
  assert labels == ['z'] and skipped == [1]


def _separable(tmp_path, missing=('te2',), with_validation=True):
  """A COIN-format file and per-second features where each step has its own feature axis."""
  steps = ['crack egg', 'pour milk', 'stir']
  rng = np.random.default_rng(0)
  database, folder = {}, tmp_path / 'features'
  folder.mkdir()
  subsets = {'tr': 'training', 'va': 'validation', 'te': 'testing'}
  for prefix, subset in subsets.items():
    if prefix == 'va' and not with_validation:
      continue
    for v in range(4):
      vid = f'{prefix}{v}'
      order = np.roll(np.arange(3), v)
      states = 0.1 * rng.normal(size=(10, 4))
      annotation = []
      for k, step in enumerate(order):
        start, end = 1 + 3 * k, 3 + 3 * k
        states[start:end, step] += 3
        annotation.append({'id': str(step), 'segment': [start, end], 'label': steps[step]})
      database[vid] = {'subset': subset, 'annotation': annotation}
      if vid not in missing:
        np.save(folder / f'{vid}.npy', states.astype(np.float32))
  path = tmp_path / 'coin.json'
  path.write_text(json.dumps({'database': database}))
  return path, folder


def _eval(*args):
  return subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'eval', 'linear-probe',
                         *map(str, args)], capture_output=True, text=True, timeout=120)


def test_binary_on_a_separable_case_with_a_missing_file(tmp_path):
  annotations, features = _separable(tmp_path)
  run = _eval('--annotations', annotations, '--features', features, '--task', 'segment',
              '--output', tmp_path / 'm.json', '--l2_grid', '0.01,1')
  assert run.returncode == 0, run.stderr
  result = json.loads((tmp_path / 'm.json').read_text())
  m, counts = result['metrics'], result['counts']
  assert m['accuracy'] == 1.0 and m['accuracy_ci95'] == [1.0, 1.0]
  assert m['chance'] == pytest.approx(1 / 3)
  # Majority: 'crack egg' (ties in training go to the first label); a third of the test steps.
  assert m['majority_label'] == 'crack egg'
  assert m['majority_baseline_accuracy'] == pytest.approx(1 / 3)
  assert m['dev_accuracy'] == {'0.01': 1.0, '1.0': 1.0}
  assert result['parameters']['l2'] == 1.0 and result['parameters']['l2_grid'] == [0.01, 1.0]
  assert result['missing_videos'] == [{'video_id': 'te2', 'reason': 'missing'}]
  assert counts == {'train': 12, 'dev': 12, 'test': 9, 'classes': 3, 'videos': 12,
                    'missing_videos': 1, 'skipped_segments': 0}
  assert result['labels'] == ['crack egg', 'pour milk', 'stir']
  assert run.stdout.startswith('linear-probe segment: accuracy 100.0% [100.0, 100.0] over 9 '
                               'test examples; chance 33.3%, majority (crack egg) 33.3%')


def test_clip_and_anticipation_in_memory(tmp_path):
  annotations, folder = _separable(tmp_path, missing=())
  arrays = {p.stem: np.load(p) for p in folder.glob('*.npy')}
  clip = probe_eval.run_arrays(str(annotations), arrays, None, 'clip', l2_grid=[0.1, 1])
  m = clip['metrics']
  # 10 s per video, 6 of them steps: background is 40% of the test seconds.
  assert clip['counts']['test'] == 40 and m['foreground_seconds'] == 24
  assert m['accuracy'] == m['foreground_accuracy'] == 1.0
  assert m['background_baseline_accuracy'] == m['majority_baseline_accuracy'] == 0.4
  assert m['majority_label'] == 'background' and m['chance'] == 0.25
  assert 'features' not in clip and clip['labels'][0] == 'background'
  # Each video's steps are a rotation of the same cycle: the last step names the next.
  anticipation = probe_eval.run_arrays(str(annotations), arrays, None, 'anticipation', l2=0.1)
  assert anticipation['metrics']['accuracy'] == 1.0
  assert anticipation['counts']['test'] == 8 and anticipation['parameters']['l2_grid'] is None
  assert anticipation['metrics']['dev_accuracy'] == {'0.1': 1.0}
  # A wrongly shaped array is reported like a bad file.
  load = probe_eval.arrays_loader({'v': np.zeros(4), 'w': np.full((2, 4), np.nan)})
  assert load('v') == (None, 'expected per-second states [T, D], got shape [4]')
  assert load('w') == (None, 'non-finite values') and load('u') == (None, 'missing')


def test_without_validation_l2_must_be_given(tmp_path):
  annotations, features = _separable(tmp_path, missing=(), with_validation=False)
  with pytest.raises(ValueError, match='no validation examples to choose l2 on; give --l2'):
    probe_eval.run(str(annotations), str(features), None, 'segment')
  result = probe_eval.run(str(annotations), str(features), None, 'segment', l2=0.5)
  assert result['parameters']['l2'] == 0.5 and result['counts']['dev'] == 0
  assert result['metrics']['accuracy'] == 1.0 and result['metrics']['dev_accuracy'] == {}


@pytest.mark.parametrize('database,field', [
    ({'v1': {'subset': 'training', 'annotation': [{'segment': [0, 1]}]}},
     'database.v1.annotation[0].label: missing'),
    ({'v1': {'subset': 'training', 'annotation': [{'segment': [2, 1], 'label': 'x'}]}},
     'database.v1.annotation[0].segment: expected 0 <= start <= end, got [2, 1]'),
    ({'v1': {'annotation': []}}, 'database.v1.subset: missing'),
])
def test_bad_annotations_name_the_field(tmp_path, database, field):
  path = tmp_path / 'coin.json'
  path.write_text(json.dumps({'database': database}))
  with pytest.raises(ValueError) as error:
    probe_eval.read_annotations(str(path))
  assert str(error.value) == f'{path}: {field}'


def test_binary_errors_are_one_line(tmp_path):
  (tmp_path / 'features').mkdir()
  bad = tmp_path / 'bad.json'
  bad.write_text('{"database": {"v1": {"subset": "training", "annotation": [{"segment": [0, 1]}]')
  run = _eval('--annotations', bad, '--features', tmp_path / 'features', '--task', 'clip',
              '--output', tmp_path / 'm.json')
  assert run.returncode == 1
  [line] = run.stderr.splitlines()
  assert line.startswith(f'vlm-jax eval linear-probe: {bad}: not JSON (')
  # The same errors from run(): no training example (every features file missing).
  (tmp_path / 'x').mkdir()
  annotations, _ = _separable(tmp_path / 'x')
  with pytest.raises(ValueError) as error:
    probe_eval.run(str(annotations), str(tmp_path / 'features'), None, 'segment')
  assert str(error.value) == (f'{annotations}: no training examples for task segment '
                              '(12 videos without features)')


def test_help_documents_the_command_without_loading_jax(tmp_path):
  code = ('import sys; from vlm_jax import cli; cli.main(["vlm-jax", "eval", "linear-probe", '
          '"--help"]); print("loaded:", [m for m in ("jax", "optax") if m in sys.modules])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, timeout=120, cwd=tmp_path).stdout
  assert out.startswith('vlm-jax eval linear-probe: supervised linear probes')
  for flag in ('--annotations', '--features', '--task', '--output', '--l2_grid', '--l2',
               '--observe_seconds'):
    assert f'  {flag}: ' in out, flag
  assert out.splitlines()[-1] == 'loaded: []'
