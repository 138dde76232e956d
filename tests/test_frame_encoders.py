"""Frame encoders: ResNet-50 against torchvision, ViT against transformers, converters.

References nobody here wrote: torchvision's resnet50 and transformers'
ViTModel (random weights, eval mode). Where no such reference is at hand
(detectron2 and timm are not installed) a PyTorch forward written in this file
from the original definitions (detectron2's BasicStem / BottleneckBlock /
FrozenBatchNorm2d; timm's VisionTransformer) is itself first checked against
torchvision / transformers on the same weights, then used as the oracle.
"""

import dataclasses
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax.convert import resnet_torch
from vlm_jax.convert import vit_torch
from vlm_jax.models import resnet
from vlm_jax.models import vit

torch = pytest.importorskip('torch')
F = torch.nn.functional

ALL_STAGES = resnet.STAGES
# 64 px keeps ResNet-50 cheap (res5 is 2 x 2) while every stride-2 step
# still pads; 1e-4 of the output scale, as the S3D parity tests.
IMAGE = (1, 64, 64, 3)
RTOL = 1e-4


def _assert_close(got, want, name):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  diff, scale = np.abs(got - want).max(), np.abs(want).max()
  assert diff <= RTOL * scale, f'{name}: max|diff| {diff:.3g}, max|ref| {scale:.3g}'


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


# ------------------------------------------------------------------ ResNet references


@pytest.fixture(scope='module')
def torchvision_resnet50():
  """(eval-mode resnet50 with random BatchNorm terms, its state dict, image, stage maps)."""
  torchvision = pytest.importorskip('torchvision')
  torch.set_num_threads(1)
  torch.manual_seed(0)
  ref = torchvision.models.resnet50().eval()
  # Random statistics and affine terms, so no norm is the identity.
  with torch.no_grad():
    for module in ref.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        assert module.eps == 1e-5
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
  image = np.random.default_rng(0).standard_normal(IMAGE).astype(np.float32)
  stages = {}
  with torch.no_grad():
    x = ref.maxpool(ref.relu(ref.bn1(ref.conv1(_nchw(image)))))
    for name, layer in zip(ALL_STAGES, (ref.layer1, ref.layer2, ref.layer3, ref.layer4)):
      x = layer(x)
      stages[name] = _nhwc(x)
  return ref, ref.state_dict(), image, stages


def _to_detectron2_names(state_dict, prefix='backbone.bottom_up.'):
  """torchvision resnet names -> detectron2's (the table in resnet_torch's docstring).

  The classifier (`fc.*`) has no detectron2 counterpart and is left out.
  """
  out = {}
  for name, value in state_dict.items():
    if name.startswith('fc.'):
      continue
    new = re.sub(r'^conv1\.', 'stem.conv1.', name)
    new = re.sub(r'^bn1\.', 'stem.conv1.norm.', new)
    new = re.sub(r'^layer(\d)\.', lambda m: f'res{int(m.group(1)) + 1}.', new)
    new = re.sub(r'\.bn(\d)\.', r'.conv\1.norm.', new)
    new = new.replace('.downsample.0.', '.shortcut.').replace('.downsample.1.', '.shortcut.norm.')
    out[prefix + new] = value
  return out


def _detectron2_reference(sd, image, stride_in_1x1, prefix='backbone.bottom_up.'):
  """detectron2's ResNet forward over its names, with torch.nn.functional.

  Written from detectron2's BasicStem (7x7/2 conv, norm, ReLU, 3x3/2 max pool
  padding 1), BottleneckBlock (shortcut conv when channels change;
  `stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)`)
  and FrozenBatchNorm2d (scale = weight * rsqrt(var + eps), bias = bias -
  mean * scale). Returns {stage: [b, h, w, c]}.
  """
  t = {k: torch.as_tensor(v) for k, v in sd.items() if k.startswith(prefix)}

  def conv_norm(x, p, stride=1, padding=0):
    x = F.conv2d(x, t[f'{p}.weight'], None, stride, padding)
    scale = t[f'{p}.norm.weight'] * (t[f'{p}.norm.running_var'] + 1e-5).rsqrt()
    bias = t[f'{p}.norm.bias'] - t[f'{p}.norm.running_mean'] * scale
    return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)

  stages = {}
  with torch.no_grad():
    x = F.max_pool2d(F.relu(conv_norm(_nchw(image), f'{prefix}stem.conv1', 2, 3)), 3, 2, 1)
    for index, (stage, num_blocks) in enumerate(zip(ALL_STAGES, (3, 4, 6, 3))):
      for block in range(num_blocks):
        p = f'{prefix}{stage}.{block}'
        stride = 2 if index > 0 and block == 0 else 1
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        shortcut = conv_norm(x, f'{p}.shortcut', stride) if block == 0 else x
        y = F.relu(conv_norm(x, f'{p}.conv1', stride_1x1))
        y = F.relu(conv_norm(y, f'{p}.conv2', stride_3x3, 1))
        x = F.relu(conv_norm(y, f'{p}.conv3') + shortcut)
      stages[stage] = _nhwc(x)
  return stages


# ------------------------------------------------------------------ ResNet parity


@pytest.mark.parametrize('frozen_bn', [False, True])
def test_resnet50_matches_torchvision(torchvision_resnet50, frozen_bn):
  _, state_dict, image, want = torchvision_resnet50
  config = dataclasses.replace(resnet.TORCHVISION, frozen_bn=frozen_bn, outputs=ALL_STAGES)
  variables = resnet_torch.to_flax(state_dict, config)
  assert set(variables) == ({'params'} if frozen_bn else {'params', 'batch_stats'})
  got = jax.jit(resnet.ResNet(config).apply)(variables, image)
  assert got['res5'].shape == (1, 2, 2, 2048) == (1, 2, 2, resnet.output_channels(config))
  for stage in ALL_STAGES:
    _assert_close(got[stage], want[stage], stage)


def test_detectron2_naming_and_stride_in_1x1(torchvision_resnet50):
  _, state_dict, image, want = torchvision_resnet50
  sd = _to_detectron2_names(state_dict)
  # A detector checkpoint's other parts lie outside the backbone's prefix.
  sd['roi_heads.box_predictor.cls_score.weight'] = torch.zeros(3, 4)
  sd['pixel_mean'] = torch.zeros(3)

  # The reference is detectron2's block: with the stride in the 3x3 it is torchvision's net.
  tv_layout = _detectron2_reference(sd, image, stride_in_1x1=False)
  for stage in ALL_STAGES:
    _assert_close(tv_layout[stage], want[stage], f'reference {stage}')
  msra = _detectron2_reference(sd, image, stride_in_1x1=True)
  assert np.abs(msra['res5'] - want['res5']).max() > 1e-2 * np.abs(want['res5']).max()

  assert resnet_torch.detect_naming(sd) == (resnet_torch.DETECTRON2, 'backbone.bottom_up.')
  config = dataclasses.replace(resnet.CLIPBERT, outputs=ALL_STAGES)
  variables = resnet_torch.to_flax(sd, config)
  got = jax.jit(resnet.ResNet(config).apply)(variables, image)
  for stage in ALL_STAGES:
    _assert_close(got[stage], msra[stage], stage)

  # Same tensors from detectron2 names as from torchvision's.
  jax.tree.map(np.testing.assert_array_equal, variables,
               resnet_torch.to_flax(state_dict, config))


def test_detectron2_pkl_and_pth_files(torchvision_resnet50, tmp_path):
  _, state_dict, _, _ = torchvision_resnet50
  sd = _to_detectron2_names(state_dict, prefix='')
  want = resnet_torch.to_flax(sd)
  # The model zoo's .pkl: NumPy arrays under 'model', beside metadata.
  with open(tmp_path / 'model_final.pkl', 'wb') as f:
    pickle.dump({'model': {k: v.numpy() for k, v in sd.items()}, '__author__': 'test'}, f)
  jax.tree.map(np.testing.assert_array_equal, want,
               resnet_torch.to_flax(tmp_path / 'model_final.pkl'))
  # A detectron2 Checkpointer .pth: torch tensors under 'model'.
  torch.save({'model': sd, 'iteration': 7}, tmp_path / 'model_final.pth')
  jax.tree.map(np.testing.assert_array_equal, want,
               resnet_torch.to_flax(tmp_path / 'model_final.pth'))


def test_resnet_converter_rejects_other_state_dicts(torchvision_resnet50):
  _, state_dict, _, _ = torchvision_resnet50
  sd = dict(state_dict)
  assert resnet_torch.detect_naming(sd) == (resnet_torch.TORCHVISION, '')
  with pytest.raises(ValueError, match='neither'):
    resnet_torch.detect_naming({'features.0.weight': np.zeros(3)})
  with pytest.raises(ValueError, match=r"no place.*'layer4\.3\.conv1\.weight'"):
    resnet_torch.to_flax({**sd, 'layer4.3.conv1.weight': torch.zeros(3)}, resnet.TORCHVISION)
  # A shallower model leaves blocks over, named.
  tiny_depth = dataclasses.replace(resnet.TORCHVISION, stage_sizes=(1, 1, 1, 1))
  with pytest.raises(ValueError, match=r"no place.*'layer1\.1\.bn1\.bias'"):
    resnet_torch.to_flax(sd, tiny_depth)
  # Narrower: the shapes are named.
  narrow = dataclasses.replace(resnet.TORCHVISION, width=32)
  with pytest.raises(ValueError, match=r"shapes differ.*width=32.*res2_0"):
    resnet_torch.to_flax(sd, narrow)
  del sd['layer3.2.bn2.running_var'], sd['layer1.0.downsample.0.weight']
  with pytest.raises(KeyError,
                     match=r"layer1\.0\.downsample\.0\.weight.*layer3\.2\.bn2\.running_var"):
    resnet_torch.to_flax(sd, resnet.TORCHVISION)


# ------------------------------------------------------------------ freezing, remat, dtype


TINY = dataclasses.replace(resnet.CLIPBERT, **resnet.PRESETS['tiny'], outputs=('res5',))


def _random_variables(abstract, seed=0):
  """He-scaled kernels, non-trivial norms, drawn in NumPy.

  A jitted Flax `init` of even the tiny ResNet takes ~6 s to compile on 2 CPU
  cores (its forward ~0.3 s), so the tests draw their own weights.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)  # biases, means, embeddings

  return jax.tree_util.tree_map_with_path(draw, abstract)


def _grads(config, variables, image):
  model = resnet.ResNet(config)

  def loss(params):
    out = model.apply({**variables, 'params': params}, image)['res5']
    return jnp.sum(out * jnp.linspace(-1, 1, out.size).reshape(out.shape))

  return jax.jit(jax.grad(loss))(variables['params'])


def test_freeze_at_and_frozen_bn_get_zero_gradients():
  image = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
  variables = _random_variables(resnet.abstract_variables(resnet.ResNet(TINY), image.shape))
  grads = _grads(TINY, variables, image)
  mask = resnet.trainable_mask(variables['params'], TINY)
  flat_grads = jax.tree_util.tree_flatten_with_path(grads)[0]
  flat_mask = jax.tree.leaves(mask)
  trainable = []
  for (path, grad), train in zip(flat_grads, flat_mask):
    name = jax.tree_util.keystr(path)
    frozen_stage = name.startswith(("['stem", "['res2"))
    assert train == (not frozen_stage and "'norm'" not in name), name
    if train:
      trainable.append(name)
      assert np.abs(np.asarray(grad)).max() > 0, name
    else:
      assert not np.asarray(grad).any(), name  # exactly zero
  assert any(name.startswith("['res3_0']['conv1']") for name in trainable)


def test_ordinary_batch_norm_trains_outside_the_frozen_stages():
  config = dataclasses.replace(TINY, frozen_bn=False, freeze_at=2)
  model = resnet.ResNet(config)
  image = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype(np.float32)
  variables = _random_variables(resnet.abstract_variables(model, image.shape))
  # Norm scale and bias train outside the frozen stages.
  mask = resnet.trainable_mask(variables['params'], config)
  assert mask['res3_0']['conv2']['norm']['scale'] and not mask['res2_0']['conv2']['norm']['scale']
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, image)
  old, new = variables['batch_stats'], updates['batch_stats']
  # Frozen stages keep their statistics; the others move towards the batch's.
  np.testing.assert_array_equal(new['stem_conv1']['norm']['mean'],
                                old['stem_conv1']['norm']['mean'])
  np.testing.assert_array_equal(new['res2_0']['conv3']['norm']['var'],
                                old['res2_0']['conv3']['norm']['var'])
  assert not np.allclose(new['res4_0']['conv3']['norm']['mean'],
                         old['res4_0']['conv3']['norm']['mean'])


def test_resnet_remat_and_bfloat16():
  image = np.random.default_rng(3).standard_normal((1, 48, 40, 3)).astype(np.float32)
  variables = _random_variables(resnet.abstract_variables(resnet.ResNet(TINY), image.shape))
  want = jax.jit(resnet.ResNet(TINY).apply)(variables, image)['res5']
  # PyTorch's sizes: 48 x 40 -> 24 x 20 -> 12 x 10 (pool) -> 6 x 5 -> 3 x 3 -> 2 x 2.
  assert want.shape == (1, 2, 2, resnet.output_channels(TINY))
  remat = dataclasses.replace(TINY, remat=True)
  np.testing.assert_allclose(jax.jit(resnet.ResNet(remat).apply)(variables, image)['res5'],
                             want, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _grads(remat, variables, image), _grads(TINY, variables, image))
  bf16 = dataclasses.replace(TINY, dtype=jnp.bfloat16)
  got = jax.jit(resnet.ResNet(bf16).apply)(variables, image)['res5']
  assert got.dtype == jnp.bfloat16
  assert np.abs(np.asarray(got, np.float32) - want).max() < 0.05 * np.abs(want).max()


def test_resnet_config_checks():
  with pytest.raises(ValueError, match='outputs'):
    resnet.ResNetConfig(outputs=('res6',))
  with pytest.raises(ValueError, match='freeze_at'):
    resnet.ResNetConfig(freeze_at=6)
  abstract = resnet.abstract_variables(resnet.ResNet(resnet.CLIPBERT))
  # torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in fc;
  # the BN running statistics are not parameters there and are folded here.
  assert sum(x.size for x in jax.tree.leaves(abstract['params'])) == 25_557_032 - 2_049_000
  boxed = jax.eval_shape(lambda: resnet.ResNet(TINY).init(jax.random.key(0),
                                                          jnp.zeros(IMAGE)))
  assert boxed['params']['res3_0']['conv2']['conv']['kernel'].names == resnet.CONV_AXES


# ------------------------------------------------------------------ ViT references


VIT_KW = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, image_size=32)


@pytest.fixture(scope='module')
def hf_vit():
  """transformers' ViTModel (random weights and norms, eval) and its state dict."""
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  hf_config = transformers.ViTConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      image_size=32, patch_size=8, layer_norm_eps=1e-6, attn_implementation='eager')
  model = transformers.ViTModel(hf_config, add_pooling_layer=False).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'layernorm' in name and name.endswith('weight'):
        param.uniform_(0.5, 1.5)
      elif name.endswith('bias'):
        param.normal_(0, 0.1)
  return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _hf_forward(model, images, interpolate=False):
  with torch.no_grad():
    out = model(_nchw(images), interpolate_pos_encoding=interpolate).last_hidden_state
  return out.numpy()


def _to_timm_names(hf_sd, class_token=True):
  """transformers-5 ViTModel names -> timm's VisionTransformer (fused qkv)."""
  sd = {'patch_embed.proj.weight': hf_sd['embeddings.patch_embeddings.projection.weight'],
        'patch_embed.proj.bias': hf_sd['embeddings.patch_embeddings.projection.bias'],
        'norm.weight': hf_sd['layernorm.weight'], 'norm.bias': hf_sd['layernorm.bias']}
  pos = hf_sd['embeddings.position_embeddings']
  if class_token:
    sd['cls_token'], sd['pos_embed'] = hf_sd['embeddings.cls_token'], pos
  else:
    sd['pos_embed'] = pos[:, 1:]
  layers = sorted({int(k.split('.')[1]) for k in hf_sd if k.startswith('layers.')})
  for i in layers:
    p, q = f'layers.{i}.', f'blocks.{i}.'
    for t in ('weight', 'bias'):
      sd[f'{q}attn.qkv.{t}'] = torch.cat(
          [hf_sd[f'{p}attention.{n}_proj.{t}'] for n in ('q', 'k', 'v')])
      sd[f'{q}attn.proj.{t}'] = hf_sd[f'{p}attention.o_proj.{t}']
      sd[f'{q}norm1.{t}'] = hf_sd[f'{p}layernorm_before.{t}']
      sd[f'{q}norm2.{t}'] = hf_sd[f'{p}layernorm_after.{t}']
      sd[f'{q}mlp.fc1.{t}'] = hf_sd[f'{p}mlp.fc1.{t}']
      sd[f'{q}mlp.fc2.{t}'] = hf_sd[f'{p}mlp.fc2.{t}']
  return sd


def _to_hub_names(hf_sd):
  """transformers-5 names -> the transformers-4 names of the Hub's ViT files."""
  renames = [(r'^layers\.(\d+)\.attention\.([qkv])_proj\.',
              lambda m: f'encoder.layer.{m.group(1)}.attention.attention.'
                        f'{dict(q="query", k="key", v="value")[m.group(2)]}.'),
             (r'^layers\.(\d+)\.attention\.o_proj\.', r'encoder.layer.\1.attention.output.dense.'),
             (r'^layers\.(\d+)\.mlp\.fc1\.', r'encoder.layer.\1.intermediate.dense.'),
             (r'^layers\.(\d+)\.mlp\.fc2\.', r'encoder.layer.\1.output.dense.'),
             (r'^layers\.', 'encoder.layer.')]
  out = {}
  for name, value in hf_sd.items():
    for pattern, replacement in renames:
      name, count = re.subn(pattern, replacement, name)
      if count:
        break
    out[f'vit.{name}'] = value
  return out


def _timm_reference(sd, images, num_heads, grid, mode='bicubic', eps=1e-6):
  """timm VisionTransformer.forward_features over its names, torch.nn.functional.

  Patch conv, class token prepended, position embeddings resampled as timm's
  resample_abs_pos_embed (F.interpolate, align_corners=False; the class row
  kept aside), pre-LN blocks with a fused qkv reshaped to (3, heads,
  head_dim), exact GELU, final norm. Returns [batch, tokens, hidden].
  """
  with torch.no_grad():
    x = F.conv2d(_nchw(images), sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                 stride=sd['patch_embed.proj.weight'].shape[-1])
    b, d, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = sd['pos_embed']
    prefix = pos.shape[1] - grid * grid
    pos_grid = pos[:, prefix:].reshape(1, grid, grid, d).permute(0, 3, 1, 2)
    if (h, w) != (grid, grid):
      pos_grid = F.interpolate(pos_grid, size=(h, w), mode=mode, align_corners=False)
    pos = torch.cat([pos[:, :prefix], pos_grid.flatten(2).transpose(1, 2)], 1)
    if 'cls_token' in sd:
      x = torch.cat([sd['cls_token'].expand(b, -1, -1), x], 1)
    x = x + pos
    i = 0
    while f'blocks.{i}.norm1.weight' in sd:
      p = f'blocks.{i}.'
      y = F.layer_norm(x, (d,), sd[f'{p}norm1.weight'], sd[f'{p}norm1.bias'], eps)
      n = y.shape[1]
      qkv = F.linear(y, sd[f'{p}attn.qkv.weight'], sd[f'{p}attn.qkv.bias'])
      q, k, v = qkv.reshape(b, n, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
      attn = ((q @ k.transpose(-2, -1)) * (d // num_heads) ** -0.5).softmax(-1)
      y = (attn @ v).transpose(1, 2).reshape(b, n, d)
      x = x + F.linear(y, sd[f'{p}attn.proj.weight'], sd[f'{p}attn.proj.bias'])
      y = F.layer_norm(x, (d,), sd[f'{p}norm2.weight'], sd[f'{p}norm2.bias'], eps)
      y = F.gelu(F.linear(y, sd[f'{p}mlp.fc1.weight'], sd[f'{p}mlp.fc1.bias']))
      x = x + F.linear(y, sd[f'{p}mlp.fc2.weight'], sd[f'{p}mlp.fc2.bias'])
      i += 1
    return F.layer_norm(x, (d,), sd['norm.weight'], sd['norm.bias'], eps).numpy()


def _split_tokens(tokens, h, w, class_token=True):
  """[batch, (1 +) h w, hidden] -> (patches [batch, h, w, hidden], class state or None)."""
  prefix = int(class_token)
  patches = tokens[:, prefix:].reshape(tokens.shape[0], h, w, -1)
  return patches, (tokens[:, 0] if class_token else None)


# ------------------------------------------------------------------ ViT parity


@pytest.mark.parametrize('size', [(32, 32), (48, 40)])
def test_vit_matches_hugging_face(hf_vit, size):
  model, hf_sd = hf_vit
  images = np.random.default_rng(5).standard_normal((2, *size, 3)).astype(np.float32)
  # At 48 x 40 the 4 x 4 position grid is resampled to 6 x 5 (bicubic).
  want = _hf_forward(model, images, interpolate=size != (32, 32))
  config = vit.ViTConfig(**VIT_KW)
  variables = vit_torch.to_flax(hf_sd, config)
  got = jax.jit(vit.ViT(config).apply)(variables, images)
  patches, cls = _split_tokens(want, size[0] // 8, size[1] // 8)
  _assert_close(got['patches'], patches, 'patches')
  _assert_close(got['class_state'], cls, 'class_state')

  # The Hub's (transformers 4) names of ViTForImageClassification give the same params.
  hub = _to_hub_names(hf_sd)
  hub['classifier.weight'] = torch.zeros(10, 32)
  assert vit_torch.detect_naming(hub) == (vit_torch.HUGGING_FACE, 'vit.')
  jax.tree.map(np.testing.assert_array_equal, variables, vit_torch.to_flax(hub, config))


def test_vit_timm_naming_matches_a_timm_reference(hf_vit):
  model, hf_sd = hf_vit
  images = np.random.default_rng(6).standard_normal((2, 48, 40, 3)).astype(np.float32)
  sd = _to_timm_names(hf_sd)
  assert vit_torch.detect_naming(sd) == (vit_torch.TIMM, '')
  want = _timm_reference(sd, images, num_heads=4, grid=4)
  # The reference is timm's forward: on these weights it is transformers' ViT.
  _assert_close(want, _hf_forward(model, images, interpolate=True), 'reference')
  config = vit.ViTConfig(**VIT_KW)
  got = jax.jit(vit.ViT(config).apply)(vit_torch.to_flax(sd, config), images)
  patches, cls = _split_tokens(want, 6, 5)
  _assert_close(got['patches'], patches, 'patches')
  _assert_close(got['class_state'], cls, 'class_state')


def test_vit_without_class_token_bilinear(hf_vit):
  _, hf_sd = hf_vit
  images = np.random.default_rng(7).standard_normal((1, 24, 56, 3)).astype(np.float32)
  sd = _to_timm_names(hf_sd, class_token=False)
  sd['head.weight'], sd['head.bias'] = torch.zeros(10, 32), torch.zeros(10)  # ignored
  want = _timm_reference(sd, images, num_heads=4, grid=4, mode='bilinear')
  config = vit.ViTConfig(**VIT_KW, class_token=False, resample='bilinear')
  got = jax.jit(vit.ViT(config).apply)(vit_torch.to_flax(sd, config), images)
  assert set(got) == {'patches'}
  _assert_close(got['patches'], _split_tokens(want, 3, 7, class_token=False)[0], 'patches')


@pytest.mark.parametrize('method', vit.RESAMPLE_METHODS)
def test_resample_matches_torch_interpolate(method):
  grid = np.random.default_rng(8).standard_normal((5, 7, 3)).astype(np.float32)
  for new in ((9, 4), (3, 11), (10, 14), (2, 2)):
    want = F.interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=new, mode=method,
                         align_corners=False)[0].permute(1, 2, 0).numpy()
    got = vit.resample_position_embedding(jnp.asarray(grid), new, method)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5, err_msg=str(new))
  same = jnp.asarray(grid)
  assert vit.resample_position_embedding(same, (5, 7), method) is same


def test_vit_converter_rejects_other_state_dicts(hf_vit):
  _, hf_sd = hf_vit
  config = vit.ViTConfig(**VIT_KW)
  sd = _to_timm_names(hf_sd)
  with pytest.raises(ValueError, match=r"no place.*'blocks\.0\.ls1\.gamma'"):
    vit_torch.to_flax({**sd, 'blocks.0.ls1.gamma': torch.ones(32)}, config)
  with pytest.raises(ValueError, match=r"no place.*'cls_token'"):
    vit_torch.to_flax(sd, dataclasses.replace(config, class_token=False))
  with pytest.raises(ValueError, match=r'17 positions.*image_size=32'):
    vit_torch.to_flax(sd, dataclasses.replace(config, image_size=48))
  with pytest.raises(ValueError, match=r'shapes differ.*fc1'):
    vit_torch.to_flax(sd, dataclasses.replace(config, mlp_dim=128))
  with pytest.raises(ValueError, match='neither'):
    vit_torch.detect_naming({'conv1.weight': np.zeros(3)})
  del sd['blocks.1.mlp.fc2.bias'], sd['norm.weight']
  with pytest.raises(KeyError, match=r"'norm\.weight'.*'blocks\.1\.mlp\.fc2\.bias'"):
    vit_torch.to_flax(sd, config)
  # timm's no_embed_class: a class token without a position of its own.
  sd = _to_timm_names(hf_sd)
  sd['pos_embed'] = sd['pos_embed'][:, 1:]
  params = vit_torch.to_flax(sd, config)['params']
  assert not params['cls_pos_embedding'].any()


def test_vit_presets_and_remat():
  # timm's vit_base_patch16_224 / vit_small_patch16_224 parameter counts less their heads.
  for variant, want in (('B/16', 86_567_656 - 769_000), ('S/16', 22_050_664 - 385_000)):
    abstract = vit.abstract_variables(vit.ViT(vit.get_config(variant)))
    assert sum(x.size for x in jax.tree.leaves(abstract)) == want, variant
  with pytest.raises(ValueError, match='variant'):
    vit.get_config('L/14')
  config = vit.get_config('tiny', image_size=64)
  images = np.random.default_rng(9).standard_normal((2, 64, 80, 3)).astype(np.float32)
  variables = _random_variables(vit.abstract_variables(vit.ViT(config), images.shape))
  want = jax.jit(vit.ViT(config).apply)(variables, images)
  assert want['patches'].shape == (2, 4, 5, 64) and want['class_state'].shape == (2, 64)
  got = jax.jit(vit.ViT(dataclasses.replace(config, remat=True)).apply)(variables, images)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)
  boxed = jax.eval_shape(lambda: vit.ViT(config).init(jax.random.key(0), images))
  assert boxed['params']['block_0']['attention']['query']['kernel'].names == ('embed', 'heads')
