"""Batched, sharded S3D clip features of videos (the core of extract-features).

Videos are decoded as a stream of fixed-length clips (vlm_jax.data.video), the
clips of consecutive videos fill fixed-size batches (the last one is padded,
so one compiled program serves the whole run), and each batch goes through
one jitted S3D / S3D-G forward whose batch axis is sharded over the mesh's
'data' axis (parameters replicated). Device work is asynchronous: a batch is
dispatched, then the next one is decoded while the devices compute, and only
then are the previous batch's features fetched.

Videos are decoded in `config.decode_workers` host threads at once
(vlm_jax.data.decode_ahead: PyAV releases the GIL), and the batches take
their clips as they come, from whichever video. A clip's features depend on
that clip alone (the padding rows show it, and the two-process test, whose
batches mix other videos), so they are the bits of one in-line decoder.

Frames travel to the devices as uint8 (a quarter of float32's bytes); the
jitted function turns them back into x / 255, bit for bit the float32 frames
the decoder produced, then normalises them as the weights expect.

`iter_video_features` yields each video's `[num_clips, D]` features and
`[num_clips, 2]` clip (start, end) seconds as soon as its last batch is back,
or the `VideoDecodeError` message of a video that could not be decoded; the
other videos carry on.
"""

import dataclasses
import hashlib
import os
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vlm_jax import config_checks
from vlm_jax.convert import s3d_torch
from vlm_jax.data import decode_ahead as decode_ahead_lib
from vlm_jax.data import video as video_lib
from vlm_jax.models import s3d
from vlm_jax.train import partitioning

# The S3D-G embedding is always built (the checkpoint has it); `output` picks.
S3DG_EMBED_DIM = 512
OUTPUTS = {'s3d': ('features',), 's3dg': ('video_embedding', 'features')}

ConfigError = config_checks.ConfigError
# S3DConfig.pool ('window' | 'global') came later than S3D itself.
_S3D_HAS_POOL = 'pool' in {f.name for f in dataclasses.fields(s3d.S3DConfig)}
# decode_workers=0: this many threads at most, fewer on a smaller host (see
# configs/extract_features.py).
MAX_AUTO_DECODE_WORKERS = 8
# Decoded clips waiting for a batch, over all decoding threads: about a
# batch's worth, 144 MB at 30 x 224 x 224 uint8, whatever the videos' lengths.
DECODE_QUEUE_CLIPS = 32


# ------------------------------------------------------------------ inputs


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


# ------------------------------------------------------------------ config


def _require(condition: bool, field: str, message: str) -> None:
  if not condition:
    raise ConfigError(f'config.{field}: {message}')


def data_parallel_size(config: ml_collections.ConfigDict) -> int:
  """The number of devices on the 'data' axis (config.num_devices, 0 = all local)."""
  available = jax.local_device_count()
  n = config.num_devices or available
  _require(1 <= n <= available, 'num_devices',
           f'{config.num_devices} devices asked for, {available} available')
  return n


def resolve_decode_workers(config: ml_collections.ConfigDict) -> int:
  """Decoding threads: config.decode_workers, 0 = min(8, the CPUs this process may use)."""
  if config.decode_workers:
    return config.decode_workers
  try:
    cpus = len(os.sched_getaffinity(0))  # a container's or taskset's share, not the host's
  except AttributeError:  # not on Linux
    cpus = os.cpu_count() or 1
  return max(1, min(MAX_AUTO_DECODE_WORKERS, cpus))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field that cannot work, before compiling."""
  _require(config.model in OUTPUTS, 'model', f"must be 's3d' or 's3dg', got {config.model!r}")
  _require(config.output in OUTPUTS[config.model], 'output',
           f'{config.model} gives {" or ".join(OUTPUTS[config.model])}, got {config.output!r}')
  _require(config.fps > 0, 'fps', f'must be positive, got {config.fps}')
  _require(config.clip_frames >= 1, 'clip_frames', f'must be >= 1, got {config.clip_frames}')
  _require(config.crop_size >= 1, 'crop_size', f'must be >= 1, got {config.crop_size}')
  _require(config.last_clip in ('pad', 'drop'), 'last_clip',
           f"must be 'pad' or 'drop', got {config.last_clip!r}")
  workers = config.decode_workers
  _require(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0,
           'decode_workers', f'must be an int >= 0 (0 = auto, 1 = no threads), got {workers!r}')
  _require(config.dtype in ('float16', 'float32'), 'dtype',
           f"must be 'float16' or 'float32', got {config.dtype!r}")
  _require(config.compute_dtype in ('float32', 'bfloat16', 'float16'), 'compute_dtype',
           f'must be float32, bfloat16 or float16, got {config.compute_dtype!r}')
  _require(len(config.input_mean) == 3 and len(config.input_std) == 3, 'input_mean',
           'input_mean and input_std need one value per RGB channel')
  _require(all(s > 0 for s in config.input_std), 'input_std',
           f'must be positive, got {tuple(config.input_std)}')
  _require(not config.weights or os.path.isfile(config.weights), 'weights',
           f'{config.weights}: no such file')
  t, side = config.clip_frames, config.crop_size
  _require(config.pool in ('window', 'global'), 'pool',
           f"must be 'window' or 'global', got {config.pool!r}")
  _require(config.model == 's3d' or config.pool == 'global', 'pool',
           "S3D-G averages the whole mixed_5c map: use 'global'")
  if config.model == 's3d' and config.pool == 'global':
    _require(_S3D_HAS_POOL, 'pool', "this vlm_jax.models.s3d.S3D has no 'global' pooling")
  if config.model == 's3d' and config.pool == 'window':
    # torchvision's S3D pools mixed_5c with a fixed (2, 7, 7) window.
    try:
      out = s3d.s3d_output_shape(t, side, side)
    except ValueError:
      out = (0, 0, 0)
    _require(all(o >= w for o, w in zip(out, s3d.AVG_POOL_WINDOW)), 'crop_size',
             f'S3D needs a mixed_5c map of at least {s3d.AVG_POOL_WINDOW} (t, h, w); '
             f"{t} frames x {side} px give {out}: use >= 13 frames and >= 209 px, or pool='global'")
  elif config.model == 's3d':
    _require(t >= 1 and side >= 32, 'crop_size',
             f'S3D downsamples 32x in space: crop_size {side} is too small')
  else:
    _require(t % 2 == 0 and side % 2 == 0, 'crop_size',
             f'S3D-G (space-to-depth) needs an even clip_frames and crop_size, got {t}, {side}')
  n = data_parallel_size(config)
  _require(config.batch_size >= 1 and config.batch_size % n == 0, 'batch_size',
           f'{config.batch_size} is not a positive multiple of the {n} data-parallel devices')


# ------------------------------------------------------------------ model


def build_model(config: ml_collections.ConfigDict):
  """The Flax module of `config.model` (no classifier: only features are read)."""
  dtype = jnp.dtype(config.compute_dtype)
  if config.model == 's3d':
    pool = {'pool': config.pool} if config.pool != 'window' else {}
    return s3d.S3D(s3d.S3DConfig(num_classes=None, dtype=dtype, **pool))
  return s3d.S3DG(s3d.S3DGConfig(embed_dim=S3DG_EMBED_DIM, dtype=dtype))


def clip_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """(clip_frames, crop_size, crop_size, 3): one clip."""
  return (config.clip_frames, config.crop_size, config.crop_size, 3)


def random_variables(abstract: Any, seed: int) -> Any:
  """Seeded random variables shaped like `abstract`, drawn in NumPy.

  He-normal kernels, unit BatchNorm scale and variance, zero biases and means:
  activations keep their scale through the network. Drawn on the host because
  compiling Flax's `init` for S3D costs ~25 s on 2 CPU cores.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def load_variables(config: ml_collections.ConfigDict, model) -> tuple[dict, dict[str, str]]:
  """The model's variables and where they came from.

  Returns:
    ({'params', 'batch_stats'} of NumPy arrays, {'weights': path or 'random',
    'sha256': hex digest or 'random'}).

  Raises:
    ValueError: the state_dict does not fit the model (names the tensors).
  """
  abstract = s3d.abstract_variables(model, (1, *clip_shape(config)))
  if not config.weights:
    return random_variables(abstract, config.seed), {'weights': 'random', 'sha256': 'random'}
  try:
    if config.model == 's3d':
      variables = s3d_torch.torchvision_to_flax(config.weights,
                                                s3d.S3DConfig(num_classes=None))
    else:
      variables = s3d_torch.s3dg_to_flax(config.weights,
                                         s3d.S3DGConfig(embed_dim=S3DG_EMBED_DIM))
  except KeyError as e:  # a tensor the architecture needs is missing
    raise ValueError(f'{config.weights} is not a {config.model} state_dict: {e}') from e
  want, got = s3d_torch.leaf_paths(abstract), s3d_torch.leaf_paths(variables)
  wrong = sorted(k for k in want if got.get(k) != want[k])
  if wrong:
    raise ValueError(f'{config.weights}: tensors missing or of the wrong shape for '
                     f'{config.model}: ' + ', '.join(
                         f'{k} {got.get(k)} != {want[k]}' for k in wrong[:5]))
  return variables, {'weights': os.path.abspath(config.weights),
                     'sha256': sha256_file(config.weights)}


class ClipEncoder:
  """A jitted forward over fixed-size batches of uint8 clips, sharded over 'data'.

  Attributes:
    batch_size: clips per call (all devices together).
    feature_dim: D of the output.
    mesh: the ('data', 'model') mesh, model size 1.
    weights: {'weights': path or 'random', 'sha256': ...}.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               variables: Optional[dict] = None):
    """Builds the model and compiles nothing yet (the first call compiles).

    Args:
      config: an extract_features config (checked here).
      variables: use these instead of `config.weights` / random ones (tests).
    """
    check_config(config)
    self.config = config
    self.batch_size = config.batch_size
    self.model = build_model(config)
    if variables is None:
      variables, self.weights = load_variables(config, self.model)
    else:
      self.weights = {'weights': 'given', 'sha256': 'given'}
    n = data_parallel_size(config)
    self.mesh = partitioning.make_mesh(ml_collections.ConfigDict(dict(data=n, model=1)),
                                       jax.local_devices()[:n])
    replicated = NamedSharding(self.mesh, PartitionSpec())
    self._batch_sharding = partitioning.batch_sharding(self.mesh)
    self._variables = jax.device_put(variables, replicated)
    mean = np.asarray(config.input_mean, np.float32)
    std = np.asarray(config.input_std, np.float32)
    model, output = self.model, config.output

    def forward(variables, frames):
      # uint8 -> the decoder's float32 frames exactly, then the weights' normalisation.
      x = (frames.astype(jnp.float32) / 255.0 - mean) / std
      return model.apply(variables, x)[output].astype(jnp.float32)

    self._forward = jax.jit(forward, in_shardings=(replicated, self._batch_sharding),
                            out_shardings=self._batch_sharding)
    out = jax.eval_shape(forward, variables,
                         jax.ShapeDtypeStruct((self.batch_size, *clip_shape(config)), jnp.uint8))
    self.feature_dim = out.shape[-1]
    self._single = None

  def single_clip(self, frames: np.ndarray) -> np.ndarray:
    """Unbatched, unsharded reference: one float32 clip [T, S, S, 3] in [0, 1] -> [D].

    Plain `model.apply` on one clip on one device (compiled on first use), for
    checking the batched, sharded path.
    """
    if self._single is None:
      config = self.config
      mean = np.asarray(config.input_mean, np.float32)
      std = np.asarray(config.input_std, np.float32)
      variables = jax.device_put(jax.device_get(self._variables), jax.local_devices()[0])
      apply = jax.jit(
          lambda v, x: self.model.apply(v, (x[None] - mean) / std)[config.output][0])
      self._single = lambda x: apply(variables, x)
    return np.asarray(self._single(jnp.asarray(frames, jnp.float32)), np.float32)

  def __call__(self, frames: np.ndarray) -> jax.Array:
    """[batch_size, T, S, S, 3] uint8 -> [batch_size, D] float32, asynchronously."""
    if frames.shape != (self.batch_size, *clip_shape(self.config)) or frames.dtype != np.uint8:
      raise ValueError(f'expected uint8 {(self.batch_size, *clip_shape(self.config))}, got '
                       f'{frames.dtype} {frames.shape}')
    return self._forward(self._variables, jax.device_put(frames, self._batch_sharding))


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Decoder frames (x / 255 in float32) back to their exact uint8 values."""
  return (frames * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------ streaming


@dataclasses.dataclass
class VideoResult:
  """One video's outcome.

  Attributes:
    video_id: the file stem.
    path: the video file.
    features: [num_clips, D] float32, or None when it failed.
    times: [num_clips, 2] float64 (start, end) seconds of each clip (end:
      start + real frames / fps, so a padded last clip ends at the video's
      end), or None.
    error: why it failed (the decoder's message naming the file), or None.
  """
  video_id: str
  path: str
  features: Optional[np.ndarray] = None
  times: Optional[np.ndarray] = None
  error: Optional[str] = None


@dataclasses.dataclass
class _Pending:
  video_id: str
  path: str
  times: list = dataclasses.field(default_factory=list)
  rows: dict = dataclasses.field(default_factory=dict)  # clip index -> [D]
  decoded: bool = False
  error: Optional[str] = None


@dataclasses.dataclass
class Timings:
  """Seconds the main thread spent on decoding and on waiting for devices.

  Attributes:
    decode: getting decoded clips and batching them. With decode_workers=1
      that is the decoding itself (incl. resize); with worker threads, only
      the time waiting for their clips (0 when they keep ahead).
    device_wait: waiting for the devices' features.
    clips: clips decoded.
    batches: forward passes.
  """
  decode: float = 0.0
  device_wait: float = 0.0
  clips: int = 0
  batches: int = 0


def _uint8_clips(config: ml_collections.ConfigDict, path: str
                 ) -> Iterator[tuple[np.ndarray, float, float]]:
  # In the decoding thread: the uint8 conversion is parallel too, and the
  # queued clips take a quarter of float32's memory.
  for clip in video_lib.iter_clips(path, config.fps, config.clip_frames, config.crop_size,
                                   last_clip=config.last_clip):
    yield to_uint8(clip.frames), clip.start, clip.end


def decoded_clips(config: ml_collections.ConfigDict, paths: Sequence[str],
                  workers: Optional[int] = None) -> Iterator[decode_ahead_lib.Event]:
  """The clips of `paths` as decode_ahead events: (video index, 'value', (uint8 frames, start, end)).

  The decoding that `iter_video_features` runs, without the model (and
  benchmarks/decode.py --workers times). Each video ends with (index, 'end',
  None), or (index, 'error', VideoDecodeError) after the clips decoded before
  the error; videos interleave when `workers` > 1.

  Args:
    config: an extract_features config (fps, clip_frames, crop_size, last_clip).
    paths: video files.
    workers: decoding threads; None = resolve_decode_workers(config); 1 =
      decode in the caller's thread, one video after another.
  """
  workers = resolve_decode_workers(config) if workers is None else workers
  return decode_ahead_lib.decode_ahead(list(paths), lambda path: _uint8_clips(config, path),
                                       workers, DECODE_QUEUE_CLIPS)


def iter_video_features(encoder: ClipEncoder, videos: Sequence[tuple[str, str]],
                        timings: Optional[Timings] = None,
                        on_clip: Optional[Callable[[], None]] = None,
                        ) -> Iterator[VideoResult]:
  """Streams the features of `videos` ([(video_id, path)]) through `encoder`.

  Clips of consecutive videos share batches; the last batch is padded with
  zeros (padding rows are computed and dropped: in inference mode each clip's
  output depends on that clip only). A video that fails to decode, even part
  way, yields an error result; its clips already batched are dropped.

  The videos are decoded by `resolve_decode_workers(config)` threads at once
  (`decoded_clips`), their clips batched as they come; with one worker, in
  the input order. Closing this generator early stops the threads.

  Yields:
    A VideoResult per video, in completion order (with one worker, the input
    order, except that a failed video is reported as soon as it fails).
  """
  config = encoder.config
  timings = timings if timings is not None else Timings()
  batch_size = encoder.batch_size
  slots: list[tuple[_Pending, int]] = []
  buffer = None
  in_flight = None  # (device array, slots)

  def finished(p: _Pending) -> bool:
    return p.decoded and p.error is None and len(p.rows) == len(p.times)

  def result(p: _Pending) -> VideoResult:
    features = np.stack([p.rows[i] for i in range(len(p.times))])
    return VideoResult(p.video_id, p.path, features, np.asarray(p.times, np.float64))

  def collect():
    """Fetches the in-flight batch; yields the videos it completes."""
    nonlocal in_flight
    if in_flight is None:
      return
    array, batch_slots = in_flight
    in_flight = None
    start = time.perf_counter()
    features = np.asarray(array)
    timings.device_wait += time.perf_counter() - start
    done = []
    for row, (p, index) in enumerate(batch_slots):
      if p.error is None:
        p.rows[index] = features[row]
        if finished(p) and (not done or done[-1] is not p):
          done.append(p)
    for p in done:
      yield result(p)

  def dispatch():
    """Sends the filled slots (padded to batch_size), then collects the previous batch."""
    nonlocal buffer, slots, in_flight
    if not slots:
      return
    buffer[len(slots):] = 0
    current = (encoder(buffer), slots)
    timings.batches += 1
    # A fresh buffer per batch: device_put may alias host memory on CPU.
    buffer, slots = None, []
    yield from collect()  # the previous batch, while this one computes
    in_flight = current

  def timed(events):
    """`events`, adding the time spent waiting for each to timings.decode."""
    while True:
      start = time.perf_counter()
      event = next(events, None)
      timings.decode += time.perf_counter() - start
      if event is None:
        return
      yield event

  events = decoded_clips(config, [path for _, path in videos])
  pending: dict[int, _Pending] = {}
  try:
    for index, kind, payload in timed(events):
      if index not in pending:
        pending[index] = _Pending(*videos[index])
      p = pending[index]
      if kind == 'value':
        frames, clip_start, clip_end = payload
        if buffer is None:
          buffer = np.empty((batch_size, *clip_shape(config)), np.uint8)
        buffer[len(slots)] = frames
        slots.append((p, len(p.times)))
        p.times.append((clip_start, clip_end))
        timings.clips += 1
        if on_clip:
          on_clip()
        if len(slots) == batch_size:
          yield from dispatch()
        continue
      del pending[index]
      p.decoded = True
      if kind == 'error':
        if not isinstance(payload, video_lib.VideoDecodeError):
          raise payload  # a bug, not a bad video
        p.error = str(payload)
      elif not p.times:
        p.error = (f'{p.path}: no complete clip ({config.clip_frames} frames at {config.fps} '
                   f"fps) with last_clip='drop'")
      if p.error is not None:
        yield VideoResult(p.video_id, p.path, error=p.error)
      elif finished(p):
        yield result(p)
  finally:
    events.close()  # an early close or an error here stops the decoding threads
  yield from dispatch()
  yield from collect()
