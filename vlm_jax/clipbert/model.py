"""ClipBERT's network (SPEC section 4): frame grids, visual embeddings, a joint BERT, one head.

One clip of frames [..., frames, H, W, 3] (normalised as the frame encoder's
weights expect: ClipBERT's detectron2 ResNet-50 reads BGR 0-255 minus the
pixel mean) goes, frame by frame, through the shared frame encoder:
- ResNet (`vlm_jax.models.resnet`): the res5 map [h, w, 2048] -> Conv3x3
  (2048 -> hidden, no bias, padding 1) -> MaxPool 2x2 (stride 2, floor) ->
  ReLU: ClipBERT's `grid_encoder`; 448 px frames give 14 x 14 -> 7 x 7;
- ViT (`vlm_jax.models.vit`, our addition): the final patch states
  [h, w, vit_hidden] -> Dense(-> hidden), no pooling (a patch is already a
  token of 16 px, half of res5's 32 px cell before ClipBERT's 2x2 pool).
- precomputed clip features (`feature_dim` > 0, our addition: the
  frozen-features baseline ClipBERT argues against): each sampled frame is
  the feature row [1, 1, feature_dim] of the clip covering its time
  (vlm_jax.clipbert.clip_features) -> Dense(-> hidden); no frame encoder,
  and a clip is one visual token.
The clip's frames are then averaged (ClipBERT's temporal mean pooling), learned
row and column position embeddings are added (`max_grid_rows` x hidden and
`max_grid_cols` x hidden tables, 100 each in ClipBERT), the grid is flattened
row-major to h * w visual tokens, a one-row visual token-type embedding is
added, and a LayerNorm of their own and dropout follow. Visual tokens get no
1-D position embedding.

Text is `[CLS] text [SEP]` padded: the shared BERT's embedding layer (word +
position + token type 0, its LayerNorm and dropout). The joint sequence is
[text; visual] with the mask [text mask; ones], through the shared BERT's
layers and pooler (tanh(Dense([CLS]))); dropout on the pooled output, then
ClipBERT's classifier MLP: Dense(hidden -> 2 hidden) -> ReLU -> Dense(->
outputs). The task sets the outputs:
- MATCHING (video-text retrieval, ClipBERT's `ClipBertForVideoTextRetrieval`
  with the cross-entropy loss): 2 logits, index 1 = the text matches;
- MULTIPLE_CHOICE (TGIF-QA action / transition, `ClipBertForMultipleChoice`):
  one score per option text `[CLS] question option [SEP]`;
- QA (FrameQA, MSRVTT-QA, `ClipBertForSequenceClassification`): one logit per
  answer class.

Sparse sampling: `__call__` takes several clips of a video at once
([batch, clips, frames, H, W, 3]) and returns one prediction per clip
([batch, clips, ...]); `vlm_jax.clipbert.consensus` reduces the clips axis,
as ClipBERT stacks the logits of its per-clip forward passes. The visual
tokens of a clip are computed once and shared by all of its texts (ClipBERT's
`repeat_tensor_rows` of the CNN output).

Masked language modelling (ClipBERT's image-text pretraining,
`ClipBertForPreTraining`; with `ClipBertConfig.mlm_head`): BERT's
masked-token head (`bert.MaskedTokenHead`: transform, GELU, LayerNorm,
logits tied to the BERT's word table, ClipBERT's `cls.predictions`) on the
text part of the joint sequence's last layer, at the predicted positions only
(`mlm_logits`); `pretraining_logits` gives the task's logits and the MLM
logits of a masked caption from one pass of the frame encoder.

Parameter tree: `frame_encoder` (the ResNet's or ViT's own tree; none with
features), `grid_encoder` {conv {kernel [3, 3, 2048, hidden]}} or {projection
{kernel, bias}}, `visual_embeddings` {row_position_embeddings, col_position_embeddings,
token_type_embeddings [1, hidden], LayerNorm}, `bert` (BertModel's tree:
embeddings, encoder, pooler), `classifier` {hidden, output}, and with
`mlm_head` also `mlm_head` {transform, transform_norm, bias [vocab]} (without
it the tree is exactly the one before the head existed).
`vlm_jax.convert.clipbert_torch` converts ClipBERT's released checkpoints
into it. The frame encoder's frozen parts: `frame_encoder_trainable_mask`.
"""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.convert import clipbert_torch
from vlm_jax.convert import state_dicts
from vlm_jax.models import bert
from vlm_jax.models import dropout as dropout_lib
from vlm_jax.models import resnet
from vlm_jax.models import vit

Array = jax.Array

MATCHING, MULTIPLE_CHOICE, QA = 'matching', 'multiple_choice', 'qa'
TASKS = (MATCHING, MULTIPLE_CHOICE, QA)


@dataclasses.dataclass(frozen=True)
class ClipBertConfig:
  """The pieces and the task; the defaults are ClipBERT's retrieval model."""
  bert_config: bert.BertConfig = bert.BertConfig()
  # The frame encoder: exactly one of the two, or neither with feature_dim > 0.
  # ClipBERT's is detectron2's R-50.
  resnet_config: resnet.ResNetConfig | None = resnet.CLIPBERT
  vit_config: vit.ViTConfig | None = None
  # > 0: frames are precomputed clip features of this width (no frame encoder).
  feature_dim: int = 0
  # MATCHING (2 logits), MULTIPLE_CHOICE (1 score per option) or QA (num_answers).
  task: str = MATCHING
  # Answer classes of QA (FrameQA 1,540, MSRVTT-QA 1,500); unused otherwise.
  num_answers: int = 0
  # Rows of the row / column position tables (ClipBERT's
  # max_grid_{row,col}_position_embeddings): the largest grid a frame may give.
  max_grid_rows: int = 100
  max_grid_cols: int = 100
  # BERT's masked-token head for MLM (image-text pretraining): parameters
  # `mlm_head`, logits tied to the word table. False keeps the tree without it.
  mlm_head: bool = False

  def __post_init__(self):
    inputs = (self.resnet_config is not None, self.vit_config is not None, self.feature_dim > 0)
    if sum(inputs) != 1:
      raise ValueError('ClipBertConfig: set exactly one of resnet_config, vit_config and '
                       f'feature_dim > 0 (resnet_config={self.resnet_config}, '
                       f'vit_config={self.vit_config}, feature_dim={self.feature_dim})')
    if self.resnet_config is not None and 'res5' not in self.resnet_config.outputs:
      raise ValueError(f'ClipBertConfig.resnet_config.outputs={self.resnet_config.outputs}: '
                       'must include "res5", the map the grid encoder reads')
    if self.task not in TASKS:
      raise ValueError(f'ClipBertConfig.task={self.task!r}: one of {TASKS}')
    if self.task == QA and self.num_answers < 1:
      raise ValueError(f'ClipBertConfig.num_answers={self.num_answers}: QA needs >= 1 class')

  @property
  def num_outputs(self) -> int:
    """Width of the classifier's last layer."""
    return {MATCHING: 2, MULTIPLE_CHOICE: 1, QA: self.num_answers}[self.task]


def _normal(config: bert.BertConfig, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), axes)


class GridEncoder(nn.Module):
  """A frame encoder's map [n, h, w, c] -> a hidden-wide grid [n, h', w', hidden]."""
  config: ClipBertConfig

  @nn.compact
  def __call__(self, grid: Array) -> Array:
    cfg, text = self.config, self.config.bert_config
    grid = grid.astype(text.dtype)
    if cfg.resnet_config is None:  # ViT patches or clip features: a linear map
      return bert.dense(text, text.hidden_size, (None, 'embed'), 'projection')(grid)
    grid = nn.Conv(
        text.hidden_size, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
        dtype=text.dtype, param_dtype=text.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.kaiming_normal(), ('conv_h', 'conv_w', 'conv_in', 'embed')),
        name='conv')(grid)
    # PyTorch's MaxPool2d(2, 2) floors: an odd last row or column is dropped.
    grid = nn.max_pool(grid, (2, 2), strides=(2, 2), padding='VALID')
    return nn.relu(grid)


class VisualEmbeddings(nn.Module):
  """ClipBERT's `VisualInputEmbedding`: frame mean, row/col positions, token type, LN."""
  config: bert.BertConfig
  max_rows: int
  max_cols: int

  @nn.compact
  def __call__(self, grids: Array, *, deterministic: bool) -> Array:
    """[..., frames, h, w, hidden] -> [..., h * w, hidden] visual tokens (row-major)."""
    cfg = self.config
    grid = grids.mean(axis=-4)
    height, width, hidden = grid.shape[-3:]
    if height > self.max_rows or width > self.max_cols:
      raise ValueError(f'a {height} x {width} grid exceeds the position tables '
                       f'({self.max_rows} x {self.max_cols}): smaller frames or larger '
                       'max_grid_rows / max_grid_cols')

    def table(rows, name, axes):
      return nn.Embed(rows, hidden, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      embedding_init=_normal(cfg, axes), name=name)

    rows = table(self.max_rows, 'row_position_embeddings', ('length', 'embed'))(
        jnp.arange(height))
    cols = table(self.max_cols, 'col_position_embeddings', ('length', 'embed'))(
        jnp.arange(width))
    grid = grid + rows[:, None, :]
    grid = grid + cols[None, :, :]
    tokens = grid.reshape(grid.shape[:-3] + (height * width, hidden))
    # One row: every visual token has the same type, unlike the text's two.
    tokens = tokens + table(1, 'token_type_embeddings', (None, 'embed'))(
        jnp.zeros((1,), jnp.int32))
    tokens = bert.layer_norm(cfg, 'LayerNorm')(tokens)
    return dropout_lib.Dropout(cfg.dropout_rate)(tokens, deterministic=deterministic)


class Classifier(nn.Module):
  """ClipBERT's head: Dense(hidden -> 2 hidden) -> ReLU -> Dense(-> outputs)."""
  config: bert.BertConfig
  outputs: int

  @nn.compact
  def __call__(self, pooled: Array) -> Array:
    """[n, hidden] -> [n, outputs] float32 logits."""
    cfg = self.config
    h = nn.relu(bert.dense(cfg, 2 * cfg.hidden_size, ('embed', 'mlp'), 'hidden')(pooled))
    return bert.dense(cfg, self.outputs, ('mlp', None), 'output')(h).astype(jnp.float32)


class ClipBert(nn.Module):
  """The whole model; see the module docstring."""
  config: ClipBertConfig

  def setup(self):
    cfg = self.config
    if cfg.resnet_config is not None:
      self.frame_encoder = resnet.ResNet(cfg.resnet_config)
    elif cfg.vit_config is not None:
      self.frame_encoder = vit.ViT(cfg.vit_config)
    self.grid_encoder = GridEncoder(cfg)
    self.visual_embeddings = VisualEmbeddings(cfg.bert_config, cfg.max_grid_rows,
                                              cfg.max_grid_cols)
    self.bert = bert.BertModel(cfg.bert_config)
    self.pooled_dropout = dropout_lib.Dropout(cfg.bert_config.dropout_rate)
    self.classifier = Classifier(cfg.bert_config, cfg.num_outputs)
    if cfg.mlm_head:
      self.mlm_head = bert.MaskedTokenHead(cfg.bert_config, cfg.bert_config.vocab_size)

  def grid_features(self, frames: Array, *, train: bool = False) -> Array:
    """[..., H, W, 3] frames -> [..., h, w, hidden] grids, each frame on its own.

    ResNet-50 at 448 x 448: res5 14 x 14 -> 7 x 7. `train` runs ordinary
    batch norm on batch statistics (apply with mutable=['batch_stats']); the
    detectron2 layout (frozen_bn) has none. With `feature_dim`, a frame is a
    feature row [..., 1, 1, feature_dim] and its grid one cell.
    """
    lead, image = frames.shape[:-3], frames.shape[-3:]
    flat = frames.reshape((-1,) + image)
    if self.config.resnet_config is not None:
      maps = self.frame_encoder(flat, train=train)['res5']
    elif self.config.vit_config is not None:
      maps = self.frame_encoder(flat)['patches']
    else:
      maps = flat
    grid = self.grid_encoder(maps)
    return grid.reshape(lead + grid.shape[1:])

  def visual_tokens(self, frames: Array, *, train: bool = False) -> Array:
    """[..., frames, H, W, 3] (one clip) -> [..., h * w, hidden] visual embeddings."""
    return self.visual_embeddings(self.grid_features(frames, train=train),
                                  deterministic=not train)

  def encode(self, input_ids: Array, text_mask: Array, visual: Array, *,
             deterministic: bool = True) -> tuple[Array, Array]:
    """The joint transformer over aligned rows.

    Args:
      input_ids: [n, L] `[CLS] text [SEP]` padded WordPiece ids.
      text_mask: [n, L] 1 for a real token.
      visual: [n, V, hidden] visual tokens (`visual_tokens`).
      deterministic: no dropout.

    Returns:
      states [n, L + V, hidden] (text first) and pooled [n, hidden].
    """
    text = self.bert.embed(input_ids, deterministic=deterministic)
    x = jnp.concatenate([text, visual.astype(text.dtype)], axis=1)
    mask = jnp.concatenate(
        [text_mask.astype(jnp.int32), jnp.ones(visual.shape[:2], jnp.int32)], axis=1)
    return self.bert.encode(x, mask, deterministic=deterministic)

  def __call__(self, input_ids: Array, text_mask: Array, frames: Array, *,
               train: bool = False) -> Array:
    """Per-clip logits of the configured task.

    Args:
      input_ids, text_mask: MATCHING: [batch, texts, L], each text scored
        against its video (a caption and its negatives); MULTIPLE_CHOICE:
        [batch, options, L], `[CLS] question option [SEP]` each; QA: [batch, L].
      frames: [batch, clips, frames, H, W, 3], the sampled clips of each video.
      train: dropout (rng collection 'dropout') and batch statistics.

    Returns:
      float32 MATCHING [batch, clips, texts, 2]; MULTIPLE_CHOICE
      [batch, clips, options]; QA [batch, clips, num_answers].
    """
    visual = self.visual_tokens(frames, train=train)  # [batch, clips, V, hidden]
    return self._task_logits(input_ids, text_mask, visual, train=train)

  def _task_logits(self, input_ids: Array, text_mask: Array, visual: Array, *,
                   train: bool) -> Array:
    """`__call__` from the visual tokens [batch, clips, V, hidden] on."""
    cfg = self.config
    if cfg.task == QA:
      input_ids, text_mask = input_ids[:, None], text_mask[:, None]
    batch, clips, num_visual, hidden = visual.shape
    texts, length = input_ids.shape[1:]

    def per_clip_and_text(x):  # [batch, texts, L] -> [batch * clips * texts, L]
      x = jnp.broadcast_to(x[:, None], (batch, clips, texts, length))
      return x.reshape(-1, length)

    visual = jnp.broadcast_to(visual[:, :, None], (batch, clips, texts, num_visual, hidden))
    states, pooled = self.encode(per_clip_and_text(input_ids), per_clip_and_text(text_mask),
                                 visual.reshape(-1, num_visual, hidden),
                                 deterministic=not train)
    if cfg.mlm_head and self.is_initializing():
      # Any init makes the head's parameters (their shapes depend on no input).
      self.mlm_head(states[:, :1], self.bert.word_table())
    logits = self.classifier(self.pooled_dropout(pooled, deterministic=not train))
    logits = logits.reshape(batch, clips, texts, cfg.num_outputs)
    if cfg.task == MULTIPLE_CHOICE:
      return logits[..., 0]
    if cfg.task == QA:
      return logits[:, :, 0]
    return logits

  def mlm_logits(self, input_ids: Array, text_mask: Array, visual: Array, positions: Array, *,
                 deterministic: bool = True) -> Array:
    """MLM logits at positions of the text part of the joint sequence [text; visual].

    ClipBERT's `ClipBertForPreTraining` scores the text part of the last layer
    with `cls.predictions`; the head runs here on the predicted positions
    alone (gathered first: all L positions would multiply L x hidden by the
    [hidden, vocab] table per row for the ~15% that have a label).

    Args:
      input_ids, text_mask: [n, L] the (masked) `[CLS] text [SEP]` ids and mask.
      visual: [n, V, hidden] visual tokens (`visual_tokens`).
      positions: [n, P] text positions in [0, L) to score.
      deterministic: no dropout.

    Returns:
      [n, P, vocab] float32 logits.
    """
    if not self.config.mlm_head:
      raise ValueError('ClipBertConfig.mlm_head=False: this model has no MLM head')
    states, _ = self.encode(input_ids, text_mask, visual, deterministic=deterministic)
    gathered = jnp.take_along_axis(states, positions[..., None].astype(jnp.int32), axis=1)
    return self.mlm_head(gathered, self.bert.word_table()).astype(jnp.float32)

  def pretraining_logits(self, input_ids: Array, text_mask: Array, frames: Array,
                         masked_ids: Array, mlm_positions: Array, *,
                         train: bool = False) -> tuple[Array, Array]:
    """The task's logits and the MLM logits of a masked caption, one frame-encoder pass.

    Args:
      input_ids, text_mask, frames, train: `__call__`'s (MATCHING: the caption
        first, then its negatives).
      masked_ids: [batch, L] the video's caption masked
        (vlm_jax.data.text_masking.mask_text); its mask is the caption's,
        text_mask[:, 0] (masking keeps the length).
      mlm_positions: [batch, P] the predicted positions.

    Returns:
      `__call__`'s logits (the task pass runs first, so with the same
      dropout rng they are `__call__`'s bits), and float32 MLM logits
      [batch, clips, P, vocab]: each clip's visual tokens with the caption.
    """
    visual = self.visual_tokens(frames, train=train)  # [batch, clips, V, hidden]
    logits = self._task_logits(input_ids, text_mask, visual, train=train)
    batch, clips, num_visual, hidden = visual.shape
    caption_mask = text_mask[:, 0] if text_mask.ndim == 3 else text_mask

    def per_clip(x):  # [batch, ...] -> [batch * clips, ...]
      x = jnp.broadcast_to(x[:, None], (batch, clips) + x.shape[1:])
      return x.reshape((batch * clips,) + x.shape[2:])

    mlm = self.mlm_logits(per_clip(masked_ids), per_clip(caption_mask),
                          visual.reshape(-1, num_visual, hidden), per_clip(mlm_positions),
                          deterministic=not train)
    return logits, mlm.reshape((batch, clips) + mlm.shape[1:])


def frame_encoder_trainable_mask(params: Mapping, config: ClipBertConfig) -> Any:
  """A pytree like `params` of bools: False for the frame encoder's frozen leaves.

  The ResNet's (`resnet.trainable_mask`: frozen stages and folded norms);
  everything else trains, as ClipBERT's two optimizer groups (CNN,
  transformer) do.
  """
  mask = jax.tree.map(lambda _: True, dict(params))
  if config.resnet_config is not None:
    mask['frame_encoder'] = resnet.trainable_mask(params['frame_encoder'],
                                                  config.resnet_config)
  return mask


def frame_shape(feature_dim: int, image_shape: tuple[int, int]) -> tuple[int, int, int]:
  """One frame's array: (H, W, 3) pixels, or (1, 1, feature_dim) when feature_dim > 0."""
  return (1, 1, feature_dim) if feature_dim else tuple(image_shape) + (3,)


def abstract_params(model: ClipBert, image_shape: tuple[int, int] = (64, 64),
                    text_length: int = 8) -> dict:
  """Shapes and dtypes of the params, without computing anything."""
  ids = jnp.zeros((1, 1, text_length) if model.config.task != QA else (1, text_length),
                  jnp.int32)
  frames = jnp.zeros((1, 1, 1) + frame_shape(model.config.feature_dim, image_shape), jnp.float32)
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), ids, jnp.ones_like(ids), frames)))['params']


def from_clipbert_checkpoint(source, config: ClipBertConfig,
                             rng: jax.Array | None = None) -> dict:
  """ClipBERT's checkpoint (a .pt path or state dict) -> ClipBert params, every shape checked.

  A checkpoint without a task head (ClipBERT's image-text pretraining one)
  gets a freshly initialised classifier from `rng`, as ClipBERT's
  `load_state_dict_with_mismatch` leaves the fine-tuning head at its init.
  With `config.mlm_head` the MLM head comes from the checkpoint's
  `transformer.cls.predictions` (the pretraining checkpoint has it), else it is
  initialised from `rng` too; without, a checkpoint's MLM head is left out.
  """
  if config.resnet_config is None:
    raise ValueError('ClipBERT checkpoints hold a detectron2 ResNet: set config.resnet_config')
  params = clipbert_torch.to_flax(source, config.bert_config, config.resnet_config,
                                  max_grid_rows=config.max_grid_rows,
                                  max_grid_cols=config.max_grid_cols)
  text = config.bert_config
  if 'classifier' not in params:
    if rng is None:
      raise ValueError('the checkpoint has no task head: pass rng to initialise one')
    head = Classifier(text, config.num_outputs)
    params['classifier'] = jax.tree.map(np.asarray, nn.unbox(head.init(
        rng, jnp.zeros((1, text.hidden_size), text.dtype)))['params'])
  mlm_head = params.pop('mlm_head', None)
  if config.mlm_head:
    if mlm_head is None:
      if rng is None:
        raise ValueError('the checkpoint has no MLM head: pass rng to initialise one')
      head = bert.MaskedTokenHead(text, text.vocab_size)
      mlm_head = jax.tree.map(np.asarray, nn.unbox(head.init(
          jax.random.fold_in(rng, 1), jnp.zeros((1, 1, text.hidden_size), text.dtype),
          jnp.zeros((text.vocab_size, text.hidden_size), text.dtype)))['params'])
    params['mlm_head'] = mlm_head
  state_dicts.check_shapes(abstract_params(ClipBert(config)), params,
                           f'ClipBert(task={config.task!r})')
  return params
