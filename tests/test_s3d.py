"""S3D and S3D-G: shapes, pooling semantics, the converters, torchvision parity.

The torchvision parity test needs torchvision (not a project dependency): it
skips in the project venv; run it in an environment with torch + torchvision.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax.convert import s3d_torch
from vlm_jax.models import s3d

# The smallest clip torchvision's S3D accepts: its avgpool needs a (2, 7, 7)
# mixed_5c map; 12 frames or 208 pixels give (1, 6, 6).
MIN_CLIP = (13, 209, 209)
# torchvision's S3D_Weights.KINETICS400_V1 meta["num_params"].
TORCHVISION_NUM_PARAMS = 8_320_048


def _random_like(tree, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32), tree)


def _random_variables(abstract, seed=0):
  """He-scaled kernels and non-trivial BatchNorm terms, drawn in NumPy.

  Compiling Flax's `init` for S3D takes ~20 s on 2 CPU cores (the forward
  alone ~2 s), so the tests draw their own weights.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, abstract)


# ------------------------------------------------------------------ shapes


def test_s3d_output_shapes_and_size():
  model = s3d.S3D()
  shape = (2, *MIN_CLIP, 3)
  variables = s3d.abstract_variables(model, shape)
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == TORCHVISION_NUM_PARAMS
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert out['features'].shape == (2, s3d.FEATURE_DIM)
  assert out['logits'].shape == (2, 400)
  assert s3d.s3d_output_shape(*MIN_CLIP) == (2, 7, 7)
  assert s3d.s3d_output_shape(16, 224, 224) == (2, 7, 7)

  headless = s3d.S3D(s3d.S3DConfig(num_classes=None))
  out = jax.eval_shape(lambda v: headless.apply(v, jnp.zeros(shape)),
                       s3d.abstract_variables(headless, shape))
  assert set(out) == {'features'}


@pytest.mark.parametrize('clip', [(12, 209, 209), (13, 208, 209)])
def test_s3d_rejects_clips_below_the_avgpool_window(clip):
  with pytest.raises(ValueError, match='smaller than the avgpool'):
    s3d.abstract_variables(s3d.S3D(), (1, *clip, 3))


def test_s3d_runs_on_the_smallest_clip():
  model = s3d.S3D()
  shape = (1, *MIN_CLIP, 3)
  variables = _random_variables(s3d.abstract_variables(model, shape))
  video = jax.random.normal(jax.random.key(1), shape)
  out = jax.jit(model.apply)(variables, video)
  assert out['features'].shape == (1, 1024) and out['logits'].shape == (1, 400)
  assert np.isfinite(np.asarray(out['logits'])).all()
  # After ReLUs and average pooling the features are non-negative.
  assert (np.asarray(out['features']) >= 0).all()


def test_s3dg_output_shapes():
  model = s3d.S3DG()
  shape = (2, 8, 64, 64, 3)
  variables = s3d.abstract_variables(model, shape)
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert out['features'].shape == (2, 1024)
  assert out['video_embedding'].shape == (2, 512)
  with pytest.raises(ValueError, match='even'):
    s3d.abstract_variables(model, (1, 8, 63, 64, 3))


def test_params_carry_logical_axis_names():
  model = s3d.S3D()
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *MIN_CLIP, 3))))
  params = boxed['params']
  assert params['conv_1a']['spatial']['conv']['kernel'].names == s3d.CONV_AXES
  assert params['mixed_5c']['branch0']['bn']['scale'].names == ('conv_out',)
  assert params['classifier']['kernel'].names == ('conv_out', 'classes')


# ------------------------------------------------------------------ pooling


def test_max_pool_is_pytorchs():
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  # All negative: zero padding instead of -inf would win at the borders.
  x = -np.abs(rng.standard_normal((2, 5, 9, 8, 3))).astype(np.float32) - 1
  xt = torch.from_numpy(x.transpose(0, 4, 1, 2, 3))
  cases = [((1, 3, 3), (1, 2, 2), (0, 1, 1), False), ((3, 3, 3), (2, 2, 2), (1, 1, 1), False),
           ((3, 3, 3), (1, 1, 1), (1, 1, 1), False), ((2, 2, 2), (2, 2, 2), (0, 0, 0), False),
           ((2, 2, 2), (2, 2, 2), (0, 0, 0), True), ((3, 3, 3), (2, 2, 2), (1, 1, 1), True),
           ((1, 3, 3), (1, 2, 2), (0, 0, 0), True)]
  for window, strides, padding, ceil_mode in cases:
    want = torch.nn.functional.max_pool3d(xt, window, strides, padding,
                                          ceil_mode=ceil_mode).numpy()
    got = s3d.max_pool(jnp.asarray(x), window, strides, [(p, p) for p in padding],
                       ceil_mode=ceil_mode)
    np.testing.assert_array_equal(np.asarray(got), want.transpose(0, 2, 3, 4, 1),
                                  err_msg=str((window, strides, padding, ceil_mode)))


def test_tf_same_max_pool_output_sizes():
  # TF "SAME": ceil(n / stride) positions.
  for n in (7, 8, 112, 113):
    x = jnp.zeros((1, n, n, n, 1))
    assert s3d.tf_same_max_pool(x, (3, 3, 3), (2, 2, 2)).shape[1:4] == (-(-n // 2),) * 3
    assert s3d.tf_same_max_pool(x, (2, 2, 2), (2, 2, 2)).shape[1:4] == (-(-n // 2),) * 3


# ------------------------------------------------------------------ converters


def test_torchvision_converter_round_trip():
  variables = _random_like(s3d.abstract_variables(s3d.S3D(), (1, *MIN_CLIP, 3)))
  sd = s3d_torch.torchvision_from_flax(variables)
  # 77 conv + BN pairs (each: weight; BN weight, bias, running mean and var)
  # and the classifier's weight and bias.
  assert len(sd) == 77 * 5 + 2
  assert sd['features.0.0.0.weight'].shape == (64, 3, 1, 7, 7)
  assert sd['features.0.1.0.weight'].shape == (64, 64, 7, 1, 1)
  assert sd['features.15.branch3.1.1.running_var'].shape == (128,)
  assert sd['classifier.1.weight'].shape == (400, 1024, 1, 1, 1)
  sd['features.2.1.num_batches_tracked'] = np.array(7)  # dropped: integer
  back = s3d_torch.torchvision_to_flax(sd)
  assert s3d_torch.leaf_paths(back) == s3d_torch.leaf_paths(variables)
  jax.tree.map(np.testing.assert_array_equal, back, variables)

  with pytest.raises(ValueError, match='no place'):
    s3d_torch.torchvision_to_flax({**sd, 'features.99.weight': np.zeros(3)})
  del sd['features.5.branch1.1.1.1.running_mean']
  with pytest.raises(KeyError, match='branch1.1.1.1.running_mean'):
    s3d_torch.torchvision_to_flax(sd)


def test_torchvision_converter_headless():
  full = _random_like(s3d.abstract_variables(s3d.S3D(), (1, *MIN_CLIP, 3)))
  config = s3d.S3DConfig(num_classes=None)
  back = s3d_torch.torchvision_to_flax(s3d_torch.torchvision_from_flax(full), config)
  assert 'classifier' not in back['params']
  assert (s3d_torch.leaf_paths(back)
          == s3d_torch.leaf_paths(s3d.abstract_variables(s3d.S3D(config), (1, *MIN_CLIP, 3))))


def test_converter_reads_a_pth_file(tmp_path):
  torch = pytest.importorskip('torch')
  variables = _random_like(s3d.abstract_variables(s3d.S3D(), (1, *MIN_CLIP, 3)))
  sd = {k: torch.from_numpy(v) for k, v in s3d_torch.torchvision_from_flax(variables).items()}
  sd['features.0.0.1.num_batches_tracked'] = torch.tensor(3)
  torch.save(sd, tmp_path / 's3d.pth')
  back = s3d_torch.torchvision_to_flax(tmp_path / 's3d.pth')
  jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_s3dg_converter_round_trip():
  variables = _random_like(s3d.abstract_variables(s3d.S3DG(), (1, 8, 64, 64, 3)))
  sd = s3d_torch.s3dg_from_flax(variables)
  assert sd['conv1.conv1.weight'].shape == (64, 24, 2, 4, 4)
  assert sd['mixed_3b.conv_b1_b.conv2.weight'].shape == (128, 128, 3, 1, 1)
  assert sd['mixed_5c.gating_b3.fc.weight'].shape == (128, 128)
  assert sd['fc.weight'].shape == (512, 1024)
  # As in s3d_howto100m.pth: DataParallel prefix, a text tower to ignore.
  sd = {f'module.{k}': v for k, v in sd.items()}
  sd['module.text_module.fc1.weight'] = np.zeros((2048, 300), np.float32)
  back = s3d_torch.s3dg_to_flax(sd)
  assert s3d_torch.leaf_paths(back) == s3d_torch.leaf_paths(variables)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


# ------------------------------------------------------------------ S3D-G vs a torch reference


def _s3dg_torch_reference(sd, video):
  """S3D-G forward over PyTorch-named tensors with torch.nn.functional.

  Written from the MIL-NCE port's structure (STConv3D, SelfGating,
  MaxPool3dTFPadding, space-to-depth) in NCTHW, independently of the Flax code,
  so it checks names, layouts and the pooling/padding conventions.
  """
  import torch  # pylint: disable=import-outside-toplevel
  f = torch.nn.functional
  t = {k: torch.from_numpy(v) for k, v in sd.items()}

  def bn(x, p):
    return f.relu(f.batch_norm(x, t[f'{p}.running_mean'], t[f'{p}.running_var'],
                               t[f'{p}.weight'], t[f'{p}.bias'], False, 0.0, 1e-5))

  def stconv(x, p, separable=False, stride=1, padding=0):
    if separable:
      x = bn(f.conv3d(x, t[f'{p}.conv1.weight'], None, (1, stride, stride),
                      (0, padding, padding)), f'{p}.bn1')
      return bn(f.conv3d(x, t[f'{p}.conv2.weight'], None, (stride, 1, 1),
                         (padding, 0, 0)), f'{p}.bn2')
    return bn(f.conv3d(x, t[f'{p}.conv1.weight'], None, stride, padding), f'{p}.bn1')

  def gate(x, p):
    w = torch.sigmoid(f.linear(x.mean((2, 3, 4)), t[f'{p}.fc.weight'], t[f'{p}.fc.bias']))
    return x * w[:, :, None, None, None]

  def same_pool(x, k, s):
    pads = []
    for kk, ss in zip(k, s):
      along = max(kk - ss, 0)
      pads.append((along // 2, along - along // 2))
    (t0, t1), (h0, h1), (w0, w1) = pads
    return f.max_pool3d(f.pad(x, (w0, w1, h0, h1, t0, t1)), k, s, ceil_mode=True)

  x = torch.from_numpy(video.transpose(0, 4, 1, 2, 3))
  b, c, tt, h, w = x.shape
  x = x.view(b, c, tt // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
  x = x.reshape(b, 8 * c, tt // 2, h // 2, w // 2)
  x = stconv(x, 'conv1', padding=(1, 2, 2))[:, :, 1:, 1:, 1:]
  x = same_pool(x, (1, 3, 3), (1, 2, 2))
  x = stconv(x, 'conv_2b')
  x = gate(stconv(x, 'conv_2c', separable=True, padding=1), 'gating')
  x = same_pool(x, (1, 3, 3), (1, 2, 2))
  for name, *_ in s3d.INCEPTION_BLOCKS:
    if name == 'mixed_4b':
      x = same_pool(x, (3, 3, 3), (2, 2, 2))
    elif name == 'mixed_5b':
      x = same_pool(x, (2, 2, 2), (2, 2, 2))
    b0 = stconv(x, f'{name}.conv_b0')
    b1 = stconv(stconv(x, f'{name}.conv_b1_a'), f'{name}.conv_b1_b', True, padding=1)
    b2 = stconv(stconv(x, f'{name}.conv_b2_a'), f'{name}.conv_b2_b', True, padding=1)
    b3 = stconv(f.max_pool3d(x, 3, 1, 1), f'{name}.conv_b3_b')
    x = torch.cat([gate(y, f'{name}.gating_b{i}') for i, y in enumerate((b0, b1, b2, b3))], 1)
  features = x.mean((2, 3, 4))
  return features.numpy(), f.linear(features, t['fc.weight'], t['fc.bias']).numpy()


def test_s3dg_matches_a_torch_reference():
  pytest.importorskip('torch')
  model = s3d.S3DG()
  # 12 x 80 x 80: maxpool_5a gets a (3, 5, 5) map, so ceil mode's partial last
  # window is used, and every SAME pool pads asymmetrically.
  shape = (2, 12, 80, 80, 3)
  variables = _random_variables(s3d.abstract_variables(model, shape), 3)
  video = np.random.default_rng(4).uniform(0, 1, shape).astype(np.float32)
  out = jax.jit(model.apply)(variables, video)
  want_features, want_embedding = _s3dg_torch_reference(
      s3d_torch.s3dg_from_flax(variables), video)
  report = []
  for name, want in (('features', want_features), ('video_embedding', want_embedding)):
    diff, scale = np.abs(np.asarray(out[name]) - want).max(), np.abs(want).max()
    report.append(f'{name}: max|diff| {diff:.3g}, max|ref| {scale:.3g}')
    assert diff <= 1e-4 * scale, report[-1]
  print(f'\nS3D-G vs torch reference {shape}: ' + '; '.join(report))


def test_s3dg_train_mode_updates_batch_stats():
  model = s3d.S3DG()
  shape = (2, 4, 32, 32, 3)
  # 4 frames -> 1 after maxpool_4a, too few for the (2, 2, 2) maxpool_5a.
  with pytest.raises(ValueError, match='larger than the padded input'):
    s3d.abstract_variables(model, shape)
  shape = (2, 8, 32, 32, 3)
  variables = _random_variables(s3d.abstract_variables(model, shape))
  video = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
  out, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats']))(variables, video)
  assert out['video_embedding'].shape == (2, 512)
  old = variables['batch_stats']['conv1']['bn1']['mean']
  new = np.asarray(updates['batch_stats']['conv1']['bn1']['mean'])
  # PyTorch momentum 0.1: new = 0.9 old + 0.1 batch mean.
  assert not np.allclose(new, old) and np.abs(new - 0.9 * old).max() < np.abs(old).max()


# ------------------------------------------------------------------ torchvision parity


def test_s3d_matches_torchvision():
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  torch.manual_seed(0)
  ref = torchvision.models.video.s3d().eval()
  # Random BatchNorm statistics and affine terms, so BN is not the identity.
  with torch.no_grad():
    for module in ref.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        assert module.eps == 1e-3
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
  state_dict = ref.state_dict()
  variables = s3d_torch.torchvision_to_flax(state_dict)
  assert set(s3d_torch.torchvision_from_flax(variables)) == {
      k for k in state_dict if not k.endswith('num_batches_tracked')}

  video = np.random.default_rng(0).standard_normal((2, *MIN_CLIP, 3)).astype(np.float32)
  start = time.perf_counter()
  with torch.no_grad():
    x = torch.from_numpy(video.transpose(0, 4, 1, 2, 3))
    want_features = ref.avgpool(ref.features(x)).mean((2, 3, 4)).numpy()
    want_logits = ref(x).numpy()
  torch_s = time.perf_counter() - start
  start = time.perf_counter()
  out = jax.jit(s3d.S3D().apply)(variables, video)
  got_features, got_logits = np.asarray(out['features']), np.asarray(out['logits'])
  jax_s = time.perf_counter() - start
  report = []
  for name, got, want in (('features', got_features, want_features),
                          ('logits', got_logits, want_logits)):
    diff, scale = np.abs(got - want).max(), np.abs(want).max()
    report.append(f'{name}: max|diff| {diff:.3g}, max|ref| {scale:.3g}')
    assert diff <= 1e-4 * scale, report[-1]
  print(f'\nS3D vs torchvision {video.shape}: ' + '; '.join(report)
        + f'; torch {torch_s:.1f}s, jax (compile + run) {jax_s:.1f}s')
