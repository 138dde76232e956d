"""The demo main job end to end (runlocal preset), its resumption, and the Colab notebook."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest


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
  for picture in ('curves.png', 'text_to_video.png', 'forecast.png'):
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


def test_random_s3d_features_see_nouns_and_verbs_across_videos(demo_dir):
  """A test clip's nearest clip of another video shares its noun and verb (random S3D)."""
  observed = json.loads((demo_dir / 'report' / 'metrics.json').read_text())[
      'feature_purity_test']
  # Measured for these 8 seeded test videos: verb 0.51, noun 0.47, chance 0.19 each.
  assert observed['noun'] > 2 * observed['noun_chance']
  assert observed['verb'] > 2 * observed['verb_chance']


def _params(workdir):
  from vlm_jax.videobert import inference  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
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
  assert 'resumed from the checkpoint at step 4' in out.stdout + out.stderr
  metrics = json.loads((demo_dir / 'report' / 'metrics.json').read_text())
  assert metrics['stages']['train']['seconds'] < 60


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
