"""The CBT train step: mesh, model, optimizer, shardings and the jitted step.

Free of tf.data and file I/O beyond reading pretrained weights, so benchmarks
and accelerator machines can build a step without the input pipeline. Both
losses span the global batch: with the batch sharded over the mesh's data
axis, XLA gathers what the score matmuls need.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from vlm_jax.cbt import model as cbt_model
from vlm_jax.cbt import objectives
from vlm_jax.convert import hf_bert
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.models import bert
from vlm_jax.train import optim, partitioning


@dataclasses.dataclass
class Setup:
  """A CBT model on a mesh, its optimizer and its jitted train step."""
  config: Any
  mesh: Mesh
  model: cbt_model.Cbt
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  sharded: partitioning.ShardedState
  train_step: Callable[[partitioning.TrainState, dict], tuple[partitioning.TrainState, dict]]


def _numerics(m) -> dict[str, Any]:
  return dict(dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
              dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype), remat=m.remat,
              attention_impl=m.attention_impl)


def text_config(config) -> bert.BertConfig:
  """The text BERT's shape: the init checkpoint's when there is one, else the config's."""
  return hf_bert.model_bert_config(config.model, config.model.init_checkpoint)


def visual_config(config) -> bert.BertConfig:
  """The visual transformer's shape (the cross-modal one is its first cross_layers-deep copy)."""
  m = config.model
  return bert.BertConfig(hidden_size=m.visual_hidden_size, num_layers=m.visual_layers,
                         num_heads=m.visual_heads, mlp_dim=m.visual_mlp_dim,
                         layer_norm_eps=m.layer_norm_eps, **_numerics(m))


def special_ids(config) -> dict[str, int]:
  """[CLS], [SEP], ... of the vocab the text BERT reads (data.vocab_file, else the checkpoint's)."""
  vocab_file = tokenizer_lib.resolve_vocab_file(config.data.vocab_file,
                                                config.model.init_checkpoint)
  return tokenizer_lib.special_ids(tokenizer_lib.load(vocab_file))


def text_mlm(config) -> bool:
  """Whether the run has the text MLM term (loss.bert_weight > 0): masked text, the MLM head."""
  # .get: the config.json of a run from before the term has no such field (inference.load).
  return config.loss.get('bert_weight', 0.0) > 0


def text_frozen(path: tuple) -> bool:
  """Whether a parameter path lies in the text BERT (optim.make's frozen predicate)."""
  return optim.path_names(path)[:1] == ('text_bert',)


def build(config, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings and the jitted train step."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  m, d, loss = config.model, config.data, config.loss
  model = cbt_model.Cbt(text_config(config), visual_config(config), m.cross_layers,
                        m.max_clips, m.freeze_text)
  tx, schedule = optim.make(config.optim, config.train.num_steps,
                            text_frozen if m.freeze_text else None)
  clips, text_len = d.num_clips, d.max_text_tokens + 2
  mlm = text_mlm(config)

  def boxed_init(rng):
    ones = lambda n: jnp.ones((1, n), jnp.int32)
    # Positions make the MLM head's parameters, whose shapes no position count changes.
    positions = ones(1) if mlm else None
    return model.init({'params': rng}, jnp.zeros((1, clips, m.feature_dim)), ones(clips),
                      ones(clips), ones(text_len), ones(text_len),
                      mlm_positions=positions)['params']

  sharded = partitioning.sharded_state(boxed_init, tx, mesh, axis_rules)
  seed, rng_impl = config.seed, config.train.dropout_rng
  weights = dict(visual_weight=loss.visual_weight, cross_weight=loss.cross_weight,
                 negatives=loss.visual_negatives,
                 temperature=loss.visual_temperature or None,
                 bert_weight=loss.get('bert_weight', 0.0))

  def step_fn(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=rng_impl), state.step)

    def loss_fn(params):
      # One text pass: the masked sentence when the MLM term is on (cbt_model's docstring).
      ids = batch['masked_ids'] if mlm else batch['input_ids']
      outputs = model.apply({'params': params}, batch['features'], batch['clip_mask'],
                            batch['masked'], ids, batch['attention_mask'],
                            deterministic=False, rngs={'dropout': rng},
                            mlm_positions=batch['mlm_positions'] if mlm else None)
      return objectives.cbt_loss(outputs, batch, **weights)

    (total, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(loss=total, l2_grads=optax.tree.norm(grads),
                   l2_params=optax.tree.norm(params), l2_updates=optax.tree.norm(updates),
                   learning_rate=schedule(state.step))
    return partitioning.TrainState(state.step + 1, params, opt_state), metrics

  train_step = sharded.in_mesh(jax.jit(
      step_fn, in_shardings=(sharded.state_shardings, partitioning.batch_sharding(mesh)),
      out_shardings=(sharded.state_shardings, None), donate_argnums=0))
  return Setup(config, mesh, model, tx, schedule, sharded, train_step)


def initial_params(setup: Setup) -> Any:
  """Random init, then the text BERT (and its MLM head) from the config's checkpoint (if any)."""
  config = setup.config
  params = setup.sharded.init_params(jax.random.key(config.seed))
  if not config.model.init_checkpoint:
    return params
  _, bert_params, tensors = hf_bert.load(config.model.init_checkpoint)
  # A BertForPreTraining checkpoint's MLM head too, when the model has one.
  host = cbt_model.with_pretrained_text(jax.device_get(params), bert_params,
                                        hf_bert.mlm_head_to_flax(tensors))
  return jax.device_put(host, setup.sharded.param_shardings)
