"""A BERT encoder in Flax linen: embeddings, post-LN transformer layers, pooler.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`),
mapped to mesh axes by the config's `logical_axis_rules`. The parameter tree
mirrors Hugging Face's BertModel so checkpoints convert name by name
(`vlm_jax.convert.hf_bert`).
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlm_jax.models import attention
from vlm_jax.models import dropout as dropout_lib

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and numerics of a BERT encoder."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False
  attention_impl: str = 'xla'  # or 'fused' (jax.nn.dot_product_attention, no dropout)

  @classmethod
  def from_model_config(cls, model_config, vocab_size: int) -> 'BertConfig':
    """From the `model` block of a vlm_jax ConfigDict."""
    return cls(
        vocab_size=vocab_size,
        hidden_size=model_config.hidden_size,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        mlp_dim=model_config.mlp_dim,
        max_position_embeddings=model_config.max_position_embeddings,
        type_vocab_size=model_config.type_vocab_size,
        dropout_rate=model_config.dropout_rate,
        attention_dropout_rate=model_config.attention_dropout_rate,
        layer_norm_eps=model_config.layer_norm_eps,
        dtype=jnp.dtype(model_config.dtype),
        param_dtype=jnp.dtype(model_config.param_dtype),
        remat=model_config.remat,
        attention_impl=model_config.attention_impl,
    )


def _init(config: BertConfig, axes: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), axes)


def _zeros(axes: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def gelu(x: Array) -> Array:
  """Exact GELU, x * Phi(x), written as Hugging Face BERT writes it: 0.5 x (1 + erf(x / sqrt 2)).

  jax.nn.gelu(approximate=False) uses erfc, whose two-branch XLA expansion
  made GELU and its gradient ~7% of a CPU VideoCLIP step; erf is one
  polynomial. Same function (within float32 rounding).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype,
      scale_init=_ones(('embed',)), bias_init=_zeros(('embed',)), name=name)


def dense(config: BertConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(features, dtype=config.dtype, param_dtype=config.param_dtype,
                  kernel_init=_init(config, axes), bias_init=_zeros(axes[1:]), name=name)


class Embeddings(nn.Module):
  """Token + position + token-type embeddings, LayerNorm and dropout.

  `token_embeddings`, when given, replaces the word lookup (VideoBERT looks up
  visual tokens in a table of its own).
  """
  config: BertConfig

  def setup(self):
    cfg = self.config
    self.word_embeddings = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=_init(cfg, ('vocab', 'embed')))
    self.position_embeddings = nn.Embed(
        cfg.max_position_embeddings, cfg.hidden_size, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, embedding_init=_init(cfg, ('length', 'embed')))
    self.token_type_embeddings = nn.Embed(
        cfg.type_vocab_size, cfg.hidden_size, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, embedding_init=_init(cfg, (None, 'embed')))
    self.LayerNorm = layer_norm(cfg, 'LayerNorm')  # pylint: disable=invalid-name
    self.dropout = dropout_lib.Dropout(cfg.dropout_rate)

  def __call__(self, input_ids: Array, token_type_ids: Array, *, deterministic: bool,
               token_embeddings: Array | None = None) -> Array:
    """[batch, seq] ids -> [batch, seq, hidden]."""
    if token_embeddings is None:
      token_embeddings = self.word_embeddings(input_ids)
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (token_embeddings + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))
    x = self.LayerNorm(x)
    return self.dropout(x, deterministic=deterministic)

  def word_table(self) -> Array:
    """The [vocab, hidden] word embedding table (for tied output heads)."""
    return jnp.asarray(self.word_embeddings.embedding, self.config.dtype)


class SelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
    """[batch, seq, hidden] with additive bias [batch, 1, 1, seq] -> same shape."""
    cfg = self.config
    head_dim = cfg.hidden_size // cfg.num_heads

    batch, length = x.shape[:2]

    def heads(name):
      # One [hidden, heads * head_dim] kernel: splitting its output axis over
      # the model axis splits whole heads when num_heads divides by it.
      y = dense(cfg, cfg.hidden_size, ('embed', 'heads'), name)(x)
      y = y.reshape(batch, length, cfg.num_heads, head_dim)
      return nn.with_logical_constraint(y, ('batch', 'length', 'heads', 'kv'))

    query, key, value = heads('query'), heads('key'), heads('value')
    if cfg.attention_impl == 'fused':
      out = jax.nn.dot_product_attention(query, key, value, bias=bias.astype(query.dtype))
    else:
      keep, rate = None, 0.0
      if not deterministic and cfg.attention_dropout_rate > 0:
        rate = cfg.attention_dropout_rate
        keep = dropout_lib.keep_mask(self.make_rng('dropout'), rate,
                                     (batch, cfg.num_heads, length, length))
      out = attention.dot_product_attention(query, key, value, bias, keep, rate)
    out = out.reshape(batch, length, cfg.hidden_size)
    return dense(cfg, cfg.hidden_size, ('heads', 'embed'), 'out')(out)


class Mlp(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    h = dense(cfg, cfg.mlp_dim, ('embed', 'mlp'), 'intermediate')(x)
    h = gelu(h)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    return dense(cfg, cfg.hidden_size, ('mlp', 'embed'), 'output')(h)


class TransformerLayer(nn.Module):
  """Post-LN BERT layer: LN(x + attn(x)), then LN(x + mlp(x))."""
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    dropout = dropout_lib.Dropout(cfg.dropout_rate)
    h = SelfAttention(cfg, name='attention')(x, bias, deterministic=deterministic)
    x = layer_norm(cfg, 'attention_norm')(x + dropout(h, deterministic=deterministic))
    h = Mlp(cfg, name='mlp')(x)
    x = layer_norm(cfg, 'output_norm')(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))


def attention_bias(attention_mask: Array, dtype: Dtype) -> Array:
  """[batch, seq] 1/0 mask -> [batch, 1, 1, seq] additive bias."""
  big_negative = jnp.finfo(dtype).min
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, big_negative).astype(dtype)


class Encoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
    """[batch, seq, hidden], [batch, seq] -> [batch, seq, hidden]."""
    cfg = self.config
    bias = attention_bias(attention_mask, cfg.dtype)
    layer_cls = TransformerLayer
    if cfg.remat:
      layer_cls = nn.remat(TransformerLayer, static_argnums=(3,))
    for i in range(cfg.num_layers):
      x = layer_cls(cfg, name=f'layer_{i}')(x, bias, deterministic)
    return x


class Pooler(nn.Module):
  """tanh(Dense([CLS] state)), as BERT's pooler."""
  config: BertConfig

  @nn.compact
  def __call__(self, hidden: Array) -> Array:
    """[batch, seq, hidden] -> [batch, hidden]."""
    cfg = self.config
    return jnp.tanh(dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'dense')(hidden[:, 0]))


class BertModel(nn.Module):
  """BERT: returns the last hidden state [batch, seq, hidden] and the pooled [CLS]."""
  config: BertConfig

  def setup(self):
    self.embeddings = Embeddings(self.config)
    self.encoder = Encoder(self.config)
    self.pooler = Pooler(self.config)

  def __call__(self, input_ids: Array, attention_mask: Array,
               token_type_ids: Array | None = None, *, deterministic: bool = True,
               token_embeddings: Array | None = None) -> tuple[Array, Array]:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic,
                        token_embeddings=token_embeddings)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    hidden = self.encoder(x, attention_mask, deterministic=deterministic)
    return hidden, self.pooler(hidden)

  def word_table(self) -> Array:
    return self.embeddings.word_table()
