"""Finding and writing files: video discovery, training-file globs, atomic writes.

One home for what every stage needs, so that the stages agree: a video that
one stage accepts is accepted by all of them, and no stage ever leaves a
partial file under its final name (a re-run would take it as done).
"""

import contextlib
import glob as glob_lib
import json
import os
import urllib.parse
from typing import Iterator

# Containers PyAV (FFmpeg) decodes; matched case-insensitively.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv',
                    '.ogv', '.wmv', '.3gp', '.ts')


class DataError(RuntimeError):
  """A training file that cannot be read; the message names it."""


def is_video(name: str) -> bool:
  """Whether a file name has a video extension (hidden files are not videos)."""
  base = os.path.basename(name)
  return not base.startswith('.') and base.lower().endswith(VIDEO_EXTENSIONS)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary name next to `path`; renamed to `path` if the block succeeds.

  A crash never leaves a partial file under the final name, which a re-run
  would take as done. Local files only (os.replace).
  """
  tmp = path + '.tmp'
  try:
    yield tmp
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes `text` to the local file `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)


def write_json(path: str, value, indent: int | None = 2) -> None:
  """Writes `value` as JSON to the local file `path` atomically."""
  write_text(path, json.dumps(value, indent=indent, default=str))


def tfds_files(name: str, split: str = 'train', data_dir: str | None = None) -> list[str]:
  """The TFRecord files of a tfds-prepared split in the records schema.

  A dataset prepared by the builders of vlm_jax.datasets (`tfds build`)
  stores the `records.FEATURES` fields under the same names, so its files
  feed `make_dataset` like make-records' shards.

  Args:
    name: tfds name, e.g. 'youcook2_style', 'youcook2_style/demo:1.0.0'.
    split: a split of it ('train', 'validation').
    data_dir: the tfds data_dir; None = tfds's default.

  Raises:
    FileNotFoundError: not prepared there, or no such split.
    ValueError: a dataset with other features than the records schema.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import records  # pylint: disable=import-outside-toplevel

  # Registered builders (import vlm_jax.datasets) and prepared datasets alike.
  builder = tfds.builder(name, data_dir=data_dir or None)
  if not builder.is_prepared():
    raise FileNotFoundError(f'tfds dataset {name!r} is not prepared under {builder.data_dir}')
  stored = set(tfds.core.utils.flatten_nest_dict(builder.info.features.get_serialized_info()))
  if stored != set(records.FEATURES):
    raise ValueError(f'tfds dataset {name!r} has features {sorted(stored)}, not the records '
                     f'schema {sorted(records.FEATURES)}')
  if split not in builder.info.splits:
    raise FileNotFoundError(f'tfds dataset {name!r} has no split {split!r} '
                            f'(it has {sorted(builder.info.splits)})')
  return sorted(os.fspath(p) for p in builder.info.splits[split].filepaths)


def list_files(pattern: str) -> list[str]:
  """Sorted TFRecord files matching a glob (comma-separated globs allowed).

  An item `tfds:NAME[?split=SPLIT&data_dir=DIR]` names a tfds-prepared split
  instead (`tfds_files`; split 'train' and tfds's data_dir by default).
  """
  files = []
  for p in pattern.split(','):
    if p.startswith('tfds:'):
      name, _, query = p[len('tfds:'):].partition('?')
      options = dict(urllib.parse.parse_qsl(query, strict_parsing=bool(query)))
      unknown = set(options) - {'split', 'data_dir'}
      if unknown:
        raise ValueError(f'{p!r}: unknown options {sorted(unknown)} (split, data_dir)')
      files.extend(tfds_files(name, options.get('split', 'train'), options.get('data_dir')))
      continue
    if '://' in p:
      # Imported here: TensorFlow takes ~4 s to import, and most users of this
      # module (atomic writes, video lists) never need it.
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      matched = tf.io.gfile.glob(p)
    else:
      matched = glob_lib.glob(os.path.expanduser(p))
    files.extend(matched)
  if not files:
    raise FileNotFoundError(f'data.train_files={pattern!r} matches no file')
  return sorted(set(files))


def list_videos(source: str) -> list[tuple[str, str]]:
  """(video_id, path) pairs, id = file stem, in a stable order.

  Args:
    source: a folder (searched recursively for files with VIDEO_EXTENSIONS), a
      single video file, or a text file with one video path per line (blank
      lines and lines starting with '#' skipped; relative paths are taken from
      the list file's folder).

  Raises:
    FileNotFoundError: `source` does not exist.
    ValueError: two videos share a file stem (their outputs would collide).
  """
  source = os.fspath(source)
  if os.path.isdir(source):
    paths = []
    for root, _, names in os.walk(source):
      paths += [os.path.join(root, n) for n in names if is_video(n)]
    paths.sort()
  elif os.path.isfile(source):
    if is_video(source):
      paths = [source]
    else:
      base = os.path.dirname(os.path.abspath(source))
      with open(source, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
      paths = [os.path.join(base, line) for line in lines if line and not line.startswith('#')]
  else:
    raise FileNotFoundError(f'{source}: no such file or folder')
  seen: dict[str, str] = {}
  pairs = []
  for path in paths:
    video_id = os.path.splitext(os.path.basename(path))[0]
    if video_id in seen:
      raise ValueError(f'video id {video_id!r} (the file stem) is shared by {seen[video_id]} '
                       f'and {path}; their features would overwrite each other')
    seen[video_id] = path
    pairs.append((video_id, path))
  return pairs


