"""Orbax checkpoints of a train state: where they live, resuming, and loading for inference.

A workdir may be a local path or a URL (gs://bucket/run): Orbax and etils.epath
handle both.
"""

import os
from typing import Any, Callable

import orbax.checkpoint as ocp
from etils import epath


def _path(workdir: str) -> str:
  """WORKDIR/checkpoints; absolute when local (Orbax wants absolute local paths)."""
  return os.path.join(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints (a local path or a gs:// URL), keeping `keep`."""
  return ocp.CheckpointManager(
      _path(workdir), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def restore_or_create(checkpoints: ocp.CheckpointManager, abstract_state: Any,
                      create: Callable[[], Any]) -> tuple[Any, int, bool]:
  """(state, its step, resumed): the latest checkpoint restored into `abstract_state`'s
  shapes and shardings, or `create()` at step 0 when there is none."""
  latest = checkpoints.latest_step()
  if latest is None:
    return create(), 0, False
  return (checkpoints.restore(latest, args=ocp.args.StandardRestore(abstract_state)),
          int(latest), True)


def _restore(workdir: str, step: int | None, args: ocp.args.CheckpointArgs) -> tuple[Any, int]:
  """Restores WORKDIR/checkpoints at `step` (default: the latest) with `args`.

  Raises:
    FileNotFoundError: no checkpoints folder, or no checkpoint in it.
  """
  path = _path(workdir)
  if not epath.Path(path).is_dir():
    raise FileNotFoundError(f'{workdir} is not a vlm-jax train workdir (no checkpoints/)')
  with ocp.CheckpointManager(path) as checkpoints:
    step = checkpoints.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {path}')
    return checkpoints.restore(step, args=args), int(step)


def restore_latest(workdir: str, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
  """(state, step): the whole train state of WORKDIR/checkpoints at `step` (default: latest)."""
  return _restore(workdir, step, ocp.args.StandardRestore(abstract_state))


def restore_params(workdir: str, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
  """(params, step): only the parameters of WORKDIR/checkpoints at `step` (default: latest).

  What inference needs: a partial restore reads the `params` subtree into
  `abstract_params`' shapes and shardings (ShapeDtypeStructs) and skips the
  optimizer's moments, twice the parameters' size with Adam.
  """
  restored, step = _restore(workdir, step, ocp.args.PyTreeRestore(
      item={'params': abstract_params},
      restore_args={'params': ocp.checkpoint_utils.construct_restore_args(abstract_params)},
      partial_restore=True))
  return restored['params'], step
