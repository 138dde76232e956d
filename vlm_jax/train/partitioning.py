"""The device mesh and the shardings of parameters, optimizer state and batches."""

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
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
  """Optimizer moments sharded like their params; counters replicated.

  Parameters a transformation leaves out (frozen ones, optax.multi_transform)
  stand as empty `optax.MaskedNode`s in its state, and stay so.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  masked = lambda x: isinstance(x, optax.MaskedNode)
  return optax.tree_map_params(
      tx, lambda x, sharding: x if masked(x) else sharding, abstract_opt_state,
      params_shardings, transform_non_params=lambda _: replicated, is_leaf=masked)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over 'data'."""
  return NamedSharding(mesh, PartitionSpec('data'))


def device_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's share of a batch -> globally sharded arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass
class ShardedState:
  """How a model's train state lies on the mesh, and jitted functions that make it."""
  param_shardings: Any
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings (Orbax restores)
  init_params: Callable[[jax.Array], Any]    # rng -> sharded random params
  create_state: Callable[[Any], TrainState]  # params -> step 0 state with fresh moments
  in_mesh: Callable[[Callable], Callable]    # wraps a jitted function: traced under the rules


def sharded_state(boxed_init: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                  mesh: Mesh, axis_rules) -> ShardedState:
  """Shardings from the logical axis names of `boxed_init(rng)`'s params (never run eagerly)."""
  abstract_boxed = jax.eval_shape(boxed_init, jax.random.key(0))
  shardings = param_shardings(abstract_boxed, mesh, axis_rules)
  abstract_params = nn.meta.unbox(abstract_boxed)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  state_shardings = TrainState(
      step=NamedSharding(mesh, PartitionSpec()), params=shardings,
      opt_state=opt_state_shardings(tx, abstract_opt, shardings, mesh))
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      TrainState(jax.ShapeDtypeStruct((), jnp.int32), abstract_params, abstract_opt),
      state_shardings)

  def in_mesh(jitted):
    """Calls (and so traces) `jitted` with the mesh and the logical axis rules set."""
    def call(*args):
      with jax.set_mesh(mesh), nn.logical_axis_rules(axis_rules):
        return jitted(*args)
    return call

  init_params = in_mesh(jax.jit(lambda rng: nn.meta.unbox(boxed_init(rng)),
                                out_shardings=shardings))
  create_state = jax.jit(
      lambda params: TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)),
      in_shardings=(shardings,), out_shardings=state_shardings)
  return ShardedState(shardings, state_shardings, abstract_state, init_params, create_state,
                      in_mesh)
