"""S3D clip-feature extraction configs (vlm-jax extract-features).

Presets, chosen by the config argument:

  s3d    VideoBERT's features (../shared/SPEC.md section 1): torchvision's S3D
         (Kinetics-400 layout, `s3d-d76dad2f.pth`), frames at 20 fps, clips of
         30 frames (1.5 s), 224 x 224 centre crop, Kinetics normalisation; the
         1024-d pooled mixed_5c activations per clip.
           vlm-jax extract-features --videos DIR --output feats \\
               --config configs/extract_features.py:s3d --config.weights=s3d-d76dad2f.pth
  s3dg   VideoCLIP's features (SPEC section 3): MIL-NCE's S3D-G
         (`s3d_howto100m.pth`), 30 fps, clips of 30 frames (one token per
         second), 224 crop, pixels in [0, 1]; the 512-d `video_embedding` (the
         token VideoCLIP's MLP reads). `--config.output=features` gives the
         1024-d mean of mixed_5c instead.
  demo   s3d for a CPU demo: 20 fps, 30-frame clips, a 112 px crop with the
         whole mixed_5c map averaged (`pool='global'`: torchvision's fixed
         (2, 7, 7) window needs >= 209 px crops, and 112 px gives a 3 x 3 map;
         see vlm_jax.models.s3d.s3d_output_shape), batches of 4. About 1.7
         clips/s end to end on 2 CPU cores (3 real videos, 21 clips, compile
         included); 224 px with pool='window' runs ~0.6 clips/s.

Without `weights` the model has seeded random weights and the command says so
loudly (and records 'random' in the manifest): fine for testing the plumbing,
meaningless as features.

Any field can be overridden: `--config.batch_size=16 --config.dtype=float32`;
`--config.max_failures=0.05` fails the batch when more than 5% of the videos
cannot be decoded; `--config.decode_workers=4` decodes 4 videos at a time in
host threads (0, the default, picks min(8, CPUs); 1 decodes in the main thread).
"""

import ml_collections

from configs import common

# Kinetics-400 normalisation of torchvision's video models (S3D_Weights).
_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
_KINETICS_STD = (0.22803, 0.22145, 0.216989)

_PRESETS = {
    #           model   fps  frames crop  pool      output       batch  normalisation
    's3d': dict(model='s3d', fps=20.0, frames=30, crop=224, pool='window', output='features',
                batch=8, mean=_KINETICS_MEAN, std=_KINETICS_STD),
    's3dg': dict(model='s3dg', fps=30.0, frames=30, crop=224, pool='global',
                 output='video_embedding', batch=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    'demo': dict(model='s3d', fps=20.0, frames=30, crop=112, pool='global', output='features',
                 batch=4, mean=_KINETICS_MEAN, std=_KINETICS_STD),
}


def get_config(arg: str = 's3d') -> ml_collections.ConfigDict:
  """Returns the config of preset `arg` (s3d, s3dg or demo)."""
  preset, _ = common.parse_arg(arg, _PRESETS)
  p = _PRESETS[preset]
  c = ml_collections.ConfigDict()
  c.preset = preset
  # 's3d' (torchvision's S3D) or 's3dg' (MIL-NCE's S3D-G); vlm_jax.models.s3d.
  c.model = p['model']
  # How mixed_5c is pooled: 'window' (torchvision's (2, 7, 7) average pool, then
  # the mean; needs >= 13 frames x 209 px) or 'global' (the mean of the whole
  # map; any size). S3D-G always pools globally.
  c.pool = p['pool']
  # Which model output is saved: 'features' (1024-d mixed_5c pooled) or, for
  # s3dg only, 'video_embedding' (512-d).
  c.output = p['output']
  # PyTorch state_dict (.pth) in the model's layout; '' = seeded random weights.
  c.weights = ''
  # Seeds the random weights (used only without `weights`).
  c.seed = 0
  # Decoding: output frame rate, frames per clip, side of the centre crop.
  c.fps = p['fps']
  c.clip_frames = p['frames']
  c.crop_size = p['crop']
  # A short last clip: 'pad' (repeat its last frame) or 'drop'.
  c.last_clip = 'pad'
  # Per-channel normalisation, (pixel in [0, 1] - mean) / std, as the weights expect.
  c.input_mean = p['mean']
  c.input_std = p['std']
  # Clips per forward pass over all devices; a multiple of the data-parallel size.
  c.batch_size = p['batch']
  # Devices on the mesh's 'data' axis; 0 = all.
  c.num_devices = 0
  # Host threads decoding videos at once for the batches (vlm_jax.data.decode_ahead);
  # the features are the same bits whatever this is. 1 = decode in the main
  # thread, no threads. 0 = auto: min(8, the CPUs this process may use), since
  # PyAV releases the GIL while decoding (2 threads decode 4 videos 1.56x as
  # fast as one on 2 cores) and more threads than cores only compete (FFmpeg
  # already threads each decoder). Memory: 32 decoded clips queued in all
  # (s3d_features.DECODE_QUEUE_CLIPS), plus one per thread.
  c.decode_workers = 0
  # Compute dtype of the model ('float32', or 'bfloat16' on accelerators).
  c.compute_dtype = 'float32'
  # dtype of the saved features: 'float16' (half the disk) or 'float32'.
  c.dtype = 'float16'
  # Fraction of the videos that may fail to decode before the command fails
  # (exit status 1, after writing the others and the manifest). Half: a batch
  # where most videos fail is broken (a missing decoder, a wrong list), while
  # web-scraped corpora always lose a few files. 0 fails on any failure. A run
  # where no video has features fails whatever this is.
  c.max_failures = 0.5
  return c
