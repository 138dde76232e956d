"""CBT train step vs the same model in PyTorch (transformers), one process.

  python benchmarks/cbt_step.py [--preset tiny|base] [--steps 6 --rounds 2]
      [--reference_pairs first_position|tiled]
      [--checkpoint /path/to/hf_bert_folder] [--jsonl runs/benchmarks/cbt_step.jsonl]

vlm_jax's side is vlm_jax.cbt.step.build's jitted step on configs/cbt.py's
preset: `tiny` (text BERT 6 x 384, 12 heads, MLP 1536: MiniLM-L6-H384's shape,
random weights unless --checkpoint names a Hugging Face BERT folder; visual
transformer 2 x 256, 4 heads, MLP 1024; cross-modal 1 layer; 16 windows of 16
clips of 1024-d features; sentences of [CLS] + 30 + [SEP] = 32 positions) or
`base` (text 12 x 768, visual 6 x 768, 64 windows of 32 clips). The
reference, written here, is the same model in PyTorch: the text tower a
transformers.BertModel (no pooler: vlm_jax computes one that nothing reads
and XLA drops it), the visual and the cross-modal transformers
transformers BertEncoder stacks of the visual config, the same feature
projection, learned mask vector, clip position embeddings + LayerNorm +
dropout, text projection, modality embeddings, input LayerNorm and score of
the first position; all batch^2 (window, sentence) pairs scored as
vlm_jax.cbt.model.CrossTransformer scores them (text projection, input
LayerNorm and, with one cross layer, keys and values once per sentence and
per window, attended without broadcasting them to the pairs; the last layer
at position 0 only), or, with `--reference_pairs
tiled`, as both sides did before: batch^2 tiled rows at every position; the
visual NCE over the batch's real clips and the cross-modal NCE; gradient clipping at the config's norm and AdamW (no decay on
biases and LayerNorm scales) under the config's warm-up schedule; dropout on
(hidden states and attention probabilities); the text tower frozen (no
gradient, no update) when the config freezes it; the text MLM term
(loss.bert_weight) off on both sides. The visual NCE's
normalisation and masking are written as vlm_jax.cbt.objectives writes them.

Before timing, the PyTorch modules get a copy of every vlm_jax parameter and
both sides, dropout off, must agree on the loss at init (both terms, to
--tolerance) and on every trained parameter's gradient, and the two
optimizers, given vlm_jax's gradients, on the parameters after two updates
(the first at the schedule's learning rate 0, the second at its next rate).
Then each side warms up, and --rounds times each side runs --steps steps back
to back, the sides taking turns; each side's step time is its median step. Both sides share the
process, its 2 CPU threads and the allocator setting vlm-jax applies
(vlm_jax.host_memory; `--malloc default` keeps glibc's defaults for both).
Other processes on the same cores slow PyTorch's OpenMP threads far more than
XLA's: only runs on an idle machine compare the implementations (the jsonl
line records the load average).

Prints the numbers and appends them, with shapes, versions, device and date,
as one line to --jsonl.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
from typing import Any, Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# torch 2.14.1 (the test extra's, a CUDA build) imports triton with transformers, and
# triton crashes beside jaxlib and TensorFlow; the CPU reference needs none.
sys.modules.setdefault('triton', None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import step_timing  # pylint: disable=wrong-import-position,import-error

from configs import cbt as cbt_config  # pylint: disable=wrong-import-position
from vlm_jax import host_memory  # pylint: disable=wrong-import-position
from vlm_jax.cbt import objectives  # pylint: disable=wrong-import-position
from vlm_jax.cbt import step as cbt_step  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position

CLS, SEP = 101, 102


def benchmark_config(preset: str, checkpoint: str = '', train_text: bool = False,
                     runlocal: bool = False):
  """configs/cbt.py's preset on one device; the text BERT random unless `checkpoint`."""
  config = cbt_config.get_config(preset + (',runlocal' if runlocal else ''))
  config.model.init_checkpoint = checkpoint
  config.model.freeze_text = not train_text
  # The text MLM term (L_bert, being added to vlm_jax.cbt) is not in the reference:
  # both sides train L_visual + L_cross.
  config.loss.bert_weight = 0.0
  config.mesh.data, config.mesh.model = 1, 1
  return config


def shapes(config) -> dict[str, int]:
  m, d = config.model, config.data
  return dict(batch=config.train.global_batch_size, clips=d.num_clips,
              text_positions=d.max_text_tokens + 2, feature_dim=m.feature_dim)


def random_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch as vlm_jax.cbt.pipeline makes it: padded windows, masked clips, sentences."""
  s = shapes(config)
  n, clips, length = s['batch'], s['clips'], s['text_positions']
  real = rng.integers(clips // 2, clips + 1, n)
  clip_mask = (np.arange(clips)[None] < real[:, None]).astype(np.int32)
  masked = np.zeros((n, clips), np.int32)
  for i in range(n):  # config.data.mask_rate of the real clips, at least one
    count = max(1, int(round(config.data.mask_rate * real[i])))
    masked[i, rng.choice(real[i], count, replace=False)] = 1
  words = rng.integers(4, length - 1, n)
  text_mask = (np.arange(length)[None] < (words + 2)[:, None]).astype(np.int32)
  ids = rng.integers(1000, config.model.text_vocab_size, (n, length)).astype(np.int32)
  ids[:, 0] = CLS
  ids[np.arange(n), words + 1] = SEP
  return {'features': rng.normal(size=(n, clips, s['feature_dim'])).astype(np.float32),
          'clip_mask': clip_mask, 'masked': masked,
          'input_ids': ids * text_mask, 'attention_mask': text_mask}


# ----------------------------------------------------------------------------
# The PyTorch reference.
# ----------------------------------------------------------------------------

@dataclasses.dataclass
class Reference:
  """The PyTorch side: the model, its loss, a train step and the optimizer."""
  model: Any
  loss_fn: Callable         # (model, torch batch) -> (total, visual, cross)
  train_step: Callable      # torch batch -> total loss (dropout as the model's mode says)
  trained: list             # [(name, parameter)] the optimizer updates
  optimizer: Any
  scheduler: Any


def torch_reference(config, text_cfg, visual_cfg, attention: str,
                    pairs: str = 'first_position') -> Reference:
  """The CBT model, its optimizer and a train-step function, in PyTorch.

  `pairs`: 'first_position' scores all (window, sentence) pairs as
  vlm_jax.cbt.model.CrossTransformer does (each sentence and window projected
  once, the last layer at position 0 only); 'tiled', as both sides did before
  it, runs batch^2 tiled rows through every cross layer at every position.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from transformers import masking_utils  # pylint: disable=import-outside-toplevel
  from transformers.models.bert import modeling_bert  # pylint: disable=import-outside-toplevel
  m = config.model

  def hf_config(c, layers):
    return transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=layers,
        num_attention_heads=c.num_heads, intermediate_size=c.mlp_dim, hidden_act='gelu',
        hidden_dropout_prob=c.dropout_rate, attention_probs_dropout_prob=c.attention_dropout_rate,
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps, attn_implementation=attention)

  visual_hf, cross_hf = hf_config(visual_cfg, visual_cfg.num_layers), hf_config(visual_cfg,
                                                                                m.cross_layers)
  hidden, eps = visual_cfg.hidden_size, visual_cfg.layer_norm_eps

  def tile_text(t, copies):  # row v * n + s holds sentence s ...
    return t[None].expand(copies, *t.shape).flatten(0, 1)

  def tile_video(t, copies):  # ... and window v
    return t[:, None].expand(t.shape[0], copies, *t.shape[1:]).flatten(0, 1)

  class Cbt(torch.nn.Module):
    """vlm_jax.cbt.model.Cbt, module by module."""

    def __init__(self):
      super().__init__()
      self.text_bert = transformers.BertModel(hf_config(text_cfg, text_cfg.num_layers),
                                              add_pooling_layer=False)
      self.feature_projection = torch.nn.Linear(m.feature_dim, hidden)
      self.mask_vector = torch.nn.Parameter(torch.zeros(hidden))
      self.position_embeddings = torch.nn.Embedding(m.max_clips, hidden)
      self.embedding_norm = torch.nn.LayerNorm(hidden, eps=eps)
      self.embedding_dropout = torch.nn.Dropout(visual_cfg.dropout_rate)
      self.visual_encoder = modeling_bert.BertEncoder(visual_hf)
      self.text_projection = torch.nn.Linear(text_cfg.hidden_size, hidden)
      self.modality_embeddings = torch.nn.Embedding(2, hidden)
      self.input_norm = torch.nn.LayerNorm(hidden, eps=eps)
      self.cross_encoder = modeling_bert.BertEncoder(cross_hf)
      self.score = torch.nn.Linear(hidden, 1)

    def forward(self, b):
      features, clip_mask, masked = b['features'], b['clip_mask'], b['masked']
      n, clips = clip_mask.shape
      targets = self.feature_projection(features)
      x = torch.where(masked[..., None] > 0, self.mask_vector, targets)
      x = self.embedding_norm(x + self.position_embeddings.weight[:clips])
      x = self.embedding_dropout(x)
      bias = masking_utils.create_bidirectional_mask(visual_hf, x, clip_mask)
      states = self.visual_encoder(x, attention_mask=bias).last_hidden_state
      with torch.set_grad_enabled(torch.is_grad_enabled() and not m.freeze_text):
        text = self.text_bert(input_ids=b['input_ids'],
                              attention_mask=b['attention_mask']).last_hidden_state
      modality = self.modality_embeddings.weight
      if pairs == 'tiled':
        # All pairs: row v * n + s holds sentence s and window v (vlm_jax.cbt.model.all_pairs),
        # every position through every layer: vlm_jax.cbt.model before score_pairs.
        y = torch.cat([self.text_projection(tile_text(text, n)) + modality[0],
                       tile_video(states, n) + modality[1]], dim=1)
        y = self.input_norm(y)
        mask = torch.cat([tile_text(b['attention_mask'], n), tile_video(clip_mask, n)], dim=1)
        y = self.cross_encoder(
            y, attention_mask=masking_utils.create_bidirectional_mask(cross_hf, y, mask)
        ).last_hidden_state
        return states, targets, self.score(y[:, 0])[:, 0].reshape(n, n)
      text_in = self.input_norm(self.text_projection(text) + modality[0])
      visual_in = self.input_norm(states + modality[1])
      first = self.first_positions(text_in, b['attention_mask'], visual_in, clip_mask)
      return states, targets, self.score(first)[..., 0]

    def first_positions(self, text, text_mask, visual, clip_mask):
      """[S, L, hidden], [V, T, hidden] cross inputs -> [V, S, hidden], the last cross layer's
      state at each pair's position 0 (vlm_jax.cbt.model.PairEncoder)."""
      num_windows, num_sentences = visual.shape[0], text.shape[0]
      pairs_shape = (num_windows, num_sentences)
      layers = self.cross_encoder.layer
      last, attention = layers[-1], layers[-1].attention.self
      # With one layer, keys and values come from the sentences' and windows' own rows.
      pieces, queries = (text[None], visual[:, None]), text[None, :, :1]
      if len(layers) > 1:
        y = torch.cat([text[None].expand(*pairs_shape, -1, -1),
                       visual[:, None].expand(*pairs_shape, -1, -1)], dim=2).flatten(0, 1)
        mask = torch.cat([tile_text(text_mask, num_windows), tile_video(clip_mask, num_sentences)],
                         dim=1)
        bias = masking_utils.create_bidirectional_mask(cross_hf, y, mask)
        for layer in layers[:-1]:
          y = layer(y, attention_mask=bias)
        y = y.unflatten(0, pairs_shape)
        pieces, queries = (y,), y[:, :, :1]

      def heads(linear, inputs):  # -> [V * S, heads, length, head_dim]
        ys = [linear(x).unflatten(-1, (attention.num_attention_heads, -1)).transpose(-2, -3)
              for x in inputs]
        ys = [y.expand(*pairs_shape, *y.shape[2:]) for y in ys]
        return torch.cat(ys, dim=-2).flatten(0, 1)

      key_mask = torch.cat([text_mask[None].expand(*pairs_shape, -1),
                            clip_mask[:, None].expand(*pairs_shape, -1)], dim=-1)
      bias = torch.where(key_mask > 0, 0.0, torch.finfo(text.dtype).min).flatten(0, 1)
      dropout_p = attention.dropout.p if self.training else 0.0
      if len(pieces) > 1:
        context = piece_attention(attention, queries, pieces, bias.unflatten(0, pairs_shape),
                                  dropout_p).flatten(0, 1)
      else:
        context = torch.nn.functional.scaled_dot_product_attention(
            heads(attention.query, (queries,)), heads(attention.key, pieces),
            heads(attention.value, pieces), attn_mask=bias[:, None, None, :],
            dropout_p=dropout_p)
        context = context.transpose(1, 2).flatten(-2)  # [V * S, 1, hidden]
      residual = queries.expand(*pairs_shape, -1, -1).flatten(0, 1)
      x = last.attention.output(context, residual)
      x = last.output(last.intermediate(x), x)
      return x.reshape(*pairs_shape, hidden)

  def piece_attention(attention, queries, pieces, bias, dropout_p):
    """[*pairs, 1, hidden] outputs of `queries` over the broadcast pieces, each piece's keys
    and values on its own rows (bert.SelfAttention._attend_pieces)."""
    split = lambda y: y.unflatten(-1, (attention.num_attention_heads, -1))
    q = split(attention.query(queries))
    keys = [split(attention.key(x)) for x in pieces]
    values = [split(attention.value(x)) for x in pieces]
    scale = q.shape[-1] ** -0.5
    logits = [torch.einsum('...qhd,...khd->...hqk', q, k) * scale for k in keys]
    shape = torch.broadcast_shapes(*(g.shape[:-1] for g in logits))
    logits = torch.cat([g.expand(*shape, g.shape[-1]) for g in logits], dim=-1)
    probs = torch.nn.functional.dropout(torch.softmax(logits + bias[..., None, None, :], -1),
                                        dropout_p)
    parts = torch.split(probs, [k.shape[-3] for k in keys], dim=-1)
    out = sum(torch.einsum('...hqk,...khd->...qhd', p, v) for p, v in zip(parts, values))
    return out.flatten(-2)

  def loss_fn(model, b):
    """visual_weight * L_visual + cross_weight * L_cross (vlm_jax.cbt.objectives)."""
    states, targets, scores = model(b)
    e, y = states.reshape(-1, hidden), targets.reshape(-1, hidden)
    predicted = b['masked'].reshape(-1).float()
    negatives = b['masked'] if config.loss.visual_negatives == 'masked' else b['clip_mask']
    visual_scores = e @ y.T
    if config.loss.visual_temperature:
      visual_scores = visual_scores / config.loss.visual_temperature
    visual_scores = torch.where(negatives.reshape(-1)[None] > 0, visual_scores,
                                torch.finfo(torch.float32).min)
    per_clip = torch.nn.functional.cross_entropy(
        visual_scores, torch.arange(e.shape[0]), reduction='none')
    visual = (per_clip * predicted).sum() / predicted.sum().clamp(min=1.0)
    cross = torch.nn.functional.cross_entropy(scores, torch.arange(scores.shape[0]))
    total = config.loss.visual_weight * visual + config.loss.cross_weight * cross
    return total, visual, cross

  model = Cbt()
  if m.freeze_text:
    model.text_bert.requires_grad_(False)
  trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
  # vlm_jax.train.optim: no weight decay on biases and LayerNorm scales.
  norm_weights = {id(mod.weight) for mod in model.modules() if isinstance(mod, torch.nn.LayerNorm)}
  no_decay = lambda name, p: name.endswith('bias') or id(p) in norm_weights
  o = config.optim
  optimizer = torch.optim.AdamW(
      [{'params': [p for name, p in trained if not no_decay(name, p)],
        'weight_decay': o.weight_decay},
       {'params': [p for name, p in trained if no_decay(name, p)], 'weight_decay': 0.0}],
      lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
  schedule = cbt_step.optim.learning_rate_schedule(o, config.train.num_steps)
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda count: float(schedule(count)) / o.learning_rate)

  def train_step(b):
    optimizer.zero_grad(set_to_none=True)
    total, _, _ = loss_fn(model, b)
    total.backward()
    torch.nn.utils.clip_grad_norm_([p for _, p in trained], o.grad_clip_norm)
    optimizer.step()
    scheduler.step()
    return total.detach()

  return Reference(model, loss_fn, train_step, trained, optimizer, scheduler)


# ----------------------------------------------------------------------------
# Flax parameters -> the reference's modules.
# ----------------------------------------------------------------------------

def _linear(prefix: str, p: dict) -> dict:
  return {f'{prefix}.weight': np.asarray(p['kernel']).T, f'{prefix}.bias': np.asarray(p['bias'])}


def _norm(prefix: str, p: dict) -> dict:
  return {f'{prefix}.weight': np.asarray(p['scale']), f'{prefix}.bias': np.asarray(p['bias'])}


def encoder_state_dict(prefix: str, encoder: dict) -> dict:
  """vlm_jax.models.bert.Encoder params -> transformers BertEncoder tensors."""
  out = {}
  for i in range(len(encoder)):
    layer, p = encoder[f'layer_{i}'], f'{prefix}layer.{i}.'
    for name in ('query', 'key', 'value'):
      out.update(_linear(f'{p}attention.self.{name}', layer['attention'][name]))
    out.update(_linear(f'{p}attention.output.dense', layer['attention']['out']))
    out.update(_norm(f'{p}attention.output.LayerNorm', layer['attention_norm']))
    out.update(_linear(f'{p}intermediate.dense', layer['mlp']['intermediate']))
    out.update(_linear(f'{p}output.dense', layer['mlp']['output']))
    out.update(_norm(f'{p}output.LayerNorm', layer['output_norm']))
  return out


def torch_state_dict(params) -> dict[str, np.ndarray]:
  """Every parameter of vlm_jax.cbt.model.Cbt (but the unread text pooler), by torch name."""
  params = jax.device_get(params)
  text, visual, cross = params['text_bert'], params['visual'], params['cross']
  emb = text['embeddings']
  out = {'text_bert.embeddings.' + name + '.weight': np.asarray(emb[name]['embedding'])
         for name in ('word_embeddings', 'position_embeddings', 'token_type_embeddings')}
  out.update(_norm('text_bert.embeddings.LayerNorm', emb['LayerNorm']))
  out.update(encoder_state_dict('text_bert.encoder.', text['encoder']))
  out.update(_linear('feature_projection', visual['feature_projection']))
  out['mask_vector'] = np.asarray(visual['mask_vector'])
  out['position_embeddings.weight'] = np.asarray(visual['position_embeddings']['embedding'])
  out.update(_norm('embedding_norm', visual['embedding_norm']))
  out.update(encoder_state_dict('visual_encoder.', visual['encoder']))
  out.update(_linear('text_projection', cross['text_projection']))
  out['modality_embeddings.weight'] = np.asarray(cross['modality_embeddings']['embedding'])
  out.update(_norm('input_norm', cross['input_norm']))
  out.update(encoder_state_dict('cross_encoder.', cross['encoder']))
  out.update(_linear('score', cross['score']))
  return out


def load_flax_params(model, params) -> None:
  """Copies the Flax params into the reference (strict: every tensor, no extra)."""
  import torch  # pylint: disable=import-outside-toplevel
  sd = {k: torch.tensor(np.ascontiguousarray(v)) for k, v in torch_state_dict(params).items()}
  model.load_state_dict(sd, strict=True)


def torch_batch(batch: dict) -> dict:
  """NumPy batch -> torch tensors (ids and masks as int64, as torch's lookups want)."""
  import torch  # pylint: disable=import-outside-toplevel
  return {k: torch.from_numpy(v).long() if v.dtype.kind == 'i' else torch.from_numpy(v)
          for k, v in batch.items()}


def reference_for(config, setup: cbt_step.Setup, params, attention: str,
                  pairs: str = 'first_position') -> Reference:
  """A fresh PyTorch reference holding a copy of `params`."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  reference = torch_reference(config, setup.model.text_config, setup.model.visual_config,
                              attention, pairs)
  load_flax_params(reference.model, params)
  return reference


# ----------------------------------------------------------------------------
# Parity: the same model on both sides.
# ----------------------------------------------------------------------------

def parity(config, setup: cbt_step.Setup, params, batch: dict, attention: str = 'sdpa',
           tolerance: float = 1e-4, pairs: str = 'first_position') -> dict[str, Any]:
  """Dropout off on both sides, the same weights: loss, gradients; then two optimizer updates.

  Args:
    params: the Flax params (host arrays), copied into a fresh reference.
    batch: NumPy (random_batch).
    pairs: the reference's cross-modal layout (torch_reference).
    tolerance: on the losses, absolute; gradients and updates must agree to
      10 x tolerance of each tensor's largest magnitude (+ 1e-7 absolute).

  Returns:
    The losses, their differences, and the relative L2 differences of the
    gradients and of the updates over all trained tensors.

  Raises:
    AssertionError: past a tolerance, or when a frozen text weight moved.
  """
  import torch  # pylint: disable=import-outside-toplevel
  loss = config.loss
  weights = dict(visual_weight=loss.visual_weight, cross_weight=loss.cross_weight,
                 negatives=loss.visual_negatives, temperature=loss.visual_temperature or None)

  def loss_fn(p, b):
    outputs = setup.model.apply({'params': p}, b['features'], b['clip_mask'], b['masked'],
                                b['input_ids'], b['attention_mask'], deterministic=True)
    total, metrics = objectives.cbt_loss(outputs, b, **weights)
    return total, (metrics['loss_visual'], metrics['loss_cross'])

  value_and_grad = setup.sharded.in_mesh(jax.jit(jax.value_and_grad(loss_fn, has_aux=True)))
  device_params = jax.device_put(params, setup.sharded.param_shardings)
  (total, (visual, cross)), grads = value_and_grad(
      device_params, partitioning.device_batch(batch, setup.mesh))

  reference = reference_for(config, setup, params, attention, pairs)
  reference.model.eval()  # no dropout
  t_total, t_visual, t_cross = reference.loss_fn(reference.model, torch_batch(batch))
  t_total.backward()
  t_total, t_visual, t_cross = t_total.item(), t_visual.item(), t_cross.item()
  report = {'loss_jax': float(total), 'loss_torch': t_total,
            'loss_diff': abs(float(total) - t_total),
            'loss_visual_diff': abs(float(visual) - t_visual),
            'loss_cross_diff': abs(float(cross) - t_cross)}
  for key in ('loss_diff', 'loss_visual_diff', 'loss_cross_diff'):
    assert report[key] <= tolerance, f'{key} = {report[key]:.3g} > {tolerance}: {report}'

  def compare(flax_tree, named_tensors, what, floors=None):
    """Asserts each tensor's agreement; returns ||ours - theirs|| / ||ours|| over all.

    `floors`: per name, an absolute error always accepted (default 1e-7).
    """
    ours_by_name = torch_state_dict(flax_tree)
    diff_sq = norm_sq = 0.0
    for name, tensor in named_tensors:
      ours, theirs = ours_by_name[name], tensor.detach().numpy()
      scale = float(max(np.abs(ours).max(), np.abs(theirs).max()))
      error = float(np.abs(ours - theirs).max())
      floor = (floors or {}).get(name, 1e-7)
      assert error <= 10 * tolerance * scale + floor, (
          f'{what} of {name}: max |diff| {error:.3g}, max |value| {scale:.3g}')
      diff_sq += float(np.sum((ours - theirs).astype(np.float64) ** 2))
      norm_sq += float(np.sum(ours.astype(np.float64) ** 2))
    return (diff_sq / max(norm_sq, 1e-300)) ** 0.5

  trained = reference.trained
  report['grad_relative_l2_diff'] = compare(
      jax.device_get(grads), [(name, p.grad) for name, p in trained], 'gradient')

  # Two updates from vlm_jax's init gradients on each side (the same gradients in, so
  # this checks the optimizers alone: Adam turns the float noise of gradients that are
  # zero in exact arithmetic, e.g. the key biases', into updates of either sign).
  # optax's count starts at 0 (learning rate schedule(0) = 0, the moments move), then
  # schedule(1).
  update = jax.jit(setup.tx.update)
  opt_state, new_params = setup.tx.init(device_params), device_params
  for _ in range(2):
    updates, opt_state = update(grads, opt_state, new_params)
    new_params = jax.tree.map(jnp.add, new_params, updates)
  jax_grads = torch_state_dict(jax.device_get(grads))
  before = {name: p.detach().clone() for name, p in trained}
  for _ in range(2):
    for name, p in trained:
      p.grad = torch.tensor(np.ascontiguousarray(jax_grads[name]))  # clipping scales in place
    torch.nn.utils.clip_grad_norm_([p for _, p in trained], config.optim.grad_clip_norm)
    reference.optimizer.step()
    reference.scheduler.step()
  delta = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                       jax.device_get(new_params), params)
  # An update is the difference of two rounded float32 parameters: the two sides' may
  # differ by one unit in the last place of the parameter's magnitude (2.4e-7 near 1).
  ulps = {name: max(1e-7, float(np.spacing(np.float32(np.abs(p.numpy()).max()))))
          for name, p in before.items()}
  report['update_relative_l2_diff'] = compare(
      delta, [(name, p.detach() - before[name]) for name, p in trained], 'update', ulps)
  report['trained_tensors'] = len(trained)
  report['frozen_text'] = bool(config.model.freeze_text)
  if config.model.freeze_text:
    moved = max(float(np.abs(d).max()) for d in jax.tree.leaves(delta['text_bert']))
    assert moved == 0.0, f'the frozen text BERT moved by {moved}'
  return report


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------

def torch_stepper(reference: Reference, batch: dict) -> Callable[[], float]:
  """One call = one train step of the reference (dropout on); returns the loss."""
  reference.model.train()
  b = torch_batch(batch)
  return lambda: float(reference.train_step(b))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='tiny', choices=['tiny', 'base'])
  parser.add_argument('--checkpoint', default='',
                      help="A Hugging Face BERT folder (or 'minilm') for the text tower; "
                           "'' = random weights of the preset's shape.")
  parser.add_argument('--runlocal', action='store_true',
                      help="The preset's `runlocal` shapes (2 x 64 text, 8 windows of 8 clips).")
  parser.add_argument('--train_text', action='store_true',
                      help='Train the text BERT too (config.model.freeze_text=False).')
  parser.add_argument('--steps', type=int, default=6, help='Timed steps per side per round.')
  parser.add_argument('--rounds', type=int, default=2, help='Turns of each side.')
  parser.add_argument('--warmup', type=int, default=2, help='Untimed steps per side first.')
  parser.add_argument('--attention', default='sdpa', choices=['sdpa', 'eager'],
                      help="transformers' attention implementation in the reference.")
  parser.add_argument('--reference_pairs', default='first_position',
                      choices=['first_position', 'tiled'],
                      help="The reference's cross-modal scoring: as vlm_jax's ('first_position') "
                           "or the tiled all-positions layout both sides had before.")
  parser.add_argument('--malloc', default='vlm_jax', choices=['vlm_jax', 'default'],
                      help="'vlm_jax': vlm_jax.host_memory.retain_freed_memory as vlm-jax "
                           "applies it (one process: both sides); 'default': glibc's.")
  parser.add_argument('--tolerance', type=float, default=1e-4, help='Parity tolerance.')
  parser.add_argument('--skip_parity', action='store_true')
  parser.add_argument('--jsonl', default='runs/benchmarks/cbt_step.jsonl',
                      help='Appends one line of results here.')
  args = parser.parse_args()

  if args.malloc == 'vlm_jax':
    host_memory.retain_freed_memory()  # before any computation, as vlm_jax.cli
  jax.config.update('jax_threefry_partitionable', True)
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  threads = os.cpu_count()
  torch.set_num_threads(threads)

  config = benchmark_config(args.preset, args.checkpoint, args.train_text, args.runlocal)
  setup = cbt_step.build(config, devices=jax.devices()[:1])
  params = jax.device_get(cbt_step.initial_params(setup))
  batch = random_batch(config, np.random.default_rng(0))
  s = shapes(config)
  print(f'shapes: {s}; text {setup.model.text_config.num_layers} x '
        f'{setup.model.text_config.hidden_size} ({"frozen" if config.model.freeze_text else "trained"}), '
        f'visual {setup.model.visual_config.num_layers} x {setup.model.visual_config.hidden_size}, '
        f'cross {config.model.cross_layers}', flush=True)

  report = {} if args.skip_parity else parity(config, setup, params, batch, args.attention,
                                              args.tolerance, args.reference_pairs)
  if report:
    print('parity (dropout off, copied weights): ' + json.dumps(report), flush=True)

  reference = reference_for(config, setup, params, args.attention, args.reference_pairs)
  load_before = os.getloadavg()
  times = step_timing.time_sides({'vlm_jax': step_timing.jax_stepper(setup, params, batch),
                      'torch': torch_stepper(reference, batch)},
                     args.warmup, args.steps, args.rounds)
  median = {side: statistics.median(t) for side, t in times.items()}
  rate = {side: s['batch'] / m for side, m in median.items()}
  ratio = rate['vlm_jax'] / rate['torch']
  model_name = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model_name = names[0] if names else model_name
  result = {
      'benchmark': 'cbt_step', 'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'preset': args.preset + (',runlocal' if args.runlocal else ''), 'checkpoint': args.checkpoint or 'random',
      'freeze_text': bool(config.model.freeze_text), 'shapes': s,
      'cross_rows': s['batch'] ** 2, 'dropout_rng': config.train.dropout_rng,
      'attention_reference': args.attention, 'reference_pairs': args.reference_pairs,
      'malloc': args.malloc,
      'warmup': args.warmup, 'steps': args.steps, 'rounds': args.rounds,
      'device': f'{model_name}, {threads} CPU threads ({jax.devices()[0].platform})',
      'versions': {'jax': jax.__version__, 'torch': torch.__version__, 'transformers': transformers.__version__,
                   'python': platform.python_version()},
      'step_seconds': {side: [round(t, 4) for t in ts] for side, ts in times.items()},
      'median_step_seconds': {side: round(m, 4) for side, m in median.items()},
      'examples_per_second': {side: round(r, 2) for side, r in rate.items()},
      'ratio_jax_over_torch': round(ratio, 3), 'parity': report,
      # The machine's 1-minute load average before and after the timed steps: other
      # processes on the same cores slow PyTorch's OpenMP threads far more than XLA's.
      'load_average_1min': [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  print(f'device: {result["device"]}; jax {jax.__version__}, torch {torch.__version__}, '
        f'transformers {transformers.__version__}')
  for side in times:
    print(f'{side:8s} median {median[side]:.3f} s/step, {rate[side]:.2f} examples/s '
          f'(steps: {", ".join(f"{t:.3f}" for t in times[side])})')
  print(f'ratio vlm_jax / torch: {ratio:.2f}x (1-minute load average '
        f'{result["load_average_1min"][0]} -> {result["load_average_1min"][1]})')
  if args.jsonl:
    os.makedirs(os.path.dirname(os.path.abspath(args.jsonl)), exist_ok=True)
    with open(args.jsonl, 'a') as f:
      f.write(json.dumps(result) + '\n')
    print(f'appended to {args.jsonl}')


if __name__ == '__main__':
  main()
