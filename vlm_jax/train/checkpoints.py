"""Orbax checkpoints of a train state: where they live, and resuming from the latest."""

import os
from typing import Any, Callable

import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints (a local path or a gs:// URL), keeping `keep`."""
  return ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def restore_or_create(checkpoints: ocp.CheckpointManager, abstract_state: Any,
                      create: Callable[[], Any]) -> tuple[Any, int, bool]:
  """(state, its step, resumed): the latest checkpoint restored into `abstract_state`'s
  shapes and shardings, or `create()` at step 0 when there is none."""
  latest = checkpoints.latest_step()
  if latest is None:
    return create(), 0, False
  return (checkpoints.restore(latest, args=ocp.args.StandardRestore(abstract_state)),
          int(latest), True)


def restore_latest(workdir: str, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
  """(state, step) of WORKDIR/checkpoints at `step` (default: the latest), for inference.

  Raises:
    FileNotFoundError: no checkpoints folder, or no checkpoint in it.
  """
  path = os.path.join(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')
  if '://' not in path and not os.path.isdir(path):
    raise FileNotFoundError(f'{workdir} is not a vlm-jax train workdir (no checkpoints/)')
  with ocp.CheckpointManager(path) as checkpoints:
    step = checkpoints.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {path}')
    return checkpoints.restore(step, args=ocp.args.StandardRestore(abstract_state)), int(step)
