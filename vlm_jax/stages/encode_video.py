"""The encode-video job: a VideoCLIP or CBT run's video embeddings of per-second features, as .npy.

Used by `vlm-jax encode-video` and the demos; see that command for the layout.
"""

import json
import os
import sys

import numpy as np
import tqdm

from vlm_jax import systems
from vlm_jax.cbt import inference as cbt_inference
from vlm_jax.data import feature_records
from vlm_jax.data import files as files_lib
from vlm_jax.data import shares as shares_lib
from vlm_jax.data import storage
from vlm_jax.videoclip import inference as videoclip_inference


def read_segments(path: str) -> list[dict]:
  """[{id, video_id, start, end}] from a JSON list or JSONL; errors name file and line."""
  with storage.open_file(path) as f:
    text = f.read()
  try:
    items = json.loads(text)
    lines = None
  except json.JSONDecodeError:
    items, lines = [], text.splitlines()
  if lines is not None:
    for number, line in enumerate(lines, start=1):
      if line.strip():
        try:
          items.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}:{number}: not JSON ({e.msg})') from e
  if not isinstance(items, list):
    raise ValueError(f'{path}: expected a JSON list or JSONL of segments')
  out = []
  for number, item in enumerate(items, start=1):
    try:
      segment = {'id': str(item.get('clip_id', item.get('id'))),
                 'video_id': str(item['video_id']),
                 'start': float(item['start']), 'end': float(item['end'])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise ValueError(f'{path}: segment {number}: needs clip_id/id, video_id, start, end '
                       f'({e.__class__.__name__}: {e})') from e
    if segment['id'] == 'None' or segment['end'] <= segment['start']:
      raise ValueError(f'{path}: segment {number}: no id, or end <= start')
    out.append(segment)
  return out


def load_per_second(features_dir: str, video_id: str) -> np.ndarray:
  """[num_seconds, D] float32 of one video (ValueError / FileNotFoundError naming the file)."""
  path, times_path = files_lib.feature_paths(features_dir, video_id)
  if not storage.exists(path):
    raise FileNotFoundError(f'{path}: no such features file')
  features = storage.load_npy(path).astype(np.float32)
  if features.ndim != 2 or len(features) == 0:
    raise ValueError(f'{path}: expected [num_clips, D] features, got {list(features.shape)}')
  if storage.exists(times_path):
    features = feature_records.per_second(features, storage.load_npy(times_path))
  return features


def encoder(workdir: str, per_second: bool, batch_size: int):
  """(loaded run, fn: list of [T, D] features -> list of outputs) of a run's system.

  VideoCLIP: pooled embeddings [hidden] or per-second states [T, hidden]. CBT:
  contextual clip states [T, hidden], or their mean over the clips as the
  pooled vector (CBT has no pooled embedding of its own).
  """
  system = systems.of_run(workdir)
  if system == 'videoclip':
    loaded = videoclip_inference.load(workdir)
    fn = videoclip_inference.video_states if per_second else videoclip_inference.encode_videos
    return loaded, lambda arrays: fn(loaded, arrays, batch_size)
  if system == 'cbt':
    loaded = cbt_inference.load(workdir)

    def states(arrays):
      out = cbt_inference.clip_states(loaded, arrays, batch_size=batch_size)
      return out if per_second else [s.mean(axis=0) for s in out]
    return loaded, states
  raise ValueError(f'{workdir} holds a {system} run; encode-video reads VideoCLIP and CBT runs')


MANIFEST = 'manifest.json'


def list_items(features_dir: str, segments_path: str | None) -> list[dict]:
  """[{id, video_id, start, end}]: the segments, or one item per features file (no times)."""
  if segments_path:
    return read_segments(segments_path)
  return [{'id': n[:-4], 'video_id': n[:-4], 'start': None, 'end': None}
          for n in storage.listdir(features_dir)
          if n.endswith('.npy') and not n.endswith(files_lib.TIMES_SUFFIX)]


def _sizes(features_dir: str, items: list[dict]) -> tuple[list[float], str]:
  """Work per item: a segment's seconds, or a whole video's features file bytes."""
  if items and items[0]['start'] is not None:
    return [item['end'] - item['start'] for item in items], 'seconds'
  present = set(storage.listdir(features_dir))
  paths = [files_lib.feature_paths(features_dir, item['video_id'])[0] for item in items]
  return [storage.getsize(p) if os.path.basename(p) in present else 0 for p in paths], 'bytes'


def run(workdir: str, features_dir: str, output: str, segments_path: str | None = None,
        per_second: bool = False, batch_size: int = 32, progress: bool = True,
        process_index: int = 0, process_count: int = 1) -> dict:
  """Writes the embeddings and manifest.json; returns the manifest.

  With `process_count` > 1, only this process's share of the items
  (`shares.take`: segments by seconds, videos by features file size), and
  `shares.manifest_name(process_index, process_count)` instead of
  manifest.json; `merge` then writes manifest.json.
  """
  shares_lib.check(process_index, process_count)
  items = list_items(features_dir, segments_path)
  share = None
  if process_count > 1:
    sizes, unit = _sizes(features_dir, items)
    taken, share = shares_lib.take([(item['id'], item) for item in items], sizes, unit,
                                   process_index, process_count)
    items = [item for _, item in taken]
  loaded, encode = encoder(workdir, per_second, batch_size)
  storage.makedirs(output)
  present = set(storage.listdir(output))
  failures, written, existing, cache = [], 0, 0, {}
  todo = []
  for item in items:
    if f'{item["id"]}.npy' in present:
      existing += 1
      continue
    try:
      if item['video_id'] not in cache:
        cache.clear()  # segments come grouped by video: keep one video in memory
        cache[item['video_id']] = load_per_second(features_dir, item['video_id'])
      features = cache[item['video_id']]
      if item['start'] is not None:
        features = features[int(np.floor(item['start'])):int(np.ceil(item['end']))]
        if len(features) == 0:
          raise ValueError(f'segment [{item["start"]}, {item["end"]}] s is past the '
                           'features\' end')
    except (OSError, ValueError) as e:
      failures.append({'id': item['id'], 'video_id': item['video_id'], 'error': str(e)})
      print(f'encode-video: skipped {item["id"]}: {e}', file=sys.stderr)
      continue
    todo.append((item['id'], features))
  chunk = 256  # items per call: bounded memory, few padded batches
  for start in tqdm.tqdm(range(0, len(todo), chunk), desc='encode-video', unit='chunk',
                         disable=not progress):
    ids, arrays = zip(*todo[start:start + chunk])
    for item_id, array in zip(ids, encode(list(arrays))):
      files_lib.save_npy(os.path.join(output, f'{item_id}.npy'), np.asarray(array, np.float32))
      written += 1
  manifest = dict(workdir=storage.absolute(workdir), checkpoint_step=loaded.step,
                  features=storage.absolute(features_dir), segments=segments_path,
                  per_second=per_second, items=len(items), written=written,
                  already_there=existing, failed=len(failures), failures=failures)
  if share:
    manifest['share'] = share
  name = shares_lib.manifest_name(process_index, process_count) if share else MANIFEST
  files_lib.write_json(os.path.join(output, name), manifest, indent=1)
  return manifest


def merge(features_dir: str, output: str, segments_path: str | None = None) -> dict:
  """manifest.json of `output` from its processes' manifests; returns it.

  Every item is done (its .npy is there), failed (in a process's manifest,
  still without output) or missing.

  Raises:
    ValueError: the process manifests are absent or incomplete
      (`shares.read_manifests`), or some item is missing (after manifest.json
      is written).
  """
  items = list_items(features_dir, segments_path)
  manifests = shares_lib.read_manifests(output)
  ids = [item['id'] for item in items]
  present = set(storage.listdir(output))
  done = {i for i in ids if f'{i}.npy' in present}
  failures = [f for m in manifests for f in m['failures'] if f['id'] not in done]
  missing = shares_lib.missing_items(ids, done | {f['id'] for f in failures}, manifests)
  first = manifests[0]
  manifest = dict(workdir=first['workdir'], checkpoint_step=first['checkpoint_step'],
                  features=storage.absolute(features_dir), segments=segments_path,
                  per_second=first['per_second'], items=len(items), done=len(done),
                  written=sum(m['written'] for m in manifests),
                  already_there=sum(m['already_there'] for m in manifests),
                  failed=len(failures), missing=len(missing), failures=failures,
                  missing_items=missing, merged=dict(processes=len(manifests)))
  manifest_file = os.path.join(output, MANIFEST)
  files_lib.write_json(manifest_file, manifest, indent=1)
  shares_lib.check_missing(missing, len(items), 'items', manifest_file)
  return manifest
