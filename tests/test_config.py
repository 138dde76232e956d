"""Config presets, command-line overrides and the checks that name bad fields."""

import subprocess
import sys

import pytest

from configs import videobert as videobert_config
from configs import videoclip as videoclip_config
from vlm_jax import config_checks
from vlm_jax.videobert import checks as videobert_checks
from vlm_jax.videobert import step as step_lib
from vlm_jax.videoclip import checks as videoclip_checks


def test_presets():
  large = videobert_config.get_config('large')
  assert (large.model.num_layers, large.model.hidden_size, large.model.num_heads) == (24, 1024, 16)
  assert large.model.num_visual_tokens == 20736
  _, vocab = step_lib.load_vocab(large)
  assert vocab.size == 30522 + 1 + 20736  # WordPieces + [>] + visual tokens
  base = videobert_config.get_config('base')
  assert (base.model.num_layers, base.model.hidden_size) == (12, 768)
  tiny = videobert_config.get_config('tiny')
  assert tiny.model.init_checkpoint == 'minilm'
  for preset in ('tiny', 'base', 'large', 'tiny,runlocal'):
    videobert_checks.validate(videobert_config.get_config(preset), num_devices=4)


def test_unknown_preset_and_option():
  with pytest.raises(ValueError, match='huge'):
    videobert_config.get_config('huge')
  with pytest.raises(ValueError, match='fast'):
    videobert_config.get_config('tiny,fast')


@pytest.mark.parametrize('field,value,message', [
    ('mesh.model', 3, 'config.mesh.model: 3 does not divide the 4 devices'),
    ('mesh.data', 3, 'config.mesh: data=3 x model=1 = 3 devices, but there are 4'),
    ('train.global_batch_size', 6, 'config.train.global_batch_size: 6 (micro-batch 6) is not '
     'divisible by the data-parallel size 4'),
    ('data.seq_len', 600, 'config.data.seq_len: 600 is longer than the position table'),
    ('model.num_heads', 5, 'config.model.hidden_size: 64 is not divisible by model.num_heads=5'),
    ('model.dtype', 'float33', "config.model.dtype: unknown dtype 'float33'"),
    ('optim.name', 'sgd', "config.optim.name: must be adam or adamw, got 'sgd'"),
    ('model.attention_impl', 'fused', "config.model.attention_impl: must be 'xla', 'cudnn', "
     "'tpu_flash' or 'auto', got 'fused'"),
    ('model.attention_impl', 'tpu_flash', "config.model.attention_impl: 'tpu_flash' has no "
     'attention dropout'),
    ('train.dropout_rng', 'mt19937', 'config.train.dropout_rng: must be threefry2x32, rbg or'),
    ('train.global_batch_size', 0, 'config.train.global_batch_size: must be >= 1, got 0'),
])
def test_bad_values_name_their_field(field, value, message):
  config = videobert_config.get_config('tiny,runlocal')
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(config_checks.ConfigError) as error:
    videobert_checks.validate(config, num_devices=4)
  assert message in str(error.value)


def _videoclip(preset='tiny,runlocal', steps_per_epoch=6):
  config = videoclip_config.get_config(preset)
  config.train.steps_per_epoch = steps_per_epoch  # what the trainer fills in from the corpus
  return config


def test_videoclip_presets_pass():
  for preset in ('tiny', 'base', 'tiny,runlocal'):
    config = _videoclip(preset, steps_per_epoch=100)  # base warms up for 1,000 steps
    videoclip_checks.validate(config, 4, 1, 4 * config.data.videos_per_batch)


@pytest.mark.parametrize('field,value,message', [
    ('mesh.model', 3, 'config.mesh.model: 3 does not divide the 4 devices'),
    ('model.dtype', 'bfloat17', "config.model.dtype: unknown dtype 'bfloat17'"),
    ('model.video_layers', 3, 'config.model.video_layers: must be in [1, model.num_layers=2]'),
    ('data.videos_per_batch', 16, 'config.data.videos_per_batch: 24 training videos with '
     'sentences cannot fill a batch of 16 videos drawn from 32 neighbours'),
    ('data.videos_per_batch', 3, 'config.data.videos_per_batch: the batch of 3 x 2 pairs is not '
     'divisible by the data-parallel size 4'),
    ('optim.warmup_steps', 12, 'config.optim.warmup_steps: must be in [0, 12 steps of training '
     '(2 epochs x 6 batches)), got 12'),
    ('optim.grad_accum_steps', 2, 'config.optim.grad_accum_steps: must be 1 for a contrastive'),
    ('train.encode_batch_size', 0, 'config.train.encode_batch_size: must be >= 1, got 0'),
])
def test_videoclip_bad_values_name_their_field(field, value, message):
  config = _videoclip()
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(config_checks.ConfigError) as error:
    videoclip_checks.validate(config, 4, 1, 24)
  assert message in str(error.value)


def _train_cli(tmp_path, *overrides):
  return subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/videobert.py:tiny,runlocal', '--workdir', str(tmp_path / 'w'), *overrides],
      capture_output=True, text=True, cwd=str(videobert_config.__file__).rsplit('/configs', 1)[0])


def test_cli_rejects_unknown_key_and_bad_value_before_compiling(tmp_path):
  unknown = _train_cli(tmp_path, '--config.optim.learning_rat=1e-5')
  assert unknown.returncode != 0
  assert 'learning_rat' in unknown.stderr
  bad = _train_cli(tmp_path, '--config.data.seq_len=1024')
  assert bad.returncode != 0
  assert 'config.data.seq_len: 1024 is longer than the position table' in bad.stderr
  assert not (tmp_path / 'w' / 'checkpoints').exists()  # failed before building anything


def _last_stderr_lines(result):
  return [line for line in result.stderr.splitlines()
          if line.strip() and not line.startswith(('WARNING: All log', 'I0000'))]


@pytest.mark.parametrize('override,message', [
    ('--config.optim.learnig_rate=1e-3',
     'vlm-jax train: config.optim.learnig_rate: no such field; did you mean learning_rate?'),
    ('--config.trian.num_steps=5',
     'vlm-jax train: config.trian.num_steps: no such field (trian); did you mean train?'),
])
def test_a_misspelt_config_key_is_one_line_naming_it(tmp_path, override, message):
  result = _train_cli(tmp_path, override)
  assert result.returncode == 2
  assert _last_stderr_lines(result) == [message]


def test_a_misspelt_preset_option_and_a_demo_key_are_one_line(tmp_path):
  repo = str(videobert_config.__file__).rsplit('/configs', 1)[0]
  option = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/videobert.py:tiny,runlocall', '--workdir', str(tmp_path / 'w')],
      capture_output=True, text=True, cwd=repo)
  assert option.returncode == 2
  assert _last_stderr_lines(option) == [
      "vlm-jax train: config: unknown option 'runlocall' for configs/videobert.py; did you mean "
      "runlocal? (presets: tiny, base, large, paper; options: gpu, runlocal, tpu)"]
  # The demo's config is a flag default.
  demo = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'demo', '--workdir', str(tmp_path / 'd'),
       '--config.sytem=videoclip'], capture_output=True, text=True, cwd=repo)
  assert demo.returncode == 2
  assert _last_stderr_lines(demo) == [
      'vlm-jax demo: config.sytem: no such field; did you mean system?']
  assert not (tmp_path / 'd').exists()


def test_tiny_vocab_comes_from_its_checkpoint():
  tok, vocab = step_lib.load_vocab(videobert_config.get_config('tiny'))
  assert vocab.text_vocab_size == 30522 and tok.token_to_id('[MASK]') == vocab.mask_id


@pytest.mark.parametrize('option,attention_impl', [('gpu', 'cudnn'), ('tpu', 'tpu_flash')])
def test_the_accelerator_recipes_pass_their_checks(option, attention_impl):
  config = videobert_config.get_config(f'large,{option}')
  assert (config.model.dtype, config.model.attention_impl) == ('bfloat16', attention_impl)
  assert config.model.attention_dropout_rate == 0.0 and config.model.dropout_rate == 0.1
  videobert_checks.validate(config, num_devices=4)
