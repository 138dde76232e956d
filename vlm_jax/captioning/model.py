"""A small transformer encoder-decoder captioner (VideoBERT captioning, SPEC section 1).

The encoder reads a segment as a sequence of feature vectors [batch, inputs,
feature_dim]; the decoder writes WordPieces of the BERT uncased vocab (by ids
of a caption vocabulary, vlm_jax.captioning.train.CaptionVocab), starting from
`[CLS]` and ending with `[SEP]`. VideoBERT's caption feature is one vector per
segment (video-token mean, masked-text mean, optionally pooled S3D,
concatenated), so `vlm-jax caption` feeds sequences of length one; the encoder
takes any length with a mask so that per-clip features fit the same model.

Pre-LN layers (LayerNorm before each sublayer, one after the stack): with a few
thousand captions and heavy dropout they train without warm-up tricks. The
output layer is tied to the WordPiece embedding table.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CaptionerConfig:
  """Shape of the captioner."""
  feature_dim: int
  vocab_size: int
  hidden_size: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 512
  max_inputs: int = 16
  max_caption_len: int = 32
  dropout_rate: float = 0.4
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, model_config, feature_dim: int, vocab_size: int) -> 'CaptionerConfig':
    """From the `model` block of configs/captioner.py."""
    return cls(feature_dim=feature_dim, vocab_size=vocab_size,
               hidden_size=model_config.hidden_size, num_layers=model_config.num_layers,
               num_heads=model_config.num_heads, mlp_dim=model_config.mlp_dim,
               max_inputs=model_config.max_inputs,
               max_caption_len=model_config.max_caption_len,
               dropout_rate=model_config.dropout_rate)


class Mlp(nn.Module):
  config: CaptionerConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    h = nn.gelu(nn.Dense(cfg.mlp_dim, dtype=cfg.dtype, name='intermediate')(x))
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(cfg.hidden_size, dtype=cfg.dtype, name='output')(h)


def _attention(cfg: CaptionerConfig, name: str) -> nn.MultiHeadDotProductAttention:
  return nn.MultiHeadDotProductAttention(
      num_heads=cfg.num_heads, qkv_features=cfg.hidden_size, out_features=cfg.hidden_size,
      dropout_rate=cfg.dropout_rate, dtype=cfg.dtype, name=name)


class EncoderLayer(nn.Module):
  config: CaptionerConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    """[batch, inputs, hidden] with a [batch, 1, inputs, inputs] mask -> same shape."""
    dropout = nn.Dropout(self.config.dropout_rate)
    h = nn.LayerNorm(name='attention_norm')(x)
    h = _attention(self.config, 'attention')(h, h, mask=mask, deterministic=deterministic)
    x = x + dropout(h, deterministic=deterministic)
    h = Mlp(self.config, name='mlp')(nn.LayerNorm(name='mlp_norm')(x), deterministic)
    return x + dropout(h, deterministic=deterministic)


class DecoderLayer(nn.Module):
  config: CaptionerConfig

  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               deterministic: bool) -> Array:
    """[batch, length, hidden] tokens attending to [batch, inputs, hidden] -> same shape."""
    dropout = nn.Dropout(self.config.dropout_rate)
    h = nn.LayerNorm(name='attention_norm')(y)
    h = _attention(self.config, 'attention')(h, h, mask=self_mask, deterministic=deterministic)
    y = y + dropout(h, deterministic=deterministic)
    h = nn.LayerNorm(name='cross_attention_norm')(y)
    h = _attention(self.config, 'cross_attention')(h, encoded, mask=cross_mask,
                                                   deterministic=deterministic)
    y = y + dropout(h, deterministic=deterministic)
    h = Mlp(self.config, name='mlp')(nn.LayerNorm(name='mlp_norm')(y), deterministic)
    return y + dropout(h, deterministic=deterministic)


class Captioner(nn.Module):
  """Features in, WordPiece logits out (teacher forcing); `encode`/`decode` for generation."""
  config: CaptionerConfig

  def setup(self):
    cfg = self.config
    self.input_projection = nn.Dense(cfg.hidden_size, dtype=cfg.dtype)
    self.input_positions = nn.Embed(cfg.max_inputs, cfg.hidden_size, dtype=cfg.dtype)
    self.token_embeddings = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                                     embedding_init=nn.initializers.normal(0.02))
    self.token_positions = nn.Embed(cfg.max_caption_len, cfg.hidden_size, dtype=cfg.dtype)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.encoder_layers = [EncoderLayer(cfg) for _ in range(cfg.num_layers)]
    self.encoder_norm = nn.LayerNorm()
    self.decoder_layers = [DecoderLayer(cfg) for _ in range(cfg.num_layers)]
    self.decoder_norm = nn.LayerNorm()
    self.output_bias = self.param('output_bias', nn.initializers.zeros_init(), (cfg.vocab_size,))

  def encode(self, features: Array, feature_mask: Array, *, deterministic: bool = True) -> Array:
    """[batch, inputs, feature_dim] and a [batch, inputs] 1/0 mask -> [batch, inputs, hidden].

    The features are expected standardised per dimension (the trainer does it
    with training statistics): segments' raw S3D and VideoBERT vectors share a
    large common part, and a per-vector LayerNorm would keep it.
    """
    positions = jnp.arange(features.shape[1])[None]
    x = self.input_projection(features) + self.input_positions(positions)
    x = self.dropout(x, deterministic=deterministic)
    mask = nn.make_attention_mask(feature_mask, feature_mask)
    for layer in self.encoder_layers:
      x = layer(x, mask, deterministic)
    return self.encoder_norm(x)

  def decode(self, encoded: Array, feature_mask: Array, tokens: Array, *,
             deterministic: bool = True) -> Array:
    """Decoder states [batch, length, hidden] of `tokens` [batch, length] (causal)."""
    positions = jnp.arange(tokens.shape[1])[None]
    y = self.token_embeddings(tokens) + self.token_positions(positions)
    y = self.dropout(y, deterministic=deterministic)
    # Padding needs no mask of its own: pads come after the caption, which
    # the causal mask already hides from it, and their targets weigh zero.
    self_mask = nn.make_causal_mask(tokens)
    cross_mask = nn.make_attention_mask(jnp.ones_like(tokens), feature_mask)
    for layer in self.decoder_layers:
      y = layer(y, encoded, self_mask, cross_mask, deterministic)
    return self.decoder_norm(y)

  def logits(self, states: Array) -> Array:
    """[..., hidden] decoder states -> [..., vocab] logits (tied to the embedding table)."""
    return self.token_embeddings.attend(states) + self.output_bias

  def __call__(self, features: Array, feature_mask: Array, tokens: Array, *,
               deterministic: bool = True) -> Array:
    """Teacher forcing: [batch, length] input tokens -> [batch, length, vocab] logits."""
    encoded = self.encode(features, feature_mask, deterministic=deterministic)
    return self.logits(self.decode(encoded, feature_mask, tokens, deterministic=deterministic))


def caption_loss(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
  """Mean cross-entropy and accuracy over weighted positions.

  Args:
    logits: [batch, length, vocab].
    targets: [batch, length] next-token ids.
    weights: [batch, length], 1 on caption tokens (and the end token), 0 on padding.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  total = jnp.maximum(weights.sum(), 1.0)
  loss = (nll * weights).sum() / total
  accuracy = ((logits.argmax(-1) == targets) * weights).sum() / total
  return loss, accuracy


def greedy_decode(model: Captioner, params: Any, features: Array, feature_mask: Array,
                  bos_id: int, length: int) -> Array:
  """Greedy captions [batch, length] (the tokens after `bos_id`; cut at the end id later).

  Every step reruns the decoder over the whole buffer (no cache): at 32
  tokens and 2 layers that costs little, and only the current position is
  projected to the vocabulary.
  """
  variables = {'params': params}
  encoded = model.apply(variables, features, feature_mask, method=Captioner.encode)
  batch = features.shape[0]
  bos = jnp.full((batch, 1), bos_id, jnp.int32)

  def step(t, out):
    tokens = jnp.concatenate([bos, out[:, :-1]], axis=1)
    states = model.apply(variables, encoded, feature_mask, tokens, method=Captioner.decode)
    current = jax.lax.dynamic_index_in_dim(states, t, axis=1, keepdims=False)
    logits = model.apply(variables, current, method=Captioner.logits)
    return out.at[:, t].set(logits.argmax(-1).astype(jnp.int32))

  return jax.lax.fori_loop(0, length, step, jnp.zeros((batch, length), jnp.int32))
