"""The demo main job end to end (runlocal preset), its resumption, and the Colab notebook."""

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_report_layout import layout_problems


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('demo')
  subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={workdir}',
                  '--config', 'configs/demo.py:runlocal'], cwd=REPO, check=True,
                 capture_output=True, text=True)
  return workdir


def test_demo_writes_the_report(demo_dir):
  report = demo_dir / 'report'
  html = (report / 'index.html').read_text()
  for picture in ('curves.png', 'text_to_video.png', 'forecast.png', 'alignment.png'):
    assert (report / picture).stat().st_size > 1000 and picture in html
  assert any(name.startswith('preview_test_') for name in os.listdir(report))
  metrics = json.loads((report / 'metrics.json').read_text())
  ac = metrics['action_classification']
  steps = [json.loads(line) for line in (demo_dir / 'corpus' / 'steps.jsonl').open()]
  test_steps = sum(len(v['steps']) for v in steps if v['split'] == 'test')
  narrated_test_steps = sum(bool(s['sentence']) for v in steps if v['split'] == 'test'
                            for s in v['steps'])
  assert ac['num_segments'] == test_steps
  assert metrics['action_classification_dev']['num_segments'] == sum(
      len(v['steps']) for v in steps if v['split'] == 'dev')
  assert ac['chance']['verb']['top1'] == pytest.approx(1 / ac['num_verbs'])
  # The interval is the bootstrap's over the steps: around the value, inside [0, 1].
  for name in ('videobert', 'language_prior'):
    for what in ('verb', 'noun'):
      low, high = ac[name][what]['top1_ci95']
      assert 0 <= low <= ac[name][what]['top1'] <= high <= 1
  assert '[95% bootstrap interval over the steps]' in html
  leaves = metrics['codebook_leaves']
  for item in metrics['text_to_video']:
    assert len(set(item['tokens'])) == len(item['tokens']) and all(
        0 <= t < leaves for t in item['tokens'])
  assert set(metrics['stages']) == {'corpus', 'features', 'codebook', 'records', 'train',
                                    'caption', 'evaluate'}
  captioning = metrics['captioning']
  assert captioning['num_test_segments'] == narrated_test_steps and 'Captioning' in html
  assert all(0 <= captioning['scores'][k] <= 1 for k in ('Bleu_4', 'ROUGE_L'))
  assert len(captioning['examples']) == 6 and all(e['caption'] for e in captioning['examples'])
  # Held-out videos only: every evaluated step belongs to a test video.
  assert {p['video_id'] for p in metrics['predictions']} <= {
      v['video_id'] for v in steps if v['split'] == 'test'}
  assert 'Synthetic cooking videos were rendered, each step narrated by a sentence.' in html


def _narrated(demo_dir, split):
  steps = [json.loads(line) for line in (demo_dir / 'corpus' / 'steps.jsonl').open()]
  return [dict(s, video_id=v['video_id']) for v in steps if v['split'] == split
          for s in v['steps'] if s['sentence']]


def test_a_short_run_learns(demo_dir):
  """60 steps from random weights: the held-out narration's pieces, well above chance.

  The runlocal model learns the narration's most frequent pieces first (after 4
  steps its cloze was 2%, the baseline's 14%); chance over the WordPieces is 1/30522.
  """
  from vlm_jax.data import tokenizer  # pylint: disable=import-outside-toplevel
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  tok = tokenizer.load()
  for split in ('dev', 'test'):
    # Every WordPiece of every narrated held-out step is masked once.
    pieces = sum(len(tok.encode(s['sentence'], add_special_tokens=False).ids)
                 for s in _narrated(demo_dir, split))
    assert metrics['cloze'][split]['num_masked'] == pieces
  test = metrics['cloze']['test']
  assert test['model']['top1_ci95'][0] > 0.05
  assert test['model']['top1'] >= 0.8 * test['most_frequent_piece']['top1']
  assert 'Held-out cloze' in (demo_dir / 'report' / 'index.html').read_text()


def test_alignment_is_measured_against_the_always_aligned_baseline(demo_dir):
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  for split in ('dev', 'test'):
    r = metrics['alignment'][split]
    assert r['num_steps'] == len(_narrated(demo_dir, split))
    # The baseline is right on exactly the steps shown with their own video.
    assert r['always_aligned']['mean'] == pytest.approx(1 - r['num_negatives'] / r['num_steps'])
    for name in ('accuracy', 'always_aligned', 'pairwise', 'cloze_pairwise'):
      low, high = r[name]['ci95']
      assert 0 <= low <= r[name]['mean'] <= high <= 1
  assert metrics['training_mix']['negative_prob'] == pytest.approx(
      metrics['alignment']['test']['negative_prob'])
  html = (demo_dir / 'report' / 'index.html').read_text()
  assert 'Video-text alignment (held-out steps)' in html and 'always says' in html


def test_text_to_video_is_scored_against_chance_and_frequent_tokens(demo_dir):
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  scores = metrics['text_to_video_scores']['test']
  assert scores['num_steps'] == len(_narrated(demo_dir, 'test'))
  assert set(scores['scores']) == {'videobert', 'videobert_against_prior', 'most_frequent',
                                   'chance', 'own_clips'}
  labels = metrics['token_labels']
  steps = _narrated(demo_dir, 'test')
  # The most-frequent-token baseline: the share of steps whose verb is that token's label.
  frequent = int(np.argmax(labels['count']))
  assert scores['scores']['most_frequent']['verb']['mean'] == pytest.approx(
      np.mean([s['verb'] == labels['verb'][frequent] for s in steps]))
  for item in metrics['text_to_video']:
    for key in ('tokens', 'tokens_against_prior'):
      assert len(set(item[key])) == len(item[key])
  # One shown step per noun, as far as the test steps go.
  nouns = [item['noun'] for item in metrics['text_to_video']]
  assert len(set(nouns)) == len(nouns) >= min(6, len({s['noun'] for s in steps}))


def test_forecasts_start_from_different_tokens_and_show_others(demo_dir):
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  forecast = metrics['forecast']
  starts = list(dict.fromkeys(f['token'] for f in forecast))
  assert len(starts) == 3 and len(forecast) == 3 * 3
  for f in forecast:
    assert f['token'] not in f['next_other'] and len(f['next_other']) == 3
    assert 0 <= f['p_self'] <= 1


def test_captioning_has_its_baselines_and_previews_their_narration(demo_dir):
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  captioning = metrics['captioning']
  assert set(captioning['baselines']) == {'nearest_neighbour', 'most_frequent'}
  for scores in captioning['baselines'].values():
    assert all(0 <= scores[k] <= 1 for k in ('Bleu_4', 'ROUGE_L'))
  train = {s['sentence'] for s in _narrated(demo_dir, 'train')}
  assert all(e['nearest_neighbour'] in train for e in captioning['examples'])
  html = (demo_dir / 'report' / 'index.html').read_text()
  assert 'nearest training step' in html and 'most frequent training sentence' in html
  first = metrics['previews'][0]
  assert html_lib.escape(f'{first["video_id"]} ({first["split"]}): {first["steps"][0]}') in html


def test_report_figures_keep_text_off_the_frames(demo_dir):
  """The demo's figures, rebuilt from its metrics: no text over a frame or another text."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from vlm_jax.demo import videobert_report as demo  # pylint: disable=import-outside-toplevel
  from vlm_jax.train import report as train_report  # pylint: disable=import-outside-toplevel
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  labels = metrics['token_labels']

  def frames(token):
    return np.zeros((112, 112, 3), np.float32)
  for fig, min_frame_px in (
      (demo.text_to_video_figure(metrics['text_to_video'], labels, frames), 96),
      (demo.forecast_figure(metrics['forecast'], labels, frames), 96),
      (demo.alignment_figure(train_report.read_metrics(str(demo_dir / 'train' / 'metrics.jsonl')),
                             metrics['training_mix'], metrics['alignment']), 0)):
    assert layout_problems(fig, min_frame_px) == []
    plt.close(fig)


# Marks each picture loaded or not, and lists text blocks that cover a picture.
_PROBE = """<script>
window.addEventListener('load', () => {
  const pictures = [...document.images];
  for (const img of pictures) img.dataset.loaded = img.naturalWidth > 0 ? 'yes' : 'no';
  const overlaps = [];
  for (const block of document.querySelectorAll('h1, h2, p, table, figcaption')) {
    const a = block.getBoundingClientRect();
    for (const img of pictures) {
      const b = img.getBoundingClientRect();
      const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (x > 1 && y > 1) overlaps.push(block.tagName + ' over ' + img.getAttribute('src'));
    }
  }
  document.body.dataset.overlaps = JSON.stringify(overlaps);
});
</script>"""


def test_report_in_headless_chromium(demo_dir, tmp_path):
  """Every picture of index.html loads, no text block covers one, and the demo kept a
  screenshot of the page."""
  from vlm_jax.demo import report  # pylint: disable=import-outside-toplevel
  browser = report.browser()
  if browser is None:
    pytest.skip('no Chromium (apt-get install chromium; .ci/run installs it)')
  folder = demo_dir / 'report'
  page = (folder / 'index.html').read_text()
  probe = tmp_path / 'probe.html'
  probe.write_text(page.replace('<head>', f'<head><base href="{folder.as_uri()}/">', 1)
                   .replace('</body>', _PROBE + '</body>'))
  out = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu',
                        '--window-size=1280,4000', '--virtual-time-budget=10000',
                        '--dump-dom', probe.as_uri()],
                       capture_output=True, text=True, timeout=180, check=True)
  images = re.findall(r'<img [^>]*>', out.stdout)
  assert len(images) == page.count('<img ') >= 6
  assert all('data-loaded="yes"' in img for img in images), images
  overlaps = re.search(r'data-overlaps="([^"]*)"', out.stdout)
  assert overlaps and json.loads(html_lib.unescape(overlaps.group(1))) == []
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(folder / 'screenshot.png') as shot:
    assert shot.width == 1280 and shot.height > 2000
    assert shot.convert('L').getextrema()[0] < 100  # not a blank page


def test_random_s3d_features_see_nouns_and_verbs_across_videos(demo_dir):
  """A test clip's nearest clip of another video shares its noun and verb (random S3D)."""
  observed = json.loads((demo_dir / 'report' / 'metrics.json').read_text())[
      'feature_purity_test']
  # Measured for these 8 seeded test videos: verb 0.51, noun 0.47, chance 0.19 each.
  assert observed['noun'] > 2 * observed['noun_chance']
  assert observed['verb'] > 2 * observed['verb_chance']


def _params(workdir):
  from vlm_jax.videobert import inference  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_leaves(jax.device_get(inference.load(str(workdir)).params))


def _without_rates(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.endswith('per_second')} for r in rows]


def test_a_busy_machine_gives_the_same_bits(demo_dir, tmp_path):
  """Codebook, records, training, captioner and evaluation again, beside two busy processes.

  The fixture's run had the machine to itself; every output of this one is bit-identical.
  """
  workdir = tmp_path / 'busy'
  workdir.mkdir()
  for name in ('corpus', 'features'):
    shutil.copytree(demo_dir / name, workdir / name)
  burners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]
  try:
    subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={workdir}',
                    '--config', 'configs/demo.py:runlocal'], cwd=REPO, check=True,
                   capture_output=True, text=True)
  finally:
    for burner in burners:
      burner.kill()
  for name in ('codebook.npz', 'codebook.centroids.npy', 'caption/predictions.jsonl'):
    assert (workdir / name).read_bytes() == (demo_dir / name).read_bytes(), name
  for name in sorted(n for n in os.listdir(demo_dir / 'records') if n.endswith('.tfrecord')):
    assert (workdir / 'records' / name).read_bytes() == (
        demo_dir / 'records' / name).read_bytes(), name
  rows = [[json.loads(line) for line in (d / 'train' / 'metrics.jsonl').open()]
          for d in (demo_dir, workdir)]
  assert _without_rates(rows[0]) == _without_rates(rows[1])
  for a, b in zip(_params(demo_dir / 'train'), _params(workdir / 'train')):
    np.testing.assert_array_equal(a, b)
  metrics = [json.loads((d / 'report' / 'metrics.json').read_text()) for d in (demo_dir, workdir)]
  for m in metrics:
    del m['stages']
  assert metrics[0] == metrics[1]


def test_demo_rerun_resumes(demo_dir):
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={demo_dir}',
                        '--config', 'configs/demo.py:runlocal'], cwd=REPO, check=True,
                       capture_output=True, text=True)
  from configs import demo as demo_config  # pylint: disable=import-outside-toplevel
  steps = demo_config.get_config('runlocal').videobert.train.num_steps
  assert f'resumed from the checkpoint at step {steps}' in out.stdout + out.stderr
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  assert metrics['stages']['train']['seconds'] < 60


def test_a_changed_config_is_refused_naming_the_demos_own_fields(demo_dir):
  """The training stage reads config.videobert: a refused resume names the demo's flags."""
  stored = demo_dir / 'train' / 'config.json'
  before = stored.read_bytes()
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={demo_dir}',
                        '--config', 'configs/demo.py:runlocal',
                        '--config.videobert.optim.weight_decay=0.25'],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode != 0
  line = out.stderr.strip().splitlines()[-1]  # earlier lines: the resumed stages' progress
  assert line.startswith(f'vlm-jax demo: this config differs from {stored} ')
  assert 'config.videobert.optim.weight_decay' in line and '-> 0.25' in line
  assert 'set config.videobert.train.allow_config_change=True' in line
  assert stored.read_bytes() == before


def test_colab_notebook_runs_on_cpu(demo_dir):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  notebook = nbformat.read(os.path.join(REPO, 'notebooks', 'colab_tpu.ipynb'), as_version=4)
  (parameters,) = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  parameters.source += (f"\nINSTALL = False\nWORKDIR = {str(demo_dir)!r}\n"
                        "DEMO_ARGS = '--config configs/demo.py:runlocal'\n")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': REPO}})
  client.execute()
  outputs = ''.join(o.get('text', '') for c in notebook.cells if c.cell_type == 'code'
                    for o in c.get('outputs', []))
  assert 'videobert' in outputs and 'language_prior' in outputs
  images = [o for c in notebook.cells for o in c.get('outputs', [])
            if 'image/png' in o.get('data', {})]
  assert len(images) == 3


def test_videoclip_demo_on_the_same_corpus(demo_dir):
  """config.system=videoclip reuses the corpus and features, trains (twice, with the ablation),
  scores retrieval on dev and test."""
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={demo_dir}',
                        '--config', 'configs/demo.py:runlocal', '--config.system=videoclip',
                        '--config.videoclip_ablation=True'],
                       cwd=REPO, check=True, capture_output=True, text=True)
  report = demo_dir / 'report_videoclip'
  metrics = json.loads((report / 'metrics.json').read_text())
  assert metrics['stages']['features']['seconds'] < 5  # reused, not extracted again
  retrieval = metrics['text_to_video_retrieval']
  steps = [json.loads(line) for line in (demo_dir / 'corpus' / 'steps.jsonl').open()]
  assert retrieval['num_queries'] == sum(bool(s['sentence']) for v in steps
                                         if v['split'] == 'test' for s in v['steps'])
  assert retrieval['chance']['R@1'] == pytest.approx(1 / retrieval['num_queries'])
  assert metrics['text_to_video_retrieval_dev']['num_queries'] == sum(
      bool(s['sentence']) for v in steps if v['split'] == 'dev' for s in v['steps'])
  for run in ('untrained', 'videoclip_retrieval', 'videoclip_random'):
    low, high = retrieval[run]['R@1_ci95']
    assert 0 <= low <= retrieval[run]['R@1'] <= high <= 1
  for run in ('retrieval', 'random'):
    assert (report / f'curves_{run}.png').stat().st_size > 1000
  manifest = json.loads((demo_dir / 'videoclip_retrieval' / 'manifest.json').read_text())
  assert manifest['retrieval'] and (demo_dir / 'videoclip_retrieval' / 'plans').is_dir()
  assert 'report:' in out.stdout


def _step_means(folder, steps_by_video, subset):
  rows, labels = [], []
  for video_id, (split, steps) in steps_by_video.items():
    if split != subset:
      continue
    features = np.load(folder / f'{video_id}.npy')
    for s in steps:
      first = int(np.floor(s['start']))
      rows.append(features[first:max(first + 1, int(np.ceil(s['end'])))].mean(0))
      labels.append(s['verb'])
  return np.stack(rows), np.array(labels)


def test_cbt_demo_on_the_same_corpus(demo_dir):
  """--system cbt reuses the corpus and features; its probes agree with scikit-learn's, its
  ranking covers every narrated test step, its captions sit beside VideoBERT's."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={demo_dir}',
                        '--config', 'configs/demo.py:runlocal', '--system', 'cbt'],
                       cwd=REPO, check=True, capture_output=True, text=True)
  assert 'report:' in out.stdout
  metrics = json.loads((demo_dir / 'report_cbt' / 'metrics.json').read_text())
  assert metrics['stages']['features']['seconds'] < 5  # reused, not extracted again
  steps = [json.loads(line) for line in (demo_dir / 'corpus' / 'steps.jsonl').open()]
  split_of = {'train': 'training', 'dev': 'validation', 'test': 'testing'}
  by_video = {v['video_id']: (split_of[v['split']], v['steps']) for v in steps}

  # The raw-S3D step-verb probe, redone with scikit-learn at the l2 it chose on dev.
  probe = metrics['linear_probes']['step verb']['S3D (raw)']
  folder = demo_dir / 'probe' / 'main' / 's3d'
  train_x, train_y = _step_means(folder, by_video, 'training')
  test_x, test_y = _step_means(folder, by_video, 'testing')
  assert probe['counts']['test'] == len(test_y) and probe['counts']['train'] == len(train_y)
  mean, std = train_x.mean(0), train_x.std(0)
  std[std == 0] = 1
  oracle = LogisticRegression(C=1 / (probe['parameters']['l2'] * len(train_y)), max_iter=5000,
                              tol=1e-8).fit((train_x - mean) / std, train_y)
  agreement = np.mean(oracle.predict((test_x - mean) / std) == test_y)
  assert probe['metrics']['accuracy'] == pytest.approx(agreement, abs=1.5 / len(test_y))
  for task in ('step verb', 'step noun', 'segmentation (verb per second)', 'next-step verb'):
    assert set(metrics['linear_probes'][task]) == {'S3D (raw)', 'CBT', 'S3D + CBT'}
  for video_id in by_video:  # each second's raw feature joined with its CBT state
    joined = np.load(demo_dir / 'probe' / 'main' / 's3d_cbt' / f'{video_id}.npy')
    np.testing.assert_array_equal(joined, np.concatenate(
        [np.load(folder / f'{video_id}.npy'),
         np.load(demo_dir / 'probe' / 'main' / 'cbt' / f'{video_id}.npy')], axis=1))
  seg = metrics['linear_probes']['segmentation (verb per second)']['CBT']
  assert seg['counts']['test'] == sum(np.load(demo_dir / 'probe' / 'main' / 'cbt' /
                                              f'{v}.npy').shape[0]
                                      for v, (split, _) in by_video.items() if split == 'testing')
  # All-background scores the seconds no step covers (none in the rendered corpus: its steps
  # follow each other without gaps).
  uncovered = total = 0
  for video_id, (split, video_steps) in by_video.items():
    if split == 'testing':
      length = np.load(demo_dir / 'probe' / 'main' / 'cbt' / f'{video_id}.npy').shape[0]
      covered = {t for s in video_steps
                 for t in range(int(np.floor(s['start'])), int(np.ceil(s['end'])))}
      uncovered += sum(t not in covered for t in range(length))
      total += length
  assert seg['metrics']['background_baseline_accuracy'] == pytest.approx(uncovered / total)

  ranking = metrics['text_to_video_ranking']
  assert ranking['num_queries'] == sum(bool(s['sentence']) for v in steps if v['split'] == 'test'
                                       for s in v['steps'])
  assert ranking['chance']['R@1'] == pytest.approx(1 / ranking['num_queries'])
  for run in ('CBT', 'untrained'):
    low, high = ranking[run]['R@1_ci95']
    assert low <= ranking[run]['R@1'] <= high
  captioning = metrics['captioning']
  assert captioning['cbt']['scores']['CIDEr'] >= 0
  assert captioning['videobert']['inputs'] == 'videobert+s3d'  # the VideoBERT demo ran here
  html = (demo_dir / 'report_cbt' / 'index.html').read_text()
  for heading in ('Linear probes', 'Zero-shot text-to-video ranking', 'Captioning'):
    assert heading in html
  assert (demo_dir / 'report_cbt' / 'curves.png').stat().st_size > 1000


def test_clipbert_candidate_sets_and_choice_items():
  from vlm_jax.demo import clipbert as clipbert_demo  # pylint: disable=import-outside-toplevel
  sets = clipbert_demo.candidate_sets(10, 4, seed=1)
  assert sets.shape == (10, 4) and list(sets[:, 0]) == list(range(10))
  assert all(len(set(row)) == 4 and 0 <= row.min() and row.max() < 10 for row in sets)
  with pytest.raises(ValueError, match='need 4 clips'):
    clipbert_demo.candidate_sets(3, 4, seed=1)
  steps = [dict(video=f'v{i}', verb=verb, noun=noun, sentence=f'{verb} the {noun} ({i})',
                start=0.0, end=3.0)
           for i, (verb, noun) in enumerate([('cut', 'egg'), ('cut', 'egg'), ('fry', 'egg'),
                                             ('cut', 'leek'), ('stir', 'rice'), ('fry', 'leek')])]
  for step, item in zip(steps, clipbert_demo.choice_items(steps, 3, seed=0)):
    assert item['options'][item['answer']] == step['sentence'] and item['video'] == step['video']
    pairs = {tuple(o.split(' (')[0].split(' the ')) for o in item['options']}
    assert len(pairs) == 3  # the truth's verb-noun pair and two others, each once
  with pytest.raises(ValueError, match='needs 6 verb-noun pairs'):
    clipbert_demo.choice_items(steps, 6, seed=0)


def _clipbert_direct_scores(loaded, pairs, rows, texts):
  """Match probabilities of texts[k] against the clip of pairs[rows[k]], through the model's
  own forward pass on freshly decoded frames (not the demo's batched path)."""
  from vlm_jax.clipbert import inference, objectives  # pylint: disable=import-outside-toplevel
  frames = np.stack([inference.clip_frames(loaded, pairs[r].video, pairs[r].span) for r in rows])
  ids, mask = inference.text_inputs(loaded, texts)
  logits = loaded.model.apply({'params': loaded.params}, ids[:, None], mask[:, None], frames)
  return np.asarray(objectives.match_scores(logits, loaded.config.model.consensus))[:, 0]


def test_clipbert_demo_on_the_same_corpus(demo_dir):
  """--system clipbert reuses the rendered corpus and its S3D features, trains end to end and
  on the frozen features, picks each run's checkpoint on dev, and its test numbers are the
  model's own scores."""
  from vlm_jax.clipbert import data as clipbert_data  # pylint: disable=import-outside-toplevel
  from vlm_jax.clipbert import inference  # pylint: disable=import-outside-toplevel
  from vlm_jax.demo import clipbert as clipbert_demo  # pylint: disable=import-outside-toplevel
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={demo_dir}',
                        '--config', 'configs/demo.py:runlocal', '--system', 'clipbert'],
                       cwd=REPO, check=True, capture_output=True, text=True)
  assert 'report:' in out.stdout
  report = demo_dir / 'report_clipbert'
  metrics = json.loads((report / 'metrics.json').read_text())
  for stage in ('corpus', 'features'):  # reused
    assert metrics['stages'][stage]['seconds'] < 5
  steps = [json.loads(line) for line in (demo_dir / 'corpus' / 'steps.jsonl').open()]
  narrated = {split: [s for v in steps if v['split'] == split for s in v['steps'] if s['sentence']]
              for split in ('train', 'dev', 'test')}
  items = demo_dir / 'clipbert_items'
  for split in ('train', 'dev', 'test'):
    rows = [json.loads(line) for line in (items / f'{split}_pairs.jsonl').open()]
    assert [r['text'] for r in rows] == [s['sentence'] for s in narrated[split]]
  pair_of = {s['sentence']: (s['verb'], s['noun']) for s in narrated['test']}
  choice = [json.loads(line) for line in (items / 'test_choice.jsonl').open()]
  for step, item in zip(narrated['test'], choice):
    assert item['options'][item['answer']] == step['sentence']
    assert len({pair_of[o] for o in item['options']}) == metrics['multiple_choice_options']

  test_pairs = clipbert_data.read_items(str(items / 'test_pairs.jsonl'), None).items
  k, n = metrics['candidates'], len(test_pairs)
  assert metrics['num_test_queries'] == n == len(narrated['test'])
  assert metrics['chance']['R@1'] == pytest.approx(1 / k)
  assert list(metrics['runs']) == ['end_to_end', 's3d_features']
  for name in metrics['runs']:
    result = metrics['runs'][name]
    run_dir = demo_dir / f'clipbert_{name}'
    saved = json.loads((run_dir / 'manifest.json').read_text())['checkpoint_steps']
    dev = {int(step): r1 for step, r1 in result['dev'].items()}
    assert sorted(dev) == saved
    assert result['step'] == max(saved, key=lambda s: (dev[s], s))
    loaded = inference.load(str(run_dir), result['step'])
    # Retrieval among each query's candidates, scored pair by pair by the model itself.
    sets = clipbert_demo.candidate_sets(n, k, seed=0)
    texts = [p.text for p in test_pairs for _ in range(k)]
    scores = _clipbert_direct_scores(loaded, test_pairs, sets.ravel(), texts).reshape(n, k)
    ranks = 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)  # ties pessimistic
    retrieval = result['test']['retrieval']
    assert retrieval['R@1'] == pytest.approx(np.mean(ranks == 1), abs=1.5 / n)
    assert retrieval['median_rank'] == pytest.approx(np.median(ranks), abs=1)
    low, high = retrieval['R@1_ci95']
    assert low <= retrieval['R@1'] <= high
    options = [o for item in choice for o in item['options']]
    rows = np.repeat(np.arange(n), len(choice[0]['options']))
    option_scores = _clipbert_direct_scores(loaded, test_pairs, rows, options).reshape(n, -1)
    accuracy = np.mean(option_scores.argmax(1) == [item['answer'] for item in choice])
    assert result['test']['multiple_choice']['accuracy'] == pytest.approx(accuracy, abs=1.5 / n)

  # The baseline reads the demo's S3D features (1024 wide), with no frame encoder.
  baseline = inference.load(str(demo_dir / 'clipbert_s3d_features'))
  assert 'frame_encoder' not in baseline.params
  assert baseline.params['grid_encoder']['projection']['kernel'].shape[0] == 1024
  assert baseline.features.folder == str(demo_dir / 'features')
  html = (report / 'index.html').read_text()
  for heading in ('Held-out test', 'Sampled clips', 'Dev R@1 by checkpoint'):
    assert heading in html
  for picture in ('test_clips.png', 'curves_end_to_end.png', 'curves_s3d_features.png'):
    assert (report / picture).stat().st_size > 1000 and picture in html


def test_demo_on_user_videos(demo_dir, tmp_path):
  """--videos/--transcripts: the same job on a folder of videos and their VTT narration."""
  videos, transcripts = tmp_path / 'videos', tmp_path / 'transcripts'
  videos.mkdir()
  transcripts.mkdir()
  names = sorted(os.listdir(demo_dir / 'corpus' / 'videos'))[:4]
  for name in names:
    stem = os.path.splitext(name)[0]
    os.symlink(demo_dir / 'corpus' / 'videos' / name, videos / name)
    os.symlink(demo_dir / 'corpus' / 'transcripts' / f'{stem}.vtt', transcripts / f'{stem}.vtt')
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={workdir}',
                        f'--videos={videos}', f'--transcripts={transcripts}',
                        '--config', 'configs/demo.py:runlocal',
                        '--config.corpus.test_fraction=0.25'],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((workdir / 'report' / 'metrics.json').read_text())
  assert metrics['corpus'] == {'train': 3, 'test': 1}
  assert 'corpus' not in metrics['stages'] and 'action_classification' not in metrics
  held_out = sorted(os.listdir(workdir / 'features' / 'test'))
  assert len([n for n in held_out if not n.endswith('.times.npy') and n.endswith('.npy')]) == 1
  assert metrics['captioning']['num_test_segments'] >= 3
  assert (workdir / 'report' / 'text_to_video.png').stat().st_size > 1000


def test_demo_overrides_without_config_flag_and_bad_values_name_the_field(tmp_path):
  """`--config.x=y` applies to the default demo config (no other command's config flag)."""
  out = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'demo', f'--workdir={tmp_path}',
                        '--config.corpus.num_test=0'], cwd=REPO, capture_output=True, text=True)
  assert out.returncode != 0
  assert 'config.corpus.num_test: must be >= 1, got 0' in out.stderr
  assert not os.path.exists(tmp_path / 'corpus')
