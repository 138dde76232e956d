"""VideoCLIP's dual encoder (SPEC section 3): a video and a text BERT, mean-pooled.

Video: per-second features [batch, T, D] -> MLP (Linear, GELU, LayerNorm with
PyTorch's eps 1e-5, Linear) -> a `[CLS] ... [SEP]` sequence of T + 2 tokens
(CLS/SEP from the video tower's own word embeddings, positions 0..T+1, token
type 0) -> the first `video_layers` layers of a BERT. Two layouts of that
sequence (`video_layout`, config field model.video_layout):

  'mmpt'    (default) as MMPT (fairseq examples/MMPT, `MMFusionSeparate` with
            `MMBertForEncoder`) lays it: T is the number of slots (callers pad
            to data.max_video_seconds, 32), slot t holds second t at position t
            whether real or padding, `[SEP]` always sits at position T + 1, and
            the attention mask is [1, feature_mask, 1]. A clip's embedding thus
            depends on the slot count, not only on its seconds.
  'packed'  `[SEP]` right after the last real second (position length + 1),
            padded seconds zeroed and masked: a clip's embedding does not
            depend on how far it is padded. This repository's layout before
            issue 14; kept for runs trained with it.

The video tower's word table keeps only the two rows it uses (row 0 `[CLS]`,
row 1 `[SEP]`, loaded from the checkpoint's `[CLS]` and `[SEP]` rows by
`with_pretrained`): the other 30k rows would never touch an output, yet cost a
dense gradient and an Adam update every step. Text: `[CLS] tokens [SEP]`
through a whole BERT. Each tower's output is the mean of its last-layer states
over valid positions excluding `[CLS]` (the real seconds or tokens, and
`[SEP]`), as MMPT pools. Both towers load the same Hugging Face checkpoint.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.models import bert

Array = jax.Array

# The video tower's word table: [CLS] and [SEP] only.
VIDEO_CLS, VIDEO_SEP, VIDEO_WORDS = 0, 1, 2
# The two video sequence layouts (module docstring).
MMPT, PACKED = 'mmpt', 'packed'
VIDEO_LAYOUTS = (MMPT, PACKED)
# MMPT's video MLP normalises with torch.nn.LayerNorm's default eps, not BERT's 1e-12.
VIDEO_MLP_LAYER_NORM_EPS = 1e-5


def masked_mean_without_cls(hidden: Array, mask: Array) -> Array:
  """[batch, seq, hidden], [batch, seq] 1/0 -> [batch, hidden]: mean over mask[:, 1:]."""
  weights = jnp.asarray(mask).at[:, 0].set(0).astype(hidden.dtype)[..., None]
  return (hidden * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1)


class VideoMlp(nn.Module):
  """Linear(D -> hidden), GELU, LayerNorm, Linear(hidden -> hidden)."""
  config: bert.BertConfig

  @nn.compact
  def __call__(self, features: Array) -> Array:
    cfg = self.config
    x = bert.dense(cfg, cfg.hidden_size, ('visual_dim', 'embed'), 'fc1')(
        features.astype(cfg.dtype))
    x = bert.gelu(x)
    x = bert.layer_norm(dataclasses.replace(cfg, layer_norm_eps=VIDEO_MLP_LAYER_NORM_EPS),
                        'norm')(x)
    return bert.dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'fc2')(x)


def video_sequence(cls: Array, sep: Array, projected: Array, feature_mask: Array, layout: str,
                   attend_cls: bool = True) -> tuple[Array, Array]:
  """The video tower's input: `[CLS] slots [SEP]` embeddings and attention mask.

  Args:
    cls: [hidden] the `[CLS]` embedding.
    sep: [hidden] the `[SEP]` embedding.
    projected: [batch, T, hidden] the MLP's outputs of the T second slots.
    feature_mask: [batch, T] 1 for a real second; real seconds come first.
    layout: 'mmpt' or 'packed' (module docstring).
    attend_cls: False masks `[CLS]` out of the attention (MMPT's per-second
      forward for COIN and CrossTask passes the mask [0, feature_mask, 1]).

  Returns:
    tokens [batch, T + 2, hidden] and mask [batch, T + 2] (1 = attended).
  """
  batch, length = feature_mask.shape
  feature_mask = feature_mask.astype(jnp.int32)
  ones = jnp.ones((batch, 1), jnp.int32)
  cls_tokens = jnp.broadcast_to(cls.astype(projected.dtype), (batch, 1, projected.shape[-1]))
  sep_tokens = jnp.broadcast_to(sep.astype(projected.dtype), (batch, 1, projected.shape[-1]))
  if layout == MMPT:
    # Padded slots keep mlp(0), as MMPT feeds its zero-padded features through the MLP;
    # masked as keys, they reach no real position.
    tokens = jnp.concatenate([cls_tokens, projected, sep_tokens], axis=1)
    mask = jnp.concatenate([ones, feature_mask, ones], axis=1)
  elif layout == PACKED:
    lengths = feature_mask.sum(axis=1)
    tokens = jnp.concatenate([cls_tokens, projected * feature_mask[..., None].astype(
        projected.dtype), jnp.zeros_like(sep_tokens)], axis=1)
    positions = jnp.arange(length + 2)[None, :]
    sep_here = positions == (lengths + 1)[:, None]
    tokens = jnp.where(sep_here[..., None], sep_tokens, tokens)
    mask = (positions <= (lengths + 1)[:, None]).astype(jnp.int32)
  else:
    raise ValueError(f'video_layout={layout!r}; expected one of {VIDEO_LAYOUTS}')
  if not attend_cls:
    mask = mask.at[:, 0].set(0)
  return tokens, mask


class VideoClip(nn.Module):
  """The two towers; `__call__` returns (z_video [batch, hidden], z_text [batch, hidden])."""
  text_config: bert.BertConfig
  video_layers: int
  # 'mmpt' or 'packed': where [SEP] sits and what is attended (module docstring).
  video_layout: str = MMPT

  def setup(self):
    video_config = dataclasses.replace(self.text_config, num_layers=self.video_layers,
                                       vocab_size=VIDEO_WORDS)
    self.video_mlp = VideoMlp(video_config)
    self.video_bert = bert.BertModel(video_config)
    self.text_bert = bert.BertModel(self.text_config)

  def encode_video(self, features: Array, feature_mask: Array, *,
                   deterministic: bool = True) -> Array:
    """[batch, T, D] per-second features and [batch, T] mask -> [batch, hidden].

    Padding seconds come after the real ones; with the 'mmpt' layout T is the
    slot count (data.max_video_seconds) and [SEP] sits after all T slots.
    Pooled: the mean over the real seconds and [SEP].
    """
    hidden, mask = self._video_hidden(features, feature_mask, deterministic, attend_cls=True)
    return masked_mean_without_cls(hidden, mask)

  def video_states(self, features: Array, feature_mask: Array) -> Array:
    """[batch, T, D] features -> [batch, T, hidden] last-layer states of the seconds.

    The per-second states that action segmentation and step localization score
    against label and step texts (rows past a video's length are padding). With
    the 'mmpt' layout `[CLS]` is masked out of the attention, as in MMPT's
    forward for those tasks.
    """
    hidden, _ = self._video_hidden(features, feature_mask, True,
                                   attend_cls=self.video_layout != MMPT)
    return hidden[:, 1:features.shape[1] + 1]

  def _video_hidden(self, features: Array, feature_mask: Array, deterministic: bool,
                    attend_cls: bool) -> tuple[Array, Array]:
    """[batch, T + 2, hidden] last-layer states and their [batch, T + 2] attention mask."""
    projected = self.video_mlp(features)
    table = self.video_bert.word_table()
    tokens, mask = video_sequence(table[VIDEO_CLS], table[VIDEO_SEP], projected, feature_mask,
                                  self.video_layout, attend_cls)
    # Positions are 0..T+1 in both layouts; the token ids are unused beside token_embeddings.
    ids = jnp.zeros(mask.shape, jnp.int32)
    hidden, _ = self.video_bert(ids, mask, deterministic=deterministic, token_embeddings=tokens)
    return hidden, mask

  def encode_text(self, input_ids: Array, attention_mask: Array, *,
                  deterministic: bool = True) -> Array:
    """[batch, seq] `[CLS] tokens [SEP]` ids and mask -> [batch, hidden]."""
    hidden, _ = self.text_bert(input_ids, attention_mask, deterministic=deterministic)
    return masked_mean_without_cls(hidden, attention_mask)

  def __call__(self, features: Array, feature_mask: Array, input_ids: Array,
               attention_mask: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
    return (self.encode_video(features, feature_mask, deterministic=deterministic),
            self.encode_text(input_ids, attention_mask, deterministic=deterministic))


def special_ids(config) -> dict[str, int]:
  """The special ids ([CLS], [SEP], ...) of the vocab a VideoCLIP config's text tower reads.

  That vocab is data.vocab_file, else the init checkpoint's vocab.txt, else
  the default (tokenizer.resolve_vocab_file).
  """
  vocab_file = tokenizer_lib.resolve_vocab_file(config.data.vocab_file,
                                                config.model.init_checkpoint)
  return tokenizer_lib.special_ids(tokenizer_lib.load(vocab_file))


def with_pretrained(params: dict, bert_params: dict, video_layers: int, *, cls_id: int,
                    sep_id: int) -> dict:
  """`params` with both towers from one BERT checkpoint.

  The video tower takes the first `video_layers` layers and, of the word
  table, the `cls_id` and `sep_id` rows (the vocab's [CLS] and [SEP]:
  `special_ids`).
  """
  params = dict(params)
  params['text_bert'] = jax.tree.map(lambda x: x, bert_params)
  video = dict(bert_params)
  video['encoder'] = {f'layer_{i}': bert_params['encoder'][f'layer_{i}']
                      for i in range(video_layers)}
  table = bert_params['embeddings']['word_embeddings']['embedding']
  video['embeddings'] = dict(bert_params['embeddings'],
                             word_embeddings={'embedding': np.asarray(table)[[cls_id, sep_id]]})
  params['video_bert'] = video
  return params
