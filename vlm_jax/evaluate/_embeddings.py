"""The embedding files shared by the zero-shot evaluation binaries, and their metrics JSON.

File interface (what `vlm-jax encode-video` / `encode-text` write for VideoCLIP):

  Texts.  TEXTS.txt, one UTF-8 text per line, and TEXTS.npy, float [N, D] whose
  row i embeds line i. A binary looks each of its query / option / label / step
  texts up by its whitespace-normalised string (runs of spaces, tabs and
  newlines become one space, ends stripped), so one text file may serve several
  tasks and a repeated text is encoded once. Every binary (`vlm-jax eval
  <task>`) has `--write_texts PATH`: it writes the texts its annotations need
  (first-seen order, de-duplicated: `write_texts` below), i.e. the input of the
  text encoder, and exits.

  Videos.  A folder with one `<id>.npy` per video (or clip, for YouCook2
  retrieval: `<youtube_id>_<segment_id>`): either a pooled embedding [D] (a
  [1, D] file is read as [D]) for retrieval and multiple-choice QA, or
  per-second states [T, D] (row t = second [t, t + 1)) for action segmentation,
  step localization and moment ranking. float16 or float32; math is float32.

A missing, unreadable, wrongly shaped or non-finite file is reported with its
reason and the items that need it are skipped, never fatal.
"""

import json
import os
from typing import Any, Optional

import numpy as np

from vlm_jax.data import files as files_lib


def normalize_text(text: str) -> str:
  """The lookup key of a text: whitespace runs collapsed, ends stripped."""
  return ' '.join(str(text).split())


def texts_path_for(embeddings_path: str) -> str:
  """Default TEXTS.txt beside TEXTS.npy."""
  return os.path.splitext(embeddings_path)[0] + '.txt'


class TextEmbeddings:
  """Text -> embedding lookup over a TEXTS.txt / TEXTS.npy pair.

  Attributes:
    dim: D.
  """

  def __init__(self, embeddings_path: str, texts_path: Optional[str] = None):
    texts_path = texts_path or texts_path_for(embeddings_path)
    with open(texts_path, encoding='utf-8') as f:
      lines = [normalize_text(line) for line in f.read().split('\n')]
    # A trailing newline leaves one empty last item; empty lines elsewhere are
    # kept so that line numbers still match rows.
    if lines and lines[-1] == '':
      lines.pop()
    array = np.load(embeddings_path)
    if array.ndim != 2:
      raise ValueError(f'{embeddings_path}: expected [N, D] text embeddings, got shape '
                       f'{array.shape}')
    if array.shape[0] != len(lines):
      raise ValueError(f'{embeddings_path}: {array.shape[0]} rows but {texts_path} has '
                       f'{len(lines)} lines')
    if not np.all(np.isfinite(array)):
      raise ValueError(f'{embeddings_path}: non-finite values')
    self._array = array.astype(np.float32)
    # First occurrence wins; a deterministic encoder gives equal rows anyway.
    self._row = {}
    for i, text in enumerate(lines):
      self._row.setdefault(text, i)
    self.dim = int(array.shape[1])

  def __contains__(self, text: str) -> bool:
    return normalize_text(text) in self._row

  def get(self, text: str) -> np.ndarray:
    """[D] embedding of `text` (KeyError if it was not encoded)."""
    return self._array[self._row[normalize_text(text)]]

  def stack(self, texts) -> np.ndarray:
    """[len(texts), D] embeddings (KeyError naming the first text not encoded)."""
    return np.stack([self.get(t) for t in texts]) if texts else np.zeros((0, self.dim),
                                                                         np.float32)


def load_video(folder: str, video_id: str, per_second: bool,
               dim: Optional[int] = None) -> tuple[Optional[np.ndarray], Optional[str]]:
  """(array, None) or (None, why) for `<folder>/<video_id>.npy`.

  Args:
    folder: the features folder.
    video_id: file stem.
    per_second: True: [T, D] states with T >= 1; False: a pooled [D] ([1, D] is
      accepted and squeezed).
    dim: the expected D, when known (the text embeddings' D).

  Returns:
    float32 [D] or [T, D], or None and a one-line reason.
  """
  path = os.path.join(folder, f'{video_id}.npy')
  if not os.path.exists(path):
    return None, 'missing'
  try:
    array = np.load(path)
  except (OSError, ValueError, EOFError) as e:
    return None, f'unreadable: {e.__class__.__name__}: {e}'
  if per_second:
    if array.ndim != 2 or array.shape[0] == 0:
      return None, f'expected per-second states [T, D], got shape {list(array.shape)}'
  else:
    if array.ndim == 2 and array.shape[0] == 1:
      array = array[0]
    if array.ndim != 1:
      return None, f'expected a pooled embedding [D], got shape {list(array.shape)}'
  if dim is not None and array.shape[-1] != dim:
    return None, f'D = {array.shape[-1]}, but the text embeddings have D = {dim}'
  if not np.all(np.isfinite(array)):
    return None, 'non-finite values'
  return array.astype(np.float32), None


def write_texts(path: str, texts) -> int:
  """Writes the de-duplicated normalised texts, one per line; returns how many."""
  unique = list(dict.fromkeys(normalize_text(t) for t in texts))
  if any(not t for t in unique):
    raise ValueError('an empty text cannot be written as a line')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files_lib.write_text(path, ''.join(t + '\n' for t in unique))
  return len(unique)


def write_json(path: str, data: dict[str, Any]) -> None:
  """Writes `data` atomically (a crash leaves the old file or none)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files_lib.write_text(path, json.dumps(data, indent=1, ensure_ascii=False))


def report(output: Optional[str], task: str, inputs: dict[str, str],
           **fields) -> dict[str, Any]:
  """The metrics JSON dict, written to `output` when given.

  Args:
    output: the metrics JSON path, or None.
    task: its `task` field, e.g. 'video_qa'.
    inputs: the input paths by field name (stored absolute), in order.
    **fields: the rest (parameters, metrics, counts, skipped items).
  """
  result = dict(task=task, **{k: os.path.abspath(v) for k, v in inputs.items()}, **fields)
  if output:
    write_json(output, result)
  return result
