"""What the step benchmarks share: a vlm_jax side's stepper, the alternating timer, the
machine's description and the jsonl they append to.

Imported by benchmarks/cbt_step.py, clipbert_step.py and clipbert_loader.py (run as
scripts from this folder; the tests put it on sys.path).
"""

import json
import os
import platform
import time
from typing import Callable

import jax
import numpy as np

from vlm_jax.train import partitioning


def jax_stepper(setup, params, batch: dict) -> Callable[[], float]:
  """One call = one train step of vlm_jax (dropout on); returns the loss."""
  holder = {'state': setup.sharded.create_state(
      jax.device_put(params, setup.sharded.param_shardings))}
  device_batch = partitioning.device_batch(batch, setup.mesh)

  def step():
    holder['state'], metrics = setup.train_step(holder['state'], device_batch)
    return float(metrics['loss'])  # waits for the step

  return step


def time_sides(steppers: dict[str, Callable[[], float]], warmup: int, steps: int,
               rounds: int) -> dict[str, list[float]]:
  """Seconds per step of each side: warm-up steps untimed, then `rounds` x `steps`
  steps back to back per side, the sides taking turns."""
  for step in steppers.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steppers}
  for _ in range(rounds):
    for name, step in steppers.items():
      for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times[name].append(time.perf_counter() - start)
        if not np.isfinite(loss):
          raise FloatingPointError(f'{name}: loss {loss}')
  return times


def device_description() -> str:
  name = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    name = names[0] if names else name
  return f'{name}, {os.cpu_count()} CPU threads ({jax.devices()[0].platform})'


def append_jsonl(path: str, result: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(result) + '\n')
  print(f'appended to {path}')
