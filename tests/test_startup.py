"""Start-up settings: made once by `vlm-jax`, never as a side effect of importing a module."""

import os
import subprocess
import sys

_CHECK = """
import jax
jax.config.update('jax_threefry_partitionable', False)
from vlm_jax.train import loop, partitioning
from vlm_jax.videobert import step
from vlm_jax.videoclip import trainer
print('after imports', jax.config.jax_threefry_partitionable)
from vlm_jax import cli
cli.main(['vlm-jax', 'train', '--help'])
print('after start-up', jax.config.jax_threefry_partitionable)
"""


def test_threefry_partitionable_is_set_by_the_cli_not_by_imports():
  out = subprocess.run([sys.executable, '-c', _CHECK], capture_output=True, text=True,
                       check=True, timeout=300).stdout
  assert 'after imports False' in out
  assert 'after start-up True' in out


_FRESH = """
from vlm_jax import cli
cli.main(['vlm-jax', 'train', '--help'])
import jax
print('after start-up', jax.config.jax_threefry_partitionable)
"""


def test_threefry_partitionable_reaches_a_jax_imported_after_start_up():
  # --help loads no JAX: the setting goes through the environment JAX reads on import.
  env = dict(os.environ, JAX_THREEFRY_PARTITIONABLE='false')
  out = subprocess.run([sys.executable, '-c', _FRESH], capture_output=True, text=True,
                       check=True, timeout=300, env=env).stdout
  assert 'after start-up True' in out
