"""Memory per device of ClipBERT's train step on 4 emulated devices (compile only).

  python benchmarks/clipbert_memory.py [--variants bf16,bf16_remat] [--image_size 448]
      [--batch 4] [--clips 8] [--preset base]

Lowers and compiles (never runs) the `base` train step (detectron2 R-50 with
stem and res2 frozen, BERT-base, matching with one negative caption: 2 texts
per video, 20 text tokens + 49 visual ones at 448 px) for a data=4 mesh of
emulated CPU devices, and prints XLA's memory analysis of the per-device
program: arguments (parameters, AdamW moments, the batch), outputs,
temporaries. The default global batch of 4 is one video per chip: each video
is 8 clips x 2 frames = 16 R-50 passes and 8 x 2 = 16 BERT sequences.
Variants: bf16 compute with float32 params (the config's) with and without
rematerialisation of every bottleneck block and transformer layer.

The CPU's numbers are an upper bound for a TPU's: XLA:CPU schedules for
concurrency rather than memory, and keeps float32 copies of bf16 activations
(see benchmarks/memory_large.py's docstring for the measurements behind this).
"""

import argparse
import os
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=wrong-import-position

from configs import clipbert as clipbert_config  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import checks  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import step as step_lib  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position

VARIANTS = {
    'f32': dict(dtype='float32', remat=False),
    'bf16': dict(dtype='bfloat16', remat=False),
    'bf16_remat': dict(dtype='bfloat16', remat=True),
}
GIB = 2**30


def measure(variant: str, preset: str, image_size: int, batch: int, clips: int) -> dict:
  """{'compile_s', 'arguments', 'outputs', 'aliased', 'temporaries', 'total'} (GiB per device)."""
  config = clipbert_config.get_config(preset)
  config.model.dtype = VARIANTS[variant]['dtype']
  config.model.remat = VARIANTS[variant]['remat']
  config.data.image_size, config.data.num_clips = image_size, clips
  config.train.global_batch_size = batch
  checks.validate(config, jax.device_count(), jax.process_count())
  setup = step_lib.build(config)
  sharding = partitioning.batch_sharding(setup.mesh)
  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
              for k, v in step_lib.abstract_batch(config).items()}
  start = time.perf_counter()
  lowered = setup.sharded.in_mesh(setup.jitted_step.lower)(setup.sharded.abstract_state,
                                                           abstract)
  m = lowered.compile().memory_analysis()
  seconds = time.perf_counter() - start
  return {'compile_s': seconds, 'arguments': m.argument_size_in_bytes / GIB,
          'outputs': m.output_size_in_bytes / GIB, 'aliased': m.alias_size_in_bytes / GIB,
          'temporaries': m.temp_size_in_bytes / GIB,
          'total': (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                    + m.temp_size_in_bytes) / GIB}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default='bf16,bf16_remat')
  parser.add_argument('--preset', default='base')
  parser.add_argument('--image_size', type=int, default=448)
  parser.add_argument('--batch', type=int, default=4, help='global batch (videos)')
  parser.add_argument('--clips', type=int, default=8)
  args = parser.parse_args()
  print(f'jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices, '
        f'mesh data={jax.device_count()}, {args.preset} preset, {args.clips} clips x 2 frames '
        f'at {args.image_size} px, global batch {args.batch}')
  print()
  print('| variant | arguments GiB | outputs GiB | aliased GiB | temporaries GiB | '
        'total per device GiB | compile s |')
  print('|---|---|---|---|---|---|---|')
  for variant in args.variants.split(','):
    r = measure(variant, args.preset, args.image_size, args.batch, args.clips)
    print(f'| {variant} | {r["arguments"]:.2f} | {r["outputs"]:.2f} | {r["aliased"]:.2f} | '
          f'{r["temporaries"]:.2f} | {r["total"]:.2f} | {r["compile_s"]:.0f} |', flush=True)


if __name__ == '__main__':
  main()
