"""VideoCLIP's dual encoder (SPEC section 3): a video and a text BERT, mean-pooled.

Video: per-second features [batch, T, D] -> MLP (Linear, GELU, LayerNorm,
Linear) -> `[CLS] v1..vT [SEP]` (CLS/SEP from the video tower's own word
embeddings, positions 0..T+1, token type 0) -> the first `video_layers` layers
of a BERT. The video tower's word table keeps only the two rows it uses
(row 0 `[CLS]`, row 1 `[SEP]`, loaded from the checkpoint's `[CLS]` and
`[SEP]` rows by `with_pretrained`): the other 30k rows would never touch an
output, yet cost a dense gradient and an Adam update every step. Text:
`[CLS] tokens [SEP]` through a whole BERT. Each tower's output is the mean of
its last-layer states over valid positions excluding `[CLS]` (the tokens and
`[SEP]`). Both towers load the same Hugging Face checkpoint.
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
    x = bert.layer_norm(cfg, 'norm')(x)
    return bert.dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'fc2')(x)


class VideoClip(nn.Module):
  """The two towers; `__call__` returns (z_video [batch, hidden], z_text [batch, hidden])."""
  text_config: bert.BertConfig
  video_layers: int

  def setup(self):
    video_config = dataclasses.replace(self.text_config, num_layers=self.video_layers,
                                       vocab_size=VIDEO_WORDS)
    self.video_mlp = VideoMlp(video_config)
    self.video_bert = bert.BertModel(video_config)
    self.text_bert = bert.BertModel(self.text_config)

  def encode_video(self, features: Array, feature_mask: Array, *,
                   deterministic: bool = True) -> Array:
    """[batch, T, D] per-second features and [batch, T] mask -> [batch, hidden].

    Padding seconds come after the real ones; `[SEP]` follows the last real second.
    """
    hidden, mask = self._video_hidden(features, feature_mask, deterministic)
    return masked_mean_without_cls(hidden, mask)

  def video_states(self, features: Array, feature_mask: Array) -> Array:
    """[batch, T, D] features -> [batch, T, hidden] last-layer states of the seconds.

    The per-second states that action segmentation and step localization score
    against label and step texts (rows past a video's length are padding).
    """
    hidden, _ = self._video_hidden(features, feature_mask, True)
    return hidden[:, 1:features.shape[1] + 1]

  def _video_hidden(self, features: Array, feature_mask: Array,
                    deterministic: bool) -> tuple[Array, Array]:
    batch, length = feature_mask.shape
    projected = self.video_mlp(features)
    table = self.video_bert.word_table()
    lengths = feature_mask.sum(axis=1)
    # [CLS] v_1..v_T [SEP] in a T + 2 sequence; [SEP] sits right after the last real second.
    tokens = jnp.concatenate([jnp.broadcast_to(table[VIDEO_CLS], (batch, 1, table.shape[1])),
                              projected * feature_mask[..., None].astype(projected.dtype),
                              jnp.zeros((batch, 1, table.shape[1]), projected.dtype)], axis=1)
    positions = jnp.arange(length + 2)[None, :]
    sep_here = positions == (lengths + 1)[:, None]
    tokens = jnp.where(sep_here[..., None], table[VIDEO_SEP].astype(tokens.dtype), tokens)
    mask = (positions <= (lengths + 1)[:, None]).astype(jnp.int32)
    ids = jnp.zeros((batch, length + 2), jnp.int32)
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
