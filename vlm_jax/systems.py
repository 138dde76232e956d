"""`config.system` -> the package that trains it; the one switch between systems.

Every training config names its system (`c.system`); commands, stages and the
demo look the system up here instead of testing names themselves. A new system
adds one line.
"""

import importlib
import types

from vlm_jax import config_checks

# name -> the module with its `train(config, workdir, *, stop_at=None) -> dict`.
TRAINERS = {
    'videobert': 'vlm_jax.videobert.trainer',
    'videoclip': 'vlm_jax.videoclip.trainer',
}
NAMES = tuple(TRAINERS)


def name_of(config) -> str:
  """The config's system, checked (ConfigError naming config.system)."""
  name = config.get('system')
  if name not in TRAINERS:
    raise config_checks.ConfigError(f'config.system: {name!r}; one of {", ".join(NAMES)}')
  return name


def trainer(config) -> types.ModuleType:
  """The trainer module of the config's system (imported on demand)."""
  return importlib.import_module(TRAINERS[name_of(config)])


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains the config's system in `workdir`; returns the last logged metrics."""
  return trainer(config).train(config, workdir, stop_at=stop_at)
