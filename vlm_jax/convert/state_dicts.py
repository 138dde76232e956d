"""PyTorch-side checkpoints as NumPy: what every converter of vlm_jax/convert reads first."""

import os
import pickle
from typing import Any, Mapping

import jax
import numpy as np


def read(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A .pth / .pkl path or a mapping of tensors or arrays -> float arrays by name.

  Unwraps a 'model' or 'state_dict' entry; drops a `module.` prefix
  (DataParallel) and non-float entries (`num_batches_tracked`, detectron2's
  `__author__` strings).
  """
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if path.endswith('.pkl'):
      # detectron2's model zoo pickles NumPy arrays (Python 2 era: latin1).
      with open(path, 'rb') as f:
        source = pickle.load(f, encoding='latin1')
    else:
      try:
        import torch  # pylint: disable=import-outside-toplevel
      except ImportError as e:
        raise ImportError(f'{path} needs torch to read; or pass a dict of NumPy arrays') from e
      source = torch.load(path, map_location='cpu', weights_only=True)
  for key in ('model', 'state_dict'):
    if isinstance(source.get(key), Mapping):
      source = source[key]
      break
  out = {}
  for name, value in source.items():
    if hasattr(value, 'detach'):  # a torch tensor; no torch import needed
      if not value.is_floating_point():
        continue
      value = value.detach().cpu().float().numpy()
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
      continue
    if name.startswith('module.'):
      name = name[len('module.'):]
    out[name] = value
  return out


def check_shapes(expected, variables, model: str) -> None:
  """ValueError naming the leaves (up to 5) whose shape differs from `expected`'s.

  Args:
    expected: the model's abstract variables (jax.eval_shape of its init).
    variables: the converted ones, the same tree.
    model: how the message names the model.
  """
  wrong = []

  def compare(path, want, got):
    if tuple(want.shape) != tuple(np.shape(got)):
      wrong.append(f'{jax.tree_util.keystr(path)}: {np.shape(got)}, model {tuple(want.shape)}')

  jax.tree_util.tree_map_with_path(compare, expected, variables)
  if wrong:
    raise ValueError(f'state dict shapes differ from {model}: {wrong[:5]}')
