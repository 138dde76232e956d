"""The extract-features job: clip features of many videos into .npy files with a manifest.

Used by `vlm-jax extract-features` and the demo; see that command for the file layout.
"""

import collections
import json
import os
import re
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import s3d_features as video_features

# Fields that change the features: an output folder holds one setting of them.
PARAMETER_FIELDS = ('model', 'pool', 'output', 'seed', 'fps', 'clip_frames', 'crop_size',
                    'last_clip', 'input_mean', 'input_std', 'compute_dtype', 'dtype')


def parameters(config: ml_collections.ConfigDict, weights_sha256: str) -> dict[str, Any]:
  """What the features depend on (JSON-ready), compared on a re-run."""
  out = {k: (list(config[k]) if isinstance(config[k], (tuple, list)) else config[k])
         for k in PARAMETER_FIELDS}
  out['weights_sha256'] = weights_sha256
  return out


def _save_atomic(path: str, array: np.ndarray) -> None:
  # A file object: np.save would append '.npy' to the temporary name.
  with files_lib.atomic_path(path) as tmp, open(tmp, 'wb') as f:
    np.save(f, array)


def _warn_random(config) -> None:
  bar = '!' * 78
  print(f'{bar}\nWARNING: no --config.weights given: the features come from RANDOM S3D weights '
        f'(seed {config.seed}).\nThey test the plumbing only and mean nothing. Pass '
        f'--config.weights=PATH (a {config.model} PyTorch state_dict).\n{bar}', file=sys.stderr)


def _summarise_not_videos(source: str, not_videos: list[tuple[str, str]]) -> str:
  """'files under DIR that are not videos: 3 (2 audio only, 1 still image)'."""
  # A reason starts with its kind (video.why_not_video).
  kinds = collections.Counter(re.split(r' \(|[,:]', reason, maxsplit=1)[0]
                              for _, reason in not_videos)
  return (f'files under {source} that are not videos: {len(not_videos)} ('
          + ', '.join(f'{n} {kind}' for kind, n in kinds.most_common()) + ')')


def _check_failures(failures: list[dict], num_videos: int, num_done: int,
                    max_failures: float, manifest_file: str) -> None:
  """Raises ValueError when no video has features, or too many failed."""
  if not failures:
    return
  first = f'first: {failures[0]["error"]}; all in {manifest_file}'
  if not num_done:
    raise ValueError(f'no video could be read: all {num_videos} failed ({first})')
  if len(failures) > max_failures * num_videos:
    raise ValueError(f'{len(failures)} of {num_videos} videos failed, more than '
                     f'config.max_failures={max_failures:g} of them; the others were written '
                     f'({first})')


def run(videos: str, output: str, config: ml_collections.ConfigDict,
        progress: bool = True) -> dict[str, Any]:
  """Extracts the missing videos' features into `output`; returns the manifest.

  Every video is tried, and the manifest is written, before a batch fails for
  its failures.

  Raises:
    ConfigError: a config field that cannot work (named).
    ValueError: `output` holds features made with other parameters; the
      weights do not fit the model; `videos` holds no video; no video has
      features after the run; or more than `config.max_failures` of the
      videos failed.
    FileNotFoundError: `videos` does not exist.
  """
  started = time.perf_counter()
  video_features.check_config(config)
  if not 0 <= config.max_failures <= 1:
    raise video_features.ConfigError(
        f'config.max_failures: a fraction in [0, 1], got {config.max_failures}')
  listing = files_lib.find_videos(videos)
  pairs = listing.videos
  not_videos = [{'path': os.path.abspath(p), 'reason': r} for p, r in listing.not_videos]
  if not pairs:
    looked_at = f'; {_summarise_not_videos(videos, listing.not_videos)}' if not_videos else ''
    raise ValueError(f'{videos}: no videos found{looked_at}')
  weights_sha = video_features.sha256_file(config.weights) if config.weights else 'random'
  params = parameters(config, weights_sha)
  manifest_file = os.path.join(output, 'manifest.json')
  if not_videos:
    print(f'extract-features: {_summarise_not_videos(videos, listing.not_videos)}; '
          f'listed with reasons in {manifest_file}', file=sys.stderr)
  os.makedirs(output, exist_ok=True)
  if os.path.exists(manifest_file):
    with open(manifest_file, encoding='utf-8') as f:
      previous = json.load(f).get('parameters', {})
    changed = sorted(k for k in set(params) | set(previous) if params.get(k) != previous.get(k))
    if changed:
      raise ValueError(
          f'{output} holds features made with other parameters ('
          + ', '.join(f'{k}: {previous.get(k)!r} -> {params.get(k)!r}' for k in changed)
          + '); use another --output')

  todo = [(vid, path) for vid, path in pairs
          if not all(os.path.exists(p) for p in files_lib.feature_paths(output, vid))]
  failures, written = [], 0
  timings = video_features.Timings()
  weights = {'weights': os.path.abspath(config.weights) if config.weights else 'random',
             'sha256': weights_sha}
  feature_dim = None
  if todo:
    if not config.weights:
      _warn_random(config)
    encoder = video_features.ClipEncoder(config)
    feature_dim = encoder.feature_dim
    bar = tqdm.tqdm(total=len(todo), desc='extract-features', unit='video',
                    disable=not progress)
    clips_seen = [0]

    def on_clip():
      clips_seen[0] += 1
      if clips_seen[0] % 8 == 0:
        bar.set_postfix(clips=clips_seen[0], refresh=False)

    for result in video_features.iter_video_features(encoder, todo, timings, on_clip):
      if result.error is not None:
        failures.append({'video_id': result.video_id, 'path': result.path,
                         'error': result.error})
        print(f'extract-features: failed {result.video_id}: {result.error}', file=sys.stderr)
      else:
        features_path, times_path = files_lib.feature_paths(output, result.video_id)
        _save_atomic(times_path, result.times)
        _save_atomic(features_path, result.features.astype(config.dtype))
        written += 1
      bar.update(1)
    bar.set_postfix(clips=clips_seen[0])
    bar.close()

  # Every finished video (this run's and earlier runs'), read from disk.
  per_video = {}
  for vid, path in pairs:
    features_path, times_path = files_lib.feature_paths(output, vid)
    if os.path.exists(features_path) and os.path.exists(times_path):
      array = np.load(features_path, mmap_mode='r')
      feature_dim = feature_dim or int(array.shape[1])
      per_video[vid] = {'path': os.path.abspath(path), 'clips': int(array.shape[0])}
  wall = time.perf_counter() - started
  manifest = dict(
      videos_source=os.path.abspath(videos), output=os.path.abspath(output),
      preset=config.preset, parameters=params,
      model=config.model, output_name=config.output, feature_dim=feature_dim,
      frame_rate=config.fps, clip_frames=config.clip_frames,
      clip_seconds=config.clip_frames / config.fps, crop_size=config.crop_size,
      dtype=config.dtype, weights=weights['weights'], weights_sha256=weights['sha256'],
      random_weights=not config.weights,
      batch_size=config.batch_size, devices=[str(d) for d in jax.local_devices()][
          :video_features.data_parallel_size(config)],
      max_failures=config.max_failures,
      counts=dict(videos=len(pairs), done=len(per_video), written_this_run=written,
                  skipped_existing=len(pairs) - len(todo), failed=len(failures),
                  not_videos=len(not_videos),
                  clips=sum(v['clips'] for v in per_video.values()),
                  clips_this_run=timings.clips),
      videos=per_video, failures=failures, not_videos=not_videos,
      timings=dict(wall_seconds=round(wall, 3), decode_seconds=round(timings.decode, 3),
                   device_wait_seconds=round(timings.device_wait, 3),
                   batches=timings.batches,
                   clips_per_second=round(timings.clips / wall, 3)))
  files_lib.write_json(manifest_file, manifest, indent=1)
  _check_failures(failures, len(pairs), len(per_video), config.max_failures, manifest_file)
  return manifest
