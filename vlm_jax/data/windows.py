"""Sliding windows over per-second (per-clip) features, and merging their states back.

The evaluation protocol of the systems that read fixed-length windows of
clip features (VideoCLIP's 32-s video tower, CBT's visual transformer): a
long video is cut into windows, each is encoded, and a clip covered by
several windows gets the mean of their states.
"""

from typing import Sequence

import numpy as np


def window_starts(length: int, window: int, stride: int) -> list[int]:
  """First seconds of the windows over `length` seconds, as MMPT's sliding-window aligner.

  Windows start every `stride` seconds and the last is the first that reaches
  the end: 70 s, window 32, stride 16 -> [0, 16, 32, 48]. At least one window.
  """
  starts = []
  for start in range(0, max(length, 1), stride):
    starts.append(start)
    if length - start <= window:
      break
  return starts


def windows(features: np.ndarray, window: int, stride: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
  """[T, D] -> ([n, window, D] zero-padded windows, [n, window] mask).

  The windows start at `window_starts(T, window, stride)`; `stride` defaults
  to `window` (consecutive windows).
  """
  t, dim = features.shape
  starts = window_starts(t, window, stride or window)
  padded = np.zeros((len(starts), window, dim), np.float32)
  mask = np.zeros((len(starts), window), np.int32)
  for i, start in enumerate(starts):
    piece = features[start:start + window]
    padded[i, :len(piece)], mask[i, :len(piece)] = piece, 1
  return padded, mask


def merge_windows(states: np.ndarray, starts: Sequence[int], length: int) -> np.ndarray:
  """[n, window, H] per-window states -> [length, H]: each second's mean over its windows."""
  total = np.zeros((length, states.shape[-1]), np.float64)
  count = np.zeros((length, 1), np.int64)
  for window_states, start in zip(states, starts):
    end = min(length, start + states.shape[1])
    total[start:end] += window_states[:end - start]
    count[start:end] += 1
  return (total / np.maximum(count, 1)).astype(np.float32)
