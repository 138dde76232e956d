"""Clip features standardised by the training corpus's statistics (CBT's and ClipBERT's
config data.standardize_features).

Why: clip features can share one large common direction. The random-weight S3D
features of the rendered corpus do: two random seconds have a mean cosine of
0.997 (0.004 once standardised), so every projected target of the visual NCE
and every window the cross-modal transformer reads start out nearly the same,
and neither loss moves from chance (CBT's; ClipBERT's frozen-features input
alike). The per-dimension mean and standard deviation of the training rows
are computed once, saved in the workdir (`feature_stats.npz`) and applied by
the trainer and by inference alike.
"""

import dataclasses
import io
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

STATS_FILE = 'feature_stats.npz'


@dataclasses.dataclass(frozen=True)
class Stats:
  mean: np.ndarray  # [D] float32
  std: np.ndarray   # [D] float32, 1 where a dimension is constant

  def apply(self, features: np.ndarray) -> np.ndarray:
    """[T, D] -> [T, D] float32 standardised features."""
    return (np.asarray(features, np.float32) - self.mean) / self.std


def corpus_stats(features: Sequence[np.ndarray]) -> Stats:
  """Per-dimension mean and std over every row of `features` ([T_i, D] each), in float64."""
  rows = np.concatenate([np.asarray(f, np.float64) for f in features])
  std = rows.std(axis=0)
  return Stats(rows.mean(axis=0).astype(np.float32),
               np.where(std > 0, std, 1.0).astype(np.float32))


def save(workdir: str, stats: Stats) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, mean=stats.mean, std=stats.std)
  with tf.io.gfile.GFile(os.path.join(workdir, STATS_FILE), 'wb') as f:
    f.write(buffer.getvalue())


def load(workdir: str) -> Stats | None:
  """The workdir's saved statistics, or None when it has none."""
  path = os.path.join(workdir, STATS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, 'rb') as f:
    data = np.load(io.BytesIO(f.read()))
    return Stats(data['mean'], data['std'])
