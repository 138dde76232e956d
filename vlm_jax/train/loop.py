"""The one training loop that every system fills in (see `Run`)."""

import signal
import threading

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils


def say(message: str) -> None:
  if jax.process_index() == 0:
    tqdm.tqdm.write(f'[vlm-jax] {message}')


class TrainingDiverged(RuntimeError):
  """The loss or gradients became NaN or infinite."""


class PreemptionWatcher:
  """Notices SIGTERM, which a preemptible or spot TPU VM gets before it is taken.

  With several processes, all of them must stop at the same step to save one
  checkpoint together: JAX's preemption sync point decides that step.
  """

  def __init__(self):
    self._signalled = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._signalled = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def check_finite(step: int, metrics: dict, last_good: int | None, workdir: str) -> None:
  for key in ('loss', 'l2_grads'):
    if not np.isfinite(metrics[key]):
      where = (f'the last good checkpoint is step {last_good} in {workdir}/checkpoints'
               if last_good is not None else 'no checkpoint was saved')
      raise TrainingDiverged(f'{key} is {metrics[key]} at step {step}; stopping ({where}). '
                             'Lower config.optim.learning_rate or check the data.')
