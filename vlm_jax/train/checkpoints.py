"""Orbax checkpoints of a train state: where they live, resuming, and loading for inference.

A workdir may be a local path or a URL (gs://bucket/run): Orbax and etils.epath
handle both.
"""

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath


def _path(workdir: str) -> str:
  """WORKDIR/checkpoints; absolute when local (Orbax wants absolute local paths)."""
  return os.path.join(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints (a local path or a gs:// URL), keeping `keep`."""
  # The handler named up front, so that a checkpoint's array metadata can be read
  # before it is restored (`shape_mismatches`).
  return ocp.CheckpointManager(
      _path(workdir), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_handlers=ocp.StandardCheckpointHandler())


def shape_mismatches(checkpoints: ocp.CheckpointManager, step: int,
                     abstract_state: Any) -> list[str]:
  """What differs between the arrays saved at `step` and those of `abstract_state`.

  Read from the checkpoint's metadata, without restoring it: restoring into
  other shapes fails deep inside Orbax ('tree structures do not match').

  Returns:
    'name: (saved shape) saved, (shape) now' per array ('absent' for a side that
    has none), names as Orbax writes them (params.bert.encoder...); empty when
    the state fits.
  """
  tree = checkpoints.item_metadata(step).tree
  saved = {x.name: tuple(x.shape)
           for x in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, 'shape'))
           if hasattr(x, 'shape')}
  # Orbax names an array by its path, keys joined by dots (params.bert..., opt_state.1.0.mu...).
  now = {jax.tree_util.keystr(path, simple=True, separator='.'): tuple(x.shape)
         for path, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
  # Parameters first: the optimizer's moments repeat them.
  names = sorted(saved.keys() | now.keys(), key=lambda name: (not name.startswith('params.'), name))
  return [f'{name}: {saved.get(name, "absent")} saved, {now.get(name, "absent")} now'
          for name in names if saved.get(name) != now.get(name)]


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
