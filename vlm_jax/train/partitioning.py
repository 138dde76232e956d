"""The device mesh and the shardings of parameters, optimizer state and batches."""

from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax import config_checks

MESH_AXES = ('data', 'model')


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A ('data', 'model') mesh over all devices.

  Built with `Mesh(...)` (Auto axes): `jax.make_mesh` now makes Explicit axes,
  which `with_logical_constraint` does not accept.
  """
  devices = jax.devices() if devices is None else devices
  shape = config_checks.mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules(config) -> tuple[tuple[str, Any], ...]:
  return tuple((name, axis) for name, axis in config.logical_axis_rules)


def param_shardings(abstract_boxed_params, mesh: Mesh, axis_rules) -> Any:
  """NamedShardings from the logical axis names the model put on its params."""
  specs = nn.get_partition_spec(abstract_boxed_params)
  return nn.logical_to_mesh_sharding(specs, mesh, axis_rules)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state,
                        params_shardings, mesh: Mesh) -> Any:
  """Optimizer moments sharded like their params; counters replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return optax.tree_map_params(
      tx, lambda _, sharding: sharding, abstract_opt_state, params_shardings,
      transform_non_params=lambda _: replicated)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over 'data'."""
  return NamedSharding(mesh, PartitionSpec('data'))


def device_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's share of a batch -> globally sharded arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
