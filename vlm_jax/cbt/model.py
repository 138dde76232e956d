"""CBT's networks (SPEC section 2): a visual transformer, a text BERT, a cross-modal transformer.

Visual: clip features [batch, T, D] -> Dense(D -> hidden) -> at masked clips a
learned mask vector instead -> + position embeddings, LayerNorm, dropout -> the
shared BERT layers (bidirectional, padding clips masked as keys). A masked
clip's output e_t is scored against the projected features y (the same
Dense's outputs, before masking): the visual NCE (vlm_jax.cbt.objectives).
Sharing the input projection is our choice (the paper scores outputs against
"the S3D features" of another width, so some projection is needed).

Text: the shared BertModel on `[CLS] sentence [SEP]`, loaded from a Hugging
Face checkpoint; with `freeze_text` its states are a stopped gradient (and
the optimizer leaves its weights alone, vlm_jax.cbt.step).

Cross-modal: text states projected to the visual width, + a modality
embedding, LayerNorm -> [text; visual] through `cross_layers` BERT layers ->
a linear score of the first position (the text's `[CLS]`): s(x, y), the
paper's mutual-information estimate of a sentence and a video sequence. The
visual states it reads are those of the masked input: one visual pass serves
both losses (our choice; masking then acts as input noise for L_cross).

Text MLM (the paper's L_bert, when `__call__` gets `mlm_positions`): BERT's
masked-token head (bert.MaskedTokenHead: transform, GELU, LayerNorm, logits
tied to the text BERT's word table) on the text states at the predicted
positions only, as VideoBERT's. The caller then passes the masked ids as
`input_ids`, and, as on the visual side, the one text pass also feeds the
cross-modal transformer (our choice: an unmasked second pass would cost
another text BERT forward and backward for a cleaner L_cross input). A model
initialised without `mlm_positions` has no head parameters, so checkpoints
of runs without the term are unchanged.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.models import bert
from vlm_jax.models import dropout as dropout_lib

Array = jax.Array
# Modality embedding rows of the cross-modal transformer's inputs.
TEXT, VIDEO = 0, 1


def _normal(config: bert.BertConfig, axes: tuple[str | None, ...]):
  """BERT's initializer (truncated normal, initializer_range) with logical axis names."""
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), axes)


class VisualTransformer(nn.Module):
  """Masked clip features -> contextual clip states, and the projected features."""
  config: bert.BertConfig
  max_clips: int

  @nn.compact
  def __call__(self, features: Array, clip_mask: Array, masked: Array, *,
               deterministic: bool) -> tuple[Array, Array]:
    """Encodes a batch of windows.

    Args:
      features: [batch, T, D] clip features (padding clips any value).
      clip_mask: [batch, T] 1 for a real clip.
      masked: [batch, T] 1 where the input is the mask vector.
      deterministic: no dropout.

    Returns:
      states [batch, T, hidden] (the last layer) and targets [batch, T, hidden]
      (the projected features, unmasked).
    """
    cfg = self.config
    targets = bert.dense(cfg, cfg.hidden_size, ('visual_dim', 'embed'), 'feature_projection')(
        features.astype(cfg.dtype))
    mask_vector = self.param('mask_vector', _normal(cfg, ('embed',)), (cfg.hidden_size,),
                             cfg.param_dtype)
    x = jnp.where(masked[..., None] > 0, mask_vector.astype(cfg.dtype), targets)
    positions = nn.Embed(self.max_clips, cfg.hidden_size, dtype=cfg.dtype,
                         param_dtype=cfg.param_dtype,
                         embedding_init=_normal(cfg, ('length', 'embed')),
                         name='position_embeddings')(jnp.arange(features.shape[1]))
    x = bert.layer_norm(cfg, 'embedding_norm')(x + positions[None])
    x = dropout_lib.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    states = bert.Encoder(cfg, name='encoder')(x, clip_mask, deterministic=deterministic)
    return states, targets


class CrossTransformer(nn.Module):
  """[text; visual] -> one score per (sentence, window) pair: aligned rows, or all pairs.

  Only the last layer's first position (the text's [CLS]) is scored, and
  everything before the first layer's attention is per position, depending on
  the sentence alone or the window alone. So the text projection, modality
  embeddings and input LayerNorm run once per sentence and once per window;
  with one layer its keys and values do too (bert.SelfAttention's pieces),
  and in the last layer only position 0 queries, through the MLP and
  LayerNorms. All 16 x 16 pairs of the tiny preset's batch: ~0.3 G
  multiply-adds in the layer's forward products, against ~9.7 G for the 256
  tiled rows at all 48 positions. The parameters are those of
  `bert.Encoder(name='encoder')`.
  """
  config: bert.BertConfig

  @nn.compact
  def __call__(self, text_states: Array, text_mask: Array, visual_states: Array,
               clip_mask: Array, *, pairs: bool, deterministic: bool) -> Array:
    """Scores sentences against windows.

    Args:
      text_states: [num_sentences, L, text_hidden] the text BERT's last layer.
      text_mask: [num_sentences, L] 1 for a real token.
      visual_states: [num_windows, T, hidden] the visual transformer's last layer.
      clip_mask: [num_windows, T] 1 for a real clip.
      pairs: score every window with every sentence; else row i's sentence
        with row i's window (num_windows = num_sentences).
      deterministic: no dropout.

    Returns:
      float32 scores s(sentence, window): with `pairs` [num_windows,
      num_sentences], s(sentence s, window v) at [v, s]; else [n].
    """
    cfg = self.config
    text = bert.dense(cfg, cfg.hidden_size, (None, 'embed'), 'text_projection')(
        text_states.astype(cfg.dtype))
    modality = nn.Embed(2, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        embedding_init=_normal(cfg, (None, 'embed')),
                        name='modality_embeddings')
    input_norm = bert.layer_norm(cfg, 'input_norm')
    text = input_norm(text + modality(jnp.asarray(TEXT)))
    visual = input_norm(visual_states.astype(cfg.dtype) + modality(jnp.asarray(VIDEO)))
    text = nn.with_logical_constraint(text, ('batch', 'length', 'embed'))
    visual = nn.with_logical_constraint(visual, ('batch', 'length', 'embed'))
    text_bias = bert.attention_bias(text_mask, cfg.dtype)  # [num_sentences, 1, 1, L]
    visual_bias = bert.attention_bias(clip_mask, cfg.dtype)  # [num_windows, 1, 1, T]
    if pairs:  # leading axes [num_windows, num_sentences]
      text, text_bias = text[None], text_bias[None]
      visual, visual_bias = visual[:, None], visual_bias[:, None]
    first = PairEncoder(cfg, name='encoder')(text, text_bias, visual, visual_bias,
                                             deterministic=deterministic)
    score = bert.dense(cfg, 1, ('embed', None), 'score')(first)
    return score[..., 0].astype(jnp.float32)


class PairEncoder(nn.Module):
  """bert.Encoder's layers (and parameter names) on [text; visual], to the last layer's
  position 0 only."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, text: Array, text_bias: Array, visual: Array, visual_bias: Array, *,
               deterministic: bool) -> Array:
    """The last layer's state at each pair's first position (the text's [CLS]).

    Args:
      text: [*batch_t, L, hidden] the text inputs (projected, embedded, normed).
      text_bias: [*batch_t, 1, 1, L] its padding bias (bert.attention_bias).
      visual: [*batch_v, T, hidden] the visual inputs; visual_bias [*batch_v, 1, 1, T].
      deterministic: no dropout.

    Returns:
      [*batch, hidden], batch the broadcast of batch_t and batch_v: one row
      per pair.
    """
    cfg = self.config
    layer_cls = bert.TransformerLayer
    if cfg.remat:
      layer_cls = nn.remat(bert.TransformerLayer, static_argnums=(3,))
    batch = jnp.broadcast_shapes(text.shape[:-2], visual.shape[:-2])
    bias = jnp.concatenate([jnp.broadcast_to(text_bias, batch + text_bias.shape[-3:]),
                            jnp.broadcast_to(visual_bias, batch + visual_bias.shape[-3:])],
                           axis=-1)
    # One layer: its keys and values from the sentences' and windows' own rows.
    inputs, queries = (text, visual), text[..., :1, :]
    if cfg.num_layers > 1:
      # Deeper, every position of a pair depends on both parts: the layers
      # but the last run on the pairs in full.
      x = jnp.concatenate([jnp.broadcast_to(text, batch + text.shape[-2:]),
                           jnp.broadcast_to(visual, batch + visual.shape[-2:])], axis=-2)
      rows = math.prod(batch)
      x = x.reshape((rows,) + x.shape[-2:])
      bias = bias.reshape((rows,) + bias.shape[-3:])
      for i in range(cfg.num_layers - 1):
        x = layer_cls(cfg, name=f'layer_{i}')(x, bias, deterministic)
      inputs, queries = x, x[:, :1]
    out = layer_cls(cfg, name=f'layer_{cfg.num_layers - 1}')(inputs, bias, deterministic,
                                                              queries)
    return out.reshape(batch + out.shape[-1:])


def all_pairs(text_states: Array, text_mask: Array, visual_states: Array,
              clip_mask: Array) -> tuple[Array, Array, Array, Array]:
  """Every (video v, sentence s) pair as one row v * batch + s: `Cbt.score`'s aligned
  rows for all pairs (what `Cbt.score_pairs` computes without the copies).

  Args:
    text_states: [batch, L, text_hidden]; text_mask [batch, L].
    visual_states: [batch, T, hidden]; clip_mask [batch, T].

  Returns:
    text_states [batch^2, L, text_hidden], text_mask [batch^2, L],
    visual_states [batch^2, T, hidden], clip_mask [batch^2, T].
  """
  batch = text_states.shape[0]

  def tile_text(x):  # row v * batch + s holds sentence s
    return jnp.broadcast_to(x[None], (batch,) + x.shape).reshape((batch * batch,) + x.shape[1:])

  def tile_video(x):  # ... and window v
    return jnp.broadcast_to(x[:, None], (batch, batch) + x.shape[1:]).reshape(
        (batch * batch,) + x.shape[1:])

  return (tile_text(text_states), tile_text(text_mask), tile_video(visual_states),
          tile_video(clip_mask))


class Cbt(nn.Module):
  """The three networks (and the text MLM head); `__call__` gives what the losses read."""
  text_config: bert.BertConfig
  visual_config: bert.BertConfig
  cross_layers: int
  max_clips: int
  freeze_text: bool = True

  def setup(self):
    self.visual = VisualTransformer(self.visual_config, self.max_clips)
    self.text_bert = bert.BertModel(self.text_config)
    # Parameters only once called: only models initialised with mlm_positions have them.
    self.mlm_head = bert.MaskedTokenHead(self.text_config, self.text_config.vocab_size)
    self.cross = CrossTransformer(dataclasses.replace(self.visual_config,
                                                      num_layers=self.cross_layers))

  def encode_text(self, input_ids: Array, attention_mask: Array, *,
                  deterministic: bool = True) -> Array:
    """[batch, L] `[CLS] sentence [SEP]` ids and mask -> [batch, L, text_hidden]."""
    states, _ = self.text_bert(input_ids, attention_mask, deterministic=deterministic)
    return jax.lax.stop_gradient(states) if self.freeze_text else states

  def encode_visual(self, features: Array, clip_mask: Array, masked: Array, *,
                    deterministic: bool = True) -> tuple[Array, Array]:
    """[batch, T, D] features -> (states, targets) [batch, T, hidden] (VisualTransformer)."""
    return self.visual(features, clip_mask, masked, deterministic=deterministic)

  def score(self, text_states: Array, text_mask: Array, visual_states: Array,
            clip_mask: Array, *, deterministic: bool = True) -> Array:
    """Aligned rows [n, ...] -> [n] cross-modal scores (CrossTransformer)."""
    return self.cross(text_states, text_mask, visual_states, clip_mask, pairs=False,
                      deterministic=deterministic)

  def score_pairs(self, text_states: Array, text_mask: Array, visual_states: Array,
                  clip_mask: Array, *, deterministic: bool = True) -> Array:
    """Every sentence against every window, without tiling the pairs (CrossTransformer).

    Args:
      text_states: [num_sentences, L, text_hidden]; text_mask [num_sentences, L].
      visual_states: [num_windows, T, hidden]; clip_mask [num_windows, T].

    Returns:
      [num_windows, num_sentences] float32, s(sentence s, window v) at [v, s].
    """
    return self.cross(text_states, text_mask, visual_states, clip_mask, pairs=True,
                      deterministic=deterministic)

  def __call__(self, features: Array, clip_mask: Array, masked: Array, input_ids: Array,
               attention_mask: Array, *, deterministic: bool = True,
               mlm_positions: Array | None = None) -> dict[str, Array]:
    """A batch of windows and their sentences -> the losses' inputs.

    Args:
      features: [batch, T, D]; clip_mask, masked: [batch, T] (VisualTransformer).
      input_ids, attention_mask: [batch, L] row i = window i's sentence (with
        mlm_positions, its masked ids: vlm_jax.data.text_masking.mask_text).
      mlm_positions: [batch, P] the text positions the MLM head scores; None
        for no MLM term.

    Returns:
      visual_states, visual_targets: [batch, T, hidden];
      cross_scores: [batch (windows), batch (sentences)] float32, s(sentence s, window v)
      at [v, s], all batch^2 pairs (score_pairs);
      with mlm_positions, mlm_logits [batch, P, text_vocab].
    """
    states, targets = self.encode_visual(features, clip_mask, masked,
                                         deterministic=deterministic)
    text = self.encode_text(input_ids, attention_mask, deterministic=deterministic)
    scores = self.score_pairs(text, attention_mask, states, clip_mask,
                              deterministic=deterministic)
    outputs = {'visual_states': states, 'visual_targets': targets, 'cross_scores': scores}
    if mlm_positions is not None:
      # Gathered first: scoring all L positions would cost the tiny preset's head
      # about as much as its whole text BERT (a [L, 384] x [384, 30522] product
      # per row), for the ~15% of real WordPieces that have a label.
      gathered = jnp.take_along_axis(text, mlm_positions[..., None], axis=1)
      outputs['mlm_logits'] = self.mlm_head(gathered, self.text_bert.word_table())
    return outputs


def with_pretrained_text(params: dict, bert_params: dict,
                         mlm_head: dict | None = None) -> dict:
  """`params` with the text BERT from a checkpoint's BertModel parameters.

  `mlm_head` (hf_bert.mlm_head_to_flax: a BertForPreTraining checkpoint's
  `cls.predictions`) replaces the random MLM head when the model has one;
  without it (sentence-transformers checkpoints such as MiniLM have none) the
  head stays as initialised.
  """
  params = dict(params)
  params['text_bert'] = jax.tree.map(np.asarray, bert_params)
  if mlm_head is not None and 'mlm_head' in params:
    new_head = jax.tree.map(np.asarray, mlm_head)
    expected, got = (jax.tree.map(np.shape, t) for t in (params['mlm_head'], new_head))
    if expected != got:
      raise ValueError(f'the checkpoint\'s MLM head does not fit the model: expected '
                       f'{expected}, got {got}')
    params['mlm_head'] = new_head
  return params
