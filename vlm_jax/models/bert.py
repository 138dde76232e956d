"""A BERT encoder in Flax linen: embeddings, post-LN transformer layers, pooler,
and the masked-token head that VideoBERT and CBT put on top.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`),
mapped to mesh axes by the config's `logical_axis_rules`. The parameter tree
mirrors Hugging Face's BertModel so checkpoints convert name by name
(`vlm_jax.convert.hf_bert`).
"""

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
  # vlm_jax.models.attention.IMPLEMENTATIONS: 'xla', 'cudnn', 'tpu_flash' or 'auto'.
  attention_impl: str = 'xla'
  # Whether every sequence's padding follows its tokens (the VideoBERT pipeline's
  # batches). cuDNN reads padding as a key count per row; without this promise
  # each row's attended keys are first gathered to the front.
  trailing_padding: bool = False

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
  visual tokens in a table of its own). The tables are read in their own
  (parameter) dtype and the rows cast after: word rows by a gather, positions
  by a slice, token types by a select, so the gradients reach the tables as an
  f32 scatter-add, a pad and a sum. nn.Embed's lookup would cast each table to
  the compute dtype first, making each gradient a bf16 scatter-add (16k rows
  onto a token-type table of 2 lose most of their bits, and are slow on GPUs).
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
    x = self.LayerNorm(self.summed(input_ids, token_type_ids, token_embeddings))
    return self.dropout(x, deterministic=deterministic)

  def summed(self, input_ids: Array, token_type_ids: Array,
             token_embeddings: Array | None = None) -> Array:
    """[batch, seq] ids -> the [batch, seq, hidden] sum of the three embeddings, before LN."""
    dtype = self.config.dtype
    if token_embeddings is None:
      token_embeddings = jnp.take(self.word_embeddings.embedding, input_ids, axis=0).astype(dtype)
    # Broadcast before the cast, so the gradient's sum over the batch is in f32.
    positions = jnp.broadcast_to(self.position_embeddings.embedding[:input_ids.shape[-1]],
                                 token_embeddings.shape).astype(dtype)
    types = self.token_type_embeddings.embedding
    # A select only where the rows are cast: in the table's own dtype the
    # gather's gradient is already a sum in that dtype, and float32 runs keep
    # their results bit for bit (the CPU demos' published digits).
    if types.shape[0] == 2 and jnp.dtype(dtype) != types.dtype:
      type_rows = jnp.where(token_type_ids[..., None] == 1, types[1], types[0])
    else:
      type_rows = jnp.take(types, token_type_ids, axis=0)
    return token_embeddings + positions + type_rows.astype(dtype)

  def word_table(self) -> Array:
    """The [vocab, hidden] word embedding table (for tied output heads)."""
    return jnp.asarray(self.word_embeddings.embedding, self.config.dtype)


class SelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array | Sequence[Array], bias: Array, *, deterministic: bool,
               queries: Array | None = None, key_mask: Array | None = None) -> Array:
    """Multi-head attention of `queries` (default: every position of `x`) over `x`.

    Args:
      x: [batch, seq, hidden] the attended positions' inputs; or, with
        `queries`, pieces [*batch_i, seq_i, hidden] of them whose leading axes
        broadcast together: each is projected to keys and values on its own
        rows, and attended as if broadcast and joined along seq (the
        projections are per position, so a piece that many rows share is
        projected once; `_attend_pieces` keeps them unbroadcast).
      bias: additive, broadcastable to [*batch, heads, num_queries, seq]; the
        padding bias is [batch, 1, 1, seq].
      deterministic: no dropout.
      queries: [*batch_q, num_queries, hidden] the inputs of the positions
        whose outputs are wanted (x[:, :1] to read out [CLS] alone); None for
        all positions of `x` (then one array).
      key_mask: [batch, seq] 1/0, the mask `bias` is the padding bias of; the
        fused implementations (config.attention_impl 'cudnn', 'tpu_flash')
        read it instead of `bias`. Pieces are always attended written out.

    Returns:
      [batch, seq, hidden], or with `queries` [*batch, num_queries, hidden],
      batch the broadcast of every leading shape.
    """
    cfg = self.config
    head_dim = cfg.hidden_size // cfg.num_heads
    pieces = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if queries is None:
      if len(pieces) != 1:
        raise ValueError(f'{len(pieces)} pieces of keys and values need their queries')
      queries = pieces[0]
    batch_shape = jnp.broadcast_shapes(*(a.shape[:-2] for a in (queries,) + pieces),
                                       bias.shape[:-3])
    rows = math.prod(batch_shape)
    num_queries = queries.shape[-2]

    def heads(name, inputs):
      # One [hidden, heads * head_dim] kernel: splitting its output axis over
      # the model axis splits whole heads when num_heads divides by it.
      projection = dense(cfg, cfg.hidden_size, ('embed', 'heads'), name)
      ys = [jnp.broadcast_to(y, batch_shape + y.shape[-2:])
            for y in (projection(a) for a in inputs)]
      y = ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=-2)
      y = y.reshape(rows, y.shape[-2], cfg.num_heads, head_dim)
      return nn.with_logical_constraint(y, ('batch', 'length', 'heads', 'kv'))

    if len(pieces) > 1:
      out = self._attend_pieces(queries, pieces, bias, batch_shape, deterministic)
      out = dense(cfg, cfg.hidden_size, ('heads', 'embed'), 'out')(out)
      return out.reshape(batch_shape + out.shape[1:])
    query, key, value = heads('query', (queries,)), heads('key', pieces), heads('value', pieces)
    impl = attention.resolve(cfg.attention_impl, attention_dropout_rate=cfg.attention_dropout_rate,
                             dtype=cfg.dtype, head_dim=head_dim)
    if impl != 'xla':
      if key_mask is None:
        raise ValueError(f'attention_impl={impl!r} reads the padding from key_mask, got None')
      key_mask = jnp.broadcast_to(key_mask, batch_shape + key_mask.shape[-1:]).reshape(rows, -1)
      if impl == 'cudnn' and not cfg.trailing_padding:
        key, value, key_mask = attention.attended_keys_first(key, value, key_mask)
      out = attention.padded_attention(query, key, value, key_mask, implementation=impl)
    else:
      bias = jnp.broadcast_to(bias, batch_shape + bias.shape[-3:]).reshape(
          (rows,) + bias.shape[-3:])
      keep, rate = None, 0.0
      if not deterministic and cfg.attention_dropout_rate > 0:
        rate = cfg.attention_dropout_rate
        keep = dropout_lib.keep_mask(self.make_rng('dropout'), rate,
                                     (rows, cfg.num_heads, num_queries, key.shape[1]))
      out = attention.dot_product_attention(query, key, value, bias, keep, rate)
    out = out.reshape(rows, num_queries, cfg.hidden_size)
    out = dense(cfg, cfg.hidden_size, ('heads', 'embed'), 'out')(out)
    return out.reshape(batch_shape + out.shape[1:])

  def _attend_pieces(self, queries: Array, pieces: tuple[Array, ...], bias: Array,
                     batch_shape: tuple[int, ...], deterministic: bool) -> Array:
    """The attention of `__call__`'s pieces, each piece's keys and values left unbroadcast.

    Logits and weighted values are products of the queries with each piece's
    own rows (its broadcast axes stay free axes of the product), so neither the
    keys and values nor, in the backward pass, their gradients exist per row of
    the broadcast batch: summing [rows, keys, hidden] gradients back onto the
    pieces cost CBT's tiny step more than the rest of its cross-modal layer.
    The dropout keep mask is the one `__call__`'s broadcast path draws.

    Returns:
      [rows, num_queries, hidden], rows = prod(batch_shape).
    """
    cfg = self.config
    head_dim = cfg.hidden_size // cfg.num_heads
    split = lambda y: y.reshape(y.shape[:-1] + (cfg.num_heads, head_dim))
    project = lambda name: dense(cfg, cfg.hidden_size, ('embed', 'heads'), name)
    query = split(project('query')(queries))  # [*batch_q, q, heads, d]
    key_projection, value_projection = project('key'), project('value')
    keys = [split(key_projection(a)) for a in pieces]
    values = [split(value_projection(a)) for a in pieces]
    scale = jnp.asarray(head_dim ** -0.5, query.dtype)
    logits = [jnp.einsum('...qhd,...khd->...hqk', query, k) * scale for k in keys]
    lengths = [k.shape[-3] for k in keys]
    logits = jnp.concatenate(
        [jnp.broadcast_to(g, batch_shape + g.shape[-3:]) for g in logits], axis=-1)
    probs = jax.nn.softmax(logits + bias.astype(logits.dtype), axis=-1)
    if not deterministic and cfg.attention_dropout_rate > 0:
      rate = cfg.attention_dropout_rate
      keep = dropout_lib.keep_mask(self.make_rng('dropout'), rate,
                                   (math.prod(batch_shape),) + probs.shape[-3:])
      probs = dropout_lib.apply_keep_mask(probs, keep.reshape(probs.shape), rate)
    bounds = np.cumsum(lengths)[:-1].tolist()
    out = sum(jnp.einsum('...hqk,...khd->...qhd', p, v)
              for p, v in zip(jnp.split(probs, bounds, axis=-1), values))
    out = jnp.broadcast_to(out, batch_shape + out.shape[-3:])
    return out.reshape((math.prod(batch_shape),) + out.shape[-3:-2] + (cfg.hidden_size,))


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
  def __call__(self, x: Array | Sequence[Array], bias: Array, deterministic: bool,
               queries: Array | None = None, key_mask: Array | None = None) -> Array:
    """[batch, seq, hidden] with bias [batch, 1, 1, seq] -> [batch, seq, hidden].

    With `queries` (SelfAttention's arguments), only those positions' outputs,
    [*batch, num_queries, hidden]: the residuals are the queries' inputs, and
    the MLP and LayerNorms run on those positions alone. `key_mask`: [batch,
    seq] 1/0, the padding `bias` is made of (the fused attention reads it).
    """
    cfg = self.config
    dropout = dropout_lib.Dropout(cfg.dropout_rate)
    h = SelfAttention(cfg, name='attention')(x, bias, deterministic=deterministic,
                                             queries=queries, key_mask=key_mask)
    out_shape = h.shape
    if queries is not None:
      x = jnp.broadcast_to(queries, out_shape)
    # The positions as [rows, length, hidden], the layout the constraints name.
    x, h = x.reshape((-1,) + out_shape[-2:]), h.reshape((-1,) + out_shape[-2:])
    x = layer_norm(cfg, 'attention_norm')(x + dropout(h, deterministic=deterministic))
    h = Mlp(cfg, name='mlp')(x)
    x = layer_norm(cfg, 'output_norm')(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')).reshape(out_shape)


attention_bias = attention.padding_bias


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
      x = layer_cls(cfg, name=f'layer_{i}')(x, bias, deterministic, None, attention_mask)
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
    x = self.embed(input_ids, token_type_ids, deterministic=deterministic,
                   token_embeddings=token_embeddings)
    return self.encode(x, attention_mask, deterministic=deterministic)

  def embed(self, input_ids: Array, token_type_ids: Array | None = None, *,
            deterministic: bool = True, token_embeddings: Array | None = None) -> Array:
    """[batch, seq] ids -> [batch, seq, hidden]: the embedding layer alone (`Embeddings`)."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic,
                        token_embeddings=token_embeddings)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

  def encode(self, x: Array, attention_mask: Array, *,
             deterministic: bool = True) -> tuple[Array, Array]:
    """Embedded [batch, seq, hidden] and mask [batch, seq] -> (hidden states, pooled [batch, hidden]).

    For sequences that join `embed`'s output with embeddings made elsewhere
    (ClipBERT's visual tokens, which have their own LayerNorm and no 1-D position).
    """
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    hidden = self.encoder(x, attention_mask, deterministic=deterministic)
    return hidden, self.pooler(hidden)

  def word_table(self) -> Array:
    return self.embeddings.word_table()


class MaskedTokenHead(nn.Module):
  """BERT's prediction head: Dense, GELU, LayerNorm, then logits tied to an input table.

  The parameter names mirror Hugging Face's `cls.predictions` (transform,
  transform_norm, bias), which `vlm_jax.convert.hf_bert.mlm_head_to_flax` reads.
  """
  config: BertConfig
  vocab_size: int

  @nn.compact
  def __call__(self, hidden: Array, table: Array) -> Array:
    """[batch, P, hidden] states and the [vocab, hidden] table -> [batch, P, vocab]."""
    cfg = self.config
    h = dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'transform')(hidden)
    h = gelu(h)
    h = layer_norm(cfg, 'transform_norm')(h)
    bias = self.param('bias', _zeros(('vocab',)), (self.vocab_size,), cfg.param_dtype)
    logits = jnp.einsum('bph,vh->bpv', h, table) + jnp.asarray(bias, cfg.dtype)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
