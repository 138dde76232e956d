"""Accelerator throughput and MFU of VideoBERT train steps, against HF BERT (PyTorch), one run.

  python benchmarks/throughput.py [--presets large,base] [--batch 32] [--seq_len 512]
      [--steps 20] [--variants 'default;rbg:train.dropout_rng=rbg']

A variant is `name:key=value,key=value` (config overrides); `default` has none.

For each preset: a bf16-compute, f32-parameter train step of vlm_jax (joint
vocabulary, AdamW, dropout on) on all visible devices (data parallel), then
Hugging Face `BertForPreTraining` with the same shapes under bf16 autocast on
the same accelerator when PyTorch sees one. Prints steps/s, tokens/s, model
TFLOP/s and MFU (model FLOPs from `vlm_jax.train.flops`, peak from the device
name) and XLA's own FLOP count of the compiled step as a cross-check. Needs no
tf.data, tokenizer files or pretrained weights, so it runs on a bare
accelerator machine with only jax, flax, optax and ml-collections.
"""

import argparse
import os
import time

# PyTorch's reference runs in the same process: JAX must not take 75% of the GPU up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import videobert as videobert_config  # pylint: disable=wrong-import-position
from vlm_jax.train import flops, partitioning  # pylint: disable=wrong-import-position
from vlm_jax.videobert import step as step_lib  # pylint: disable=wrong-import-position
from vlm_jax.videobert import vocab as vocab_lib  # pylint: disable=wrong-import-position


def parse_value(text: str):
  lowered = text.lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_variants(text: str) -> list[tuple[str, list[str]]]:
  variants = []
  for item in filter(None, text.split(';')):
    name, _, overrides = item.partition(':')
    variants.append((name, [o for o in overrides.split(',') if o]))
  return variants


def make_config(preset: str, batch: int, seq_len: int, overrides) -> ml_collections.ConfigDict:
  config = videobert_config.get_config(preset)
  config.model.dtype = 'bfloat16'
  config.model.param_dtype = 'float32'
  config.data.seq_len = seq_len
  config.data.max_predictions = round(seq_len * 0.15) + 1
  config.train.global_batch_size = batch
  config.mesh.data, config.mesh.model = jax.device_count(), 1
  for item in overrides:
    key, value = item.split('=', 1)
    *path, leaf = key.split('.')
    node = config
    for part in path:
      node = node[part]
    node[leaf] = parse_value(value)
  return config


def random_batch(rng, vocab_size: int, batch: int, seq: int, predictions: int) -> dict:
  """A full-length video-text batch with `predictions` masked positions per row."""
  ids = rng.integers(1000, vocab_size, (batch, seq)).astype(np.int32)
  positions = np.stack([rng.choice(np.arange(1, seq - 1), predictions, replace=False)
                        for _ in range(batch)]).astype(np.int32)
  return {
      'input_ids': ids,
      'token_type_ids': (np.arange(seq)[None] >= seq // 2).astype(np.int32).repeat(batch, 0),
      'attention_mask': np.ones((batch, seq), np.int32),
      'masked_positions': positions,
      'masked_ids': np.take_along_axis(ids, positions, 1),
      'masked_weights': np.ones((batch, predictions), np.float32),
      'regime': np.full((batch,), 2, np.int32),
      'alignment_label': rng.integers(0, 2, batch).astype(np.int32),
  }


def time_steps(step, steps: int) -> float:
  """Steps per second after two warm-up calls (compile, then first run)."""
  step()
  step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - start)


def vlm_jax_rate(config, vocab, steps: int) -> tuple[float, float | None, float]:
  """(steps/s, XLA FLOPs per step or None, compiled step's memory per device GiB)."""
  setup = step_lib.build(config, vocab)
  state = setup.create_state(setup.init_params(jax.random.key(0)))
  host_batch = random_batch(np.random.default_rng(0), vocab.size, config.train.global_batch_size,
                            config.data.seq_len, config.data.max_predictions)
  batch = partitioning.device_batch(host_batch, setup.mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          batch)
  compiled = setup.compile_step(abstract)
  m = compiled.memory_analysis()
  memory = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes) / 2**30
  cost = compiled.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  xla_flops = cost.get('flops') if cost else None
  if xla_flops is not None:
    xla_flops *= jax.device_count()  # per-device program
  holder = {'state': state}

  def step():
    holder['state'], metrics = setup.train_step(holder['state'], batch)
    jax.block_until_ready(metrics['loss'])

  return time_steps(step, steps), xla_flops, memory


def torch_rate(config, vocab_size: int, steps: int) -> tuple[float, str] | None:
  """HF BertForPreTraining steps/s under bf16 autocast on the CUDA device, if any."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  if not torch.cuda.is_available():
    return None
  m = config.model
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
      num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim,
      max_position_embeddings=m.max_position_embeddings)).cuda()
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
  b = random_batch(np.random.default_rng(0), vocab_size, config.train.global_batch_size,
                   config.data.seq_len, config.data.max_predictions)
  labels = np.full(b['input_ids'].shape, -100, np.int64)
  np.put_along_axis(labels, b['masked_positions'].astype(np.int64), b['masked_ids'], 1)
  inputs = dict(input_ids=torch.tensor(b['input_ids'], dtype=torch.long),
                token_type_ids=torch.tensor(b['token_type_ids'], dtype=torch.long),
                attention_mask=torch.tensor(b['attention_mask'], dtype=torch.long),
                labels=torch.tensor(labels),
                next_sentence_label=torch.tensor(b['alignment_label'], dtype=torch.long))
  inputs = {k: v.cuda() for k, v in inputs.items()}

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
      loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    torch.cuda.synchronize()

  rate = time_steps(step, steps)
  name = f'HF BertForPreTraining, torch {torch.__version__}, bf16 autocast, ' \
         f'{model.config._attn_implementation} attention'  # pylint: disable=protected-access
  return rate, name


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--presets', default='large,base')
  parser.add_argument('--batch', type=int, default=32, help='global batch size')
  parser.add_argument('--seq_len', type=int, default=512)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--variants', default='default',
                      help="';'-separated name:key=value,key=value config overrides")
  parser.add_argument('--no_reference', action='store_true', help='skip PyTorch')
  args = parser.parse_args()

  device = jax.devices()[0]
  peak = flops.peak_flops(device)
  print(f'jax {jax.__version__}, {jax.device_count()} x {device.device_kind} '
        f'({device.platform}); bf16 peak {peak / 1e12 if peak else "unknown"} TFLOP/s per chip; '
        f'batch {args.batch}, seq {args.seq_len}')
  print()
  print('| preset | implementation | steps/s | tokens/s | model TFLOP/s | MFU | '
        'XLA TFLOP/step | step memory GiB | vs reference |')
  print('|---|---|---|---|---|---|---|---|---|')
  for preset in args.presets.split(','):
    config = make_config(preset, args.batch, args.seq_len, [])
    vocab = vocab_lib.JointVocab(config.model.text_vocab_size, config.model.num_visual_tokens)
    tokens = args.batch * args.seq_len

    def row(name, model_config, rate, xla_flops, memory, ratio):
      achieved = rate * flops.train_flops(model_config, vocab.size, args.batch, args.seq_len,
                                          config.data.max_predictions)
      mfu = f'{achieved / (peak * jax.device_count()):.1%}' if peak else 'n/a'
      xla = f'{xla_flops / 1e12:.2f}' if xla_flops else 'n/a'
      print(f'| {preset} | {name} | {rate:.3f} | {rate * tokens:,.0f} | {achieved / 1e12:.1f} | '
            f'{mfu} | {xla} | {memory:.1f} | {ratio} |', flush=True)

    # The reference first: PyTorch hands its cache back, JAX's allocator keeps what it took.
    reference = None if args.no_reference else torch_rate(config, vocab.size, args.steps)
    if reference:
      import torch  # pylint: disable=import-outside-toplevel
      torch.cuda.empty_cache()  # the reference's model is gone: hand its memory back
    if reference:
      row(reference[1], config.model, reference[0], None, float('nan'), '1.00x')
    for name, overrides in parse_variants(args.variants):
      variant = make_config(preset, args.batch, args.seq_len, overrides)
      rate, xla_flops, memory = vlm_jax_rate(variant, vocab, args.steps)
      ratio = f'{rate / reference[0]:.2f}x' if reference else 'n/a'
      row(f'vlm_jax {name} {" ".join(overrides)}'.strip(), variant.model, rate, xla_flops, memory, ratio)


if __name__ == '__main__':
  main()
