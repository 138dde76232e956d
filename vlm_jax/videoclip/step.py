"""The VideoCLIP train step: mesh, model, optimizer, shardings, jitted step and pair encoder.

Free of tf.data and file I/O beyond reading pretrained weights, so benchmarks,
inference and accelerator machines can build a step without the input pipeline.
The loss spans the global batch: with the batch sharded over the mesh's data
axis, XLA gathers the embeddings.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax.convert import hf_bert
from vlm_jax.models import bert
from vlm_jax.train import contrastive, optim, partitioning
from vlm_jax.videoclip import model as videoclip


@dataclasses.dataclass
class Setup:
  """A VideoCLIP model on a mesh, its optimizer and its jitted functions."""
  config: Any
  mesh: Mesh
  model: videoclip.VideoClip
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  sharded: partitioning.ShardedState
  train_step: Callable[[partitioning.TrainState, dict], tuple[partitioning.TrainState, dict]]
  # (params, features [b, s, d], feature_mask [b, s], input_ids [b, t], attention_mask [b, t])
  # -> (z_video, z_text) [b, hidden], replicated
  encode_pairs: Callable[..., tuple[jax.Array, jax.Array]]


def bert_config(config) -> bert.BertConfig:
  """The text tower's shape: the init checkpoint's when there is one, else the config's."""
  m = config.model
  numerics = dict(dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
                  dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype), remat=m.remat,
                  attention_impl=m.attention_impl)
  if m.init_checkpoint:
    return hf_bert.read_config(hf_bert.resolve(m.init_checkpoint), **numerics)
  return dataclasses.replace(bert.BertConfig.from_model_config(m, m.text_vocab_size), **numerics)


def build(config, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings, and the jitted train step and pair encoder."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  model = videoclip.VideoClip(bert_config(config), config.model.video_layers,
                              config.model.get('video_layout', videoclip.PACKED))
  d = config.data
  num_steps = config.train.num_epochs * max(1, config.train.steps_per_epoch)
  tx, schedule = optim.make(config.optim, num_steps)
  seconds, text_len = d.max_video_seconds, d.text_tokens_cap + 2

  def boxed_init(rng):
    return model.init({'params': rng}, jnp.zeros((1, seconds, config.model.feature_dim)),
                      jnp.ones((1, seconds), jnp.int32), jnp.ones((1, text_len), jnp.int32),
                      jnp.ones((1, text_len), jnp.int32))['params']

  sharded = partitioning.sharded_state(boxed_init, tx, mesh, axis_rules)
  temperature, seed, rng_impl = config.model.temperature, config.seed, config.train.dropout_rng

  def step_fn(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=rng_impl), state.step)

    def loss_fn(params):
      z_video, z_text = model.apply(
          {'params': params}, batch['features'], batch['feature_mask'], batch['input_ids'],
          batch['attention_mask'], deterministic=False, rngs={'dropout': rng})
      return contrastive.symmetric_infonce(z_video, z_text, temperature)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(loss=loss, l2_grads=optax.tree.norm(grads),
                   l2_params=optax.tree.norm(params), learning_rate=schedule(state.step))
    return partitioning.TrainState(state.step + 1, params, opt_state), metrics

  batch_sharding = partitioning.batch_sharding(mesh)
  train_step = sharded.in_mesh(jax.jit(
      step_fn, in_shardings=(sharded.state_shardings, batch_sharding),
      out_shardings=(sharded.state_shardings, None), donate_argnums=0))
  replicated = NamedSharding(mesh, PartitionSpec())
  encode_pairs = sharded.in_mesh(jax.jit(
      lambda params, *inputs: model.apply({'params': params}, *inputs),
      in_shardings=(sharded.param_shardings,) + (batch_sharding,) * 4,
      out_shardings=(replicated, replicated)))
  return Setup(config, mesh, model, tx, schedule, sharded, train_step, encode_pairs)


def initial_params(setup: Setup) -> Any:
  """Random init, then both towers from the config's BERT checkpoint (if any)."""
  config = setup.config
  params = setup.sharded.init_params(jax.random.key(config.seed))
  if not config.model.init_checkpoint:
    return params
  _, bert_params, _ = hf_bert.load(config.model.init_checkpoint)
  ids = videoclip.special_ids(config)
  host = videoclip.with_pretrained(jax.device_get(params), bert_params,
                                   config.model.video_layers, cls_id=ids['[CLS]'],
                                   sep_id=ids['[SEP]'])
  return jax.device_put(host, setup.sharded.param_shardings)
