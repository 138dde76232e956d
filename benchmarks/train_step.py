"""VideoBERT train step vs Hugging Face BertForPreTraining (PyTorch), same shapes, one run.

  python benchmarks/train_step.py [--steps 10]

Shapes (issue 2): 4 layers x 256 hidden, 4 heads, MLP 1024, joint vocabulary
30,522 + 1 + 20,736 = 51,259, batch 32, sequence 128, 15% masked. vlm_jax
computes the vocabulary logits only at the (at most 20) masked positions;
BertForPreTraining computes them at every position (labels -100 elsewhere).
Both use AdamW with gradient clipping, on the CPU, with the same thread count.

Also measures the tf.data pipeline's examples/s against what the `tiny` preset's
train step consumes (examples/s), on the synthetic corpus.

Prints a Markdown table for benchmarks/RESULTS.md.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# torch 2.14.1 (the test extra's, a CUDA build) imports triton with transformers, and
# triton crashes beside jaxlib and TensorFlow; the CPU reference needs none.
sys.modules.setdefault('triton', None)

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import videobert as videobert_config  # pylint: disable=wrong-import-position
from vlm_jax.data import synthetic, tokenizer  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position
from vlm_jax.videobert import pipeline  # pylint: disable=wrong-import-position
from vlm_jax.videobert import step as step_lib  # pylint: disable=wrong-import-position

LAYERS, HIDDEN, HEADS, MLP = 4, 256, 4, 1024
VISUAL, BATCH, SEQ, MASK_PROB = 20736, 32, 128, 0.15
PREDICTIONS = int(round(SEQ * MASK_PROB)) + 1


def benchmark_config():
  config = videobert_config.get_config('base')
  m = config.model
  m.num_layers, m.hidden_size, m.num_heads, m.mlp_dim = LAYERS, HIDDEN, HEADS, MLP
  m.num_visual_tokens, m.visual_embedding_dim = VISUAL, HIDDEN
  config.data.seq_len, config.data.max_predictions = SEQ, PREDICTIONS
  config.train.global_batch_size, config.train.num_steps = BATCH, 1000
  config.optim.warmup_steps = 10
  config.mesh.data, config.mesh.model = 1, 1
  return config


def random_batch(rng, vocab_size):
  ids = rng.integers(1000, vocab_size, (BATCH, SEQ)).astype(np.int32)
  positions = np.stack([rng.choice(np.arange(1, SEQ - 1), PREDICTIONS, replace=False)
                        for _ in range(BATCH)]).astype(np.int32)
  return {
      'input_ids': ids,
      'token_type_ids': (np.arange(SEQ)[None] >= SEQ // 2).astype(np.int32).repeat(BATCH, 0),
      'attention_mask': np.ones((BATCH, SEQ), np.int32),
      'masked_positions': positions,
      'masked_ids': np.take_along_axis(ids, positions, 1),
      'masked_weights': np.ones((BATCH, PREDICTIONS), np.float32),
      'regime': np.full((BATCH,), 2, np.int32),
      'alignment_label': rng.integers(0, 2, BATCH).astype(np.int32),
  }


def time_steps(step, steps):
  step()  # compile / warm up
  step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - start)


def vlm_jax_steps_per_second(steps):
  config = benchmark_config()
  _, vocab = step_lib.load_vocab(config)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:1])
  state = setup.create_state(setup.init_params(jax.random.key(0)))
  batch = partitioning.device_batch(random_batch(np.random.default_rng(0), vocab.size), setup.mesh)
  holder = {'state': state}

  def step():
    holder['state'], metrics = setup.train_step(holder['state'], batch)
    jax.block_until_ready(metrics['loss'])

  return time_steps(step, steps), vocab.size


def torch_steps_per_second(steps, vocab_size):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
      num_attention_heads=HEADS, intermediate_size=MLP, max_position_embeddings=512))
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  b = random_batch(np.random.default_rng(0), vocab_size)
  labels = np.full((BATCH, SEQ), -100, np.int64)
  np.put_along_axis(labels, b['masked_positions'].astype(np.int64), b['masked_ids'], 1)
  inputs = dict(input_ids=torch.tensor(b['input_ids'], dtype=torch.long),
                token_type_ids=torch.tensor(b['token_type_ids'], dtype=torch.long),
                attention_mask=torch.tensor(b['attention_mask'], dtype=torch.long),
                labels=torch.tensor(labels),
                next_sentence_label=torch.tensor(b['alignment_label'], dtype=torch.long))

  def step():
    optimizer.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

  return time_steps(step, steps)


def pipeline_vs_tiny_step(steps):
  """(pipeline examples/s, tiny train-step examples/s) on the synthetic corpus."""
  config = videobert_config.get_config('tiny')
  config.mesh.data = 1
  tok, vocab = step_lib.load_vocab(config)
  with tempfile.TemporaryDirectory() as tmp:
    files = synthetic.write_corpus(tmp, 500, lambda t: tokenizer.wordpieces(tok, t),
                                   config.model.num_visual_tokens)
    ds = pipeline.make_dataset(files, pipeline.PipelineOptions.from_config(config.data), vocab,
                               config.train.global_batch_size, seed=0)
    it = pipeline.BatchIterator(ds, files)
    for _ in range(5):
      next(it)
    n = 200
    start = time.perf_counter()
    for _ in range(n):
      batch = next(it)
    pipeline_rate = n * config.train.global_batch_size / (time.perf_counter() - start)
  setup = step_lib.build(config, vocab, devices=jax.devices()[:1])
  holder = {'state': setup.create_state(setup.init_params(jax.random.key(0)))}
  device_batch = partitioning.device_batch(batch, setup.mesh)

  def step():
    holder['state'], metrics = setup.train_step(holder['state'], device_batch)
    jax.block_until_ready(metrics['loss'])

  step_rate = time_steps(step, steps) * config.train.global_batch_size
  return pipeline_rate, step_rate


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  ours, vocab_size = vlm_jax_steps_per_second(args.steps)
  theirs = torch_steps_per_second(args.steps, vocab_size)
  pipe, consume = pipeline_vs_tiny_step(args.steps)
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
        f'jax {jax.__version__}, torch {torch.__version__}')
  print()
  print('| measurement | vlm_jax | reference | ratio |')
  print('|---|---|---|---|')
  print(f'| train step, 4x256, vocab {vocab_size}, batch {BATCH}, seq {SEQ} (steps/s) | '
        f'{ours:.3f} | {theirs:.3f} (HF BertForPreTraining, PyTorch) | {ours / theirs:.2f}x |')
  print(f'| tf.data pipeline vs tiny train step (examples/s) | {pipe:.0f} (pipeline) | '
        f'{consume:.1f} (tiny step consumes) | {pipe / consume:.1f}x |')


if __name__ == '__main__':
  main()
