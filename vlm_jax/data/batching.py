"""Fixed-shape chunks of host arrays for jitted functions.

A jitted function compiles once per input shape, so every caller that maps one
over N rows feeds it chunks of exactly `batch_size` rows, the last one padded,
and keeps only the real rows of what comes back.
"""

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tqdm


def padded_chunks(arrays: Sequence[np.ndarray],
                  batch_size: int) -> Iterator[tuple[list[np.ndarray], int]]:
  """Yields ([a[start:start + batch_size] for a in arrays], real rows), each [batch_size, ...].

  The last chunk is padded by repeating its last row: a copy of a real input
  keeps every padded row valid (no empty mask to divide by, no all-masked
  attention row), and the rows of a batch do not change one another's outputs.
  """
  n = len(arrays[0])
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    real = len(chunk[0])
    if real < batch_size:
      chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, axis=0)]) for c in chunk]
    yield chunk, real


def map_padded(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int,
               desc: str | None = None) -> Any:
  """fn over fixed-size chunks of `arrays`, the real rows of its outputs concatenated.

  Args:
    fn: takes one [batch_size, ...] array per entry of `arrays`; returns an
      array [batch_size, ...] or a tuple of them.
    arrays: aligned host arrays, each [n, ...] (n >= 1).
    batch_size: rows per call.
    desc: a progress bar with this label (none when None).

  Returns:
    What fn returns, [n, ...] (a tuple when fn returns one), as NumPy arrays.
  """
  outputs = []
  num_chunks = -(-len(arrays[0]) // batch_size)
  for chunk, real in tqdm.tqdm(padded_chunks(arrays, batch_size), total=num_chunks, desc=desc,
                               unit='batch', disable=desc is None):
    out = fn(*chunk)
    parts = out if isinstance(out, tuple) else (out,)
    outputs.append(tuple(np.asarray(p)[:real] for p in parts))
  joined = tuple(np.concatenate(column) for column in zip(*outputs))
  return joined if isinstance(out, tuple) else joined[0]
