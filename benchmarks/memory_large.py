"""Memory per device of a BERT-large VideoBERT train step on a 4-device mesh.

  python benchmarks/memory_large.py [--variants f32,bf16_remat] [--seq_len 512] [--layers 24]

Compiles (never runs) the train step of the `large` preset (24 x 1024, 16 heads,
joint vocabulary 51,259, sequence 512, global batch 128) for a data=2 x model=2
mesh of 4 emulated CPU devices, and prints XLA's memory analysis of the compiled
per-device program: arguments (parameters, optimizer state, batch), outputs,
temporaries. Variants: f32 compute, and bf16 compute with f32 parameters and
per-layer rematerialisation.

What the CPU numbers do and don't say about a TPU (measured with `--layers 2`
and `--layers 4`: temporaries grow linearly with the layers):
  * XLA:CPU schedules for concurrency by default
    (CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED); under
    `XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`
    the per-layer temporaries drop from 4.5 to 3.25 GiB (f32) and from 3.15 to
    2.43 GiB (bf16 + remat).
  * Remat saves little on CPU because nothing orders a layer's recomputation
    after the backward of the layer above it: the CPU scheduler runs the
    recomputations of all layers early, and at the peak (the masked-token head)
    every layer's recomputed attention probabilities and MLP activations are
    live. TPU/GPU schedulers are memory-aware; there, per-layer remat keeps
    only each layer's input.
  * XLA:CPU computes bf16 dots and elementwise ops in f32, so the bf16 variant
    still holds f32 copies of activations ([64, 8, 512, 512] attention
    probabilities, [32768, 2048] MLP activations per layer and device).
  * Fixed part (~2.5-4 GiB): the masked-token logits [64, 78, 51,259] in f32
    (0.95 GiB) and an all-reduce copy of them: the head's transform output is
    sharded over `model` ('mlp' axis), so the tied-embedding einsum contracts
    a sharded dimension.
"""

import argparse
import os
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import videobert as videobert_config  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position
from vlm_jax.videobert import step as step_lib  # pylint: disable=wrong-import-position

VARIANTS = {
    'f32': dict(dtype='float32', remat=False),
    'bf16': dict(dtype='bfloat16', remat=False),
    'bf16_remat': dict(dtype='bfloat16', remat=True),
}
GIB = 2**30


def abstract_batch(config, mesh):
  sharding = partitioning.batch_sharding(mesh)
  batch, seq, preds = config.train.global_batch_size, config.data.seq_len, config.data.max_predictions
  shapes = {'input_ids': ((batch, seq), np.int32), 'token_type_ids': ((batch, seq), np.int32),
            'attention_mask': ((batch, seq), np.int32),
            'masked_positions': ((batch, preds), np.int32),
            'masked_ids': ((batch, preds), np.int32),
            'masked_weights': ((batch, preds), np.float32),
            'regime': ((batch,), np.int32), 'alignment_label': ((batch,), np.int32)}
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding) for k, (s, d) in shapes.items()}


def measure(variant: str, seq_len: int, layers: int | None = None):
  config = videobert_config.get_config('large')
  if layers:
    config.model.num_layers = layers
  config.model.dtype = VARIANTS[variant]['dtype']
  config.model.remat = VARIANTS[variant]['remat']
  config.data.seq_len = seq_len
  config.data.max_predictions = round(seq_len * 0.15) + 1
  config.mesh.data, config.mesh.model = 2, 2
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab)
  start = time.perf_counter()
  compiled = setup.compile_step(abstract_batch(config, setup.mesh))
  seconds = time.perf_counter() - start
  m = compiled.memory_analysis()
  return {'compile_s': seconds, 'arguments': m.argument_size_in_bytes / GIB,
          'outputs': m.output_size_in_bytes / GIB, 'aliased': m.alias_size_in_bytes / GIB,
          'temporaries': m.temp_size_in_bytes / GIB,
          'total': (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                    + m.temp_size_in_bytes) / GIB}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default='f32,bf16_remat')
  parser.add_argument('--seq_len', type=int, default=512)
  parser.add_argument('--layers', type=int, default=None,
                      help='fewer layers than 24 compile in seconds (memory is linear in them)')
  args = parser.parse_args()
  print(f'jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices, '
        f'mesh data=2 x model=2, large preset ({args.layers or 24} layers), seq {args.seq_len}, '
        'global batch 128')
  print()
  print('| variant | arguments GiB | outputs GiB | aliased GiB | temporaries GiB | '
        'total per device GiB | compile s |')
  print('|---|---|---|---|---|---|---|')
  for variant in args.variants.split(','):
    r = measure(variant, args.seq_len, args.layers)
    print(f'| {variant} | {r["arguments"]:.2f} | {r["outputs"]:.2f} | {r["aliased"]:.2f} | '
          f'{r["temporaries"]:.2f} | {r["total"]:.2f} | {r["compile_s"]:.0f} |', flush=True)


if __name__ == '__main__':
  main()
