"""S3D video encoders in Flax linen: torchvision's S3D and MIL-NCE's S3D-G.

Both take channels-last clips [batch, time, height, width, 3] (the caller
normalises the pixels as the original weights expect) and return a dict of
per-clip outputs.

- `S3D`: the architecture of `torchvision.models.video.s3d` (Kinetics-400).
  `features` [batch, 1024] is torchvision's pooling of the mixed_5c map:
  AvgPool3d(kernel (2, 7, 7), stride 1, no padding) and then the mean over the
  remaining (time, height, width) positions; `logits` [batch, 400] is the
  classifier (dropout, 1x1x1 conv) over the avg-pooled map, then the same mean,
  as torchvision's forward does. Because of that (2, 7, 7) window the smallest
  clip it accepts is 13 x 209 x 209 (time x height x width); 16 x 224 x 224 is
  the usual one.
- `S3DG`: the gated S3D of MIL-NCE (Miech et al. 2020; the PyTorch port
  `s3dg.py` of `s3d_howto100m.pth`): space-to-depth stem, self-gating after
  conv_2c and after every inception branch, TensorFlow-"SAME" max pools.
  `features` [batch, 1024] is the mean of the mixed_5c map over all positions,
  `video_embedding` [batch, 512] the final linear layer. Clip sides must be
  even (space-to-depth); the usual input is 32 x 224 x 224 in [0, 1].

BatchNorm runs on stored statistics (`train=False`, the default) with the
originals' epsilons: 1e-3 for torchvision's S3D, PyTorch's default 1e-5 for
S3D-G (its port builds `nn.BatchNorm3d(c)`).

Logical axis names of the parameters (mapped to mesh axes by
`logical_axis_rules`; names without a rule are replicated):
  conv kernels [t, h, w, in, out]: ('conv_t', 'conv_h', 'conv_w', 'conv_in',
    'conv_out'); BatchNorm scale and bias [out]: ('conv_out',);
  S3D classifier [1024, classes]: ('conv_out', 'classes'), bias ('classes',);
  S3D-G gating [c, c]: ('conv_in', 'conv_out'); S3D-G `fc` [1024, 512]:
    ('conv_out', 'embed').
The parameter trees, and which PyTorch tensor each leaf comes from, are in
`vlm_jax.convert.s3d_torch`.
"""

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

CONV_AXES = ('conv_t', 'conv_h', 'conv_w', 'conv_in', 'conv_out')

# Inception blocks: (name, b0_out, b1_mid, b1_out, b2_mid, b2_out, b3_out);
# the same widths in torchvision's S3D and in S3D-G. Outputs concatenate to
# b0_out + b1_out + b2_out + b3_out channels (1024 for mixed_5c).
INCEPTION_BLOCKS = (
    ('mixed_3b', 64, 96, 128, 16, 32, 32),
    ('mixed_3c', 128, 128, 192, 32, 96, 64),
    ('mixed_4b', 192, 96, 208, 16, 48, 64),
    ('mixed_4c', 160, 112, 224, 24, 64, 64),
    ('mixed_4d', 128, 128, 256, 24, 64, 64),
    ('mixed_4e', 112, 144, 288, 32, 64, 64),
    ('mixed_4f', 256, 160, 320, 32, 128, 128),
    ('mixed_5b', 256, 160, 320, 32, 128, 128),
    ('mixed_5c', 384, 192, 384, 48, 128, 128),
)
FEATURE_DIM = 1024


def _with_axes(init: Callable, axes: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(init, axes)


# ------------------------------------------------------------------ pooling


def max_pool(x: Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0), (0, 0)),
             ceil_mode: bool = False) -> Array:
  """PyTorch's MaxPool3d on channels-last [batch, t, h, w, c].

  PyTorch pads with -inf (padding never wins the max) and with `ceil_mode`
  adds a last, partial window per axis unless it would start beyond the input
  plus the left padding. Both become extra -inf padding on the right here, so
  the output size is PyTorch's exactly (which `nn.max_pool`'s string paddings
  do not give in general).

  Args:
    x: [batch, t, h, w, c].
    window: (kt, kh, kw).
    strides: (st, sh, sw).
    padding: (lo, hi) per spatio-temporal axis, as PyTorch's (symmetric)
      `padding` or any asymmetric pair.
    ceil_mode: PyTorch's `ceil_mode`.

  Returns:
    [batch, t', h', w', c].
  """
  pads = [(0, 0)]
  for size, k, s, (lo, hi) in zip(x.shape[1:4], window, strides, padding):
    span = size + lo + hi - k
    if span < 0:
      raise ValueError(f'max_pool: window {tuple(window)} larger than the padded input '
                       f'{x.shape[1:4]}')
    out = -(-span // s) + 1 if ceil_mode else span // s + 1
    if ceil_mode and (out - 1) * s >= size + lo:
      out -= 1
    pads.append((lo, max(hi, (out - 1) * s + k - size - lo)))
  pads.append((0, 0))
  return jax.lax.reduce_window(
      x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, *window, 1), (1, *strides, 1),
      pads)


def tf_same_max_pool(x: Array, window: Sequence[int], strides: Sequence[int]) -> Array:
  """S3D-G's `MaxPool3dTFPadding(padding='SAME')`.

  Zero padding of max(k - s, 0) split low-first (floor on the left), then a
  ceil-mode max pool. The zeros are real values here (not -inf), as in the
  PyTorch port; its inputs are ReLU / gated outputs, so they are >= 0 anyway.
  """
  pads = [(0, 0)]
  for k, s in zip(window, strides):
    along = max(k - s, 0)
    pads.append((along // 2, along - along // 2))
  pads.append((0, 0))
  return max_pool(jnp.pad(x, pads), window, strides, ceil_mode=True)


# ------------------------------------------------------------------ blocks


class ConvBN(nn.Module):
  """Conv3d (no bias) + BatchNorm + ReLU, on [batch, t, h, w, c]."""
  features: int
  kernel: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  padding: tuple[int, int, int] = (0, 0, 0)
  bn_eps: float = 1e-3
  bn_momentum: float = 0.999
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = nn.Conv(
        self.features, self.kernel, strides=self.strides,
        padding=[(p, p) for p in self.padding], use_bias=False, dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=_with_axes(nn.initializers.kaiming_normal(), CONV_AXES),
        name='conv')(x)
    x = nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps,
        dtype=self.dtype, param_dtype=self.param_dtype,
        scale_init=_with_axes(nn.initializers.ones_init(), ('conv_out',)),
        bias_init=_with_axes(nn.initializers.zeros_init(), ('conv_out',)),
        name='bn')(x)
    return nn.relu(x)


class SepConvBN(nn.Module):
  """Separable k x k x k conv: (1, k, k) ConvBN then (k, 1, 1) ConvBN.

  torchvision's `TemporalSeparableConv`; `stride` and `padding` apply to the
  spatial axes in the first conv and to time in the second.
  """
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  bn_eps: float = 1e-3
  bn_momentum: float = 0.999
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    k, s, p = self.kernel, self.stride, self.padding
    common = dict(bn_eps=self.bn_eps, bn_momentum=self.bn_momentum, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    x = ConvBN(self.features, (1, k, k), (1, s, s), (0, p, p), name='spatial',
               **common)(x, train)
    return ConvBN(self.features, (k, 1, 1), (s, 1, 1), (p, 0, 0), name='temporal',
                  **common)(x, train)


class SelfGating(nn.Module):
  """S3D-G feature gating: x * sigmoid(Dense(mean of x over t, h, w))."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    weights = nn.Dense(
        c, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=_with_axes(nn.initializers.lecun_normal(), ('conv_in', 'conv_out')),
        bias_init=_with_axes(nn.initializers.zeros_init(), ('conv_out',)),
        name='fc')(jnp.mean(x, axis=(1, 2, 3)))
    return x * nn.sigmoid(weights)[:, None, None, None, :]


class InceptionBlock(nn.Module):
  """Separable inception block; output channels b0 + b1 + b2 + b3, same t, h, w.

  Branches: 1x1x1; 1x1x1 then separable 3x3x3; 1x1x1 then separable 3x3x3;
  3x3x3 max pool (stride 1, -inf padding 1) then 1x1x1 (torchvision's
  `SepInceptionBlock3D`).
  """
  b0_out: int
  b1_mid: int
  b1_out: int
  b2_mid: int
  b2_out: int
  b3_out: int
  bn_eps: float = 1e-3
  bn_momentum: float = 0.999
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    common = dict(bn_eps=self.bn_eps, bn_momentum=self.bn_momentum, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    one = (1, 1, 1)
    b0 = ConvBN(self.b0_out, one, name='branch0', **common)(x, train)
    b1 = ConvBN(self.b1_mid, one, name='branch1_a', **common)(x, train)
    b1 = SepConvBN(self.b1_out, 3, padding=1, name='branch1_b', **common)(b1, train)
    b2 = ConvBN(self.b2_mid, one, name='branch2_a', **common)(x, train)
    b2 = SepConvBN(self.b2_out, 3, padding=1, name='branch2_b', **common)(b2, train)
    b3 = max_pool(x, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3)
    b3 = ConvBN(self.b3_out, one, name='branch3', **common)(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


# ------------------------------------------------------------------ torchvision S3D


@dataclasses.dataclass(frozen=True)
class S3DConfig:
  """torchvision's S3D. `num_classes=None` drops the classifier."""
  num_classes: int | None = 400
  dropout_rate: float = 0.2
  bn_eps: float = 1e-3
  # torchvision's BatchNorm momentum 0.001 is Flax's 1 - 0.001.
  bn_momentum: float = 0.999
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # torchvision's fixed (2, 7, 7) average pool needs 224-px crops; 'global'
  # averages the whole mixed_5c map instead, so smaller (cheaper) clips work.
  pool: str = 'window'


AVG_POOL_WINDOW = (2, 7, 7)


class S3D(nn.Module):
  """torchvision.models.video.s3d in Flax.

  Parameter tree: `conv_1a`, `conv_2c` ({spatial, temporal} x {conv, bn}),
  `conv_2b` ({conv, bn}), `mixed_3b` ... `mixed_5c` (InceptionBlock),
  `classifier` (Dense 1024 -> num_classes).
  """
  config: S3DConfig = S3DConfig()

  @nn.compact
  def __call__(self, video: Array, *, train: bool = False) -> dict[str, Array]:
    """[batch, time, height, width, 3] -> {'features': [batch, 1024],
    'logits': [batch, num_classes] (when num_classes)}."""
    cfg = self.config
    common = dict(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum, dtype=cfg.dtype,
                  param_dtype=cfg.param_dtype)
    x = jnp.asarray(video, cfg.dtype)
    x = SepConvBN(64, 7, stride=2, padding=3, name='conv_1a', **common)(x, train)
    x = max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))
    x = ConvBN(64, (1, 1, 1), name='conv_2b', **common)(x, train)
    x = SepConvBN(192, 3, stride=1, padding=1, name='conv_2c', **common)(x, train)
    x = max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))
    for name, *widths in INCEPTION_BLOCKS:
      if name == 'mixed_4b':
        x = max_pool(x, (3, 3, 3), (2, 2, 2), ((1, 1),) * 3)
      elif name == 'mixed_5b':
        x = max_pool(x, (2, 2, 2), (2, 2, 2))
      x = InceptionBlock(*widths, name=name, **common)(x, train)

    if cfg.pool == 'global':
      pooled = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    elif any(s < w for s, w in zip(x.shape[1:4], AVG_POOL_WINDOW)):
      raise ValueError(
          f'S3D: mixed_5c map {x.shape[1:4]} (t, h, w) is smaller than the avgpool '
          f'window {AVG_POOL_WINDOW}; the input {video.shape[1:4]} needs at least '
          "13 x 209 x 209 frames x pixels (or S3DConfig(pool='global'))")
    else:
      pooled = nn.avg_pool(x, AVG_POOL_WINDOW, strides=(1, 1, 1), padding='VALID')
    outputs = {'features': jnp.mean(pooled, axis=(1, 2, 3))}
    if cfg.num_classes:
      # torchvision applies dropout + the 1x1x1 conv per avg-pooled position
      # and averages the logits afterwards; same order here, so training-mode
      # dropout matches too.
      h = nn.Dropout(cfg.dropout_rate)(pooled, deterministic=not train)
      logits = nn.Dense(
          cfg.num_classes, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
          kernel_init=_with_axes(nn.initializers.lecun_normal(), ('conv_out', 'classes')),
          bias_init=_with_axes(nn.initializers.zeros_init(), ('classes',)),
          name='classifier')(h)
      outputs['logits'] = jnp.mean(logits, axis=(1, 2, 3))
    return outputs


def s3d_output_shape(time: int, height: int, width: int) -> tuple[int, int, int]:
  """The (t, h, w) of S3D's mixed_5c map for a clip of the given size."""
  def conv(n, k, s, p):
    return (n + 2 * p - k) // s + 1
  t, h, w = conv(time, 7, 2, 3), conv(height, 7, 2, 3), conv(width, 7, 2, 3)
  h, w = conv(h, 3, 2, 1), conv(w, 3, 2, 1)
  h, w = conv(h, 3, 2, 1), conv(w, 3, 2, 1)
  t, h, w = (conv(n, 3, 2, 1) for n in (t, h, w))
  return tuple(conv(n, 2, 2, 0) for n in (t, h, w))


# ------------------------------------------------------------------ MIL-NCE S3D-G


@dataclasses.dataclass(frozen=True)
class S3DGConfig:
  """MIL-NCE's S3D-G (the video tower of `s3d_howto100m.pth`)."""
  embed_dim: int | None = 512
  gating: bool = True
  space_to_depth: bool = True
  bn_eps: float = 1e-5
  # PyTorch's default BatchNorm momentum 0.1 is Flax's 0.9.
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32


def space_to_depth(x: Array) -> Array:
  """[b, t, h, w, c] -> [b, t/2, h/2, w/2, 8c], channel = ((dt*2 + dh)*2 + dw)*c + ci.

  The channel order of the PyTorch port's `_space_to_depth`, so its conv1
  kernel applies unchanged.
  """
  b, t, h, w, c = x.shape
  if t % 2 or h % 2 or w % 2:
    raise ValueError(f'S3D-G space-to-depth needs even time, height, width; got {(t, h, w)}')
  x = x.reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, t // 2, h // 2, w // 2, 8 * c)


class STConv(nn.Module):
  """S3D-G's `STConv3D`: ConvBN (`conv1`/`bn1`), and when separable a second,
  temporal one (`conv2`/`bn2`). Param tree {conv1, bn1[, conv2, bn2]} as the
  PyTorch names."""
  features: int
  kernel: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  padding: tuple[int, int, int] = (0, 0, 0)
  separable: bool = False
  bn_eps: float = 1e-5
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = self.kernel, self.strides, self.padding
    if self.separable:
      convs = [((1, kh, kw), (1, sh, sw), (0, ph, pw)), ((kt, 1, 1), (st, 1, 1), (pt, 0, 0))]
    else:
      convs = [(self.kernel, self.strides, self.padding)]
    for i, (kernel, strides, padding) in enumerate(convs, start=1):
      x = nn.Conv(
          self.features, kernel, strides=strides, padding=[(p, p) for p in padding],
          use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=_with_axes(nn.initializers.kaiming_normal(), CONV_AXES),
          name=f'conv{i}')(x)
      x = nn.BatchNorm(
          use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps,
          dtype=self.dtype, param_dtype=self.param_dtype,
          scale_init=_with_axes(nn.initializers.ones_init(), ('conv_out',)),
          bias_init=_with_axes(nn.initializers.zeros_init(), ('conv_out',)),
          name=f'bn{i}')(x)
      x = nn.relu(x)
    return x


class GatedInceptionBlock(nn.Module):
  """S3D-G's `InceptionBlock`; param names as the PyTorch port's."""
  b0_out: int
  b1_mid: int
  b1_out: int
  b2_mid: int
  b2_out: int
  b3_out: int
  gating: bool = True
  bn_eps: float = 1e-5
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    common = dict(bn_eps=self.bn_eps, bn_momentum=self.bn_momentum, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    one, three = (1, 1, 1), (3, 3, 3)
    b0 = STConv(self.b0_out, one, name='conv_b0', **common)(x, train)
    b1 = STConv(self.b1_mid, one, name='conv_b1_a', **common)(x, train)
    b1 = STConv(self.b1_out, three, padding=(1, 1, 1), separable=True, name='conv_b1_b',
                **common)(b1, train)
    b2 = STConv(self.b2_mid, one, name='conv_b2_a', **common)(x, train)
    b2 = STConv(self.b2_out, three, padding=(1, 1, 1), separable=True, name='conv_b2_b',
                **common)(b2, train)
    b3 = max_pool(x, three, one, ((1, 1),) * 3)
    b3 = STConv(self.b3_out, one, name='conv_b3_b', **common)(b3, train)
    branches = [b0, b1, b2, b3]
    if self.gating:
      branches = [SelfGating(self.dtype, self.param_dtype, name=f'gating_b{i}')(b)
                  for i, b in enumerate(branches)]
    return jnp.concatenate(branches, axis=-1)


class S3DG(nn.Module):
  """MIL-NCE's S3D-G video tower.

  Param tree mirrors the PyTorch port: `conv1`, `conv_2b`, `conv_2c`, `gating`,
  `mixed_3b` ... `mixed_5c`, `fc`.
  """
  config: S3DGConfig = S3DGConfig()

  @nn.compact
  def __call__(self, video: Array, *, train: bool = False) -> dict[str, Array]:
    """[batch, time, height, width, 3] -> {'features': [batch, 1024],
    'video_embedding': [batch, embed_dim] (when embed_dim)}."""
    cfg = self.config
    common = dict(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum, dtype=cfg.dtype,
                  param_dtype=cfg.param_dtype)
    x = jnp.asarray(video, cfg.dtype)
    if cfg.space_to_depth:
      x = space_to_depth(x)
      x = STConv(64, (2, 4, 4), padding=(1, 2, 2), name='conv1', **common)(x, train)
      # The port's stand-in for TF "SAME" padding: drop the first position per axis.
      x = x[:, 1:, 1:, 1:]
    else:
      x = STConv(64, (3, 7, 7), strides=(2, 2, 2), padding=(1, 3, 3), name='conv1',
                 **common)(x, train)
    x = tf_same_max_pool(x, (1, 3, 3), (1, 2, 2))
    x = STConv(64, (1, 1, 1), name='conv_2b', **common)(x, train)
    x = STConv(192, (3, 3, 3), padding=(1, 1, 1), separable=True, name='conv_2c',
               **common)(x, train)
    # The port gates here whatever `gating` says (its module replaces the flag).
    x = SelfGating(cfg.dtype, cfg.param_dtype, name='gating')(x)
    x = tf_same_max_pool(x, (1, 3, 3), (1, 2, 2))
    for name, *widths in INCEPTION_BLOCKS:
      if name == 'mixed_4b':
        x = tf_same_max_pool(x, (3, 3, 3), (2, 2, 2))
      elif name == 'mixed_5b':
        x = tf_same_max_pool(x, (2, 2, 2), (2, 2, 2))
      x = GatedInceptionBlock(*widths, gating=cfg.gating, name=name, **common)(x, train)
    features = jnp.mean(x, axis=(1, 2, 3))
    outputs = {'features': features}
    if cfg.embed_dim:
      outputs['video_embedding'] = nn.Dense(
          cfg.embed_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
          kernel_init=_with_axes(nn.initializers.lecun_normal(), ('conv_out', 'embed')),
          bias_init=_with_axes(nn.initializers.zeros_init(), ('embed',)),
          name='fc')(features)
    return outputs


def init_variables(model: nn.Module, video_shape: Sequence[int], seed: int = 0) -> dict:
  """Random {'params', 'batch_stats'} (logical-axis boxes removed) for a clip shape."""
  # Jitted: op-by-op, initialising (which runs the forward) takes ~50x longer on CPU.
  init = jax.jit(lambda key: model.init(key, jnp.zeros(video_shape, jnp.float32)))
  return nn.unbox(init(jax.random.key(seed)))


def abstract_variables(model: nn.Module, video_shape: Sequence[int]) -> dict:
  """Shapes and dtypes of {'params', 'batch_stats'}, without computing anything."""
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(video_shape, jnp.float32))))

