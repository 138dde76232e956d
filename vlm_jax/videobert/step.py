"""The VideoBERT train step: mesh, model, optimizer, shardings, jitted init and step.

Free of tf.data and file I/O beyond reading pretrained weights, so benchmarks and
accelerator machines can build a step without the input pipeline's dependencies.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from vlm_jax import config_checks
from vlm_jax.convert import hf_bert
from vlm_jax.data import tokenizer
from vlm_jax.train import optim, partitioning
from vlm_jax.videobert import model as videobert
from vlm_jax.videobert import objectives
from vlm_jax.videobert import vocab as vocab_lib

TrainState = partitioning.TrainState


@dataclasses.dataclass
class Setup:
  """Everything a training step needs, built from a config."""
  config: Any
  vocab: vocab_lib.JointVocab
  mesh: Mesh
  model: videobert.VideoBert
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  param_shardings: Any
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
  init_params: Callable[[jax.Array], Any]
  create_state: Callable[[Any], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  # (abstract batch, XLA options or None) -> compiled executable (state, batch) -> (state, metrics)
  compile_step: Callable[..., Any]


def load_vocab(config):
  """The WordPiece tokenizer and the joint vocabulary; checks their sizes agree."""
  vocab_file = tokenizer.resolve_vocab_file(config.data.vocab_file, config.model.init_checkpoint)
  tok = tokenizer.load(vocab_file)
  vocab = vocab_lib.from_tokenizer(tok, config.model.num_visual_tokens)
  if vocab.text_vocab_size != config.model.text_vocab_size:
    raise config_checks.ConfigError(
        f'config.model.text_vocab_size: {config.model.text_vocab_size}, but the vocab file '
        f'{vocab_file} has {vocab.text_vocab_size} entries')
  return tok, vocab


def _dummy_inputs(config, batch_size: int = 1):
  seq = jnp.ones((batch_size, config.data.seq_len), jnp.int32)
  positions = jnp.zeros((batch_size, config.data.max_predictions), jnp.int32)
  return seq, seq, seq, positions


def _model_inputs(batch):
  return (batch['input_ids'], batch['token_type_ids'], batch['attention_mask'],
          batch['masked_positions'])


def build(config, vocab: vocab_lib.JointVocab, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings and the jitted init and train step."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  model = videobert.build(config.model, vocab)
  frozen = None
  if config.model.freeze_visual_embeddings:
    frozen = lambda path: optim.path_names(path)[:2] == ('visual_embeddings', 'embedding')
  tx, schedule = optim.make(config.optim, config.train.num_steps, frozen)

  def boxed_init(rng):
    return model.init({'params': rng}, *_dummy_inputs(config))['params']

  sharded = partitioning.sharded_state(boxed_init, tx, mesh, axis_rules)
  state_shardings, abstract_state = sharded.state_shardings, sharded.abstract_state

  loss_weights = dict(config.loss_weights)
  # Runs from before the field existed used the per-modality softmax.
  per_modality_softmax = config.model.get('per_modality_softmax', True)
  accum = config.optim.grad_accum_steps
  dropout_seed = config.seed
  dropout_rng = config.train.dropout_rng

  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    norms = objectives.normalizers(batch)
    rng = jax.random.fold_in(jax.random.key(dropout_seed, impl=dropout_rng), state.step)

    def loss_fn(params, micro, micro_rng):
      outputs = model.apply({'params': params}, *_model_inputs(micro), deterministic=False,
                            rngs={'dropout': micro_rng})
      return objectives.videobert_loss(outputs, micro, loss_weights, norms,
                                       vocab.visual_offset, per_modality_softmax)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (_, metrics), grads = grad_fn(state.params, batch, rng)
    else:
      micro_batches = jax.tree.map(
          lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

      def accumulate(carry, inputs):
        index, micro = inputs
        (_, m), g = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (g, m)), None

      metric_shapes = jax.eval_shape(
          lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro_batches), rng)[0][1])
      zeros = (jax.tree.map(jnp.zeros_like, state.params),
               jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes))
      (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), micro_batches))

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(
        l2_grads=optax.tree.norm(grads), l2_params=optax.tree.norm(params),
        l2_updates=optax.tree.norm(updates), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  jitted_step = jax.jit(
      step_fn, in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
      out_shardings=(state_shardings, None), donate_argnums=0)
  train_step = sharded.in_mesh(jitted_step)
  # Compiles without any array in memory (for memory reports of large configs);
  # options apply to this executable alone (benchmarks/throughput.py compares them).
  compile_step = sharded.in_mesh(lambda batch, compiler_options=None: jitted_step.lower(
      abstract_state, batch).compile(compiler_options=compiler_options))
  return Setup(config, vocab, mesh, model, tx, schedule, sharded.param_shardings,
               state_shardings, abstract_state, sharded.init_params, sharded.create_state,
               train_step, compile_step)


def initial_params(setup: Setup) -> Any:
  """Random init, then the pretrained text weights and centroids the config names."""
  config = setup.config
  params = setup.init_params(jax.random.key(config.seed))
  if not (config.model.init_checkpoint or config.model.visual_init):
    return params
  host = jax.device_get(params)
  if config.model.init_checkpoint:
    overrides = dict(dropout_rate=config.model.dropout_rate,
                     attention_dropout_rate=config.model.attention_dropout_rate)
    _, bert_params, sd = hf_bert.load(config.model.init_checkpoint, **overrides)
    host = videobert.with_pretrained_text(host, bert_params, hf_bert.mlm_head_to_flax(sd),
                                          setup.vocab)
  if config.model.visual_init:
    host = videobert.with_visual_init(host, np.load(config.model.visual_init))
  return jax.device_put(host, setup.param_shardings)
