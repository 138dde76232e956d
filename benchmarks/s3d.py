"""Flax S3D inference against torchvision's `s3d` on the CPU, same weights and input.

  python benchmarks/s3d.py [--batch 2] [--frames 16] [--size 224] [--iters 5]

Needs torchvision, which is not a project dependency: run it in a venv with
torch==2.14.1 and torchvision==0.29.1 (see benchmarks/RESULTS.md). One
process: torchvision's S3D (random init, random BatchNorm statistics so BN is
not the identity, eval mode, `torch.inference_mode`), its weights converted to
Flax with vlm_jax.convert.s3d_torch, the same clip batch through both. The
Flax forward is `jax.jit(S3D().apply)` (compiled once, before timing); both
outputs are checked to agree before timing. Torch threads = the CPU count, as
XLA's CPU backend uses every core.

Prints a Markdown table: clips/s of each (the best of `--iters` timed
forwards after one warm-up, the two models' runs interleaved) and their ratio,
and the forward's FLOPs per clip as XLA's cost analysis counts them (what an
accelerator's clips/s can be estimated from).
"""

import argparse
import os
import platform
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position
import torchvision  # pylint: disable=wrong-import-position

from vlm_jax.convert import s3d_torch  # pylint: disable=wrong-import-position
from vlm_jax.models import s3d  # pylint: disable=wrong-import-position


def reference_model() -> torch.nn.Module:
  torch.manual_seed(0)
  model = torchvision.models.video.s3d().eval()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
  return model


def best_seconds(fns, iters: int) -> list[float]:
  """The fastest of `iters` runs of each function, the runs interleaved.

  Interleaving spreads a busy spell of a shared machine over both models.
  """
  for fn in fns:
    fn()  # warm-up (and, for JAX, the compiled program's first run)
  best = [np.inf] * len(fns)
  for _ in range(iters):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - start)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--iters', type=int, default=5)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  video = np.random.default_rng(0).standard_normal(
      (args.batch, args.frames, args.size, args.size, 3)).astype(np.float32)

  ref = reference_model()
  x = torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))

  def torch_forward():
    with torch.inference_mode():
      return ref(x).numpy()

  variables = jax.device_put(s3d_torch.torchvision_to_flax(ref.state_dict()))
  apply = jax.jit(s3d.S3D().apply)
  video_device = jax.device_put(video)
  start = time.perf_counter()
  got = np.asarray(apply(variables, video_device)['logits'])
  compile_s = time.perf_counter() - start

  cost = apply.lower(variables, video_device).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # a list in older jax
  gflop_per_clip = cost['flops'] / args.batch / 1e9

  def jax_forward():
    return apply(variables, video_device)['logits'].block_until_ready()

  want = torch_forward()
  diff, scale = np.abs(got - want).max(), np.abs(want).max()
  if diff > 1e-3 * scale:
    raise RuntimeError(f'outputs differ: max|diff| {diff:.3g}, max|ref| {scale:.3g}')

  torch_s, jax_s = best_seconds([torch_forward, jax_forward], args.iters)
  print(f'{platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__}, '
        f'torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision '
        f'{torchvision.__version__}; logits agree to {diff:.2g} (max |logit| {scale:.2g}); '
        f'JAX compile + first run {compile_s:.1f} s; XLA counts {gflop_per_clip:.1f} GFLOP '
        'per clip\n')
  shape = f'{args.batch} clips x {args.frames} x {args.size} x {args.size}'
  print('| model | input | vlm_jax (Flax, jit) clips/s | torchvision clips/s | ratio |')
  print('|---|---|---|---|---|')
  print(f'| S3D (Kinetics-400 head), inference | {shape} | {args.batch / jax_s:.2f} | '
        f'{args.batch / torch_s:.2f} | {torch_s / jax_s:.2f}x |')


if __name__ == '__main__':
  main()
