"""File operations on a path that may be a URL (gs://bucket/...), for the front-end stages.

A local path goes through os and open: no TensorFlow import, which costs ~4 s
and most local runs never need. A URL goes through tf.io.gfile, as the
trainer's workdirs do, so every filesystem TensorFlow knows (gs://, s3:// with
its plugin, ...) works, and the tests reach a local stand-in of Cloud Storage.
"""

import builtins
import os
from typing import IO, Iterator

import numpy as np


def is_url(path: str) -> bool:
  """Whether `path` names a filesystem other than the local one (scheme://...)."""
  return '://' in os.fspath(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def absolute(path: str) -> str:
  """`path` made absolute; a URL as it is."""
  return path if is_url(path) else os.path.abspath(path)


def open_file(path: str, mode: str = 'r') -> IO:
  """A file object of `path` (text modes read and write UTF-8)."""
  if is_url(path):
    return _gfile().GFile(path, mode)
  return builtins.open(path, mode, **({} if 'b' in mode else {'encoding': 'utf-8'}))


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  """Whether `path` is a regular file (a local FIFO or device is not)."""
  if is_url(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def makedirs(path: str) -> None:
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """Names in the folder `path`, sorted (sub-folders without a trailing '/')."""
  if is_url(path):
    return sorted(n.rstrip('/') for n in _gfile().listdir(path))
  return sorted(os.listdir(path))


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern` (the caller escapes literal parts of local ones)."""
  if is_url(pattern):
    return sorted(_gfile().glob(pattern))
  import glob as glob_lib  # pylint: disable=import-outside-toplevel
  return sorted(glob_lib.glob(pattern))


def list_files(path: str) -> list[str]:
  """Names of the regular files in the folder `path`, sorted (no sub-folders)."""
  if is_url(path):
    return sorted(n for n in _gfile().listdir(path) if not n.endswith('/'))
  return sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))


def glob_escape(path: str) -> str:
  """`path` with glob's special characters escaped, to glob below it."""
  import glob as glob_lib  # pylint: disable=import-outside-toplevel
  if not is_url(path):
    return glob_lib.escape(path)
  # Cloud Storage's matcher takes the same [*?[] specials; keep the scheme's '://'.
  scheme, rest = path.split('://', 1)
  return f'{scheme}://{glob_lib.escape(rest)}'


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, sub-folder names, file names) top-down, as os.walk; prune by editing the list."""
  if not is_url(top):
    yield from os.walk(top)
    return
  # gfile.walk lists as it goes, so pruning `dirs` in place works as os.walk's.
  for root, dirs, names in _gfile().walk(top):
    stripped = [d.rstrip('/') for d in dirs]
    dirs[:] = stripped
    yield root.rstrip('/'), dirs, names


def size_and_mtime(path: str) -> tuple[int, int]:
  """(bytes, modification time in ns)."""
  if is_url(path):
    st = _gfile().stat(path)
    return int(st.length), int(st.mtime_nsec)
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


def getsize(path: str) -> int:
  return size_and_mtime(path)[0] if is_url(path) else os.path.getsize(path)


def remove(path: str) -> None:
  if is_url(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def replace(source: str, target: str) -> None:
  """Renames `source` to `target`, replacing it (on Cloud Storage: a copy, then a delete)."""
  if is_url(source) or is_url(target):
    _gfile().rename(source, target, overwrite=True)
  else:
    os.replace(source, target)


def rmtree(path: str) -> None:
  """Removes the folder `path` and what it holds, if it exists."""
  if is_url(path):
    if _gfile().exists(path):
      _gfile().rmtree(path)
  else:
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(path, ignore_errors=True)


def load_npy(path: str, mmap: bool = False) -> np.ndarray:
  """The array in a .npy file; `mmap` maps a local file instead of reading it (a URL is read)."""
  if not is_url(path):
    return np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False)
  with open_file(path, 'rb') as f:
    return np.load(f, allow_pickle=False)


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
  """(shape, dtype, byte offset of the data) of a C-ordered .npy file, from its header alone.

  Raises:
    ValueError: not a .npy file, a Fortran-ordered or object array, or fewer
      bytes than the header promises (a truncated file).
  """
  with open_file(path, 'rb') as f:
    major, _ = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    offset = f.tell()
  if fortran or dtype.hasobject:
    raise ValueError(f'{path}: a Fortran-ordered or object array')
  expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  size = getsize(path)  # once: a stat is a round trip on Cloud Storage
  if size < expected:
    raise ValueError(f'{path}: truncated ({size} of {expected} bytes)')
  return tuple(shape), dtype, offset


def npy_shape(path: str) -> tuple[int, ...]:
  """The shape of the array in a .npy file, from its header alone."""
  return npy_header(path)[0]


def read_npy_rows(path: str, rows: np.ndarray) -> np.ndarray:
  """Rows `rows` (ascending) of a C-ordered .npy array, reading only their bytes.

  A local file is memory-mapped; a URL is read run by run of consecutive rows,
  so a sparse sample of a large file fetches a few kilobytes, not the file.
  """
  if not is_url(path):
    return np.asarray(np.load(path, mmap_mode='r', allow_pickle=False)[rows])
  shape, dtype, offset = npy_header(path)
  row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
  rows = np.asarray(rows, np.int64)
  out = np.empty((len(rows), *shape[1:]), dtype)
  # Runs of consecutive rows: [starts[i], ends[i]) in `rows`.
  breaks = np.flatnonzero(np.diff(rows) != 1) + 1
  starts, ends = np.r_[0, breaks], np.r_[breaks, len(rows)]
  with open_file(path, 'rb') as f:
    for lo, hi in zip(starts, ends):
      f.seek(offset + int(rows[lo]) * row_bytes)
      data = f.read((hi - lo) * row_bytes)
      out[lo:hi] = np.frombuffer(data, dtype).reshape(hi - lo, *shape[1:])
  return out
