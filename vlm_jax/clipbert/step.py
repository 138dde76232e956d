"""The ClipBERT train step: mesh, model, two-group optimizer, shardings and the jitted step.

Free of video decoding and file I/O beyond reading a checkpoint, so
benchmarks and accelerator machines can build a step without the data path.
The frame encoder trains end to end: its gradients come from the loss through
the grid encoder, except in the parts detectron2 freezes (the stem and res2
at freeze_at=2, every FrozenBN affine), which get no update at all.

The optimizer is jayleicn/ClipBERT's `setup_e2e_optimizer` +
run_video_retrieval.py's schedule: two parameter groups, the CNN ('cnn.*': the
ResNet and the grid encoder's conv) and the transformer ('transformer.*': the
visual embeddings, BERT and the task head), each AdamW (betas, eps and
weight decay from the config; no decay on biases and LayerNorm) with its own peak
learning rate on the same shape of schedule: linear warm-up over
int(warmup_fraction * num_steps) steps, then linear decay to 0. One
clip_grad_norm_ spans both groups, as ClipBERT clips all master params at once.

A batch (global, sharded over the mesh's data axis on its first dimension):
  input_ids, attention_mask  int32 [batch, texts, L] (matching: the caption
      and its negatives; multiple choice: the options) or [batch, L] (qa)
  frames                     float32 [batch, clips, frames, H, W, 3], BGR
      0-255 minus ClipBERT's pixel mean (model.feature_dim = D > 0: clip
      features [batch, clips, frames, 1, 1, D], vlm_jax.clipbert.clip_features)
  labels                     int32 [batch, texts] 1 = the video's caption,
      0 = a negative (matching); [batch] the option or answer class otherwise
and, with the MLM term (loss.mlm_weight > 0, matching only: image-text
pretraining), the video's caption masked (vlm_jax.data.text_masking):
  masked_ids                 int32 [batch, L]
  mlm_positions, mlm_labels  int32 [batch, P]; mlm_weights float32 [batch, P]

The MLM term: the masked caption runs through the joint BERT with the same
visual tokens as the matching pass (one frame-encoder pass,
`ClipBert.pretraining_logits`), and the loss is matching + mlm_weight *
MLM, as ClipBERT's run_pretrain.py sums its ITM and MLM losses. Only the
positive pairs are masked and predicted (a negative caption does not describe
the video); the matching pass reads the unmasked texts.
"""

import dataclasses
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from vlm_jax.clipbert import consensus
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import objectives
from vlm_jax.convert import hf_bert
from vlm_jax.convert import state_dicts
from vlm_jax.data import text_masking
from vlm_jax.models import resnet
from vlm_jax.train import optim, partitioning

# ClipBERT's two optimizer groups, and the leaves that never train.
TRANSFORMER, FRAME_ENCODER, FROZEN = 'transformer', 'frame_encoder', 'frozen'
# Top-level params of ClipBERT's 'cnn.*' group (vlm_jax.clipbert.model's tree).
FRAME_ENCODER_MODULES = ('frame_encoder', 'grid_encoder')
# Frames the params are initialised with: the params do not depend on the
# frame size, and 64 px is the smallest that gives a grid (res5 2 x 2 -> 1 x 1).
_INIT_IMAGE = 64


@dataclasses.dataclass
class Setup:
  """A ClipBERT model on a mesh, its optimizer and its jitted functions."""
  config: Any
  mesh: Mesh
  model: clipbert_model.ClipBert
  tx: optax.GradientTransformation
  # Learning rate by step of each group, TRANSFORMER and FRAME_ENCODER.
  schedules: dict[str, optax.Schedule]
  sharded: partitioning.ShardedState
  # (state, batch) -> (state, metrics); traced under the mesh and axis rules.
  train_step: Callable[[partitioning.TrainState, dict], tuple[partitioning.TrainState, dict]]
  # The raw jax.jit of the step, for .lower(...) (call through sharded.in_mesh).
  jitted_step: Any
  # (params, batch without labels) -> consensus-reduced logits: [batch, texts, 2]
  # (matching), [batch, options] or [batch, answers].
  predict: Callable[[Any, dict], jax.Array]


def model_config(config) -> clipbert_model.ClipBertConfig:
  """The network of a configs/clipbert.py config (detectron2 ResNet + BERT)."""
  m = config.model
  numerics = dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype),
                  remat=m.remat)
  text = hf_bert.model_bert_config(m, text_checkpoint(config))
  frames = None
  if not feature_dim(config):
    frames = dataclasses.replace(resnet.CLIPBERT, **resnet.PRESETS[m.resnet],
                                 freeze_at=m.freeze_at, **numerics)
  return clipbert_model.ClipBertConfig(
      bert_config=text, resnet_config=frames, feature_dim=feature_dim(config),
      task=m.task, num_answers=m.num_answers,
      max_grid_rows=m.max_grid_rows, max_grid_cols=m.max_grid_cols,
      mlm_head=mlm_weight(config) > 0)


def feature_dim(config) -> int:
  """D of precomputed clip features read instead of frames (model.feature_dim; 0 = frames)."""
  # .get: the config.json of a run from before the field has none.
  return int(config.model.get('feature_dim', 0))


def mlm_weight(config) -> float:
  """The MLM term's weight (loss.mlm_weight; 0 = no MLM head, no masked text)."""
  # .get: the config.json of a run from before the term has no loss block.
  return float(config.get('loss', {}).get('mlm_weight', 0.0))


def mlm_predictions(config) -> int:
  """P, the MLM slots per caption: the most a full caption (max_text_tokens - 2 words) has."""
  return text_masking.text_predictions(config.data.text_mask_rate,
                                       config.data.max_text_tokens - 2)


def text_checkpoint(config) -> str:
  """The Hugging Face BERT the joint BERT starts from ('' = none; model.text_checkpoint)."""
  # .get: the config.json of a run from before the field has none.
  return config.model.get('text_checkpoint', '')


def texts_per_video(config) -> int:
  """Texts scored against each video: 1 + negatives, the options, or 1 (qa)."""
  task = config.model.task
  if task == clipbert_model.MATCHING:
    return 1 + config.data.negatives
  if task == clipbert_model.MULTIPLE_CHOICE:
    return config.data.num_options
  return 1


def abstract_batch(config, batch_size: int | None = None,
                   num_clips: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of a training batch (module docstring); the config's sizes by default."""
  d, task = config.data, config.model.task
  b = config.train.global_batch_size if batch_size is None else batch_size
  clips = d.num_clips if num_clips is None else num_clips
  text = (b, d.max_text_tokens) if task == clipbert_model.QA else (
      b, texts_per_video(config), d.max_text_tokens)
  labels = (b, texts_per_video(config)) if task == clipbert_model.MATCHING else (b,)
  struct = jax.ShapeDtypeStruct
  shapes = {'input_ids': struct(text, jnp.int32), 'attention_mask': struct(text, jnp.int32),
            'frames': struct((b, clips, d.num_frames) + clipbert_model.frame_shape(
                feature_dim(config), (d.image_size, d.image_size)), jnp.float32),
            'labels': struct(labels, jnp.int32)}
  if mlm_weight(config) > 0:
    slots = (b, mlm_predictions(config))
    shapes.update(masked_ids=struct((b, d.max_text_tokens), jnp.int32),
                  mlm_positions=struct(slots, jnp.int32), mlm_labels=struct(slots, jnp.int32),
                  mlm_weights=struct(slots, jnp.float32))
  return shapes


def param_groups(params: Any, config: clipbert_model.ClipBertConfig) -> Any:
  """A pytree like `params` of group names: FROZEN, FRAME_ENCODER or TRANSFORMER."""
  trainable = clipbert_model.frame_encoder_trainable_mask(params, config)

  def group(path, is_trainable):
    if not is_trainable:
      return FROZEN
    return FRAME_ENCODER if optim.path_names(path)[0] in FRAME_ENCODER_MODULES else TRANSFORMER

  return jax.tree_util.tree_map_with_path(group, trainable)


def groups_by_path(config: clipbert_model.ClipBertConfig) -> dict[tuple[str, ...], str]:
  """{parameter path names: its group}, from the model's abstract params."""
  abstract = clipbert_model.abstract_params(clipbert_model.ClipBert(config))
  leaves = jax.tree_util.tree_leaves_with_path(param_groups(abstract, config))
  return {optim.path_names(path): group for path, group in leaves}


def group_norms(tree: Any, by_path: dict[tuple[str, ...], str]) -> dict[str, jax.Array]:
  """{group: the L2 norm of `tree`'s leaves in it}, for TRANSFORMER and FRAME_ENCODER."""
  squares = {TRANSFORMER: 0.0, FRAME_ENCODER: 0.0, FROZEN: 0.0}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    group = by_path[optim.path_names(path)]
    squares[group] = squares[group] + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
  return {group: jnp.sqrt(squares[group]) for group in (TRANSFORMER, FRAME_ENCODER)}


def warmup_steps(config) -> int:
  """ClipBERT's int(warmup_ratio * num_train_steps)."""
  return int(config.optim.warmup_fraction * config.train.num_steps)


def learning_rate_schedules(config) -> dict[str, optax.Schedule]:
  """Each group's learning rate at optimizer step 0, 1, ... (0-based).

  ClipBERT sets the rate of its update number s = 1, 2, ... to lr * s / w
  during the warm-up and lr * (T - s) / (T - w) after it, so the update at
  0-based step k uses the shared schedule's value at k + 1: the first update
  already moves, the peak is reached at step w - 1 and the last update
  (k = T - 1) has rate 0 (ClipBERT floors it to 1e-8).
  """
  o, num_steps, warmup = config.optim, config.train.num_steps, warmup_steps(config)

  def shifted(learning_rate):
    base = optim.learning_rate_schedule(
        types.SimpleNamespace(learning_rate=learning_rate, warmup_steps=warmup), num_steps)
    return lambda count: base(count + 1)

  return {TRANSFORMER: shifted(o.learning_rate),
          FRAME_ENCODER: shifted(o.frame_encoder_learning_rate)}


def make_optimizer(config, by_path: dict[tuple[str, ...], str]
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """Clip over everything, then AdamW per group; FROZEN leaves get no update and no moments.

  `by_path` is the model's `groups_by_path`.

  A zero gradient alone would not keep the frozen leaves fixed: AdamW's
  decoupled weight decay would still shrink them.
  """
  o = config.optim
  schedules = learning_rate_schedules(config)

  def adamw(schedule):
    # pylint: disable-next=protected-access
    return optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                       mask=optim._decay_mask)  # the codebase's bias / LayerNorm rule

  # By path: optax also labels stand-ins that are not the params' dict
  # (optax.tree_map_params), which the mask cannot read.
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: by_path[optim.path_names(path)], params)
  groups = optax.multi_transform(
      {TRANSFORMER: adamw(schedules[TRANSFORMER]),
       FRAME_ENCODER: adamw(schedules[FRAME_ENCODER]), FROZEN: optax.set_to_zero()}, labels)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), groups), schedules


def build(config, devices=None) -> Setup:
  """Mesh, model, optimizer, shardings, and the jitted train step and predictor."""
  mesh = partitioning.make_mesh(config.mesh, devices)
  axis_rules = partitioning.rules(config)
  net = model_config(config)
  model = clipbert_model.ClipBert(net)
  by_path = groups_by_path(net)
  tx, schedules = make_optimizer(config, by_path)
  task, method = config.model.task, config.model.consensus
  text_shape = (1, config.data.max_text_tokens) if task == clipbert_model.QA else (
      1, 1, config.data.max_text_tokens)

  def boxed_init(rng):
    ids = jnp.ones(text_shape, jnp.int32)
    frame = clipbert_model.frame_shape(net.feature_dim, (_INIT_IMAGE, _INIT_IMAGE))
    frames = jnp.zeros((1, 1, 1) + frame, jnp.float32)
    return model.init({'params': rng}, ids, ids, frames)['params']

  sharded = partitioning.sharded_state(boxed_init, tx, mesh, axis_rules)
  seed, rng_impl = config.seed, config.train.dropout_rng
  weight = mlm_weight(config)

  def step_fn(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=rng_impl), state.step)

    def loss_fn(params):
      if weight <= 0:  # a Python branch: without the term, the same ops and bits as before it
        logits = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                             batch['frames'], train=True, rngs={'dropout': rng})
        return objectives.loss(task, logits, batch['labels'], method)
      logits, mlm_logits = model.apply(
          {'params': params}, batch['input_ids'], batch['attention_mask'], batch['frames'],
          batch['masked_ids'], batch['mlm_positions'], train=True, rngs={'dropout': rng},
          method='pretraining_logits')
      matching, metrics = objectives.loss(task, logits, batch['labels'], method)
      mlm, mlm_metrics = objectives.mlm_loss(mlm_logits, batch['mlm_labels'],
                                             batch['mlm_weights'], method)
      metrics.update(mlm_metrics, loss_matching=matching, loss_mlm=mlm)
      return matching + weight * mlm, metrics

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(loss=loss, l2_grads=optax.tree.norm(grads),
                   l2_params=optax.tree.norm(params), l2_updates=optax.tree.norm(updates),
                   learning_rate=schedules[TRANSFORMER](state.step),
                   frame_encoder_learning_rate=schedules[FRAME_ENCODER](state.step))
    # End to end: the CNN's share of the gradient shows that the loss reaches it.
    metrics.update({f'l2_grads_{group}': norm
                    for group, norm in group_norms(grads, by_path).items()})
    return partitioning.TrainState(state.step + 1, params, opt_state), metrics

  batch_sharding = partitioning.batch_sharding(mesh)
  jitted_step = jax.jit(step_fn, in_shardings=(sharded.state_shardings, batch_sharding),
                        out_shardings=(sharded.state_shardings, None), donate_argnums=0)

  def predict_fn(params, batch):
    logits = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                         batch['frames'])
    return consensus.reduce(logits, method)

  predict = sharded.in_mesh(jax.jit(
      predict_fn, in_shardings=(sharded.param_shardings, batch_sharding),
      out_shardings=batch_sharding))
  return Setup(config, mesh, model, tx, schedules, sharded, sharded.in_mesh(jitted_step),
               jitted_step, predict)


def initial_params(setup: Setup) -> Any:
  """Random init, then ClipBERT's checkpoint (model.init_checkpoint) or a text BERT's.

  A ClipBERT checkpoint without the task head (the image-text pretrained one)
  keeps the random head, as ClipBERT's fine-tuning does. A Hugging Face BERT
  (model.text_checkpoint) replaces the joint BERT only: the frame encoder,
  visual embeddings and head stay random; with the MLM term its MLM head
  (`cls.predictions` of a BertForPreTraining checkpoint such as
  bert-base-uncased, which ClipBERT's pretraining starts from) replaces the
  random one too, where it has one (MiniLM's sentence-transformers checkpoint
  has none).
  """
  config = setup.config
  params = setup.sharded.init_params(jax.random.key(config.seed))
  if text_checkpoint(config):
    _, text_params, tensors = hf_bert.load(text_checkpoint(config))
    host = jax.device_get(params)
    # A checkpoint without a pooler (sentence-transformers') keeps the random one.
    host['bert'] = {**host['bert'], **jax.tree.map(np.asarray, text_params)}
    mlm_head = hf_bert.mlm_head_to_flax(tensors)
    if mlm_head is not None and 'mlm_head' in host:
      mlm_head = jax.tree.map(np.asarray, mlm_head)
      state_dicts.check_shapes(host['mlm_head'], mlm_head,
                               f'the MLM head of {text_checkpoint(config)}')
      host['mlm_head'] = mlm_head
    return jax.device_put(host, setup.sharded.param_shardings)
  if not config.model.init_checkpoint:
    return params
  host = clipbert_model.from_clipbert_checkpoint(
      config.model.init_checkpoint, setup.model.config, rng=jax.random.key(config.seed + 1))
  return jax.device_put(host, setup.sharded.param_shardings)
