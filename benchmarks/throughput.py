"""VideoBERT's train step on an accelerator: a plan of timed sections for a short lease.

  python benchmarks/throughput.py [--plan accelerator|cpu_smoke] [--budget_s 540]
      [--output benchmarks/throughput.jsonl] [--only step:recipe,profile:recipe]

A plan is its sections in priority order, each with an estimate of its seconds
(compiles included): a section that would overrun the budget is skipped, and a
`skipped` row says so. Every result is appended to the jsonl as it comes, with
the device, the versions and the date, so a lease cut short keeps what ran.

  preflight     devices, versions, the bf16 peak; fails fast (exit 1, one line) on
                a CPU where an accelerator was expected, an imported TensorFlow,
                a wrong bf16 product or an attention recipe the backend lacks
  ceilings      bf16 GEMM TFLOP/s at the model's product shapes; copy GB/s
  attention     each implementation's forward + backward at the model's shape,
                its relative L2 error against f32 written out, pass or fail
  step:NAME     train steps back to back, one block per window (VARIANTS):
                today's defaults, the accelerator recipe (configs/videobert.py
                `gpu` / `tpu`), it at twice the batch, it with other XLA GEMM
                options for this executable alone, base
  profile:NAME  one variant's kernel time by bucket (GEMM, attention, RNG,
                fusions, copies, other) and its 20 longest kernels
  reference:P   Hugging Face BertForPreTraining (PyTorch, bf16 autocast) at the
                same shapes on the same device
  dropout_bits  a dropout mask by the unrolled hash and by jaxlib's kernel
                (vlm_jax.models.dropout.bits_mode)

MFU counts model FLOPs (vlm_jax.train.flops) over the device name's bf16 peak;
the profile sums kernel time over streams (on a CPU over threads, so it can
exceed the wall time).
The accelerator machine has no TensorFlow: this imports nothing that needs
it (pip install jax[cuda13] flax optax ml-collections tokenizers, and
torch transformers for the reference; README "Benchmarks"). `cpu_smoke` runs
every section on tiny shapes (tests/test_throughput.py).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

# PyTorch's reference runs in the same process: JAX must not take 75% of the GPU up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import videobert as videobert_config  # pylint: disable=wrong-import-position
from vlm_jax.models import attention, dropout  # pylint: disable=wrong-import-position
from vlm_jax.train import flops, partitioning  # pylint: disable=wrong-import-position
from vlm_jax.videobert import step as step_lib  # pylint: disable=wrong-import-position
from vlm_jax.videobert import vocab as vocab_lib  # pylint: disable=wrong-import-position


@dataclasses.dataclass(frozen=True)
class Shapes:
  preset: str  # configs/videobert.py's argument
  batch: int
  seq_len: int


@dataclasses.dataclass(frozen=True)
class Plan:
  name: str
  shapes: dict[str, Shapes]  # 'large', 'base'
  steps: int  # steps per timed window
  windows: int  # timed windows, after one untimed
  sections: tuple[tuple[str, float], ...]  # (section, estimated seconds), by priority
  accelerator: bool  # preflight fails on a CPU
  # Pallas's TPU kernel in interpret mode where there is no TPU (its times mean nothing).
  interpret_tpu_kernels: bool = False


PLANS = {
    'accelerator': Plan(
        'accelerator', {'large': Shapes('large', 32, 512), 'base': Shapes('base', 32, 512)},
        steps=10, windows=3, accelerator=True, sections=(
            ('preflight', 30), ('ceilings', 30), ('attention', 45), ('step:default', 90),
            ('step:recipe', 75), ('reference:large', 90), ('profile:recipe', 60),
            ('step:recipe_b64', 100), ('step:recipe_gemm_options', 75),
            ('step:base_recipe', 50), ('reference:base', 50), ('dropout_bits', 20),
            ('step:recipe_unrolled_bits', 75))),
    'cpu_smoke': Plan(
        'cpu_smoke', {'large': Shapes('tiny,runlocal', 4, 32),
                      'base': Shapes('tiny,runlocal', 4, 16)},
        steps=2, windows=1, accelerator=False, interpret_tpu_kernels=True, sections=(
            ('preflight', 5), ('ceilings', 5), ('attention', 20), ('step:default', 15),
            ('step:recipe', 15), ('reference:large', 10), ('profile:recipe', 15),
            ('step:recipe_b64', 15), ('step:recipe_gemm_options', 15),
            ('step:base_recipe', 15), ('reference:base', 10), ('dropout_bits', 5),
            ('step:recipe_unrolled_bits', 15))),
}

# XLA options for one executable (Executable.compile(compiler_options=...)): MaxText's
# H100 recipe turns Triton's GEMMs off for cuBLAS's; the CPU's is only for the smoke.
GEMM_OPTIONS = {'gpu': {'xla_gpu_enable_triton_gemm': False},
                'cpu': {'xla_cpu_use_xnnpack': False}}


@dataclasses.dataclass(frozen=True)
class Variant:
  shapes: str = 'large'
  recipe: bool = False  # the accelerator recipe (configs/videobert.py `gpu` / `tpu`)
  batch_scale: int = 1
  gemm_options: bool = False
  bits: str = 'auto'  # dropout.bits_mode


VARIANTS = {
    'default': Variant(),
    'recipe': Variant(recipe=True),
    'recipe_b64': Variant(recipe=True, batch_scale=2),
    'recipe_gemm_options': Variant(recipe=True, gemm_options=True),
    'recipe_unrolled_bits': Variant(recipe=True, bits='unrolled'),
    'base_recipe': Variant(shapes='base', recipe=True),
}

# Kernel names -> buckets of the profile summary, first match wins.
BUCKETS = (
    ('attention', r'flash|fmha|attention|sdpa|splash|cudnn'),
    ('rng', r'threefry|philox|rng|random'),
    ('gemm', r'gemm|cublas|cutlass|xmma|wgmma|matmul|dot|convolution|ynn_fusion|xnn'),
    ('copies', r'copy|memcpy|memset|transpose|dynamic.update.slice'),
    ('fusions', r'fusion|loop_|input_|reduce|triton|scatter|gather'),
)
ERROR_LIMITS = {'bfloat16': 2e-2, 'float32': 1e-4}


class BudgetExceeded(Exception):
  pass


class Recorder:
  """Appends each result to the jsonl (with the run's device, versions and date) and prints it."""

  def __init__(self, path: str, plan: Plan):
    self.path, self.rows = path, []
    device = jax.devices()[0]
    self.meta = dict(
        plan=plan.name, date=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        device=device.device_kind, platform=device.platform, device_count=jax.device_count(),
        jax=jax.__version__, host=platform.node())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def row(self, section: str, **fields) -> dict:
    row = dict(self.meta, section=section, **fields)
    self.rows.append(row)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row, default=float) + '\n')
    shown = {k: v for k, v in fields.items() if k not in ('top_kernels',)}
    print(f'[{section}] {json.dumps(shown, default=float)}', flush=True)
    return row


def timed(fn: Callable[[], Any], steps: int, windows: int) -> float:
  """Median seconds per call over `windows` windows of `steps` calls back to back, one
  block per window (an untimed window first: compile, autotuning, first run)."""
  times = []
  for window in range(windows + 1):
    start = time.perf_counter()
    out = None
    for _ in range(steps):
      out = fn()
    jax.block_until_ready(out)
    if window:
      times.append((time.perf_counter() - start) / steps)
  return statistics.median(times)


def relative_error(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def backend_option() -> str:
  """configs/videobert.py's recipe option for this backend ('' on a CPU)."""
  return {'gpu': 'gpu', 'tpu': 'tpu'}.get(jax.default_backend(), '')


def make_config(shapes: Shapes, variant: Variant):
  option = backend_option() if variant.recipe else ''
  config = videobert_config.get_config(shapes.preset + (f',{option}' if option else ''))
  config.model.dtype, config.model.param_dtype = 'bfloat16', 'float32'
  if variant.recipe and not option:
    # The recipe's fields, with the kernel the backend has ('auto': written out on a CPU).
    config.model.attention_impl, config.model.attention_dropout_rate = 'auto', 0.0
  batch = shapes.batch * variant.batch_scale
  config.data.seq_len = shapes.seq_len
  config.data.max_predictions = round(shapes.seq_len * 0.15) + 1
  config.train.global_batch_size = batch
  config.mesh.data, config.mesh.model = jax.device_count(), 1
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


def _vocab(config) -> vocab_lib.JointVocab:
  return vocab_lib.JointVocab(config.model.text_vocab_size, config.model.num_visual_tokens)


def _mfu(config, vocab_size: int, seconds: float) -> tuple[float, float | None]:
  """(model TFLOP/s, MFU or None where the peak is unknown)."""
  achieved = flops.train_flops(config.model, vocab_size, config.train.global_batch_size,
                               config.data.seq_len, config.data.max_predictions) / seconds
  peak = flops.peak_flops()
  return achieved / 1e12, (achieved / (peak * jax.device_count()) if peak else None)


# --- sections ---------------------------------------------------------------------------


def preflight(plan: Plan, rec: Recorder, _) -> None:
  device = jax.devices()[0]
  problems = []
  if plan.accelerator and device.platform == 'cpu':
    problems.append('jax sees no accelerator (platform cpu); install jax[cuda] or run on a TPU VM')
  if 'tensorflow' in sys.modules:
    problems.append('TensorFlow was imported: the accelerator machine has none')
  a = jax.random.normal(jax.random.key(0), (512, 512))
  product = jnp.asarray(a, jnp.bfloat16) @ jnp.asarray(a, jnp.bfloat16)
  error = relative_error(product, np.asarray(a, np.float64) @ np.asarray(a, np.float64))
  if not error < ERROR_LIMITS['bfloat16']:
    problems.append(f'a bf16 product is {error:.2e} off the f64 one')
  recipe = make_config(plan.shapes['large'], VARIANTS['recipe'])
  m = recipe.model
  impl = attention.resolve(m.attention_impl, attention_dropout_rate=m.attention_dropout_rate,
                           dtype=m.dtype, head_dim=m.hidden_size // m.num_heads)
  if plan.accelerator and impl == 'xla':
    problems.append(f'the recipe falls back to written-out attention on {device.device_kind}')
  rec.row('preflight', peak_tflops=(flops.peak_flops() or 0) / 1e12, recipe_attention=impl,
          dropout_bits=dropout.resolved_bits_mode(), bf16_product_error=error,
          python=platform.python_version(), problems=problems)
  if problems:
    raise SystemExit(f'throughput.py: preflight: {"; ".join(problems)}')


def ceilings(plan: Plan, rec: Recorder, _) -> None:
  shapes = plan.shapes['large']
  m = make_config(shapes, VARIANTS['default']).model
  tokens, h, mlp = shapes.batch * shapes.seq_len, m.hidden_size, m.mlp_dim
  key = jax.random.key(1)
  for name, (k, n) in {'qkvo [T,h]x[h,h]': (h, h), 'mlp in [T,h]x[h,4h]': (h, mlp),
                       'mlp out [T,4h]x[4h,h]': (mlp, h)}.items():
    x = jax.random.normal(key, (tokens, k), jnp.bfloat16)
    w = jax.random.normal(key, (k, n), jnp.bfloat16)
    product = jax.jit(lambda x, w: x @ w)
    seconds = timed(lambda: product(x, w), plan.steps * 5, plan.windows)
    rec.row('ceilings', kind='gemm', shape=name, m=tokens, k=k, n=n,
            tflops=2 * tokens * k * n / seconds / 1e12)
  # Bytes read plus bytes written of an elementwise pass over a large f32 array.
  size = 2**28 if plan.accelerator else 2**22
  x = jnp.ones((size,), jnp.float32)
  bump = jax.jit(lambda x: x + 1)
  seconds = timed(lambda: bump(x), plan.steps * 5, plan.windows)
  rec.row('ceilings', kind='copy', bytes=2 * 4 * size, gbps=2 * 4 * size / seconds / 1e9)


def attention_section(plan: Plan, rec: Recorder, _) -> None:
  """Forward + backward of each implementation at the model's shape, bf16, padded rows."""
  shapes = plan.shapes['large']
  m = make_config(shapes, VARIANTS['default']).model
  b, length, heads = shapes.batch, shapes.seq_len, m.num_heads
  rng = np.random.default_rng(0)
  q, k, v, ct = (rng.normal(size=(b, length, heads, m.hidden_size // heads)).astype(np.float32)
                 for _ in range(4))
  lengths = rng.integers(length // 2, length + 1, b)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)

  def vjp(impl, dtype):
    def fn(q, k, v):
      out, pullback = jax.vjp(
          lambda q, k, v: attention.padded_attention(q, k, v, mask, implementation=impl),
          *(jnp.asarray(x, dtype) for x in (q, k, v)))
      return (out,) + pullback(jnp.asarray(ct, dtype))
    return jax.jit(fn)

  want = vjp('xla', jnp.float32)(q, k, v)
  impls = ['xla'] + {'gpu': ['cudnn'], 'tpu': ['tpu_flash']}.get(jax.default_backend(), [])
  if plan.interpret_tpu_kernels and 'tpu_flash' not in impls:
    impls.append('tpu_flash')
  for impl in impls:
    interpret = impl == 'tpu_flash' and jax.default_backend() != 'tpu'
    fn = vjp(impl, jnp.bfloat16)
    try:
      if interpret:
        from jax.experimental.pallas import tpu as pltpu  # pylint: disable=import-outside-toplevel
        with pltpu.force_tpu_interpret_mode():
          got = fn(q, k, v)
          seconds = timed(lambda: fn(q, k, v), 1, 1)
      else:
        got = fn(q, k, v)
        seconds = timed(lambda: fn(q, k, v), plan.steps, plan.windows)
    finally:
      if interpret:
        pltpu.reset_tpu_interpret_mode_state()
    errors = dict(zip(('out', 'd_query', 'd_key', 'd_value'),
                      (relative_error(g, w) for g, w in zip(got, want))))
    limit = ERROR_LIMITS['bfloat16']
    rec.row('attention', impl=impl, interpret=interpret, shape=[b, length, heads],
            ms_forward_backward=seconds * 1e3, errors=errors, limit=limit,
            passed=bool(max(errors.values()) <= limit))


def dropout_bits(plan: Plan, rec: Recorder, _) -> None:
  shapes = plan.shapes['large']
  m = make_config(shapes, VARIANTS['default']).model
  b, length = shapes.batch, shapes.seq_len
  key = jax.random.key(3)
  for what, shape in {'hidden [B,L,H]': (b, length, m.hidden_size),
                      'probabilities [B,heads,L,L]': (b, m.num_heads, length, length)}.items():
    x = jnp.ones(shape, jnp.bfloat16)
    for mode in ('unrolled', 'kernel'):
      with dropout.bits_mode(mode):
        drop = jax.jit(lambda key, x: dropout.apply_keep_mask(
            x, dropout.keep_mask(key, 0.1, x.shape), 0.1))
        compiled = drop.lower(key, x).compile()  # traced inside the mode
      seconds = timed(lambda: compiled(key, x), plan.steps, plan.windows)
      rec.row('dropout_bits', mode=mode, tensor=what, elements=int(np.prod(shape)),
              ms=seconds * 1e3)


def _build_step(config, variant: Variant):
  """(compiled step, state, device batch, compile seconds, memory GiB per device)."""
  vocab = _vocab(config)
  with dropout.bits_mode(variant.bits):
    setup = step_lib.build(config, vocab)
    batch = partitioning.device_batch(random_batch(
        np.random.default_rng(0), vocab.size, config.train.global_batch_size,
        config.data.seq_len, config.data.max_predictions), setup.mesh)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
    options = GEMM_OPTIONS.get(jax.default_backend()) if variant.gemm_options else None
    start = time.perf_counter()
    compiled = setup.compile_step(abstract, options)
    compile_s = time.perf_counter() - start
  state = setup.create_state(setup.init_params(jax.random.key(0)))
  mem = compiled.memory_analysis()
  memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes) / 2**30
  return compiled, state, batch, compile_s, memory, options


def _stepper(compiled, state, batch):
  holder = {'state': state}

  def step():
    holder['state'], metrics = compiled(holder['state'], batch)
    return metrics['loss']
  return step


def step_section(plan: Plan, rec: Recorder, name: str) -> None:
  variant = VARIANTS[name]
  config = make_config(plan.shapes[variant.shapes], variant)
  if variant.gemm_options and jax.default_backend() not in GEMM_OPTIONS:
    rec.row(f'step:{name}', skipped=f'no GEMM options listed for {jax.default_backend()}')
    return
  compiled, state, batch, compile_s, memory, options = _build_step(config, variant)
  step = _stepper(compiled, state, batch)
  seconds = timed(step, plan.steps, plan.windows)
  loss = float(step())
  if not np.isfinite(loss):
    raise FloatingPointError(f'step:{name}: loss {loss}')
  tflops, mfu = _mfu(config, _vocab(config).size, seconds)
  m = config.model
  impl = attention.resolve(m.attention_impl, attention_dropout_rate=m.attention_dropout_rate,
                           dtype=m.dtype, head_dim=m.hidden_size // m.num_heads)
  rec.row(f'step:{name}', preset=variant.shapes, batch=config.train.global_batch_size,
          seq_len=config.data.seq_len, attention_impl=impl,
          attention_dropout=m.attention_dropout_rate, dropout_bits=variant.bits,
          compiler_options=options, steps_per_s=1 / seconds, ms_per_step=seconds * 1e3,
          tokens_per_s=config.train.global_batch_size * config.data.seq_len / seconds,
          model_tflops=tflops, mfu=mfu, compile_s=compile_s, memory_gib=memory, loss=loss)


def profile_buckets(trace_dir: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
  """(milliseconds by bucket, the 20 longest kernels by total ms) of a jax.profiler trace.

  Device planes' kernels on a GPU or TPU; on a CPU the host threads' XLA op events.
  """
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  paths = [os.path.join(d, f) for d, _, files in os.walk(trace_dir) for f in files
           if f.endswith('.xplane.pb')]
  totals: dict[str, float] = {}
  for path in paths:
    for plane in ProfileData.from_file(path).planes:
      device = plane.name.startswith('/device:')
      for line in plane.lines:
        if device and (line.name.startswith('XLA') or line.name in ('Steps', 'Launch Stats')):
          continue
        for event in line.events:
          if not device and 'hlo_op' not in {k for k, _ in event.stats}:
            continue
          totals[event.name] = totals.get(event.name, 0.0) + event.duration_ns / 1e6
  buckets = {name: 0.0 for name, _ in BUCKETS} | {'other': 0.0}
  for kernel, ms in totals.items():
    bucket = next((b for b, pattern in BUCKETS if re.search(pattern, kernel, re.I)), 'other')
    buckets[bucket] += ms
  top = sorted(totals.items(), key=lambda kv: -kv[1])[:20]
  return buckets, top


def profile_section(plan: Plan, rec: Recorder, name: str) -> None:
  variant = VARIANTS[name]
  config = make_config(plan.shapes[variant.shapes], variant)
  compiled, state, batch, _, _, _ = _build_step(config, variant)
  step = _stepper(compiled, state, batch)
  jax.block_until_ready(step())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      start = time.perf_counter()
      out = None
      for _ in range(plan.steps):
        out = step()
      jax.block_until_ready(out)
      wall = (time.perf_counter() - start) / plan.steps
    buckets, top = profile_buckets(trace_dir)
  per_step = {k: v / plan.steps for k, v in buckets.items()}
  rec.row(f'profile:{name}', steps=plan.steps, ms_per_step_traced=wall * 1e3,
          kernel_ms_per_step=per_step, kernel_ms_total_per_step=sum(per_step.values()),
          top_kernels=[(k, ms / plan.steps) for k, ms in top])


def reference_section(plan: Plan, rec: Recorder, preset: str) -> None:
  """HF BertForPreTraining, bf16 autocast, AdamW, on the CUDA device (else the CPU)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    rec.row(f'reference:{preset}', skipped=f'no PyTorch reference: {e}')
    return
  if plan.accelerator and not torch.cuda.is_available():
    rec.row(f'reference:{preset}', skipped='PyTorch sees no CUDA device')
    return
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  rec.row(f'reference:{preset}', **_torch_reference(plan, preset, torch, transformers, device))
  if device == 'cuda':
    torch.cuda.empty_cache()  # the model is gone: hand its memory back for the JAX sections


def _torch_reference(plan: Plan, preset: str, torch, transformers, device: str) -> dict:
  config = make_config(plan.shapes[preset], VARIANTS['default'])
  m, vocab_size = config.model, _vocab(config).size
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
      num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim,
      max_position_embeddings=m.max_position_embeddings)).to(device)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                                fused=device == 'cuda')
  b = random_batch(np.random.default_rng(0), vocab_size, config.train.global_batch_size,
                   config.data.seq_len, config.data.max_predictions)
  labels = np.full(b['input_ids'].shape, -100, np.int64)
  np.put_along_axis(labels, b['masked_positions'].astype(np.int64), b['masked_ids'], 1)
  inputs = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in dict(
      input_ids=b['input_ids'], token_type_ids=b['token_type_ids'],
      attention_mask=b['attention_mask'], labels=labels,
      next_sentence_label=b['alignment_label']).items()}

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if device == 'cuda':
      torch.cuda.synchronize()
    return None

  seconds = timed(step, plan.steps, plan.windows)
  tflops, mfu = _mfu(config, vocab_size, seconds)
  return dict(implementation=(
      f'HF BertForPreTraining, torch {torch.__version__}, transformers '
      f'{transformers.__version__}, bf16 autocast, '
      f'{model.config._attn_implementation} attention'),  # pylint: disable=protected-access
              preset=preset, batch=config.train.global_batch_size, seq_len=config.data.seq_len,
              steps_per_s=1 / seconds, ms_per_step=seconds * 1e3, model_tflops=tflops, mfu=mfu)


SECTIONS = {'preflight': preflight, 'ceilings': ceilings, 'attention': attention_section,
            'dropout_bits': dropout_bits, 'step': step_section, 'profile': profile_section,
            'reference': reference_section}


def run_plan(plan: Plan, rec: Recorder, budget_s: float, only: set[str] | None = None) -> None:
  """Runs the plan's sections in order; skips (with a row) what would overrun the budget,
  and records (with a row) a section that fails, then goes on."""
  start = time.perf_counter()
  for section, estimate in plan.sections:
    if only and section not in only and section != 'preflight':
      continue
    elapsed = time.perf_counter() - start
    if elapsed + estimate > budget_s:
      rec.row(section, skipped=f'over budget: {elapsed:.0f} s spent, ~{estimate:.0f} s '
                               f'more would pass {budget_s:.0f} s')
      continue
    kind, _, name = section.partition(':')
    section_start = time.perf_counter()
    try:
      SECTIONS[kind](plan, rec, name)
    except Exception as e:  # pylint: disable=broad-except
      if kind == 'preflight':
        raise
      # One failed kernel or variant must not cost the lease the sections after it.
      rec.row(section, error=f'{type(e).__name__}: {e}'[:2000])
    print(f'  ({section}: {time.perf_counter() - section_start:.0f} s; estimate '
          f'{estimate:.0f} s)', flush=True)


def summary(rows: list[dict]) -> str:
  """A Markdown table of the step and reference rows, each against its preset's reference."""
  reference = {r['preset']: r['steps_per_s'] for r in rows
               if r['section'].startswith('reference:') and 'steps_per_s' in r}
  lines = ['| section | preset | batch | attention | ms/step | MFU | vs reference |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    if 'steps_per_s' not in r:
      continue
    ref = reference.get(r['preset'])
    ratio = f'{r["steps_per_s"] / ref:.2f}x' if ref else 'n/a'
    mfu = f'{r["mfu"]:.1%}' if r.get('mfu') is not None else 'n/a'
    lines.append(f'| {r["section"]} | {r["preset"]} | {r["batch"]} | '
                 f'{r.get("attention_impl", "HF PyTorch")} | '
                 f'{r["ms_per_step"]:.1f} | {mfu} | {ratio} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--plan', default='accelerator', choices=sorted(PLANS))
  parser.add_argument('--budget_s', type=float, default=540,
                      help='skip sections that would end past this many seconds')
  parser.add_argument('--output', default='benchmarks/throughput.jsonl',
                      help='jsonl the rows are appended to as they come')
  parser.add_argument('--only', default='',
                      help='comma-separated sections to run (preflight always runs)')
  args = parser.parse_args()
  plan = PLANS[args.plan]
  if plan.interpret_tpu_kernels:
    # An interpret-mode kernel (host callbacks) loaded back from a persistent
    # compilation cache hangs: compile everything afresh.
    jax.config.update('jax_enable_compilation_cache', False)
  known = {s for s, _ in plan.sections}
  only = set(filter(None, args.only.split(','))) or None
  if only and only - known:
    parser.error(f'unknown sections {sorted(only - known)}; the plan has {sorted(known)}')
  rec = Recorder(args.output, plan)
  print(f'plan {plan.name}: {len(plan.sections)} sections, budget {args.budget_s:.0f} s, '
        f'{jax.device_count()} x {jax.devices()[0].device_kind}; rows -> {args.output}')
  run_plan(plan, rec, args.budget_s, only)
  print()
  print(summary(rec.rows))


if __name__ == '__main__':
  main()
