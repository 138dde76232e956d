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
"""

import dataclasses

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
  """[text; visual] -> one score per aligned (sentence, window) row."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, text_states: Array, text_mask: Array, visual_states: Array,
               clip_mask: Array, *, deterministic: bool) -> Array:
    """Scores row i's sentence against row i's window.

    Args:
      text_states: [n, L, text_hidden] the text BERT's last layer.
      text_mask: [n, L] 1 for a real token.
      visual_states: [n, T, hidden] the visual transformer's last layer.
      clip_mask: [n, T] 1 for a real clip.
      deterministic: no dropout.

    Returns:
      [n] float32 scores s(sentence, window).
    """
    cfg = self.config
    text = bert.dense(cfg, cfg.hidden_size, (None, 'embed'), 'text_projection')(
        text_states.astype(cfg.dtype))
    modality = nn.Embed(2, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        embedding_init=_normal(cfg, (None, 'embed')),
                        name='modality_embeddings')
    x = jnp.concatenate([text + modality(jnp.asarray(TEXT)),
                         visual_states.astype(cfg.dtype) + modality(jnp.asarray(VIDEO))], axis=1)
    x = bert.layer_norm(cfg, 'input_norm')(x)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    mask = jnp.concatenate([text_mask, clip_mask], axis=1)
    x = bert.Encoder(cfg, name='encoder')(x, mask, deterministic=deterministic)
    score = bert.dense(cfg, 1, ('embed', None), 'score')(x[:, 0])
    return score[:, 0].astype(jnp.float32)


def all_pairs(text_states: Array, text_mask: Array, visual_states: Array,
              clip_mask: Array) -> tuple[Array, Array, Array, Array]:
  """Every (video v, sentence s) pair as one row v * batch + s.

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
  """The three networks; `__call__` gives what the two losses read."""
  text_config: bert.BertConfig
  visual_config: bert.BertConfig
  cross_layers: int
  max_clips: int
  freeze_text: bool = True

  def setup(self):
    self.visual = VisualTransformer(self.visual_config, self.max_clips)
    self.text_bert = bert.BertModel(self.text_config)
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
    return self.cross(text_states, text_mask, visual_states, clip_mask,
                      deterministic=deterministic)

  def __call__(self, features: Array, clip_mask: Array, masked: Array, input_ids: Array,
               attention_mask: Array, *, deterministic: bool = True) -> dict[str, Array]:
    """A batch of windows and their sentences -> the losses' inputs.

    Args:
      features: [batch, T, D]; clip_mask, masked: [batch, T] (VisualTransformer).
      input_ids, attention_mask: [batch, L] row i = window i's sentence.

    Returns:
      visual_states, visual_targets: [batch, T, hidden];
      cross_scores: [batch (windows), batch (sentences)] float32, s(sentence s, window v)
      at [v, s], all batch^2 pairs through the cross-modal transformer.
    """
    states, targets = self.encode_visual(features, clip_mask, masked,
                                         deterministic=deterministic)
    text = self.encode_text(input_ids, attention_mask, deterministic=deterministic)
    batch = features.shape[0]
    scores = self.score(*all_pairs(text, attention_mask, states, clip_mask),
                        deterministic=deterministic)
    return {'visual_states': states, 'visual_targets': targets,
            'cross_scores': scores.reshape(batch, batch)}


def with_pretrained_text(params: dict, bert_params: dict) -> dict:
  """`params` with the text BERT from a checkpoint's BertModel parameters."""
  params = dict(params)
  params['text_bert'] = jax.tree.map(np.asarray, bert_params)
  return params
