"""ClipBERT train step vs the same model in PyTorch (torchvision + transformers), one process.

  python benchmarks/clipbert_step.py [--preset tiny|base] [--runlocal] [--batch N]
      [--clips N] [--image_size S] [--steps 6 --rounds 2 --warmup 2] [--attention sdpa|eager]
      [--memory_format channels_last|contiguous] [--torch_adamw fused|foreach|for_loop]
      [--split] [--jsonl runs/benchmarks/clipbert_step.jsonl]

vlm_jax's side is vlm_jax.clipbert.step.build's jitted train step on one
device, on configs/clipbert.py's preset with random weights of its shape:
`tiny` (the one-block-per-stage ResNet, 256 res5 channels; MiniLM-L6-H384's
BERT shape, 6 layers x 384, 12 heads, MLP 1536, random instead of the
checkpoint; 8 videos x 2 clips x 2 frames of 128 px, a 2 x 2 grid = 4 visual
tokens; matching with one negative caption, 2 texts of 20 tokens per video;
LSE consensus) or `base` (detectron2 R-50, BERT-base, 64 videos x 8 clips x 2
frames of 448 px, 7 x 7 = 49 visual tokens: minutes per step on a CPU, so
`--batch`, `--clips` and `--image_size` shrink it). Both sides compute in
float32 (the base preset trains in bf16 on accelerators; parity is checked
at float32).
`--runlocal` takes the preset's unit-test shapes (BERT 2 x 64, 64 px, batch 4).

The reference, written here, is the same network and train step in PyTorch,
ClipBERT's (jayleicn/ClipBERT) module by module:
- the frame encoder: torchvision's ResNet. `base`: torchvision.models.resnet50
  itself (avgpool and fc removed); `tiny`: the same trunk (stem conv1/bn1/
  maxpool, layer1 ... layer4 of torchvision's Bottleneck blocks, resnet50's
  module names) at the preset's depth and width, which resnet50's constructor
  cannot take (its widths are fixed at 64 ... 512). Two changes make it
  ClipBERT's detectron2 R-50 (`vlm_jax.models.resnet.CLIPBERT`, what the Flax
  side runs and ClipBERT's checkpoints hold) instead of torchvision's v1.5:
  every norm is torchvision.ops.FrozenBatchNorm2d (torchvision's own
  `norm_layer` argument; detectron2's FrozenBatchNorm2d computes the same
  affine), and each stage's stride moves from the 3x3 conv to the first 1x1
  conv (detectron2's MSRA `stride_in_1x1`; setting the two Conv2d modules'
  `stride`). Run as torchvision ships it (stride in the 3x3, ordinary batch
  norm on batch statistics) it would be another network, and parity could
  not hold. The stem and layer1 (detectron2's res2) are frozen
  (freeze_at=2: requires_grad off, no update), as are all norm affines
  (buffers);
- ClipBERT's grid encoder: Conv3x3 (no bias) -> MaxPool2d(2, 2) -> ReLU;
- VisualInputEmbedding: the mean over a clip's frames, row and column
  position embeddings, a one-row token type, LayerNorm, dropout;
- a transformers.BertModel: its embeddings on the text, its encoder over
  [text; visual tokens] with the text's padding mask, its pooler; dropout on
  the pooled state; the classifier Linear(h, 2h) -> ReLU -> Linear(2h, 2).
All clips of all videos go through the CNN in one batch, and each clip's
visual tokens are repeated for its texts (ClipBERT's repeat_tensor_rows):
per-clip logits [videos, clips, texts, 2], reduced over the clips by the
config's consensus (LSE: logsumexp), then cross-entropy over all (video, text)
pairs; backward; one clip_grad_norm_ over everything at the config's norm;
AdamW in ClipBERT's two groups (CNN: frame encoder + grid conv at the CNN
learning rate; transformer: the rest at its own), no decay on biases and
LayerNorm, both on vlm_jax.clipbert.step's shifted warm-up / linear-decay
schedule (LambdaLR); torch's fused CPU AdamW kernel by default
(`--torch_adamw`: its for-loop default took 3-4x as long per update in a
trial); dropout on (BERT hidden 0.1, attention 0.1, visual embeddings,
pooled). The CNN runs channels_last (the frames arrive NHWC; `--memory_format
contiguous` copies them to NCHW). Flax parameters go into the PyTorch modules
by a converter written here (the inverse of vlm_jax.convert.resnet_torch's
torchvision table and of hf_bert.to_flax), loaded with strict=True; the
parity check also renames the PyTorch state dict to ClipBERT's checkpoint
names, reads it back with vlm_jax's own converter
(vlm_jax.clipbert.model.from_clipbert_checkpoint) and requires the original
parameters.

Before timing, both sides with dropout off must agree on the loss at init (to
--tolerance, absolute: the loss is about ln 2), on every trained tensor's
gradient (its max difference <= 10 x tolerance x its largest magnitude, the
relative L2 difference over all of them <= tolerance; the trained tensors
must be the same on both sides) and, given vlm_jax's gradients, on the sum of
two optimizer updates (the reference stepping in float64, so that float32
rounding of the parameters does not hide the first warm-up updates); the
frozen parts must not move on either side. Then each side warms up, and
--rounds times each side runs --steps steps back to back, the sides taking
turns; each side's step time is its median step, and frames/s is videos x
clips x frames per step over it. Both sides share the process, its CPU
threads and the allocator setting vlm-jax applies (vlm_jax.host_memory;
`--malloc default` keeps glibc's). Other processes on the same cores slow
PyTorch's OpenMP threads far more than XLA's: only runs on an idle machine
compare the implementations (the jsonl line records the load average).

Prints the numbers and appends them, with shapes, versions, device and date,
as one line to --jsonl.
"""

import argparse
import dataclasses
import functools
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

from configs import clipbert as clipbert_config  # pylint: disable=wrong-import-position
from vlm_jax import host_memory  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import consensus  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import model as clipbert_model  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import objectives  # pylint: disable=wrong-import-position
from vlm_jax.clipbert import step as step_lib  # pylint: disable=wrong-import-position
from vlm_jax.convert import clipbert_torch  # pylint: disable=wrong-import-position
from vlm_jax.convert import hf_bert  # pylint: disable=wrong-import-position
from vlm_jax.convert import resnet_torch  # pylint: disable=wrong-import-position
from vlm_jax.models import resnet  # pylint: disable=wrong-import-position
from vlm_jax.train import partitioning  # pylint: disable=wrong-import-position

CLS, SEP = 101, 102
# detectron2's BGR pixel mean (vlm_jax.clipbert.data.NORMALIZATIONS['detectron2']),
# written out so that this benchmark does not import the data path (TensorFlow).
PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
# MiniLM-L6-H384's shape (configs/clipbert.py:tiny's text checkpoint), random weights here.
MINILM_SHAPE = dict(num_layers=6, hidden_size=384, num_heads=12, mlp_dim=1536)


def benchmark_config(preset: str, runlocal: bool = False, batch: int | None = None,
                     clips: int | None = None, image_size: int | None = None):
  """configs/clipbert.py's preset on one device, float32, random weights of its shape;
  `batch` (videos), `clips` (per video) and `image_size` replace the preset's."""
  config = clipbert_config.get_config(preset + (',runlocal' if runlocal else ''))
  m = config.model
  if m.text_checkpoint == hf_bert.MINILM:
    # The checkpoint's shape, random weights: both sides start from the same random init.
    for field, value in MINILM_SHAPE.items():
      m[field] = value
  m.text_checkpoint = ''
  m.init_checkpoint = ''
  # Parity at float32, and PyTorch's CPU reference computes in float32.
  m.dtype = 'float32'
  if m.task != clipbert_model.MATCHING:
    raise ValueError(f'task {m.task!r}: the reference implements matching (retrieval)')
  if batch:
    config.train.global_batch_size = batch
  if clips:
    config.data.num_clips = clips
  if image_size:
    config.data.image_size = image_size
  config.mesh.data, config.mesh.model = 1, 1
  return config


def shapes(config, setup: step_lib.Setup | None = None) -> dict[str, int]:
  d = config.data
  out = dict(batch=config.train.global_batch_size, clips=d.num_clips, frames=d.num_frames,
             image_size=d.image_size, texts=step_lib.texts_per_video(config),
             text_tokens=d.max_text_tokens)
  if setup is not None:
    grid = -(-d.image_size // 32) // 2  # res5 at H/32 (ceil), then MaxPool2d(2, 2) (floor)
    out['visual_tokens'] = grid * grid
    out['bert'] = (f'{setup.model.config.bert_config.num_layers} x '
                   f'{setup.model.config.bert_config.hidden_size}')
  return out


def frames_per_step(config) -> int:
  """Videos x clips x frames: what one train step consumes."""
  d = config.data
  return config.train.global_batch_size * d.num_clips * d.num_frames


def random_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A matching batch as vlm_jax.clipbert.data makes one: noise frames (BGR 0-255 minus the
  pixel mean), [CLS] words [SEP] padded texts (the caption and its negative), labels (1, 0)."""
  abstract = step_lib.abstract_batch(config)
  n, texts, length = abstract['input_ids'].shape
  words = rng.integers(2, length - 1, (n, texts))
  mask = (np.arange(length) < (words + 2)[..., None]).astype(np.int32)
  ids = rng.integers(1000, config.model.text_vocab_size, (n, texts, length)).astype(np.int32)
  ids[..., 0] = CLS
  np.put_along_axis(ids, (words + 1)[..., None], SEP, axis=-1)
  pixels = rng.uniform(0.0, 255.0, abstract['frames'].shape).astype(np.float32)
  labels = np.zeros((n, texts), np.int32)
  labels[:, 0] = 1
  return {'input_ids': ids * mask, 'attention_mask': mask,
          'frames': pixels - np.float32(PIXEL_MEAN_BGR), 'labels': labels}


# ----------------------------------------------------------------------------
# The PyTorch reference.
# ----------------------------------------------------------------------------

@dataclasses.dataclass
class Reference:
  """The PyTorch side: the model, its loss, a train step and the optimizer."""
  model: Any
  loss_fn: Callable         # (model, torch batch) -> loss
  train_step: Callable      # torch batch -> loss (dropout as the model's mode says)
  trained: list             # [(name, parameter)] the optimizer updates
  frozen: list              # [(name, parameter)] frozen (requires_grad False)
  optimizer: Any
  scheduler: Any


def is_r50(config: resnet.ResNetConfig) -> bool:
  return (tuple(config.stage_sizes), config.width) == ((3, 4, 6, 3), 64)


def torchvision_trunk(config: resnet.ResNetConfig):
  """torchvision's ResNet trunk (no avgpool, no fc) in the layout of `config` (see the
  module docstring): torchvision.models.resnet50 for R-50, else the same modules."""
  import functools  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  from torchvision.models import resnet as tv  # pylint: disable=import-outside-toplevel
  norm = (functools.partial(torchvision.ops.FrozenBatchNorm2d, eps=config.bn_eps)
          if config.frozen_bn else torch.nn.BatchNorm2d)
  if is_r50(config):
    net = tv.resnet50(weights=None, norm_layer=norm)
    del net.avgpool, net.fc
  else:
    # resnet50's modules and names at another depth and width (its constructor fixes
    # the stem at 64 channels and the stages at 64 ... 512).
    net = torch.nn.Module()
    width = config.width
    net.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = norm(width)
    net.relu = torch.nn.ReLU(inplace=True)
    net.maxpool = torch.nn.MaxPool2d(3, 2, 1)
    inplanes = width
    for index, num_blocks in enumerate(config.stage_sizes):
      planes = width * 2 ** index
      blocks = []
      for block in range(num_blocks):
        stride = 2 if index > 0 and block == 0 else 1
        downsample = None
        if stride != 1 or inplanes != planes * tv.Bottleneck.expansion:
          downsample = torch.nn.Sequential(
              tv.conv1x1(inplanes, planes * tv.Bottleneck.expansion, stride),
              norm(planes * tv.Bottleneck.expansion))
        blocks.append(tv.Bottleneck(inplanes, planes, stride, downsample, norm_layer=norm))
        inplanes = planes * tv.Bottleneck.expansion
      setattr(net, f'layer{index + 1}', torch.nn.Sequential(*blocks))
  if config.stride_in_1x1:  # detectron2's MSRA blocks: the stride in the first 1x1 conv
    for name in ('layer2', 'layer3', 'layer4'):
      first = getattr(net, name)[0]
      first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
  return net


def trunk_forward(net, x):
  """[n, 3, H, W] -> res5 [n, C, H/32, W/32] (torchvision's ResNet.forward up to layer4)."""
  x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
  return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def frozen_trunk_modules(config: resnet.ResNetConfig) -> list[str]:
  """The trunk's modules detectron2's freeze_at freezes (stem = conv1 + bn1, res2 = layer1 ...)."""
  names = ['conv1', 'bn1'] if config.freeze_at >= 1 else []
  return names + [f'layer{k}' for k in range(1, 5) if config.freeze_at >= k + 1]


def hf_config(bert_config, attention: str):
  import transformers  # pylint: disable=import-outside-toplevel
  c = bert_config
  return transformers.BertConfig(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
      num_attention_heads=c.num_heads, intermediate_size=c.mlp_dim, hidden_act='gelu',
      hidden_dropout_prob=c.dropout_rate, attention_probs_dropout_prob=c.attention_dropout_rate,
      max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
      layer_norm_eps=c.layer_norm_eps, attn_implementation=attention)


def torch_reference(config, net: clipbert_model.ClipBertConfig, schedules: dict,
                    attention: str = 'sdpa', memory_format: str = 'channels_last',
                    adamw: str = 'fused') -> Reference:
  """ClipBERT's model, its two-group optimizer and a train-step function, in PyTorch.

  `net` is the Flax side's network (setup.model.config), `schedules` its
  learning rate by 0-based step and group (setup.schedules). `adamw`: torch's
  AdamW implementation, 'fused' (one kernel per step), 'foreach' or 'for_loop'
  (its CPU default).
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from transformers import masking_utils  # pylint: disable=import-outside-toplevel
  bert_config, resnet_config = net.bert_config, net.resnet_config
  hidden, eps = bert_config.hidden_size, bert_config.layer_norm_eps
  bert_hf = hf_config(bert_config, attention)
  method = config.model.consensus
  channels_last = memory_format == 'channels_last'

  class VisualInputEmbedding(torch.nn.Module):
    """ClipBERT's: frame mean, row / column positions, a one-row token type, LayerNorm."""

    def __init__(self):
      super().__init__()
      self.row_position_embeddings = torch.nn.Embedding(net.max_grid_rows, hidden)
      self.col_position_embeddings = torch.nn.Embedding(net.max_grid_cols, hidden)
      self.token_type_embeddings = torch.nn.Embedding(1, hidden)
      self.LayerNorm = torch.nn.LayerNorm(hidden, eps=eps)  # pylint: disable=invalid-name
      self.dropout = torch.nn.Dropout(bert_config.dropout_rate)

    def forward(self, grid):
      """[n, frames, h, w, hidden] -> [n, h * w, hidden]."""
      n, _, height, width, _ = grid.shape
      grid = grid.mean(1)
      grid = grid + self.row_position_embeddings.weight[:height, None, :]
      grid = grid + self.col_position_embeddings.weight[None, :width, :]
      tokens = grid.reshape(n, height * width, hidden) + self.token_type_embeddings.weight[0]
      return self.dropout(self.LayerNorm(tokens))

  class ClipBert(torch.nn.Module):
    """vlm_jax.clipbert.model.ClipBert (matching), module by module, ClipBERT's pieces."""

    def __init__(self):
      super().__init__()
      self.frame_encoder = torchvision_trunk(resnet_config)
      self.grid_encoder = torch.nn.Sequential(
          torch.nn.Conv2d(resnet.output_channels(resnet_config), hidden, 3, 1, 1, bias=False),
          torch.nn.MaxPool2d(kernel_size=2, stride=2), torch.nn.ReLU(inplace=True))
      self.visual_embeddings = VisualInputEmbedding()
      self.bert = transformers.BertModel(bert_hf)  # embeddings, encoder, pooler
      self.pooled_dropout = torch.nn.Dropout(bert_config.dropout_rate)
      self.classifier = torch.nn.Sequential(
          torch.nn.Linear(hidden, 2 * hidden), torch.nn.ReLU(inplace=True),
          torch.nn.Linear(2 * hidden, net.num_outputs))

    def forward(self, input_ids, text_mask, frames):
      """[b, texts, L] ids and mask, [b, clips, frames, H, W, 3] -> [b, clips, texts, 2]."""
      batch, clips, num_frames = frames.shape[:3]
      # NHWC -> an NCHW view, which is channels_last in memory.
      x = frames.flatten(0, 2).permute(0, 3, 1, 2)
      x = x if channels_last else x.contiguous()
      grid = self.grid_encoder(trunk_forward(self.frame_encoder, x))  # [n, hidden, h, w]
      grid = grid.unflatten(0, (batch * clips, num_frames)).permute(0, 1, 3, 4, 2)
      visual = self.visual_embeddings(grid)  # [b * clips, V, hidden]
      return self.joint(input_ids, text_mask, visual.unflatten(0, (batch, clips)))

    def joint(self, input_ids, text_mask, visual):
      """[b, texts, L] ids and mask, [b, clips, V, hidden] visual tokens -> [b, clips, texts, 2]."""
      batch, clips = visual.shape[:2]
      texts, length = input_ids.shape[1:]
      num_visual = visual.shape[2]
      # Each clip's tokens repeated for its texts (ClipBERT's repeat_tensor_rows).
      visual = visual.view(batch, clips, 1, num_visual, hidden).expand(
          batch, clips, texts, num_visual, hidden).reshape(-1, num_visual, hidden)
      per_clip = lambda t: t[:, None].expand(batch, clips, texts, length).reshape(-1, length)
      ids, mask = per_clip(input_ids), per_clip(text_mask)
      x = torch.cat([self.bert.embeddings(input_ids=ids), visual], dim=1)
      mask = torch.cat([mask, mask.new_ones(mask.shape[0], num_visual)], dim=1)
      bias = masking_utils.create_bidirectional_mask(bert_hf, x, mask)
      states = self.bert.encoder(x, attention_mask=bias).last_hidden_state
      logits = self.classifier(self.pooled_dropout(self.bert.pooler(states)))
      return logits.view(batch, clips, texts, -1)

  def reduce(logits):
    """vlm_jax.clipbert.consensus.reduce over the clips axis."""
    if method == consensus.MEAN:
      return logits.mean(1)
    if method == consensus.MAX:
      return logits.amax(1)
    return torch.logsumexp(logits, 1)

  def loss_fn(model, b, visual=None):
    """vlm_jax.clipbert.objectives.matching_loss: consensus, then CE over all pairs
    (with `visual` tokens [b, clips, V, hidden], the joint part alone)."""
    if visual is None:
      logits = model(b['input_ids'], b['attention_mask'], b['frames'])
    else:
      logits = model.joint(b['input_ids'], b['attention_mask'], visual)
    reduced = reduce(logits)
    return torch.nn.functional.cross_entropy(reduced.flatten(0, 1), b['labels'].flatten())

  model = ClipBert()
  if channels_last:
    model.frame_encoder.to(memory_format=torch.channels_last)
    model.grid_encoder.to(memory_format=torch.channels_last)
  for name in frozen_trunk_modules(resnet_config):
    getattr(model.frame_encoder, name).requires_grad_(False)
  trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
  frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]

  # ClipBERT's two groups, each split by weight decay (none on biases and LayerNorm
  # weights: vlm_jax.train.optim's rule, kernels and embeddings decay).
  norm_weights = {id(mod.weight) for mod in model.modules() if isinstance(mod, torch.nn.LayerNorm)}
  no_decay = lambda name, p: name.endswith('bias') or id(p) in norm_weights
  is_cnn = lambda name: name.split('.')[0] in step_lib.FRAME_ENCODER_MODULES
  o = config.optim
  peaks = {step_lib.FRAME_ENCODER: o.frame_encoder_learning_rate,
           step_lib.TRANSFORMER: o.learning_rate}
  # The schedules by step, once (LambdaLR calls its lambdas every step).
  tables = {group: np.asarray(jax.jit(schedule)(jnp.arange(config.train.num_steps + 1)),
                              np.float64)
            for group, schedule in schedules.items()}
  groups, lambdas = [], []
  for group in (step_lib.FRAME_ENCODER, step_lib.TRANSFORMER):
    for decay in (True, False):
      members = [p for name, p in trained
                 if (is_cnn(name) == (group == step_lib.FRAME_ENCODER))
                 and (not no_decay(name, p)) == decay]
      if not members:
        continue
      groups.append({'params': members, 'lr': peaks[group],
                     'weight_decay': o.weight_decay if decay else 0.0})
      table, peak = tables[group], peaks[group]
      lambdas.append(lambda count, table=table, peak=peak:
                     float(table[min(count, len(table) - 1)]) / peak if peak else 0.0)
  implementation = {'fused': dict(fused=True), 'foreach': dict(foreach=True),
                    'for_loop': dict(foreach=False)}[adamw]
  optimizer = torch.optim.AdamW(groups, betas=(o.b1, o.b2), eps=o.eps, **implementation)
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
  parameters = [p for _, p in trained]

  def train_step(b):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, b)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, o.grad_clip_norm)
    optimizer.step()
    scheduler.step()
    return loss.detach()

  return Reference(model, loss_fn, train_step, trained, frozen, optimizer, scheduler)


# ----------------------------------------------------------------------------
# Flax parameters <-> the reference's modules.
# ----------------------------------------------------------------------------

def _conv(kernel) -> np.ndarray:
  return np.asarray(kernel).transpose(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]


def _linear(prefix: str, p: dict) -> dict:
  return {f'{prefix}.weight': np.asarray(p['kernel']).T, f'{prefix}.bias': np.asarray(p['bias'])}


def _norm(prefix: str, p: dict) -> dict:
  return {f'{prefix}.weight': np.asarray(p['scale']), f'{prefix}.bias': np.asarray(p['bias'])}


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def trunk_state_dict(prefix: str, encoder: dict, config: resnet.ResNetConfig) -> dict:
  """vlm_jax.models.resnet.ResNet params -> the torchvision trunk's tensors.

  By vlm_jax.convert.resnet_torch's torchvision table. A folded FrozenBN pair
  (scale, bias) becomes FrozenBatchNorm2d's weight = scale, bias = bias,
  running_mean = 0, running_var = 1 - eps: the same affine.
  """
  out = {}
  for (conv, norm), path in resnet_torch.torchvision_table(config):
    p = _get(encoder, path)
    out[f'{prefix}{conv}.weight'] = _conv(p['conv']['kernel'])
    scale, bias = np.asarray(p['norm']['scale']), np.asarray(p['norm']['bias'])
    out[f'{prefix}{norm}.weight'], out[f'{prefix}{norm}.bias'] = scale, bias
    out[f'{prefix}{norm}.running_mean'] = np.zeros_like(scale)
    out[f'{prefix}{norm}.running_var'] = np.full_like(scale, 1.0 - config.bn_eps)
  return out


def bert_state_dict(prefix: str, p: dict) -> dict:
  """vlm_jax.models.bert.BertModel params -> transformers BertModel tensors (hf_bert.to_flax's
  inverse)."""
  emb = p['embeddings']
  out = {f'{prefix}embeddings.{name}.weight': np.asarray(emb[name]['embedding'])
         for name in ('word_embeddings', 'position_embeddings', 'token_type_embeddings')}
  out.update(_norm(f'{prefix}embeddings.LayerNorm', emb['LayerNorm']))
  for i in range(len(p['encoder'])):
    layer, q = p['encoder'][f'layer_{i}'], f'{prefix}encoder.layer.{i}.'
    for name in ('query', 'key', 'value'):
      out.update(_linear(f'{q}attention.self.{name}', layer['attention'][name]))
    out.update(_linear(f'{q}attention.output.dense', layer['attention']['out']))
    out.update(_norm(f'{q}attention.output.LayerNorm', layer['attention_norm']))
    out.update(_linear(f'{q}intermediate.dense', layer['mlp']['intermediate']))
    out.update(_linear(f'{q}output.dense', layer['mlp']['output']))
    out.update(_norm(f'{q}output.LayerNorm', layer['output_norm']))
  out.update(_linear(f'{prefix}pooler.dense', p['pooler']['dense']))
  return out


def torch_state_dict(params, net: clipbert_model.ClipBertConfig) -> dict[str, np.ndarray]:
  """Every tensor of the reference's state dict, by torch name, from a Flax params-shaped tree
  (params, gradients or updates)."""
  params = jax.device_get(params)
  out = trunk_state_dict('frame_encoder.', params['frame_encoder'], net.resnet_config)
  out['grid_encoder.0.weight'] = _conv(params['grid_encoder']['conv']['kernel'])
  visual = params['visual_embeddings']
  for name in ('row_position_embeddings', 'col_position_embeddings', 'token_type_embeddings'):
    out[f'visual_embeddings.{name}.weight'] = np.asarray(visual[name]['embedding'])
  out.update(_norm('visual_embeddings.LayerNorm', visual['LayerNorm']))
  out.update(bert_state_dict('bert.', params['bert']))
  out.update(_linear('classifier.0', params['classifier']['hidden']))
  out.update(_linear('classifier.2', params['classifier']['output']))
  return out


def load_flax_params(model, params, net: clipbert_model.ClipBertConfig) -> None:
  """Copies the Flax params into the reference (strict: every tensor, no extra)."""
  import torch  # pylint: disable=import-outside-toplevel
  sd = {k: torch.tensor(np.ascontiguousarray(v)) for k, v in torch_state_dict(params, net).items()}
  model.load_state_dict(sd, strict=True)


def round_trip(model, params, net: clipbert_model.ClipBertConfig) -> float:
  """The reference's state dict, renamed to ClipBERT's checkpoint names, read back by
  vlm_jax.convert.clipbert_torch.to_flax: the largest difference from `params` (the
  converter written here checked against the project's)."""
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  d2_names = {path: names for names, path in resnet_torch.detectron2_table(
      net.resnet_config, clipbert_torch.BACKBONE)}
  clipbert_sd = {}
  for (conv, norm), path in resnet_torch.torchvision_table(net.resnet_config):
    d2_conv, d2_norm = d2_names[path]
    clipbert_sd[f'{d2_conv}.weight'] = sd[f'frame_encoder.{conv}.weight']
    for t in ('weight', 'bias', 'running_mean', 'running_var'):
      clipbert_sd[f'{d2_norm}.{t}'] = sd[f'frame_encoder.{norm}.{t}']
  clipbert_sd[clipbert_torch.GRID_CONV] = sd['grid_encoder.0.weight']
  for name, value in sd.items():
    if name.startswith('bert.'):
      clipbert_sd[clipbert_torch.BERT + name[len('bert.'):]] = value
    elif name.startswith('visual_embeddings.'):  # transformer.bert.visual_embeddings.*
      clipbert_sd[clipbert_torch.BERT + name] = value
    elif name.startswith('classifier.'):
      clipbert_sd['transformer.' + name] = value
  back = clipbert_model.from_clipbert_checkpoint(clipbert_sd, net)
  params = jax.device_get(params)
  diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       back, params)
  return max(jax.tree.leaves(diffs))


def torch_batch(batch: dict) -> dict:
  """NumPy batch -> torch tensors (ids, masks and labels as int64, as torch's lookups want)."""
  import torch  # pylint: disable=import-outside-toplevel
  return {k: torch.from_numpy(v).long() if v.dtype.kind == 'i' else torch.from_numpy(v)
          for k, v in batch.items()}


def reference_for(config, setup: step_lib.Setup, params, attention: str = 'sdpa',
                  memory_format: str = 'channels_last', adamw: str = 'fused') -> Reference:
  """A fresh PyTorch reference holding a copy of `params`."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  reference = torch_reference(config, setup.model.config, setup.schedules, attention,
                              memory_format, adamw)
  load_flax_params(reference.model, params, setup.model.config)
  return reference


# ----------------------------------------------------------------------------
# Parity: the same model on both sides.
# ----------------------------------------------------------------------------

def parity(config, setup: step_lib.Setup, params, batch: dict, tolerance: float = 1e-4,
           attention: str = 'sdpa', memory_format: str = 'channels_last',
           adamw: str = 'fused') -> dict[str, Any]:
  """Dropout off on both sides, the same weights: loss, gradients; then two optimizer updates.

  Args:
    params: the Flax params (host arrays), copied into a fresh reference.
    batch: NumPy (random_batch).
    tolerance: on the loss, absolute; each gradient and update must agree to
      10 x tolerance of the tensor's largest magnitude (+ 1e-7 absolute), and
      all of them together to `tolerance` in relative L2.

  Returns:
    The losses and their difference, the relative L2 differences of the
    gradients and of the updates over all trained tensors, their count, and
    the converter's round-trip difference.

  Raises:
    AssertionError: past a tolerance, a trained tensor on one side only, or a
      frozen part that moved.
  """
  import torch  # pylint: disable=import-outside-toplevel
  net, task, method = setup.model.config, config.model.task, config.model.consensus

  def loss_fn(p, b):
    logits = setup.model.apply({'params': p}, b['input_ids'], b['attention_mask'], b['frames'])
    return objectives.loss(task, logits, b['labels'], method)[0]

  value_and_grad = setup.sharded.in_mesh(jax.jit(jax.value_and_grad(loss_fn)))
  device_params = jax.device_put(params, setup.sharded.param_shardings)
  loss, grads = value_and_grad(device_params, partitioning.device_batch(batch, setup.mesh))

  reference = reference_for(config, setup, params, attention, memory_format, adamw)
  reference.model.eval()  # no dropout
  report = {'converter_round_trip_max_diff': round_trip(reference.model, params, net)}
  assert report['converter_round_trip_max_diff'] <= 1e-5, report
  t_loss = reference.loss_fn(reference.model, torch_batch(batch))
  t_loss.backward()
  # Autograd's gradients share their parameters' layout (channels_last convs included),
  # which the fused AdamW of the timed steps relies on.
  assert all(p.grad.stride() == p.stride() for _, p in reference.trained)
  report.update(loss_jax=float(loss), loss_torch=t_loss.item(),
                loss_diff=abs(float(loss) - t_loss.item()))
  assert report['loss_diff'] <= tolerance, f'loss_diff = {report["loss_diff"]:.3g}: {report}'

  # The trained tensors: the Flax leaves outside step_lib's FROZEN group are exactly the
  # reference's parameters that require a gradient.
  groups = step_lib.param_groups(params, net)
  frozen_mask = jax.tree.map(lambda g: g == step_lib.FROZEN, groups)
  frozen_arrays = jax.tree.map(lambda f, p: np.full(np.shape(p), f), frozen_mask, params)
  trained_flax = {name for name, is_frozen in torch_state_dict(frozen_arrays, net).items()
                  if not np.asarray(is_frozen).any()
                  and not name.endswith(('.running_mean', '.running_var'))}  # made up here
  trained = reference.trained
  assert {name for name, _ in trained} == trained_flax, (
      sorted({name for name, _ in trained} ^ trained_flax)[:10])

  def compare(flax_tree, named_tensors, what):
    """Asserts each tensor's agreement; returns ||ours - theirs|| / ||ours|| over all."""
    ours_by_name = torch_state_dict(flax_tree, net)
    diff_sq = norm_sq = 0.0
    for name, tensor in named_tensors:
      ours, theirs = ours_by_name[name], tensor.detach().numpy()
      scale = float(max(np.abs(ours).max(), np.abs(theirs).max()))
      error = float(np.abs(ours - theirs).max())
      assert error <= 10 * tolerance * scale + 1e-7, (
          f'{what} of {name}: max |diff| {error:.3g}, max |value| {scale:.3g}')
      diff_sq += float(np.sum((ours - theirs).astype(np.float64) ** 2))
      norm_sq += float(np.sum(ours.astype(np.float64) ** 2))
    relative = (diff_sq / max(norm_sq, 1e-300)) ** 0.5
    assert relative <= tolerance, f'{what}s: relative L2 difference {relative:.3g}'
    return relative

  host_grads = jax.device_get(grads)
  report['grad_relative_l2_diff'] = compare(
      host_grads, [(name, p.grad) for name, p in trained], 'gradient')
  report['grad_norm_cnn'] = float(np.sqrt(sum(
      float(torch.sum(p.grad.double() ** 2)) for name, p in trained
      if name.split('.')[0] in step_lib.FRAME_ENCODER_MODULES)))
  assert report['grad_norm_cnn'] > 0, 'no gradient reaches the CNN'
  assert all(p.grad is None for _, p in reference.frozen)

  # Two updates from vlm_jax's init gradients on each side (the same gradients in, so
  # this checks the optimizers alone: both groups' schedules at steps 0 and 1, clipping,
  # decay, the frozen parts left alone). vlm_jax's updates are summed as optax returns
  # them and the reference steps in float64: a float32 parameter's rounding (1e-7 at
  # |w| ~ 1) would swamp the first warm-up updates (5e-5 / 20 for `tiny`).
  @jax.jit
  def two_updates(grads, params):  # one compilation, not one per eager op and shape
    opt_state, total = setup.tx.init(params), jax.tree.map(jnp.zeros_like, params)
    for _ in range(2):
      updates, opt_state = setup.tx.update(grads, opt_state, params)
      params = jax.tree.map(jnp.add, params, updates)
      total = jax.tree.map(jnp.add, total, updates)
    return total, params

  total, new_params = jax.device_get(setup.sharded.in_mesh(two_updates)(grads, device_params))
  jax_grads = torch_state_dict(host_grads, net)
  reference.model.double()  # in place: the optimizer keeps the same Parameters
  before = {name: p.detach().clone() for name, p in trained}
  frozen_before = {name: t.detach().clone() for name, t in
                   list(reference.frozen) + list(reference.model.named_buffers())}
  for _ in range(2):
    for name, p in trained:  # clipping scales these in place
      # In p's memory format (channels_last convs), as autograd's gradients are: the
      # fused AdamW reads gradient and parameter as the same flat memory.
      p.grad = torch.empty_like(p).copy_(torch.from_numpy(np.array(jax_grads[name])))
    torch.nn.utils.clip_grad_norm_([p for _, p in trained], config.optim.grad_clip_norm)
    reference.optimizer.step()
    reference.scheduler.step()
  report['update_relative_l2_diff'] = compare(
      total, [(name, (p.detach() - before[name]).float()) for name, p in trained], 'update')
  frozen_leaves = [(u, p, q) for u, p, q, f in zip(
      jax.tree.leaves(total), jax.tree.leaves(new_params), jax.tree.leaves(params),
      jax.tree.leaves(frozen_mask)) if f]
  assert all(not np.asarray(u).any() and np.array_equal(p, q) for u, p, q in frozen_leaves), (
      'a frozen Flax parameter moved')
  named = dict(list(reference.frozen) + list(reference.model.named_buffers()))
  assert all(torch.equal(named[name], value) for name, value in frozen_before.items()), (
      'a frozen reference tensor moved')
  report['trained_tensors'] = len(trained)
  report['frozen_flax_leaves'] = int(sum(jax.tree.leaves(frozen_mask)))
  return report


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------

def torch_stepper(reference: Reference, batch: dict) -> Callable[[], float]:
  """One call = one train step of the reference (dropout on); returns the loss."""
  reference.model.train()
  b = torch_batch(batch)
  return lambda: float(reference.train_step(b))


def split_steppers(setup: step_lib.Setup, params, batch: dict, reference: Reference
                   ) -> dict[str, dict[str, Callable[[], float]]]:
  """{phase: {side: callable}}: the step taken apart.

  'cnn' / 'cnn_backward': the frame and grid encoders on every frame, without
  / with the gradients of a sum of squares of their grids; 'joint' /
  'joint_backward': the joint BERT, head and loss on fixed visual tokens
  (dropout on), without / with their gradients; 'forward' / 'backward': the
  whole loss without / with its gradients; 'step': the train step (clipping and
  AdamW as well). Each callable returns a float that waits for its work.
  """
  jax_side, visual = _jax_phases(setup, params, batch)
  torch_side = _torch_phases(reference, batch, visual)
  phases = {phase: {'vlm_jax': jax_side[phase], 'torch': torch_side[phase]}
            for phase in jax_side}
  phases['step'] = {'vlm_jax': step_timing.jax_stepper(setup, params, batch),
                    'torch': torch_stepper(reference, batch)}
  return phases


def _jax_phases(setup: step_lib.Setup, params, batch: dict
                ) -> tuple[dict[str, Callable[[], float]], jax.Array]:
  """({phase: callable} of vlm_jax's side, the visual tokens [batch, clips, n, hidden])."""
  config, model = setup.config, setup.model
  task, method = config.model.task, config.model.consensus
  device_params = jax.device_put(params, setup.sharded.param_shardings)
  device_batch = partitioning.device_batch(batch, setup.mesh)
  frames = device_batch['frames']
  rng = jax.random.key(0)

  def cnn(p, f):
    return jnp.sum(jnp.square(model.apply({'params': p}, f, method='grid_features')))

  def cnn_backward(p, f):
    encoder = {k: p[k] for k in step_lib.FRAME_ENCODER_MODULES}
    return _gradient_norm(jax.grad(lambda part: cnn({**p, **part}, f))(encoder))

  def joint(p, b, v):
    logits = model.apply({'params': p}, b['input_ids'], b['attention_mask'], v,
                         train=True, rngs={'dropout': rng}, method='_task_logits')
    return objectives.loss(task, logits, b['labels'], method)[0]

  def loss(p, b):
    logits = model.apply({'params': p}, b['input_ids'], b['attention_mask'], b['frames'],
                         train=True, rngs={'dropout': rng})
    return objectives.loss(task, logits, b['labels'], method)[0]

  def visual_tokens(p, f):
    return model.apply({'params': p}, f, method='visual_tokens')

  visual = setup.sharded.in_mesh(jax.jit(visual_tokens))(device_params, frames)
  programs = {
      'cnn': (cnn, (device_params, frames)),
      'cnn_backward': (cnn_backward, (device_params, frames)),
      'joint': (joint, (device_params, device_batch, visual)),
      'joint_backward': (lambda p, b, v: _gradient_norm(jax.grad(joint)(p, b, v)),
                         (device_params, device_batch, visual)),
      'forward': (loss, (device_params, device_batch)),
      'backward': (lambda p, b: _gradient_norm(jax.grad(loss)(p, b)),
                   (device_params, device_batch))}
  return {phase: functools.partial(_run_jax, setup.sharded.in_mesh(jax.jit(fn)), args)
          for phase, (fn, args) in programs.items()}, visual


def _run_jax(fn, args) -> float:
  return float(fn(*args))


def _torch_phases(reference: Reference, batch: dict, visual) -> dict[str, Callable[[], float]]:
  """{phase: callable} of the reference's side, on vlm_jax's visual tokens for 'joint'."""
  import torch  # pylint: disable=import-outside-toplevel
  tb = torch_batch(batch)
  net = reference.model
  net.train()
  pixels = tb['frames'].flatten(0, 2).permute(0, 3, 1, 2)
  torch_visual = torch.from_numpy(np.array(visual))  # writable: torch shares its memory
  losses = {
      'cnn': lambda: net.grid_encoder(trunk_forward(net.frame_encoder, pixels)).square().sum(),
      'joint': lambda: reference.loss_fn(net, tb, torch_visual),
      'forward': lambda: reference.loss_fn(net, tb)}
  backward_of = {'cnn_backward': 'cnn', 'joint_backward': 'joint', 'backward': 'forward'}
  phases = {phase: functools.partial(_run_torch, reference, fn, False)
            for phase, fn in losses.items()}
  phases.update({phase: functools.partial(_run_torch, reference, losses[of], True)
                 for phase, of in backward_of.items()})
  return phases


def _run_torch(reference: Reference, fn: Callable[[], Any], grad: bool) -> float:
  """fn()'s value, under no_grad or with its backward pass (gradients cleared first)."""
  import torch  # pylint: disable=import-outside-toplevel
  if not grad:
    with torch.no_grad():
      return float(fn())
  reference.optimizer.zero_grad(set_to_none=True)
  value = fn()
  value.backward()
  return float(value.detach())


def _gradient_norm(tree) -> jax.Array:
  """A scalar that needs every gradient (so that none is optimised away)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='tiny', choices=['tiny', 'base'])
  parser.add_argument('--runlocal', action='store_true',
                      help="The preset's `runlocal` shapes (BERT 2 x 64, 64 px, batch 4).")
  parser.add_argument('--batch', type=int, default=0,
                      help="Videos per step; 0 = the preset's (base: 64, minutes a step on a CPU).")
  parser.add_argument('--clips', type=int, default=0, help="Clips per video; 0 = the preset's.")
  parser.add_argument('--image_size', type=int, default=0,
                      help="Frame side (>= 64: a 1 x 1 grid); 0 = the preset's.")
  parser.add_argument('--steps', type=int, default=6, help='Timed steps per side per round.')
  parser.add_argument('--rounds', type=int, default=2, help='Turns of each side.')
  parser.add_argument('--warmup', type=int, default=2, help='Untimed steps per side first.')
  parser.add_argument('--attention', default='sdpa', choices=['sdpa', 'eager'],
                      help="transformers' attention implementation in the reference.")
  parser.add_argument('--memory_format', default='channels_last',
                      choices=['channels_last', 'contiguous'],
                      help="The reference CNN's layout (the frames arrive channels-last).")
  parser.add_argument('--torch_adamw', default='fused', choices=['fused', 'foreach', 'for_loop'],
                      help="The reference's torch.optim.AdamW implementation ('for_loop' is "
                           "its CPU default, several times slower than 'fused').")
  parser.add_argument('--malloc', default='vlm_jax', choices=['vlm_jax', 'default'],
                      help="'vlm_jax': vlm_jax.host_memory.retain_freed_memory as vlm-jax "
                           "applies it (one process: both sides); 'default': glibc's.")
  parser.add_argument('--tolerance', type=float, default=1e-4, help='Parity tolerance.')
  parser.add_argument('--skip_parity', action='store_true')
  parser.add_argument('--split', action='store_true',
                      help='Also time the step taken apart (`split_steppers`: the CNN forward, '
                           'the loss forward, forward + backward, the whole step), per side.')
  parser.add_argument('--jsonl', default='runs/benchmarks/clipbert_step.jsonl',
                      help='Appends one line of results here.')
  args = parser.parse_args()

  if args.malloc == 'vlm_jax':
    host_memory.retain_freed_memory()  # before any computation, as vlm_jax.cli
  jax.config.update('jax_threefry_partitionable', True)
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  threads = os.cpu_count()
  torch.set_num_threads(threads)

  config = benchmark_config(args.preset, args.runlocal, args.batch or None, args.clips or None,
                            args.image_size or None)
  setup = step_lib.build(config, devices=jax.devices()[:1])
  params = jax.device_get(step_lib.initial_params(setup))
  batch = random_batch(config, np.random.default_rng(0))
  s = shapes(config, setup)
  print(f'shapes: {s}; ResNet {config.model.resnet} (detectron2 layout, freeze_at '
        f'{config.model.freeze_at}), consensus {config.model.consensus}', flush=True)

  report = {} if args.skip_parity else parity(config, setup, params, batch, args.tolerance,
                                              args.attention, args.memory_format,
                                              args.torch_adamw)
  if report:
    print('parity (dropout off, copied weights): ' + json.dumps(report), flush=True)

  reference = reference_for(config, setup, params, args.attention, args.memory_format,
                            args.torch_adamw)
  load_before = os.getloadavg()
  times = step_timing.time_sides({'vlm_jax': step_timing.jax_stepper(setup, params, batch),
                      'torch': torch_stepper(reference, batch)},
                     args.warmup, args.steps, args.rounds)
  median = {side: statistics.median(t) for side, t in times.items()}
  split = {}
  if args.split:
    for phase, steppers in split_steppers(setup, params, batch, reference).items():
      phase_times = step_timing.time_sides(steppers, args.warmup, args.steps, args.rounds)
      split[phase] = {side: round(statistics.median(t), 4) for side, t in phase_times.items()}
      print(f'split {phase:8s} vlm_jax {split[phase]["vlm_jax"]:.4f} s, torch '
            f'{split[phase]["torch"]:.4f} s', flush=True)
  frames = frames_per_step(config)
  rate = {side: frames / m for side, m in median.items()}
  ratio = rate['vlm_jax'] / rate['torch']
  result = {
      'benchmark': 'clipbert_step', 'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'preset': args.preset + (',runlocal' if args.runlocal else ''), 'weights': 'random',
      'shapes': s, 'frames_per_step': frames, 'resnet': config.model.resnet,
      'reference_cnn': (('torchvision.models.resnet50' if is_r50(setup.model.config.resnet_config)
                         else 'torchvision Bottleneck trunk')
                        + ' (FrozenBatchNorm2d, stride in the 1x1)'),
      'consensus': config.model.consensus, 'dtype': config.model.dtype,
      'dropout_rng': config.train.dropout_rng, 'attention_reference': args.attention,
      'memory_format_reference': args.memory_format, 'adamw_reference': args.torch_adamw,
      'malloc': args.malloc,
      'warmup': args.warmup, 'steps': args.steps, 'rounds': args.rounds,
      'device': step_timing.device_description(),
      'versions': {'jax': jax.__version__, 'torch': torch.__version__,
                   'torchvision': torchvision.__version__,
                   'transformers': transformers.__version__, 'python': platform.python_version()},
      'step_seconds': {side: [round(t, 4) for t in ts] for side, ts in times.items()},
      'median_step_seconds': {side: round(m, 4) for side, m in median.items()},
      'frames_per_second': {side: round(r, 2) for side, r in rate.items()},
      'ratio_jax_over_torch': round(ratio, 3), 'parity': report,
      'split_median_seconds': split,
      # The machine's 1-minute load average before and after the timed steps: other
      # processes on the same cores slow PyTorch's OpenMP threads far more than XLA's.
      'load_average_1min': [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  print(f'device: {result["device"]}; jax {jax.__version__}, torch {torch.__version__}, '
        f'transformers {transformers.__version__}')
  for side in times:
    print(f'{side:8s} median {median[side]:.3f} s/step, {rate[side]:.2f} frames/s '
          f'(steps: {", ".join(f"{t:.3f}" for t in times[side])})')
  print(f'ratio vlm_jax / torch: {ratio:.2f}x (1-minute load average '
        f'{result["load_average_1min"][0]} -> {result["load_average_1min"][1]})')
  if args.jsonl:
    step_timing.append_jsonl(args.jsonl, result)


if __name__ == '__main__':
  main()
