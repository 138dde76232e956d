"""95% confidence intervals of per-item scores: the percentile bootstrap over items.

A headline of a few hundred held-out items moves by several points from seed
to seed and machine to machine; every number the demos report comes with the
interval the items allow (scipy.stats.bootstrap, resampling the items).
"""

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
RESAMPLES = 2000


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
  """The 95% percentile-bootstrap interval of the mean of `values` [N] (items resampled)."""
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or len(values) < 2:
    raise ValueError(f'need [N >= 2] per-item values, got shape {values.shape}')
  result = scipy.stats.bootstrap((values,), np.mean, confidence_level=CONFIDENCE,
                                 n_resamples=RESAMPLES, method='percentile',
                                 rng=np.random.default_rng(seed))
  interval = result.confidence_interval
  return float(interval.low), float(interval.high)


def with_interval(values: np.ndarray, seed: int = 0) -> dict[str, float | list[float]]:
  """{'mean': mean of `values` [N], 'ci95': [low, high]}."""
  low, high = bootstrap_interval(values, seed)
  return {'mean': float(np.mean(values)), 'ci95': [low, high]}


def describe(scores: dict, key: str) -> str:
  """'44.4% [38.8, 50.4]' from {key: 0.444, key + '_ci95': [0.388, 0.504]}; no interval: '44.4%'."""
  text = f'{100 * scores[key]:.1f}%'
  if scores.get(f'{key}_ci95'):
    low, high = scores[f'{key}_ci95']
    text += f' [{100 * low:.1f}, {100 * high:.1f}]'
  return text
