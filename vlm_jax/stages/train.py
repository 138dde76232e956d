"""The train job: the config's system trained in a workdir (vlm_jax.systems picks the trainer).

Used by `vlm-jax train`; see that command for the workdir's files.
"""

from vlm_jax import systems


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """jax.distributed.initialize; on CPU hosts, collectives go through gloo."""
  import jax  # pylint: disable=import-outside-toplevel

  # Without it, CPU devices of different processes cannot run collectives
  # (it changes nothing on TPU and GPU backends).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def run(config, workdir: str) -> dict:
  """Trains (or resumes) config.system's model in `workdir`; returns the last logged metrics.

  Raises:
    ConfigError: an unknown config.system or a bad field (named); records whose
      vocabulary does not fit the model; a resume under a config that builds
      other shapes than the checkpoint's, or that differs from the workdir's
      config.json without config.train.allow_config_change (loop.check_resume).
    DataError, FileNotFoundError: training files that cannot be read.
    TrainingDiverged: the loss stopped being finite.
  """
  return systems.train(config, workdir)
