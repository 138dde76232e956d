"""What a new user meets first: each command's --help, its default config, one-line flag errors.

Every command runs in a fresh process from a folder outside the repository, as a
user's shell would run it.
"""

import pathlib
import subprocess
import sys

import pytest

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'

# Runs a command as the `vlm-jax` entry point does, then names the heavy modules it loaded.
_HELP = """
import sys
from vlm_jax import cli
cli.main(['vlm-jax', *sys.argv[1:]])
print('loaded:', [m for m in ('jax', 'tensorflow', 'torch') if m in sys.modules])
"""


def _cli(cwd, *args):
  return subprocess.run([sys.executable, '-m', 'vlm_jax.cli', *args], capture_output=True,
                        text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize('command,default,others,presets', [
    ('train', 'videobert.py', {'videoclip.py': 'presets: tiny (default), base; options: runlocal',
                               'clipbert.py': 'presets: tiny (default), base; options: pretrain, runlocal'},
     'presets: tiny (default), base, large, paper; options: gpu, runlocal, tpu'),
    ('extract-features', 'extract_features.py', {}, 'presets: s3d (default), s3dg, demo'),
    ('make-records', 'make_records.py', {}, 'presets: videobert (default), videoclip'),
    ('caption', 'captioner.py', {}, 'presets: paper (default), runlocal'),
    ('demo', 'demo.py', {}, 'presets: default (default), runlocal'),
])
def test_help_names_the_default_config_and_the_presets_without_loading_jax(
    tmp_path, command, default, others, presets):
  result = subprocess.run([sys.executable, '-c', _HELP, *command.split(), '--help'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=True)
  lines = result.stdout.splitlines()
  assert f"    (default: '{CONFIGS / default}')" in lines
  assert "(default: 'None')" not in result.stdout
  assert f'  {CONFIGS / default}  {presets}' in lines
  for other, its_presets in others.items():
    assert f'  {CONFIGS / other}  {its_presets}' in lines
  assert any('--print_config' in line for line in lines)
  assert lines[-1] == 'loaded: []'


def test_extract_features_without_config_reaches_its_stage(tmp_path):
  videos = tmp_path / 'videos'
  videos.mkdir()
  result = _cli(tmp_path, 'extract-features', '--videos', str(videos), '--output',
                str(tmp_path / 'features'))
  # The stage's own error (an empty folder), so the default config parsed.
  assert result.returncode == 1
  assert result.stderr.splitlines() == [f'vlm-jax extract-features: {videos}: no videos found']


@pytest.mark.parametrize('args,message', [
    (['--config', f'{CONFIGS}/videobert.py:tiny,runlocall'],
     f"config: unknown option 'runlocall' for {CONFIGS}/videobert.py; did you mean runlocal? "
     '(presets: tiny, base, large, paper; options: gpu, runlocal, tpu)'),
    (['--config', f'{CONFIGS}/videoclip.py:bas'],
     f"config: unknown preset 'bas' for {CONFIGS}/videoclip.py; did you mean base? "
     '(presets: tiny, base; options: runlocal)'),
    # The default config's overrides: checked as flags, before TensorFlow loads and prints.
    (['--config.optim.learnig_rate=1e-3'],
     'config.optim.learnig_rate: no such field; did you mean learning_rate?'),
    # A path relative to the repository, from elsewhere.
    (['--config', 'configs/videobert.py:tiny'],
     f"config: no such file 'configs/videobert.py' (the configs in {CONFIGS}: captioner.py, cbt.py, clipbert.py, "
     'demo.py, extract_features.py, make_records.py, videobert.py, videoclip.py)'),
])
def test_a_config_mistake_is_one_line_on_stderr(tmp_path, args, message):
  result = _cli(tmp_path, 'train', '--workdir', str(tmp_path / 'run'), *args)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [f'vlm-jax train: {message}']
  assert not (tmp_path / 'run').exists()


def test_print_config_shows_the_overridden_default_without_the_required_flags(tmp_path):
  result = _cli(tmp_path, 'extract-features', '--print_config', '--config.batch_size=16')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert 'batch_size: 16' in lines and 'model: s3d' in lines


def test_tensorflow_start_up_notices_stay_off_an_error_after_flag_parsing(tmp_path):
  """The check runs after TensorFlow is imported; its notices would come first."""
  run = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'train', '--workdir',
                        str(tmp_path / 'w'), '--config.data.seq_len=1024'],
                       capture_output=True, text=True, cwd=tmp_path)
  assert run.returncode == 1
  assert run.stderr.splitlines() == [
      'vlm-jax train: config.data.seq_len: 1024 is longer than the position table '
      '(model.max_position_embeddings=512)']
  assert 'tensorflow' not in run.stdout


# A stand-in `tensorflow` printing, as its libraries load, the notices the real one has printed
# (which ones depends on the build and the machine), then a line of its own.
_FAKE_TF = r"""
import os
for line in (
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1764700000.123456   4242 cpu_feature_guard.cc:227] This TensorFlow binary ...',
    'To enable the following instructions: AVX512F FMA, in other operations, rebuild TensorFlow.',
    'a real warning'):
  os.write(2, line.encode() + b'\n')
"""

_CALLS_INSTALL = """
import sys
from vlm_jax import cli, tf_startup
calls = []
tf_startup.install = lambda: calls.append('install')
try:
  cli.main(['vlm-jax', 'train', '--workdir', sys.argv[1], '--config.data.seq_len=1024',
            *sys.argv[2:]])
except SystemExit:
  pass
print('calls:', calls)
"""


def test_the_start_up_filter_drops_only_tensorflows_notices(tmp_path):
  (tmp_path / 'tensorflow').mkdir()
  (tmp_path / 'tensorflow' / '__init__.py').write_text(_FAKE_TF)
  script = 'from vlm_jax import tf_startup; tf_startup.install(); import tensorflow'
  run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
  assert run.returncode == 0 and run.stderr == 'a real warning\n'


@pytest.mark.parametrize('extra,calls', [((), "['install']"), (('--verbosity=0',), '[]')])
def test_verbosity_keeps_the_start_up_notices(tmp_path, extra, calls):
  run = subprocess.run([sys.executable, '-c', _CALLS_INSTALL, str(tmp_path / 'w'), *extra],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert run.stdout.splitlines()[-1] == f'calls: {calls}', run.stderr
