"""A bottleneck ResNet (ResNet-50 by default) in Flax linen, as a frame encoder.

Takes channels-last frames [batch, height, width, 3], normalised outside as
the weights expect (ClipBERT's detectron2 weights: BGR, 0-255 minus the pixel
mean; torchvision's: RGB in [0, 1], ImageNet mean and std), and returns a dict
of stage maps, no pooling and no head:
  'stem' [batch, H/4, W/4, width], 'res2' [batch, H/4, W/4, 4 width],
  'res3' [batch, H/8, W/8, 8 width], 'res4' [batch, H/16, W/16, 16 width],
  'res5' [batch, H/32, W/32, 32 width] (2048 channels for ResNet-50),
the ones named in `ResNetConfig.outputs` (res5 alone by default). H/4 etc. are
PyTorch's sizes: each stride-2 step maps n to floor((n - 1) / 2) + 1.

Two layouts of the same network (the stage names are detectron2's; torchvision
calls res2 ... res5 layer1 ... layer4):
- detectron2's MSRA ResNet, ClipBERT's backbone (`CLIPBERT`): the stride of a
  stage's first block sits in its first 1x1 conv (`stride_in_1x1`), every batch
  norm is frozen and the stem and res2 do not train (`freeze_at=2`).
- torchvision's resnet50 ("v1.5", `TORCHVISION`): the stride sits in the 3x3
  conv, batch norm is ordinary (batch statistics when `train=True`).

Frozen batch norm (`frozen_bn`) is detectron2's FrozenBatchNorm2d: y = x *
scale + bias with scale = weight / sqrt(running_var + 1e-5) and bias = bias -
running_mean * scale, folded once by the converter (`vlm_jax.convert.
resnet_torch`). The folded pair lives in `params` (so it checkpoints and
shards with the rest of the model) under `stop_gradient`: its gradient is
exactly zero and no batch statistics are ever computed. An optimizer still
applies weight decay to parameters whose gradient is zero, so the trainer
must leave them out: `trainable_mask(params, config)` says which leaves train.

`freeze_at` is detectron2's: 1 freezes the stem, 2 the stem and res2 (and so
on up to 5). The output of each frozen stage goes through `stop_gradient`, so
every parameter before it gets an exactly zero gradient; in a frozen stage the
ordinary batch norm uses its stored statistics even when `train=True`, as
detectron2 turns those into FrozenBatchNorm2d. The mask excludes them too.

Logical axis names of the parameters: conv kernels [kh, kw, in, out]:
('conv_h', 'conv_w', 'conv_in', 'conv_out'); norm scale and bias [out]:
('conv_out',). With no rule for them they are replicated.

Parameter tree (detectron2's module names): `stem_conv1`, `res{2..5}_{block}/
{conv1, conv2, conv3, shortcut}` (shortcut in each stage's first block), each
{'conv': {'kernel'}, 'norm': {'scale', 'bias'}}; ordinary batch norm keeps
its running statistics in `batch_stats` ({'mean', 'var'}) under the same paths.
"""

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

CONV_AXES = ('conv_h', 'conv_w', 'conv_in', 'conv_out')
STAGES = ('res2', 'res3', 'res4', 'res5')
OUTPUT_NAMES = ('stem',) + STAGES


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """A bottleneck ResNet; the defaults are ClipBERT's detectron2 ResNet-50."""
  # Bottleneck blocks per stage, res2 ... res5: [3, 4, 6, 3] is ResNet-50.
  stage_sizes: tuple[int, int, int, int] = (3, 4, 6, 3)
  # Stem channels and res2's bottleneck width; stage i (0-based) has bottleneck
  # width `width * 2**i` and 4x that many output channels.
  width: int = 64
  # detectron2/MSRA: a stage's stride in its first 1x1 conv; torchvision: in the 3x3.
  stride_in_1x1: bool = True
  # detectron2's FrozenBatchNorm2d everywhere (a fixed affine) instead of batch norm.
  frozen_bn: bool = True
  # 0: everything trains; 1: the stem is frozen; 2: stem and res2; ... 5: all.
  freeze_at: int = 2
  # PyTorch's BatchNorm2d / FrozenBatchNorm2d epsilon.
  bn_eps: float = 1e-5
  # PyTorch's default BatchNorm momentum 0.1 is Flax's 0.9 (ordinary BN only).
  bn_momentum: float = 0.9
  # Which maps `__call__` returns, from OUTPUT_NAMES.
  outputs: tuple[str, ...] = ('res5',)
  # Recompute each block in the backward pass instead of storing its activations.
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    unknown = [name for name in self.outputs if name not in OUTPUT_NAMES]
    if unknown or not self.outputs:
      raise ValueError(f'ResNetConfig.outputs={self.outputs!r}: choose from {OUTPUT_NAMES}')
    if not 0 <= self.freeze_at <= 5:
      raise ValueError(f'ResNetConfig.freeze_at={self.freeze_at}: must be in 0 ... 5')


# ClipBERT's backbone (detectron2 R-50, MSRA): the defaults.
CLIPBERT = ResNetConfig()
# torchvision.models.resnet50 without avgpool and fc.
TORCHVISION = ResNetConfig(stride_in_1x1=False, frozen_bn=False, freeze_at=0)

# Sizes by name; combine with a layout: dataclasses.replace(CLIPBERT, **PRESETS['tiny']).
PRESETS = {
    'R50': dict(stage_sizes=(3, 4, 6, 3), width=64),
    # For tests and the CPU demo: one block per stage, 256 res5 channels.
    'tiny': dict(stage_sizes=(1, 1, 1, 1), width=8),
}


def output_channels(config: ResNetConfig, name: str = 'res5') -> int:
  """Channels of a named output map (2048 for ResNet-50's res5)."""
  if name == 'stem':
    return config.width
  return 4 * config.width * 2 ** STAGES.index(name)


def _with_axes(init: Callable, axes: tuple[str | None, ...]) -> Callable:
  return nn.with_logical_partitioning(init, axes)


class FrozenBatchNorm(nn.Module):
  """detectron2's FrozenBatchNorm2d with its affine folded: x * scale + bias.

  `scale` and `bias` [channels] are parameters under stop_gradient (see the
  module docstring); there are no statistics.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., channels] -> same shape."""
    channels = x.shape[-1]
    scale = self.param('scale', _with_axes(nn.initializers.ones_init(), ('conv_out',)),
                       (channels,), self.param_dtype)
    bias = self.param('bias', _with_axes(nn.initializers.zeros_init(), ('conv_out',)),
                      (channels,), self.param_dtype)
    scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    return x * scale.astype(self.dtype) + bias.astype(self.dtype)


class ConvNorm(nn.Module):
  """Conv2d (no bias) + batch norm (frozen or not), no activation; [b, h, w, c]."""
  features: int
  kernel: int
  stride: int = 1
  config: ResNetConfig = CLIPBERT

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    cfg = self.config
    # PyTorch's symmetric padding k // 2: "SAME" would pad (0, 1) for a
    # stride-2 conv on an even side and shift the sampling grid by a pixel.
    pad = self.kernel // 2
    x = nn.Conv(
        self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
        padding=((pad, pad), (pad, pad)), use_bias=False, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=_with_axes(nn.initializers.kaiming_normal(), CONV_AXES),
        name='conv')(x)
    if cfg.frozen_bn:
      return FrozenBatchNorm(cfg.dtype, cfg.param_dtype, name='norm')(x)
    return nn.BatchNorm(
        use_running_average=not train, momentum=cfg.bn_momentum, epsilon=cfg.bn_eps,
        dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        scale_init=_with_axes(nn.initializers.ones_init(), ('conv_out',)),
        bias_init=_with_axes(nn.initializers.zeros_init(), ('conv_out',)),
        name='norm')(x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 (4x `width` out) + shortcut, ReLU after each and the sum.

  The shortcut is a strided 1x1 ConvNorm when the shape changes (each stage's
  first block), the identity otherwise. `stride` goes to conv1 or conv2 as
  `config.stride_in_1x1` says.
  """
  width: int
  stride: int = 1
  config: ResNetConfig = CLIPBERT

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """[b, h, w, c] -> [b, h', w', 4 width], h' = floor((h - 1) / stride) + 1."""
    cfg = self.config
    out_channels = 4 * self.width
    stride_1x1, stride_3x3 = (self.stride, 1) if cfg.stride_in_1x1 else (1, self.stride)
    shortcut = x
    if x.shape[-1] != out_channels or self.stride != 1:
      shortcut = ConvNorm(out_channels, 1, self.stride, cfg, name='shortcut')(x, train)
    y = nn.relu(ConvNorm(self.width, 1, stride_1x1, cfg, name='conv1')(x, train))
    y = nn.relu(ConvNorm(self.width, 3, stride_3x3, cfg, name='conv2')(y, train))
    y = ConvNorm(out_channels, 1, 1, cfg, name='conv3')(y, train)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """The ResNet's stem and res2 ... res5 (see the module docstring)."""
  config: ResNetConfig = CLIPBERT

  @nn.compact
  def __call__(self, images: Array, *, train: bool = False) -> dict[str, Array]:
    """[batch, height, width, 3] -> {name: [batch, h, w, channels]} for config.outputs.

    `train` only matters for ordinary batch norm (batch statistics, updated
    `batch_stats`: apply with mutable=['batch_stats']).
    """
    cfg = self.config
    outputs = {}
    x = jnp.asarray(images, cfg.dtype)
    frozen = cfg.freeze_at >= 1
    x = nn.relu(ConvNorm(cfg.width, 7, 2, cfg, name='stem_conv1')(x, train and not frozen))
    # torchvision's and detectron2's MaxPool2d(3, stride 2, padding 1): Flax
    # pads with -inf, so the padding never wins the max.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    if frozen:
      x = jax.lax.stop_gradient(x)
    outputs['stem'] = x

    block_cls = nn.remat(Bottleneck, static_argnums=(2,)) if cfg.remat else Bottleneck
    for index, (stage, num_blocks) in enumerate(zip(STAGES, cfg.stage_sizes)):
      frozen = cfg.freeze_at >= index + 2
      for block in range(num_blocks):
        stride = 2 if index > 0 and block == 0 else 1
        x = block_cls(cfg.width * 2 ** index, stride, cfg, name=f'{stage}_{block}')(
            x, train and not frozen)
      if frozen:
        x = jax.lax.stop_gradient(x)
      outputs[stage] = x
    return {name: outputs[name] for name in cfg.outputs}


def _frozen_module(path: Sequence[str], config: ResNetConfig) -> bool:
  """Whether the parameter at `path` (under params) belongs to a frozen stage."""
  module = path[0]
  stage = 1 if module.startswith('stem') else STAGES.index(module.split('_')[0]) + 2
  return stage <= config.freeze_at


def trainable_mask(params: Mapping, config: ResNetConfig) -> Any:
  """A pytree like `params` of bools: False for the leaves that never train.

  Those are the frozen stages' (freeze_at) and, with frozen_bn, every norm's
  folded affine. For optax.masked / multi_transform: their gradients are zero
  already, but weight decay would still move them.
  """
  def trainable(path, _):
    names = [entry.key for entry in path]
    if _frozen_module(names, config):
      return False
    return not (config.frozen_bn and 'norm' in names)

  return jax.tree_util.tree_map_with_path(trainable, params)


def abstract_variables(model: ResNet, image_shape: Sequence[int] = (1, 64, 64, 3)) -> dict:
  """Shapes and dtypes of the variables, without computing anything."""
  return nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(image_shape, jnp.float32))))
