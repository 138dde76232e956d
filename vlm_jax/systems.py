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
    'cbt': 'vlm_jax.cbt.trainer',
    'clipbert': 'vlm_jax.clipbert.trainer',
}
NAMES = tuple(TRAINERS)
# Checkpoint files of other codebases that a system loads as its own runs.
FOREIGN_CHECKPOINTS = {
    '.pt': 'videoclip',  # MMPT's checkpoint_best.pt (vlm_jax.videoclip.inference.load_mmpt)
}


def name_of(config) -> str:
  """The config's system, checked (ConfigError naming config.system)."""
  name = config.get('system')
  if name not in TRAINERS:
    raise config_checks.ConfigError(f'config.system: {name!r}; one of {", ".join(NAMES)}')
  return name


def of_run(path: str) -> str:
  """The system of a run: a workdir (its config.json) or another codebase's checkpoint file."""
  for suffix, name in FOREIGN_CHECKPOINTS.items():
    if path.endswith(suffix):
      return name
  from vlm_jax.train import report  # pylint: disable=import-outside-toplevel  (TensorFlow)
  # Runs from before configs named their system were VideoBERT's.
  return report.read_config(path).get('system', 'videobert')


def trainer(config) -> types.ModuleType:
  """The trainer module of the config's system (imported on demand)."""
  return importlib.import_module(TRAINERS[name_of(config)])


def train(config, workdir: str, *, stop_at: int | None = None) -> dict:
  """Trains the config's system in `workdir`; returns the last logged metrics."""
  return trainer(config).train(config, workdir, stop_at=stop_at)
