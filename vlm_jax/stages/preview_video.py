"""The preview-video job: videos decoded into clips, a contact sheet (PNG) per video.

Used by `vlm-jax preview-video` and the demo; see that command for the layout.
"""

import json
import os
import sys
from typing import Sequence

import numpy as np
import tqdm
from PIL import Image, ImageDraw, ImageFont

from vlm_jax.data import files as files_lib
from vlm_jax.data import video


def video_files(path: str) -> list[str]:
  """`path` itself, or the video files under the directory `path`, sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{path}: no such file or directory')
  found = []
  for root, _, names in os.walk(path):
    found += [os.path.join(root, n) for n in names if files_lib.is_video(n)]
  return sorted(found)


def video_ids(paths: list[str], root: str) -> list[str]:
  """File stems, or for stems that collide the path under `root` made flat."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  ids = []
  for p, stem in zip(paths, stems):
    if stems.count(stem) > 1:
      rel = os.path.relpath(p, root) if os.path.isdir(root) else os.path.basename(p)
      stem = rel.replace(os.sep, '_').replace('.', '_')
    ids.append(stem)
  return ids


def clip_row(clip: video.Clip, columns: int) -> np.ndarray:
  """[size, columns * size, 3] uint8: `columns` real frames spread over the clip."""
  picks = np.linspace(0, clip.num_real_frames - 1, columns).round().astype(int)
  frames = (clip.frames[picks] * 255.0 + 0.5).astype(np.uint8)
  return np.concatenate(list(frames), axis=1)


def preview(path: str, png: str, fps: float, clip_frames: int, size: int,
            columns: int, steps: Sequence[tuple[float, float, str]] = ()) -> dict:
  """Decodes one video and writes its grid to `png`; returns its manifest entry.

  Each row (a clip) is labelled with its start time, and with the label of the
  step of `steps` (start, end, label) its centre falls in, if any.
  """
  rows, starts, ends, frames = [], [], [], 0
  for clip in video.iter_clips(path, fps, clip_frames, size, last_clip='pad'):
    # Keep only the shown frames: a long video never sits in memory.
    rows.append(clip_row(clip, columns))
    starts.append(clip.start)
    ends.append(clip.end)
    frames += clip.num_real_frames
  image = Image.fromarray(np.concatenate(rows, axis=0))
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=max(10, size // 6))
  for i, (start, end) in enumerate(zip(starts, ends)):
    centre = (start + end) / 2
    label = next((text for a, b, text in steps if a <= centre <= b), '')
    draw.text((3, i * size + 2), f'{start:.1f}s  {label}'.rstrip(), fill=(255, 255, 0),
              font=font, stroke_width=1, stroke_fill=(0, 0, 0))
  # A PNG that exists is a finished one (resume).
  with files_lib.atomic_path(png) as tmp:
    image.save(tmp, format='PNG')
  return {'num_clips': len(rows), 'num_frames': frames, 'fps': fps,
          'duration': frames / fps}


def run(videos: str, output: str, fps: float = 20.0, clip_frames: int = 30,
        size: int = 224, columns: int = 6) -> dict:
  """Previews every video under `videos` into `output`; returns the manifest."""
  paths = video_files(videos)
  os.makedirs(output, exist_ok=True)
  manifest_path = os.path.join(output, 'manifest.json')
  previous = {}
  if os.path.exists(manifest_path):
    with open(manifest_path, encoding='utf-8') as f:
      previous = json.load(f).get('videos', {})
  entries, failures = {}, []
  for path, vid in zip(tqdm.tqdm(paths, desc='preview-video', unit='video'),
                       video_ids(paths, videos)):
    png = os.path.join(output, vid + '.png')
    if os.path.exists(png):
      entry = dict(previous.get(vid, {}), status='skipped: PNG exists')
    else:
      try:
        entry = dict(preview(path, png, fps, clip_frames, size, columns), status='done')
      except video.VideoDecodeError as e:
        failures.append({'video': path, 'error': str(e)})
        tqdm.tqdm.write(f'vlm-jax preview-video: skipped {e}', file=sys.stderr)
        continue
      try:
        entry['source_fps'] = video.probe(path)['fps']
      except video.VideoDecodeError:
        entry['source_fps'] = None
    entry.update(path=path, png=png)
    entries[vid] = entry
  manifest = {
      'inputs': paths,
      'output': output,
      'parameters': {'fps': fps, 'clip_frames': clip_frames, 'size': size,
                     'columns': columns},
      'num_videos': len(entries),
      'videos': entries,
      'num_failures': len(failures),
      'failures': failures,
  }
  files_lib.write_json(manifest_path, manifest)
  return manifest
