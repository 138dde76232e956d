"""config.system and a run's system: the one switch between systems."""

import json

import ml_collections
import pytest

from vlm_jax import config_checks
from vlm_jax import systems


def test_name_of_names_the_field_of_an_unknown_system():
  assert systems.name_of(ml_collections.ConfigDict({'system': 'videoclip'})) == 'videoclip'
  assert systems.name_of(ml_collections.ConfigDict({'system': 'clipbert'})) == 'clipbert'
  with pytest.raises(config_checks.ConfigError, match=r'^config.system: .clipbret.; one of '):
    systems.name_of(ml_collections.ConfigDict({'system': 'clipbret'}))


def test_of_run_reads_the_workdir_or_knows_the_foreign_checkpoint(tmp_path):
  (tmp_path / 'clip').mkdir()
  (tmp_path / 'clip' / 'config.json').write_text(json.dumps({'system': 'videoclip'}))
  (tmp_path / 'old').mkdir()
  (tmp_path / 'old' / 'config.json').write_text(json.dumps({'model': {}}))
  assert systems.of_run(str(tmp_path / 'clip')) == 'videoclip'
  assert systems.of_run(str(tmp_path / 'old')) == 'videobert'
  # MMPT's file is never opened to be told apart.
  assert systems.of_run(str(tmp_path / 'checkpoint_best.pt')) == 'videoclip'
  with pytest.raises(FileNotFoundError, match='not a vlm-jax train workdir'):
    systems.of_run(str(tmp_path / 'missing'))
