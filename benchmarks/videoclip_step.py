"""VideoCLIP contrastive train step vs the same two towers in PyTorch (transformers), one run.

  python benchmarks/videoclip_step.py [--steps 10 --runs 3] [--preset tiny|base]

Shapes: the `tiny` preset's towers (text 6 x 384, video the first 3 layers,
12 heads, MLP 1536) or `base` (12 x 768, video 6), 512-d per-second features,
a batch of 8 videos x 4 pairs = 32 pairs, text [CLS] + 61 + [SEP] = 63
positions, video [CLS] + 32 s + [SEP] = 34. Both sides: feature MLP (Linear,
GELU, LayerNorm, Linear), masked mean pooling without [CLS], the symmetric
InfoNCE loss, Adam (0.9, 0.98) with clipping at 2.0, dropout on, on the CPU
with the same thread count. The reference builds its towers from
transformers.BertModel (video tower fed `inputs_embeds`; its whole word table
is kept, where vlm_jax's video tower keeps the [CLS] and [SEP] rows it uses).
Each side runs --runs times, each run a process of its own, the sides taking
turns; each side's rate is its median over its runs.

Prints a Markdown row for benchmarks/RESULTS.md.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# torch 2.14.1 (the test extra's, a CUDA build) imports triton with transformers, and
# triton crashes beside jaxlib and TensorFlow; the CPU reference needs none.
sys.modules.setdefault('triton', None)

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import videoclip as videoclip_config  # pylint: disable=wrong-import-position
from vlm_jax import host_memory  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position
from vlm_jax.videoclip import step as videoclip_step  # pylint: disable=wrong-import-position

VIDEOS, PAIRS, DIM, SECONDS, TEXT = 8, 4, 512, 32, 63


def benchmark_config(preset: str, dropout_rng: str = 'threefry2x32'):
  config = videoclip_config.get_config(preset)
  config.train.dropout_rng = dropout_rng
  config.model.init_checkpoint = ''  # shapes only: random weights on both sides
  config.data.videos_per_batch, config.data.pairs_per_video = VIDEOS, PAIRS
  config.train.num_epochs, config.train.steps_per_epoch = 1, 1000
  config.optim.warmup_steps = 10
  config.mesh.data, config.mesh.model = 1, 1
  return config


def random_batch(rng) -> dict[str, np.ndarray]:
  n = VIDEOS * PAIRS
  seconds = rng.integers(3, SECONDS + 1, n)
  words = rng.integers(8, TEXT - 1, n)
  ids = rng.integers(1000, 30000, (n, TEXT)).astype(np.int32)
  ids[:, 0] = 101
  text_mask = (np.arange(TEXT)[None] < (words + 2)[:, None]).astype(np.int32)
  ids[np.arange(n), words + 1] = 102
  return {
      'features': rng.normal(size=(n, SECONDS, DIM)).astype(np.float32),
      'feature_mask': (np.arange(SECONDS)[None] < seconds[:, None]).astype(np.int32),
      'input_ids': ids * text_mask,
      'attention_mask': text_mask,
  }


def steps_per_second(step, steps: int) -> float:
  step()  # compile / warm up
  step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - start)


def vlm_jax_step(preset: str, dropout_rng: str):
  setup = videoclip_step.build(benchmark_config(preset, dropout_rng), devices=jax.devices()[:1])
  holder = {'state': setup.sharded.create_state(setup.sharded.init_params(jax.random.key(0)))}
  batch = partitioning.device_batch(random_batch(np.random.default_rng(0)), setup.mesh)

  def step():
    holder['state'], metrics = setup.train_step(holder['state'], batch)
    jax.block_until_ready(metrics['loss'])

  return step


def torch_step(preset: str):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  m = benchmark_config(preset).model
  torch.manual_seed(0)

  def tower(layers):
    return transformers.BertModel(transformers.BertConfig(
        hidden_size=m.hidden_size, num_hidden_layers=layers, num_attention_heads=m.num_heads,
        intermediate_size=m.mlp_dim), add_pooling_layer=False)

  text_tower, video_tower = tower(m.num_layers), tower(m.video_layers)
  mlp = torch.nn.Sequential(torch.nn.Linear(DIM, m.hidden_size), torch.nn.GELU(),
                            torch.nn.LayerNorm(m.hidden_size, eps=1e-12),
                            torch.nn.Linear(m.hidden_size, m.hidden_size))
  modules = torch.nn.ModuleList([text_tower, video_tower, mlp])
  modules.train()
  optimizer = torch.optim.Adam(modules.parameters(), lr=5e-5, betas=(0.9, 0.98))
  b = {k: torch.tensor(v) for k, v in random_batch(np.random.default_rng(0)).items()}
  n = VIDEOS * PAIRS
  lengths = b['feature_mask'].sum(1)
  positions = torch.arange(SECONDS + 2)[None]
  video_mask = (positions <= (lengths + 1)[:, None]).long()
  sep_here = (positions == (lengths + 1)[:, None])
  cls_id, sep_id = 101, 102

  def pooled(hidden, mask):
    weights = mask.clone().float()
    weights[:, 0] = 0
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)

  def step():
    optimizer.zero_grad()
    table = video_tower.embeddings.word_embeddings.weight
    seconds = mlp(b['features']) * b['feature_mask'][..., None]
    tokens = torch.cat([table[cls_id].expand(n, 1, -1), seconds,
                        torch.zeros(n, 1, m.hidden_size)], dim=1)
    tokens = torch.where(sep_here[..., None], table[sep_id], tokens)
    z_video = pooled(video_tower(inputs_embeds=tokens, attention_mask=video_mask)
                     .last_hidden_state, video_mask)
    z_text = pooled(text_tower(input_ids=b['input_ids'].long(),
                               attention_mask=b['attention_mask'].long()).last_hidden_state,
                    b['attention_mask'])
    scores = z_video @ z_text.T
    labels = torch.arange(n)
    loss = (torch.nn.functional.cross_entropy(scores, labels)
            + torch.nn.functional.cross_entropy(scores.T, labels))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(modules.parameters(), 2.0)
    optimizer.step()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=10, help='Timed steps per run.')
  parser.add_argument('--runs', type=int, default=3,
                      help='Processes per side, the sides taking turns; the median counts.')
  parser.add_argument('--preset', default='tiny', choices=['tiny', 'base'])
  parser.add_argument('--dropout_rng', default='threefry2x32',
                      choices=['threefry2x32', 'rbg', 'unsafe_rbg'])
  parser.add_argument('--only', choices=['torch', 'vlm_jax'],
                      help='Time one side in this process and print its steps/s.')
  parser.add_argument('--malloc', default='vlm_jax', choices=['vlm_jax', 'both', 'neither'],
                      help="Which side runs with vlm_jax's allocator setting "
                           '(vlm_jax.host_memory, as `vlm-jax` applies it).')
  args = parser.parse_args()
  if args.only:
    if args.malloc == 'both' or (args.malloc == 'vlm_jax' and args.only == 'vlm_jax'):
      host_memory.retain_freed_memory()
    if args.only == 'torch':
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(os.cpu_count())
      step = torch_step(args.preset)
    else:
      step = vlm_jax_step(args.preset, args.dropout_rng)
    print(f'STEPS_PER_SECOND {steps_per_second(step, args.steps)}')
    return

  # One process per measurement, so neither side's thread pools (OpenMP threads
  # spin after a parallel region) run beside the other's steps.
  rates = {'torch': [], 'vlm_jax': []}
  for _ in range(args.runs):
    for side in rates:
      out = subprocess.run(
          [sys.executable, __file__, f'--only={side}', f'--steps={args.steps}',
           f'--preset={args.preset}', f'--dropout_rng={args.dropout_rng}',
           f'--malloc={args.malloc}'],
          capture_output=True, text=True, check=True)
      rates[side].append(float(out.stdout.split('STEPS_PER_SECOND')[-1]))
  ours, theirs = np.median(rates['vlm_jax']), np.median(rates['torch'])
  import torch  # pylint: disable=import-outside-toplevel
  pairs = VIDEOS * PAIRS
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
        f'jax {jax.__version__}, torch {torch.__version__}')
  print('examples/s per run: ' + '; '.join(
      f'{side} ' + ', '.join(f'{r * pairs:.1f}' for r in runs) for side, runs in rates.items()))
  print()
  print('| measurement | vlm_jax | reference | ratio |')
  print('|---|---|---|---|')
  print(f'| VideoCLIP train step, {args.preset} towers, {pairs} pairs, dropout PRNG '
        f'{args.dropout_rng}, allocator setting: {args.malloc} (examples/s, median of '
        f'{args.runs} runs) | '
        f'{ours * pairs:.1f} | {theirs * pairs:.1f} (2 x transformers BertModel, PyTorch) | '
        f'{ours / theirs:.2f}x |')


if __name__ == '__main__':
  main()
