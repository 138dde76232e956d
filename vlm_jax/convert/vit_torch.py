"""PyTorch ViT state dicts (timm, Hugging Face) -> vlm_jax ViT params.

Namings (`detect_naming` tells them apart; a prefix before them, such as
`vit.` of ViTForImageClassification, is found and tensors outside it ignored):
- timm's VisionTransformer: `patch_embed.proj.*`, `cls_token`, `pos_embed`,
  `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`;
  the fused qkv [3 hidden, hidden] splits into query, key, value (timm reshapes
  its output to (3, heads, head_dim)); `head.*` is ignored.
- Hugging Face's ViTModel, as the Hub's checkpoint files name it (transformers
  4): `embeddings.{cls_token, position_embeddings, patch_embeddings.projection}`,
  `encoder.layer.N.{layernorm_before, attention.attention.{query, key, value},
  attention.output.dense, layernorm_after, intermediate.dense, output.dense}`,
  `layernorm`; and as transformers 5 names its modules (`layers.N.attention.
  {q,k,v,o}_proj`, `layers.N.mlp.{fc1, fc2}`). `pooler.*` is ignored.
  Hugging Face's LayerNorm epsilon is its config.json's `layer_norm_eps`
  (1e-12 by default, timm's is 1e-6): set ViTConfig.layer_norm_eps to it.

Linear weights [out, in] become kernels [in, out], the patch conv [hidden, 3,
p, p] a kernel [p, p, 3, hidden]. The position table [1, (1 +) grid^2, hidden]
splits into the class token's row and the [grid, grid, hidden] grid; a timm
model with a class token but no position for it (`no_embed_class`) gets a zero
row, the same function. Missing tensors raise KeyError and unplaced ones
ValueError, naming them; shapes are checked against the model.
"""

from typing import Any, Mapping

import numpy as np

from vlm_jax.convert import state_dicts
from vlm_jax.models import vit

Params = dict[str, Any]
TIMM = 'timm'
HUGGING_FACE = 'huggingface'
_TIMM_PATCH = 'patch_embed.proj.weight'
_HF_PATCH = 'embeddings.patch_embeddings.projection.weight'

# Reads .pth files and mappings of tensors as the ResNet converter does.


def detect_naming(state_dict: Mapping[str, Any]) -> tuple[str, str]:
  """(TIMM or HUGGING_FACE, the prefix before their names) from a state dict."""
  for naming, marker in ((TIMM, _TIMM_PATCH), (HUGGING_FACE, _HF_PATCH)):
    prefixes = sorted(name[:-len(marker)] for name in state_dict if name.endswith(marker))
    if len(prefixes) > 1:
      raise ValueError(f'ViT state dict has {len(prefixes)} patch embeddings ({marker}) under '
                       f'prefixes {prefixes}')
    if prefixes:
      return naming, prefixes[0]
  raise ValueError(f"ViT state dict names neither timm's ({_TIMM_PATCH}) nor Hugging Face's "
                   f'({_HF_PATCH}); it starts {sorted(state_dict)[:5]}')


def _layout(sd: Mapping[str, Any], naming: str, prefix: str, config: vit.ViTConfig):
  """Names of the tensors: embeddings, final norm, ignored prefixes, per-block tables.

  A block table maps each Flax leaf group to its PyTorch module name; timm's
  fused qkv is the one entry that is not one-to-one.
  """
  if naming == TIMM:
    embed = dict(patch=f'{prefix}patch_embed.proj', pos=f'{prefix}pos_embed',
                 cls=f'{prefix}cls_token')
    final, ignored = f'{prefix}norm', (f'{prefix}head.',)
    blocks = [dict(norm1=f'{p}norm1', qkv=f'{p}attn.qkv', out=f'{p}attn.proj', norm2=f'{p}norm2',
                   fc1=f'{p}mlp.fc1', fc2=f'{p}mlp.fc2')
              for p in (f'{prefix}blocks.{i}.' for i in range(config.num_layers))]
    return embed, final, ignored, blocks
  embed = dict(patch=f'{prefix}embeddings.patch_embeddings.projection',
               pos=f'{prefix}embeddings.position_embeddings', cls=f'{prefix}embeddings.cls_token')
  final, ignored = f'{prefix}layernorm', (f'{prefix}pooler.',)
  if any(name.startswith(f'{prefix}encoder.layer.') for name in sd):
    blocks = [dict(norm1=f'{p}layernorm_before', query=f'{p}attention.attention.query',
                   key=f'{p}attention.attention.key', value=f'{p}attention.attention.value',
                   out=f'{p}attention.output.dense', norm2=f'{p}layernorm_after',
                   fc1=f'{p}intermediate.dense', fc2=f'{p}output.dense')
              for p in (f'{prefix}encoder.layer.{i}.' for i in range(config.num_layers))]
  else:
    blocks = [dict(norm1=f'{p}layernorm_before', query=f'{p}attention.q_proj',
                   key=f'{p}attention.k_proj', value=f'{p}attention.v_proj',
                   out=f'{p}attention.o_proj', norm2=f'{p}layernorm_after', fc1=f'{p}mlp.fc1',
                   fc2=f'{p}mlp.fc2')
              for p in (f'{prefix}layers.{i}.' for i in range(config.num_layers))]
  return embed, final, ignored, blocks


def to_flax(source, config: vit.ViTConfig, naming: str | None = None,
            prefix: str | None = None) -> Params:
  """A timm or Hugging Face ViT state dict -> {'params': ...} of `ViT(config)`.

  Args:
    source: a mapping of tensors / arrays or a .pth path.
    config: the model (sizes, class_token, image_size of the stored grid);
      num_heads cannot be read from the tensors, so it is taken from here.
    naming, prefix: TIMM or HUGGING_FACE and the prefix before the names;
      None detects them.

  Returns:
    {'params': ...} of NumPy float32 arrays.
  """
  sd = state_dicts.read(source)
  if naming is None or prefix is None:
    found_naming, found_prefix = detect_naming(sd)
    naming = found_naming if naming is None else naming
    prefix = found_prefix if prefix is None else prefix
  if naming not in (TIMM, HUGGING_FACE):
    raise ValueError(f'naming={naming!r}: {TIMM!r} or {HUGGING_FACE!r}')
  embed, final, ignored, blocks = _layout(sd, naming, prefix, config)

  modules = [embed['patch'], final] + [m for block in blocks for m in block.values()]
  needed = [f'{m}.{t}' for m in modules for t in ('weight', 'bias')] + [embed['pos']]
  if config.class_token:
    needed.append(embed['cls'])
  missing = [name for name in needed if name not in sd]
  if missing:
    raise KeyError(f'ViT state dict ({naming}, {config.num_layers} layers) lacks '
                   f'{len(missing)} tensors: {missing[:10]}{" ..." if len(missing) > 10 else ""}')
  placed = set(needed)
  unused = sorted(name for name in sd if name.startswith(prefix) and name not in placed
                  and not name.startswith(ignored))
  if unused:
    raise ValueError(f'ViT state dict ({naming}) tensors with no place in the model: '
                     f'{unused[:10]}{" ..." if len(unused) > 10 else ""} ({len(unused)})')

  f32 = lambda name: np.asarray(sd[name], np.float32)
  linear = lambda m: {'kernel': f32(f'{m}.weight').T, 'bias': f32(f'{m}.bias')}
  norm = lambda m: {'scale': f32(f'{m}.weight'), 'bias': f32(f'{m}.bias')}
  params = {
      'patch_embed': {'kernel': f32(f'{embed["patch"]}.weight').transpose(2, 3, 1, 0),
                      'bias': f32(f'{embed["patch"]}.bias')},
      'norm': norm(final),
  }
  params.update(_position_embeddings(f32(embed['pos']), config, embed['pos']))
  if config.class_token:
    params['cls_token'] = f32(embed['cls'])
  for i, block in enumerate(blocks):
    if 'qkv' in block:
      w, b = f32(f'{block["qkv"]}.weight'), f32(f'{block["qkv"]}.bias')
      attention = {name: {'kernel': wp.T, 'bias': bp} for name, wp, bp in
                   zip(('query', 'key', 'value'), np.split(w, 3), np.split(b, 3))}
    else:
      attention = {name: linear(block[name]) for name in ('query', 'key', 'value')}
    attention['out'] = linear(block['out'])
    params[f'block_{i}'] = {
        'norm1': norm(block['norm1']), 'attention': attention, 'norm2': norm(block['norm2']),
        'mlp': {'fc1': linear(block['fc1']), 'fc2': linear(block['fc2'])}}
  variables = {'params': params}
  state_dicts.check_shapes(vit.abstract_variables(vit.ViT(config)), variables, 'the config')
  return variables


def _position_embeddings(table: np.ndarray, config: vit.ViTConfig, name: str) -> Params:
  """[1, positions, hidden] -> {'pos_embedding'[, 'cls_pos_embedding']}."""
  grid, hidden = config.grid_size, table.shape[-1]
  positions = table.shape[1]
  prefix = positions - grid * grid
  if prefix not in ((0, 1) if config.class_token else (0,)):
    side = int(round((positions - int(config.class_token)) ** 0.5))
    raise ValueError(
        f'{name} holds {positions} positions; ViTConfig(image_size={config.image_size}, '
        f'patch_size={config.patch_size}, class_token={config.class_token}) stores a '
        f'{grid}x{grid} grid{" + 1" if config.class_token else ""}. A {side}x{side} grid '
        f'is image_size={side * config.patch_size}')
  out = {'pos_embedding': table[0, prefix:].reshape(grid, grid, hidden)}
  if config.class_token:
    # timm's no_embed_class: no position for the class token, i.e. a zero one.
    out['cls_pos_embedding'] = (table[:, :1] if prefix else
                                np.zeros((1, 1, hidden), np.float32))
  return out
