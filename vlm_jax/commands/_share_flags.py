"""The flags of a front-end stage run across hosts: each process takes a share of the items.

Not a command itself. --process_index/--process_count suit any launcher (the
processes never talk to each other); --multihost asks jax.distributed (a TPU
slice, as `vlm-jax train --multihost`). --merge, once every process is done,
writes the stage's manifest.json over all of them.
"""

import dataclasses

from absl import flags


@dataclasses.dataclass(frozen=True)
class ShareFlags:
  process_index: flags.FlagHolder
  process_count: flags.FlagHolder
  multihost: flags.FlagHolder
  merge: flags.FlagHolder

  def resolve(self) -> tuple[int, int]:
    """(index, count) of this process; --multihost initialises jax.distributed to learn them."""
    if not self.multihost.value:
      return self.process_index.value, self.process_count.value
    # pylint: disable=import-outside-toplevel
    import jax
    from vlm_jax.stages import train
    # pylint: enable=import-outside-toplevel
    train.initialize_distributed()
    return jax.process_index(), jax.process_count()


def define_flags(module_name: str, items: str, balanced_by: str) -> ShareFlags:
  """Defines the four flags; `module_name` (the command's __name__) lists them in its --help.

  `items` names what is shared out ('videos'), `balanced_by` how ('duration').
  """
  return ShareFlags(
      process_index=flags.DEFINE_integer(
          'process_index', 0, f"This process's share of the {items}, of --process_count.",
          module_name=module_name),
      process_count=flags.DEFINE_integer(
          'process_count', 1, f'Processes splitting the {items} by {balanced_by}; > 1 writes '
          'manifest-<index>-of-<count>.json (then --merge).', module_name=module_name),
      multihost=flags.DEFINE_bool(
          'multihost', False, 'Call jax.distributed.initialize() first (TPU slices) and take '
          'the share of jax.process_index() of jax.process_count().', module_name=module_name),
      merge=flags.DEFINE_bool(
          'merge', False, "Process nothing: write manifest.json from the processes' "
          f'manifests, reporting each of the {items} as done, failed or missing (exit 1 if '
          'any is missing).',
          module_name=module_name))
