"""A Vision Transformer (Dosovitskiy et al. 2021) in Flax linen, as a frame encoder.

Takes channels-last frames [batch, height, width, 3], normalised outside as
the weights expect, and returns the final (LayerNormed) token states:
  'patches' [batch, h, w, hidden], h = height // patch, w = width // patch,
  'class_state' [batch, hidden] when the model has a class token.
No head, no pooling.

The blocks are pre-LN, as timm's and Hugging Face's ViT: x + attn(LN(x)),
then x + MLP(LN(x)) with an exact-GELU MLP; a LayerNorm after the last block.
No dropout: ViTs are fine-tuned without it (timm's and Hugging Face's
defaults are 0).

Position embeddings are learned for a grid of `image_size // patch_size`
positions a side, plus one for the class token, kept aside. Another frame
size resamples the grid embeddings to the new (h, w) grid as PyTorch's
`F.interpolate(mode=config.resample, align_corners=False)` does (Hugging
Face's `interpolate_pos_encoding`; timm's `resample_abs_pos_embed` when the
grid grows: shrinking, timm antialiases and this does not); the class token's
embedding is unchanged.

Parameter tree: `patch_embed` (Conv, kernel [p, p, 3, hidden]),
`pos_embedding` [grid, grid, hidden], `cls_token` and `cls_pos_embedding`
[1, 1, hidden] (with a class token), `block_{i}` {norm1, attention {query,
key, value, out}, norm2, mlp {fc1, fc2}}, `norm`. Logical axes are BERT's
(`embed`, `heads`, `mlp`): attention and MLP split over heads / hidden units.
Converters: `vlm_jax.convert.vit_torch` (timm and Hugging Face names).
"""

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.models import attention
from vlm_jax.models import bert

Array = jax.Array
Dtype = Any
RESAMPLE_METHODS = ('bilinear', 'bicubic')


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Shape and numerics of a ViT; `get_config` fills the sizes from VARIANTS."""
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  # Side of the square image the position embeddings were learned for.
  image_size: int = 224
  class_token: bool = True
  # timm's 1e-6; Hugging Face's ViTConfig says 1e-12 (its config.json's layer_norm_eps).
  layer_norm_eps: float = 1e-6
  # How position embeddings follow a new patch grid: RESAMPLE_METHODS.
  resample: str = 'bicubic'
  # Recompute each block in the backward pass instead of storing its activations.
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    if self.resample not in RESAMPLE_METHODS:
      raise ValueError(f'ViTConfig.resample={self.resample!r}: one of {RESAMPLE_METHODS}')
    if self.hidden_size % self.num_heads:
      raise ValueError(f'ViTConfig.hidden_size={self.hidden_size} does not divide by '
                       f'num_heads={self.num_heads}')

  @property
  def grid_size(self) -> int:
    """Patches a side of the grid the position embeddings are stored for."""
    return self.image_size // self.patch_size


# (patch, hidden, layers, heads, mlp): the paper's B/16, DeiT's S/16, and a
# tiny one for tests and the CPU demo.
VARIANTS = {
    'B/16': dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    'S/16': dict(patch_size=16, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    'tiny': dict(patch_size=16, hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128),
}


def get_config(variant: str, **overrides) -> ViTConfig:
  """ViTConfig of a named variant ('B/16', 'S/16', 'tiny'), fields overridden."""
  if variant not in VARIANTS:
    raise ValueError(f'ViT variant {variant!r}: one of {sorted(VARIANTS)}')
  return ViTConfig(**{**VARIANTS[variant], **overrides})


# ------------------------------------------------------------------ resampling


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
  """Keys' cubic convolution kernel with PyTorch's a = -0.75 (jax.image uses -0.5)."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def interpolation_matrix(old: int, new: int, method: str) -> np.ndarray:
  """[new, old] weights of PyTorch's 1-D resize, align_corners=False, no antialias.

  A source coordinate (i + 0.5) old / new - 0.5 per output position i;
  bilinear clamps it at 0 and blends the two neighbours (the upper one
  clamped to the edge); bicubic blends four, the indices clamped to the edge
  (border replication). jax.image.resize differs on both counts: another
  cubic kernel and renormalised weights at the borders.
  """
  src = (np.arange(new) + 0.5) * (old / new) - 0.5
  weights = np.zeros((new, old))
  rows = np.arange(new)
  if method == 'bilinear':
    src = np.maximum(src, 0.0)
    low = np.minimum(np.floor(src).astype(int), old - 1)
    frac = src - low
    np.add.at(weights, (rows, low), 1 - frac)
    np.add.at(weights, (rows, np.minimum(low + 1, old - 1)), frac)
  elif method == 'bicubic':
    low = np.floor(src).astype(int)
    frac = src - low
    for offset in (-1, 0, 1, 2):
      np.add.at(weights, (rows, np.clip(low + offset, 0, old - 1)), _cubic(frac - offset))
  else:
    raise ValueError(f'resample method {method!r}: one of {RESAMPLE_METHODS}')
  return weights


def resample_position_embedding(grid: Array, new_grid: Sequence[int], method: str) -> Array:
  """[h, w, hidden] position embeddings -> [new_h, new_w, hidden] (same dtype).

  Separable, as PyTorch's 2-D bilinear / bicubic: rows, then columns. The
  weights are constants of the shapes, so under jit this is two small matmuls.
  """
  (h, w), (new_h, new_w) = grid.shape[:2], tuple(new_grid)
  if (h, w) == (new_h, new_w):
    return grid
  rows = jnp.asarray(interpolation_matrix(h, new_h, method), jnp.float32)
  cols = jnp.asarray(interpolation_matrix(w, new_w, method), jnp.float32)
  out = jnp.einsum('ih,hwd->iwd', rows, jnp.asarray(grid, jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
  out = jnp.einsum('jw,iwd->ijd', cols, out, precision=jax.lax.Precision.HIGHEST)
  return out.astype(grid.dtype)


# ------------------------------------------------------------------ blocks


def _init(axes: tuple[str | None, ...], stddev: float = 0.02) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.truncated_normal(stddev), axes)


def _dense(config: ViTConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(
      features, dtype=config.dtype, param_dtype=config.param_dtype, kernel_init=_init(axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
      name=name)


def _layer_norm(config: ViTConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
      name=name)


class SelfAttention(nn.Module):
  """Multi-head self-attention over every token (frames have no padding)."""
  config: ViTConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[batch, tokens, hidden] -> same shape."""
    cfg = self.config
    batch, length, _ = x.shape
    head_dim = cfg.hidden_size // cfg.num_heads

    def heads(name):
      # One [hidden, heads * head_dim] kernel each, as in models/bert.py, so
      # splitting its output axis over the model axis splits whole heads.
      h = _dense(cfg, cfg.hidden_size, ('embed', 'heads'), name)(x)
      h = h.reshape(batch, length, cfg.num_heads, head_dim)
      return nn.with_logical_constraint(h, ('batch', 'length', 'heads', 'kv'))

    no_bias = jnp.zeros((), cfg.dtype)
    out = attention.dot_product_attention(heads('query'), heads('key'), heads('value'), no_bias)
    out = out.reshape(batch, length, cfg.hidden_size)
    return _dense(cfg, cfg.hidden_size, ('heads', 'embed'), 'out')(out)


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2, on [batch, tokens, hidden]."""
  config: ViTConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    h = bert.gelu(_dense(cfg, cfg.mlp_dim, ('embed', 'mlp'), 'fc1')(x))
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    return _dense(cfg, cfg.hidden_size, ('mlp', 'embed'), 'fc2')(h)


class Block(nn.Module):
  """Pre-LN encoder block on [batch, tokens, hidden]."""
  config: ViTConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    y = _layer_norm(cfg, 'norm1')(x)
    y = SelfAttention(cfg, name='attention')(y)
    x = x + y
    y = _layer_norm(cfg, 'norm2')(x)
    y = Mlp(cfg, name='mlp')(y)
    return nn.with_logical_constraint(x + y, ('batch', 'length', 'embed'))


class ViT(nn.Module):
  """Patch embedding, position embeddings, class token, encoder blocks, final LN."""
  config: ViTConfig

  @nn.compact
  def __call__(self, images: Array) -> dict[str, Array]:
    """[batch, height, width, 3] -> {'patches': [batch, h, w, hidden][, 'class_state':
    [batch, hidden]]}; pixels past the last whole patch are ignored, as a
    stride-p conv does."""
    cfg = self.config
    p, hidden = cfg.patch_size, cfg.hidden_size
    x = nn.Conv(
        hidden, (p, p), strides=(p, p), padding='VALID', dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, None, 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
        name='patch_embed')(jnp.asarray(images, cfg.dtype))
    batch, h, w, _ = x.shape
    grid = self.param('pos_embedding', _init((None, None, 'embed')),
                      (cfg.grid_size, cfg.grid_size, hidden), cfg.param_dtype)
    x = x + resample_position_embedding(grid, (h, w), cfg.resample).astype(cfg.dtype)
    x = x.reshape(batch, h * w, hidden)
    if cfg.class_token:
      cls = self.param('cls_token', _init((None, None, 'embed'), 1e-6), (1, 1, hidden),
                       cfg.param_dtype)
      cls_pos = self.param('cls_pos_embedding', _init((None, None, 'embed')), (1, 1, hidden),
                           cfg.param_dtype)
      cls = jnp.broadcast_to((cls + cls_pos).astype(cfg.dtype), (batch, 1, hidden))
      x = jnp.concatenate([cls, x], axis=1)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    block_cls = nn.remat(Block) if cfg.remat else Block
    for i in range(cfg.num_layers):
      x = block_cls(cfg, name=f'block_{i}')(x)
    x = _layer_norm(cfg, 'norm')(x)

    prefix = 1 if cfg.class_token else 0
    outputs = {'patches': x[:, prefix:].reshape(batch, h, w, hidden)}
    if cfg.class_token:
      outputs['class_state'] = x[:, 0]
    return outputs


def abstract_variables(model: ViT, image_shape: Sequence[int] | None = None) -> dict:
  """Shapes and dtypes of {'params'}, without computing anything."""
  cfg = model.config
  if image_shape is None:
    image_shape = (1, cfg.image_size, cfg.image_size, 3)
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(image_shape, jnp.float32))))
