"""The extract-features job: clip features of many videos into .npy files with a manifest.

Used by `vlm-jax extract-features` and the demo; see that command for the file layout.
"""

import collections
import os
import re
import sys
import time
from typing import Any

import jax
import ml_collections
import tqdm

from vlm_jax.data import files as files_lib
from vlm_jax.data import s3d_features as video_features
from vlm_jax.data import shares as shares_lib
from vlm_jax.data import storage

# Fields that change the features: an output folder holds one setting of them.
PARAMETER_FIELDS = ('model', 'pool', 'output', 'seed', 'fps', 'clip_frames', 'crop_size',
                    'last_clip', 'input_mean', 'input_std', 'compute_dtype', 'dtype')


def parameters(config: ml_collections.ConfigDict, weights_sha256: str) -> dict[str, Any]:
  """What the features depend on (JSON-ready), compared on a re-run."""
  out = {k: (list(config[k]) if isinstance(config[k], (tuple, list)) else config[k])
         for k in PARAMETER_FIELDS}
  out['weights_sha256'] = weights_sha256
  return out


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


MANIFEST = 'manifest.json'


def _check_parameters(output: str, params: dict[str, Any]) -> None:
  """ValueError when a manifest in `output` (merged or a process's) has other parameters."""
  for path in [os.path.join(output, MANIFEST)] + shares_lib.manifest_paths(output):
    if not storage.exists(path):
      continue
    previous = files_lib.read_json(path).get('parameters', {})
    changed = sorted(k for k in set(params) | set(previous) if params.get(k) != previous.get(k))
    if changed:
      raise ValueError(
          f'{output} holds features made with other parameters ({os.path.basename(path)}: '
          + ', '.join(f'{k}: {previous.get(k)!r} -> {params.get(k)!r}' for k in changed)
          + '); use another --output')


def _listing(videos: str) -> tuple[list[tuple[str, str]], list[dict], files_lib.VideoListing]:
  listing = files_lib.find_videos(videos)
  not_videos = [{'path': storage.absolute(p), 'reason': r} for p, r in listing.not_videos]
  if not listing.videos:
    looked_at = f'; {_summarise_not_videos(videos, listing.not_videos)}' if not_videos else ''
    raise ValueError(f'{videos}: no videos found{looked_at}')
  return listing.videos, not_videos, listing


def run(videos: str, output: str, config: ml_collections.ConfigDict,
        progress: bool = True, process_index: int = 0, process_count: int = 1
        ) -> dict[str, Any]:
  """Extracts the missing videos' features into `output`; returns the manifest.

  Every video is tried, and the manifest is written, before a batch fails for
  its failures. With `process_count` > 1 this process takes only its share of
  the videos (`shares.take`, by duration), writes
  `shares.manifest_name(process_index, process_count)` instead of
  manifest.json, and judges failures within its share; `merge` then writes
  manifest.json for all of them.

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
  shares_lib.check(process_index, process_count)
  pairs, not_videos, listing = _listing(videos)
  share = None
  if process_count > 1:
    seconds = shares_lib.video_seconds([p for _, p in pairs], listing.seconds)
    pairs, share = shares_lib.take(pairs, seconds, 'seconds', process_index, process_count)
  weights_sha = video_features.sha256_file(config.weights) if config.weights else 'random'
  params = parameters(config, weights_sha)
  manifest_file = os.path.join(
      output, shares_lib.manifest_name(process_index, process_count) if share else MANIFEST)
  if not_videos:
    print(f'extract-features: {_summarise_not_videos(videos, listing.not_videos)}; '
          f'listed with reasons in {manifest_file}', file=sys.stderr)
  storage.makedirs(output)
  _check_parameters(output, params)

  present = set(storage.listdir(output))
  todo = [(vid, path) for vid, path in pairs if not _has_features(present, vid)]
  failures, written = [], 0
  timings = video_features.Timings()
  weights = {'weights': storage.absolute(config.weights) if config.weights else 'random',
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
        files_lib.save_npy(times_path, result.times)
        files_lib.save_npy(features_path, result.features.astype(config.dtype))
        written += 1
      bar.update(1)
    bar.set_postfix(clips=clips_seen[0])
    bar.close()
    # Decoding threads finish videos in any order; the manifest lists them as listed.
    order = {vid: i for i, (vid, _) in enumerate(todo)}
    failures.sort(key=lambda f: order[f['video_id']])

  per_video = _finished(output, pairs)
  feature_dim = feature_dim or _feature_dim(output, per_video)
  wall = time.perf_counter() - started
  manifest = dict(
      videos_source=storage.absolute(videos), output=storage.absolute(output),
      preset=config.preset, parameters=params,
      model=config.model, output_name=config.output, feature_dim=feature_dim,
      frame_rate=config.fps, clip_frames=config.clip_frames,
      clip_seconds=config.clip_frames / config.fps, crop_size=config.crop_size,
      dtype=config.dtype, weights=weights['weights'], weights_sha256=weights['sha256'],
      random_weights=not config.weights,
      decode_workers=video_features.resolve_decode_workers(config),
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
  if share:
    manifest['share'] = share
  files_lib.write_json(manifest_file, manifest, indent=1)
  _check_failures(failures, len(pairs), len(per_video), config.max_failures, manifest_file)
  return manifest


def _has_features(names: set[str], video_id: str) -> bool:
  """Whether both of the video's files are among `names` (a features folder's)."""
  return all(os.path.basename(p) in names for p in files_lib.feature_paths('', video_id))


def _finished(output: str, pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
  """{video id: path, clips} of every video whose two files are in `output` (any run's)."""
  present = set(storage.listdir(output))
  return {vid: {'path': storage.absolute(path),
                'clips': storage.npy_shape(files_lib.feature_paths(output, vid)[0])[0]}
          for vid, path in pairs if _has_features(present, vid)}


def _feature_dim(output: str, per_video: dict[str, dict[str, Any]]) -> int | None:
  for vid in per_video:
    return storage.npy_shape(files_lib.feature_paths(output, vid)[0])[1]
  return None


def merge(videos: str, output: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """manifest.json of `output` from the manifests its processes wrote; returns it.

  Reports in one place every listed video's outcome: done (its files are
  there, whichever process wrote them), failed (in a process's manifest and
  still without files) or missing (no process finished or reported it: a
  process that did not run, or was stopped).

  Raises:
    ValueError: no process manifests, processes of different counts, one
      that is missing, or manifests of other parameters than `config`'s; any
      video missing (after manifest.json is written); failures as `run`
      judges them over the whole list.
  """
  started = time.perf_counter()
  video_features.check_config(config)
  pairs, not_videos, _ = _listing(videos)
  weights_sha = video_features.sha256_file(config.weights) if config.weights else 'random'
  params = parameters(config, weights_sha)
  _check_parameters(output, params)
  shards = shares_lib.read_manifests(output)
  per_video = _finished(output, pairs)
  failures = [f for s in shards for f in s['failures'] if f['video_id'] not in per_video]
  paths = dict(pairs)
  missing = [dict(m, path=storage.absolute(paths[m['id']])) for m in shares_lib.missing_items(
      list(paths), set(per_video) | {f['video_id'] for f in failures}, shards)]
  manifest_file = os.path.join(output, MANIFEST)
  manifest = dict(
      shards[0], videos_source=storage.absolute(videos),
      feature_dim=_feature_dim(output, per_video),
      counts=dict(videos=len(pairs), done=len(per_video),
                  written_this_run=sum(s['counts']['written_this_run'] for s in shards),
                  skipped_existing=sum(s['counts']['skipped_existing'] for s in shards),
                  failed=len(failures), missing=len(missing), not_videos=len(not_videos),
                  clips=sum(v['clips'] for v in per_video.values()),
                  clips_this_run=sum(s['counts']['clips_this_run'] for s in shards)),
      videos=per_video, failures=failures, missing=missing, not_videos=not_videos,
      merged=dict(processes=len(shards),
                  manifests=[os.path.basename(p) for p in shares_lib.manifest_paths(output)],
                  seconds=round(time.perf_counter() - started, 3)),
      timings=dict(wall_seconds=max(s['timings']['wall_seconds'] for s in shards),
                   per_process=[s['timings'] for s in shards]))
  del manifest['share']
  files_lib.write_json(manifest_file, manifest, indent=1)
  shares_lib.check_missing(missing, len(pairs), 'videos', manifest_file)
  _check_failures(failures, len(pairs), len(per_video), config.max_failures, manifest_file)
  return manifest
