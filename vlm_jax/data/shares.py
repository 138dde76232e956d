"""Each process's share of a front-end job, balanced by size.

A stage run on several hosts at once (`vlm-jax extract-features --multihost`
or `--process_index/--process_count`) splits its list with no coordination:
every process lists the same items in the same order and computes the same
assignment, so the shares are disjoint and together are the whole list.
"""

import heapq
from typing import Sequence

from vlm_jax.data import video as video_lib


def balanced_shares(sizes: Sequence[float], count: int) -> list[list[int]]:
  """Indices into `sizes` per process: `count` lists, each ascending.

  The largest item first (ties: the lower index) goes to the process with
  the least total so far (ties: fewer items, then the lower process index):
  the greedy longest-processing-time rule, whose busiest process is within
  4/3 of the best possible. Equal sizes deal out in turn.
  """
  if count < 1:
    raise ValueError(f'process count must be >= 1, got {count}')
  heap = [(0.0, 0, p) for p in range(count)]
  shares: list[list[int]] = [[] for _ in range(count)]
  for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
    total, items, p = heapq.heappop(heap)
    shares[p].append(i)
    heapq.heappush(heap, (total + float(sizes[i]), items + 1, p))
  return [sorted(s) for s in shares]


def video_seconds(paths: Sequence[str]) -> list[float]:
  """Each video's container duration (one header read, no decoding).

  A video whose header has no duration counts as the mean of the others (1 s
  when none has one); one that cannot be opened counts 0 s: its decoding
  fails at once, and the process that holds it reports it.
  """
  seconds: list[float | None] = []
  for path in paths:
    try:
      seconds.append(video_lib.probe(path)['duration'])
    except video_lib.VideoDecodeError:
      seconds.append(0.0)
  known = [s for s in seconds if s is not None]
  typical = sum(known) / len(known) if known else 1.0
  return [typical if s is None else float(s) for s in seconds]


def check(process_index: int, process_count: int) -> None:
  """ValueError unless 0 <= process_index < process_count."""
  if process_count < 1:
    raise ValueError(f'--process_count: must be >= 1, got {process_count}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'--process_index: must be in [0, {process_count}), got {process_index}')
