"""PyTorch S3D state_dicts -> vlm_jax S3D / S3D-G variables.

Two sources:
- torchvision's `torchvision.models.video.s3d` (e.g. `s3d-d76dad2f.pth`,
  Kinetics-400) -> `vlm_jax.models.s3d.S3D`: `torchvision_to_flax`.
- MIL-NCE's S3D-G port (`s3d_howto100m.pth`) -> `vlm_jax.models.s3d.S3DG`:
  `s3dg_to_flax`; the text tower's tensors (`text_module.*`) are left out.

Conv kernels go from PyTorch's [out, in, t, h, w] to Flax's [t, h, w, in, out],
Linear weights and the 1x1x1 classifier from [out, in(, 1, 1, 1)] to [in, out];
BatchNorm weight/bias/running_mean/running_var become params scale/bias and
batch_stats mean/var (`num_batches_tracked` is dropped). Neither function reads
torch itself: a state_dict of tensors is turned into NumPy first; torch is
imported only to read a .pth path.

The mapping is a table of (PyTorch prefix, Flax path, kind) built from the
architecture, used both ways: `from_flax` writes a state_dict with PyTorch's
names from Flax variables (the inverse, for exporting and for tests).
"""

import os
from typing import Any, Iterator, Mapping

import numpy as np

from vlm_jax.convert import state_dicts
from vlm_jax.models import s3d

Variables = dict[str, Any]

# torchvision's `features` Sequential: index of each inception block.
_TV_INCEPTION_INDEX = {
    'mixed_3b': 5, 'mixed_3c': 6, 'mixed_4b': 8, 'mixed_4c': 9, 'mixed_4d': 10,
    'mixed_4e': 11, 'mixed_4f': 12, 'mixed_5b': 14, 'mixed_5c': 15,
}


def _conv_bn(torch_prefix: str, flax_path: tuple[str, ...], conv='0', bn='1'):
  """A Conv3dNormActivation-like pair: Sequential (conv=0, bn=1) or named."""
  return [(f'{torch_prefix}{conv}', flax_path + ('conv',), 'conv'),
          (f'{torch_prefix}{bn}', flax_path + ('bn',), 'bn')]


def _tv_sep(torch_prefix: str, flax_path: tuple[str, ...]):
  """torchvision's TemporalSeparableConv (a Sequential of two Conv3dNormActivation)."""
  return (_conv_bn(f'{torch_prefix}0.', flax_path + ('spatial',))
          + _conv_bn(f'{torch_prefix}1.', flax_path + ('temporal',)))


def torchvision_table(num_classes: int | None = 400) -> list[tuple[str, tuple[str, ...], str]]:
  """(PyTorch prefix, Flax path, kind) for every layer of torchvision's S3D."""
  table = _tv_sep('features.0.', ('conv_1a',))
  table += _conv_bn('features.2.', ('conv_2b',))
  table += _tv_sep('features.3.', ('conv_2c',))
  for name, index in _TV_INCEPTION_INDEX.items():
    p = f'features.{index}.'
    table += _conv_bn(f'{p}branch0.', (name, 'branch0'))
    for b in ('1', '2'):
      table += _conv_bn(f'{p}branch{b}.0.', (name, f'branch{b}_a'))
      table += _tv_sep(f'{p}branch{b}.1.', (name, f'branch{b}_b'))
    # branch3.0 is the max pool.
    table += _conv_bn(f'{p}branch3.1.', (name, 'branch3'))
  if num_classes:
    table.append(('classifier.1', ('classifier',), 'conv_dense'))
  return table


def _stconv(torch_prefix: str, flax_path: tuple[str, ...], separable: bool):
  """S3D-G's STConv3D: conv1/bn1, and conv2/bn2 when separable."""
  table = []
  for i in range(1, 3 if separable else 2):
    table += [(f'{torch_prefix}.conv{i}', flax_path + (f'conv{i}',), 'conv'),
              (f'{torch_prefix}.bn{i}', flax_path + (f'bn{i}',), 'bn')]
  return table


def s3dg_table(embed_dim: int | None = 512,
               gating: bool = True) -> list[tuple[str, tuple[str, ...], str]]:
  """(PyTorch prefix, Flax path, kind) for every layer of MIL-NCE's S3D-G."""
  table = _stconv('conv1', ('conv1',), False)
  table += _stconv('conv_2b', ('conv_2b',), False)
  table += _stconv('conv_2c', ('conv_2c',), True)
  table.append(('gating.fc', ('gating', 'fc'), 'dense'))
  for name, *_ in s3d.INCEPTION_BLOCKS:
    for branch, separable in (('b0', False), ('b1_a', False), ('b1_b', True),
                              ('b2_a', False), ('b2_b', True), ('b3_b', False)):
      table += _stconv(f'{name}.conv_{branch}', (name, f'conv_{branch}'), separable)
    if gating:
      table += [(f'{name}.gating_b{i}.fc', (name, f'gating_b{i}', 'fc'), 'dense')
                for i in range(4)]
  if embed_dim:
    table.append(('fc', ('fc',), 'dense'))
  return table


# ------------------------------------------------------------------ reading


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A .pth path or a mapping of tensors / arrays -> float32 NumPy arrays by name
  (state_dicts.read: `module.` prefixes and non-float entries dropped)."""
  return {name: value.astype(np.float32) for name, value in state_dicts.read(source).items()}


# ------------------------------------------------------------------ both ways


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _to_flax(sd: dict[str, np.ndarray], table, ignore_prefixes=()) -> Variables:
  params, stats, used = {}, {}, set()

  def take(key):
    if key not in sd:
      raise KeyError(f'S3D state_dict has no tensor {key!r}')
    used.add(key)
    return sd[key]

  for prefix, path, kind in table:
    if kind == 'conv':
      _set(params, path + ('kernel',), take(f'{prefix}.weight').transpose(2, 3, 4, 1, 0))
    elif kind == 'bn':
      _set(params, path + ('scale',), take(f'{prefix}.weight'))
      _set(params, path + ('bias',), take(f'{prefix}.bias'))
      _set(stats, path + ('mean',), take(f'{prefix}.running_mean'))
      _set(stats, path + ('var',), take(f'{prefix}.running_var'))
    elif kind in ('dense', 'conv_dense'):
      w = take(f'{prefix}.weight')
      _set(params, path + ('kernel',), w.reshape(w.shape[:2]).T)
      _set(params, path + ('bias',), take(f'{prefix}.bias'))
    else:
      raise ValueError(kind)
  unused = sorted(k for k in sd if k not in used and not k.startswith(tuple(ignore_prefixes)))
  if unused:
    raise ValueError(f'S3D state_dict tensors with no place in the model: {unused[:10]}'
                     f'{" ..." if len(unused) > 10 else ""} ({len(unused)})')
  return {'params': params, 'batch_stats': stats}


def _from_flax(variables: Mapping, table) -> dict[str, np.ndarray]:
  params, stats = variables['params'], variables['batch_stats']
  sd = {}
  for prefix, path, kind in table:
    if kind == 'conv':
      sd[f'{prefix}.weight'] = np.asarray(_get(params, path + ('kernel',))).transpose(
          4, 3, 0, 1, 2)
    elif kind == 'bn':
      sd[f'{prefix}.weight'] = np.asarray(_get(params, path + ('scale',)))
      sd[f'{prefix}.bias'] = np.asarray(_get(params, path + ('bias',)))
      sd[f'{prefix}.running_mean'] = np.asarray(_get(stats, path + ('mean',)))
      sd[f'{prefix}.running_var'] = np.asarray(_get(stats, path + ('var',)))
    else:
      w = np.asarray(_get(params, path + ('kernel',))).T
      sd[f'{prefix}.weight'] = w.reshape(w.shape + (1, 1, 1)) if kind == 'conv_dense' else w
      sd[f'{prefix}.bias'] = np.asarray(_get(params, path + ('bias',)))
  return sd


def _iter_leaves(tree: Mapping, path=()) -> Iterator[tuple[tuple[str, ...], Any]]:
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _iter_leaves(value, path + (key,))
    else:
      yield path + (key,), value


def torchvision_to_flax(source, config: s3d.S3DConfig = s3d.S3DConfig()) -> Variables:
  """torchvision S3D state_dict (mapping or .pth path) -> {'params', 'batch_stats'}.

  Every tensor must find its place (else ValueError naming the rest), so a
  state_dict of another architecture does not load silently. With
  `config.num_classes=None` the classifier tensors are ignored.
  """
  sd = read_state_dict(source)
  ignore = () if config.num_classes else ('classifier.',)
  if config.num_classes and 'classifier.1.weight' in sd:
    found = sd['classifier.1.weight'].shape[0]
    if found != config.num_classes:
      raise ValueError(f'classifier has {found} classes, config.num_classes='
                       f'{config.num_classes}')
  return _to_flax(sd, torchvision_table(config.num_classes), ignore)


def torchvision_from_flax(variables: Mapping,
                          config: s3d.S3DConfig = s3d.S3DConfig()) -> dict[str, np.ndarray]:
  """The inverse: S3D variables -> a torchvision-named state_dict of NumPy arrays
  (without `num_batches_tracked`)."""
  return _from_flax(variables, torchvision_table(config.num_classes))


def s3dg_to_flax(source, config: s3d.S3DGConfig = s3d.S3DGConfig()) -> Variables:
  """MIL-NCE S3D-G state_dict (`s3d_howto100m.pth` or a mapping) -> variables.

  The text tower (`text_module.*`) is ignored; everything else must be used.
  """
  sd = read_state_dict(source)
  ignore = ('text_module.',) + (() if config.embed_dim else ('fc.',))
  return _to_flax(sd, s3dg_table(config.embed_dim, config.gating), ignore)


def s3dg_from_flax(variables: Mapping,
                   config: s3d.S3DGConfig = s3d.S3DGConfig()) -> dict[str, np.ndarray]:
  """The inverse of `s3dg_to_flax` (no text tower)."""
  return _from_flax(variables, s3dg_table(config.embed_dim, config.gating))


def leaf_paths(variables: Mapping) -> dict[str, tuple[int, ...]]:
  """{'params/conv_1a/spatial/conv/kernel': shape, ...} of a variables tree."""
  return {'/'.join(path): tuple(np.shape(leaf)) for path, leaf in _iter_leaves(variables)}
