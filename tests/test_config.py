"""Config presets, command-line overrides and the checks that name bad fields."""

import subprocess
import sys

import pytest

from configs import videobert as videobert_config
from vlm_jax import config_checks
from vlm_jax.videobert import step as step_lib


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
    config_checks.validate(videobert_config.get_config(preset), num_devices=4)


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
    ('model.attention_impl', 'fused', "config.model.attention_impl: 'fused' has no attention "
     'dropout; set model.attention_dropout_rate=0'),
    ('train.dropout_rng', 'mt19937', 'config.train.dropout_rng: must be threefry2x32, rbg or'),
])
def test_bad_values_name_their_field(field, value, message):
  config = videobert_config.get_config('tiny,runlocal')
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(config, num_devices=4)
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


def test_tiny_vocab_comes_from_its_checkpoint():
  tok, vocab = step_lib.load_vocab(videobert_config.get_config('tiny'))
  assert vocab.text_vocab_size == 30522 and tok.token_to_id('[MASK]') == vocab.mask_id
