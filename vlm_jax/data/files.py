"""Finding and writing files: video discovery, training-file globs, atomic writes.

One home for what every stage needs, so that the stages agree: a video that
one stage accepts is accepted by all of them, and no stage ever leaves a
partial file under its final name (a re-run would take it as done).
"""

import concurrent.futures
import contextlib
import dataclasses
import glob as glob_lib
import json
import os
import urllib.parse
from typing import Iterator

import numpy as np

from vlm_jax.data import storage
from vlm_jax.data import video as video_lib

# Names of video files, matched case-insensitively. `find_videos` probes
# folders instead and uses these only to call an unreadable file a broken video.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv',
                    '.ogv', '.wmv', '.3gp', '.ts', '.m2ts', '.mts', '.vob', '.dv', '.mxf',
                    '.asf', '.f4v')


class DataError(RuntimeError):
  """A training file that cannot be read; the message names it."""


# A features folder (extract-features' output) holds, per video, `<id>.npy` [T, D]
# and the clips' [start, end] seconds in `<id>.times.npy` [T, 2].
TIMES_SUFFIX = '.times.npy'


def feature_paths(folder: str, video_id: str) -> tuple[str, str]:
  """(<folder>/<video_id>.npy, <folder>/<video_id>.times.npy)."""
  return (os.path.join(folder, f'{video_id}.npy'),
          os.path.join(folder, f'{video_id}{TIMES_SUFFIX}'))


def is_video(name: str) -> bool:
  """Whether a file name has a video extension (hidden files are not videos)."""
  base = os.path.basename(name)
  return not base.startswith('.') and base.lower().endswith(VIDEO_EXTENSIONS)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary name next to `path`; renamed to `path` if the block succeeds.

  A crash never leaves a partial file under the final name, which a re-run
  would take as done. `path` may be a URL (vlm_jax.data.storage).
  """
  tmp = path + '.tmp'
  try:
    yield tmp
  except BaseException:
    if storage.exists(tmp):
      storage.remove(tmp)
    raise
  storage.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` (a local path or a URL) atomically."""
  with atomic_path(path) as tmp, storage.open_file(tmp, 'w') as f:
    f.write(text)


def write_json(path: str, value, indent: int | None = 2) -> None:
  """Writes `value` as JSON to `path` (a local path or a URL) atomically."""
  write_text(path, json.dumps(value, indent=indent, default=str))


def read_json(path: str):
  """The JSON value in `path` (a local path or a URL)."""
  with storage.open_file(path) as f:
    return json.load(f)


def save_npy(path: str, array: np.ndarray) -> None:
  """Writes `array` to the .npy file `path` (a local path or a URL) atomically."""
  # A file object: np.save would append '.npy' to the temporary name.
  with atomic_path(path) as tmp, storage.open_file(tmp, 'wb') as f:
    np.save(f, array)


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


@dataclasses.dataclass
class VideoListing:
  """What `find_videos` found.

  Attributes:
    videos: (video_id, path) pairs, id = file stem, in path order.
    not_videos: (path, reason) of every other file looked at (and of hidden
      folders, not searched), in path order.
    seconds: {path: duration} of the videos a list file gave durations for.
  """
  videos: list[tuple[str, str]]
  not_videos: list[tuple[str, str]]
  seconds: dict[str, float] = dataclasses.field(default_factory=dict)


# Files probed at once when a folder is searched: a probe mostly waits on
# storage (a round trip each on Cloud Storage), and FFmpeg releases the GIL.
PROBE_THREADS = 16


def _why_not(path: str) -> str | None:
  try:
    return video_lib.why_not_video(path)
  except video_lib.VideoDecodeError as e:
    # Named as a video but unreadable: a broken video, which the caller
    # reports as a failure when it decodes it; otherwise no media at all.
    return None if is_video(path) else 'unreadable: ' + str(e).removeprefix(f'{path}: ')


def _probe_folder(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
  """(video paths, (path, reason) of the rest): every file under `folder`, probed."""
  candidates, not_videos = [], []
  remote = storage.is_url(folder)
  for root, dirs, names in storage.walk(folder):
    # .git, .cache and the like hold no data, and probing them can take long.
    hidden = [d for d in dirs if d.startswith('.')]
    not_videos += [(os.path.join(root, d), 'hidden folder, not searched') for d in hidden]
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    for name in names:
      path = os.path.join(root, name)
      if name.startswith('.'):
        # macOS "._x.mp4" files and other hidden files are never the data.
        not_videos.append((path, 'hidden file'))
      elif not remote and not os.path.isfile(path):
        not_videos.append((path, 'not a regular file'))  # a FIFO would block the probe
      else:
        candidates.append(path)
  with concurrent.futures.ThreadPoolExecutor(PROBE_THREADS) as pool:
    reasons = list(pool.map(_why_not, candidates))
  videos = [p for p, reason in zip(candidates, reasons) if reason is None]
  not_videos += [(p, reason) for p, reason in zip(candidates, reasons) if reason is not None]
  return sorted(videos), sorted(not_videos)


def _read_list(source: str, why_not: str) -> tuple[list[str], dict[str, float]]:
  """(paths, {path: seconds}) of a list file (paths relative to its folder).

  Raises:
    ValueError: it is no text, or a line's duration (after a tab) is no
      non-negative number (named by line).
  """
  try:
    with storage.open_file(source) as f:
      text = f.read()
  except UnicodeDecodeError:
    text = None
  if text is None or '\0' in text:
    raise ValueError(f'{source} is neither a video ({why_not}) nor a UTF-8 text file '
                     'of video paths')
  base = os.path.dirname(storage.absolute(source))
  paths, seconds = [], {}
  for number, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    path, tab, duration = line.partition('\t')
    path = path.strip()
    path = path if storage.is_url(path) else os.path.join(base, path)
    paths.append(path)
    if tab:
      try:
        seconds[path] = float(duration)
      except ValueError:
        seconds[path] = -1.0
      if not seconds[path] >= 0:  # also NaN
        raise ValueError(f'{source}:{number}: the duration after the tab must be seconds '
                         f'>= 0, got {duration.strip()!r}')
  return paths, seconds


def find_videos(source: str) -> VideoListing:
  """The videos of a folder, a video file or a list file, and every file not used.

  Args:
    source: a local path or a URL (gs://...; vlm_jax.data.storage). A
      folder, searched recursively: each file is probed with FFmpeg
      (`video.why_not_video`), so a video is found whatever its name, and
      audio, pictures, subtitles and other files are listed in `not_videos`
      with the reason (a file FFmpeg cannot read counts as a broken video
      when its name has one of VIDEO_EXTENSIONS, so that its decoding fails
      loudly); a single video file (broken too, if named as one); or a text
      file with one video path per line (blank lines and lines starting with
      '#' skipped; relative paths are taken from the list file's folder; used
      as listed, not probed), optionally followed by a tab and the video's
      duration in seconds, which then sizes the shares of a multi-process
      run without a read of the video's header (`seconds`).

  Raises:
    FileNotFoundError: `source` does not exist.
    ValueError: two videos share a file stem (their outputs would collide), or
      `source` is a file that is neither a video nor a text list.
  """
  source = os.fspath(source)
  not_videos, seconds = [], {}
  if storage.isdir(source):
    paths, not_videos = _probe_folder(source)
  elif storage.isfile(source):
    try:
      why_not = video_lib.why_not_video(source)
    except video_lib.VideoDecodeError as e:
      why_not = None if is_video(source) else str(e).removeprefix(f'{source}: ')
    paths, seconds = ([source], {}) if why_not is None else _read_list(source, why_not)
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
  return VideoListing(pairs, not_videos, seconds)
