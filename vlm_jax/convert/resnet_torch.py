"""PyTorch ResNet state dicts -> vlm_jax ResNet variables.

Two namings of the same network (`vlm_jax.models.resnet`):
- torchvision's `resnet50().state_dict()`: `conv1.weight`, `bn1.*`,
  `layer{1..4}.{block}.conv{1,2,3}.weight`, `...bn{1,2,3}.*`,
  `layer{k}.0.downsample.{0,1}.*`; `fc.*` (the classifier) is ignored.
- detectron2's: `[prefix]stem.conv1.weight`, `[prefix]stem.conv1.norm.*`,
  `[prefix]res{2..5}.{block}.conv{1,2,3}[.norm].*`, `...shortcut[.norm].*`,
  where the prefix is whatever precedes `stem.conv1.weight`
  (`backbone.bottom_up.` in a detector checkpoint, empty in a bare backbone).
  Tensors outside the prefix (a detector's heads, the rest of a ClipBERT
  model) are ignored; every one inside it must find its place.
`detect_naming` tells them apart. Sources: a mapping of tensors or arrays, a
`.pth` file (torch.load) or a detectron2 model-zoo `.pkl` (a pickle of NumPy
arrays); a top-level 'model' or 'state_dict' entry (detectron2 and most
training checkpoints) is unwrapped.

Conv kernels go from PyTorch's [out, in, kh, kw] to Flax's [kh, kw, in, out].
Norms: with `config.frozen_bn` the four tensors (weight, bias, running_mean,
running_var) fold into detectron2's FrozenBatchNorm2d affine, params
{scale, bias}; otherwise weight/bias become params {scale, bias} and the
running statistics batch_stats {mean, var}. `num_batches_tracked` is dropped.
Missing tensors raise KeyError and unplaced ones ValueError, naming them, so a
state dict of another architecture or depth never loads silently.
"""

from typing import Any, Mapping

import numpy as np

from vlm_jax.convert import state_dicts
from vlm_jax.models import resnet

Variables = dict[str, Any]
TORCHVISION = 'torchvision'
DETECTRON2 = 'detectron2'
_D2_STEM = 'stem.conv1.weight'
_NORM_TENSORS = ('weight', 'bias', 'running_mean', 'running_var')


def torchvision_table(config: resnet.ResNetConfig) -> list[tuple[str, tuple[str, ...]]]:
  """(PyTorch prefix of a conv and its norm, Flax path) for torchvision's names."""
  table = [(('conv1', 'bn1'), ('stem_conv1',))]
  for index, (stage, num_blocks) in enumerate(zip(resnet.STAGES, config.stage_sizes)):
    for block in range(num_blocks):
      p = f'layer{index + 1}.{block}.'
      table += [((f'{p}conv{k}', f'{p}bn{k}'), (f'{stage}_{block}', f'conv{k}'))
                for k in (1, 2, 3)]
      if block == 0:
        table.append(((f'{p}downsample.0', f'{p}downsample.1'),
                      (f'{stage}_{block}', 'shortcut')))
  return table


def detectron2_table(config: resnet.ResNetConfig,
                     prefix: str = '') -> list[tuple[str, tuple[str, ...]]]:
  """The same for detectron2's names under `prefix`."""
  table = [((f'{prefix}stem.conv1', f'{prefix}stem.conv1.norm'), ('stem_conv1',))]
  for stage, num_blocks in zip(resnet.STAGES, config.stage_sizes):
    for block in range(num_blocks):
      p = f'{prefix}{stage}.{block}.'
      names = ('conv1', 'conv2', 'conv3') + (('shortcut',) if block == 0 else ())
      table += [((f'{p}{name}', f'{p}{name}.norm'), (f'{stage}_{block}', name))
                for name in names]
  return table


# ------------------------------------------------------------------ reading


def detect_naming(state_dict: Mapping[str, Any]) -> tuple[str, str]:
  """(TORCHVISION, '') or (DETECTRON2, prefix) from a state dict's names."""
  stems = sorted(name[:-len(_D2_STEM)] for name in state_dict if name.endswith(_D2_STEM))
  if len(stems) > 1:
    raise ValueError(f'ResNet state dict has {len(stems)} detectron2 stems, under prefixes '
                     f'{stems}: pass the backbone\'s prefix')
  if stems:
    return DETECTRON2, stems[0]
  if 'conv1.weight' in state_dict and 'layer1.0.conv1.weight' in state_dict:
    return TORCHVISION, ''
  raise ValueError('ResNet state dict names neither torchvision\'s (conv1.weight, '
                   f'layer1.0.conv1.weight) nor detectron2\'s (...{_D2_STEM}); '
                   f'it starts {sorted(state_dict)[:5]}')


# ------------------------------------------------------------------ converting


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def to_flax(source, config: resnet.ResNetConfig = resnet.CLIPBERT,
            naming: str | None = None, prefix: str | None = None) -> Variables:
  """A torchvision or detectron2 ResNet state dict -> variables of `ResNet(config)`.

  Args:
    source: a mapping of tensors / arrays, or a .pth / .pkl path.
    config: the model the variables are for (depth, width, frozen_bn, eps);
      the naming does not choose the layout: a detectron2 MSRA checkpoint
      wants stride_in_1x1=True, torchvision's False.
    naming: TORCHVISION or DETECTRON2; None detects it.
    prefix: detectron2's prefix before `stem.conv1.weight`; None detects it.

  Returns:
    {'params': ...} with frozen_bn, else {'params': ..., 'batch_stats': ...};
    NumPy float32 arrays of the shapes `ResNet(config).init` makes.
  """
  sd = state_dicts.read(source)
  if naming is None or (naming == DETECTRON2 and prefix is None):
    naming, found_prefix = detect_naming(sd)
    prefix = found_prefix if prefix is None else prefix
  if naming == TORCHVISION:
    table, owned = torchvision_table(config), [k for k in sd if not k.startswith('fc.')]
  elif naming == DETECTRON2:
    table, owned = detectron2_table(config, prefix), [k for k in sd if k.startswith(prefix)]
  else:
    raise ValueError(f'naming={naming!r}: {TORCHVISION!r} or {DETECTRON2!r}')

  needed = [name for (conv, norm), _ in table
            for name in [f'{conv}.weight'] + [f'{norm}.{t}' for t in _NORM_TENSORS]]
  missing = [name for name in needed if name not in sd]
  if missing:
    raise KeyError(f'ResNet state dict ({naming}, {config.stage_sizes} blocks) lacks '
                   f'{len(missing)} tensors: {missing[:10]}{" ..." if len(missing) > 10 else ""}')
  unused = sorted(set(owned) - set(needed))
  if unused:
    raise ValueError(f'ResNet state dict ({naming}) tensors with no place in the model: '
                     f'{unused[:10]}{" ..." if len(unused) > 10 else ""} ({len(unused)})')

  params, stats = {}, {}
  for (conv, norm), path in table:
    _set(params, path + ('conv', 'kernel'),
         sd[f'{conv}.weight'].astype(np.float32).transpose(2, 3, 1, 0))
    weight, bias = sd[f'{norm}.weight'], sd[f'{norm}.bias']
    mean, var = sd[f'{norm}.running_mean'], sd[f'{norm}.running_var']
    if config.frozen_bn:
      # FrozenBatchNorm2d's own fold, in float64 so it adds no rounding of its own.
      scale = weight.astype(np.float64) / np.sqrt(var.astype(np.float64) + config.bn_eps)
      _set(params, path + ('norm', 'scale'), scale.astype(np.float32))
      _set(params, path + ('norm', 'bias'), (bias - mean * scale).astype(np.float32))
    else:
      _set(params, path + ('norm', 'scale'), weight.astype(np.float32))
      _set(params, path + ('norm', 'bias'), bias.astype(np.float32))
      _set(stats, path + ('norm', 'mean'), mean.astype(np.float32))
      _set(stats, path + ('norm', 'var'), var.astype(np.float32))
  variables = {'params': params} if config.frozen_bn else {'params': params, 'batch_stats': stats}
  state_dicts.check_shapes(resnet.abstract_variables(resnet.ResNet(config)), variables,
                           f'ResNetConfig(width={config.width})')
  return variables
