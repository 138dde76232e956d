"""ClipBERT: the model against a PyTorch reference from ClipBERT's code; consensus; sampling.

The reference follows jayleicn/ClipBERT module by module, under its names, so
its state dict is what ClipBERT's `ModelSaver` writes: `cnn.feature` a
detectron2 GeneralizedRCNN whose `backbone` is the MSRA ResNet (Conv2d with a
FrozenBatchNorm2d `norm` child, stride in the first 1x1; a tiny depth here)
plus detector parts the forward never reads; `cnn.grid_encoder` Conv3x3 (no
bias), MaxPool2d(2, 2), ReLU (GridFeatBackbone); `transformer.bert` =
ClipBertBaseModel: transformers' BertEmbeddings / BertEncoder / BertPooler
and VisualInputEmbedding (frame mean, row and column embeddings, a 1-row token
type, LayerNorm); `transformer.classifier` the task MLP. GridFeatBackbone's
RGB -> BGR flip is a pipeline step here: both models get the same BGR pixels.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax.clipbert import consensus
from vlm_jax.clipbert import model as clipbert
from vlm_jax.clipbert import sampling
from vlm_jax.convert import clipbert_torch
from vlm_jax.models import bert
from vlm_jax.models import resnet
from vlm_jax.models import vit

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
F = torch.nn.functional

# 192 x 160 frames -> res5 6 x 5 -> pooled grid 3 x 2 (the odd column dropped
# by the floor of MaxPool2d): rows and columns differ, so a swap shows.
HEIGHT, WIDTH = 192, 160
GRID = (3, 2)
ROWS, COLS = 5, 4  # position tables of different sizes, for the same reason
TINY_RESNET = dataclasses.replace(resnet.CLIPBERT, **resnet.PRESETS['tiny'])
BATCH, CLIPS, FRAMES, TEXTS, LENGTH = 2, 2, 2, 2, 7
ATOL = 1e-4


def _bert_config(**overrides):
  fields = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48,
                max_position_embeddings=16)
  fields.update(overrides)
  return bert.BertConfig(**fields)


# ------------------------------------------------------------------ the reference


class FrozenBatchNorm2d(torch.nn.Module):
  """detectron2's: four buffers, y = x * weight / sqrt(var + eps) + (bias - mean * scale)."""

  def __init__(self, channels):
    super().__init__()
    self.register_buffer('weight', torch.empty(channels).uniform_(0.5, 1.5))
    self.register_buffer('bias', torch.empty(channels).normal_(0, 0.1))
    self.register_buffer('running_mean', torch.empty(channels).normal_(0, 0.1))
    self.register_buffer('running_var', torch.empty(channels).uniform_(0.5, 1.5))

  def forward(self, x):
    scale = self.weight * (self.running_var + 1e-5).rsqrt()
    bias = self.bias - self.running_mean * scale
    return x * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class Conv2d(torch.nn.Conv2d):
  """detectron2's Conv2d: no bias, its norm as the child `norm`."""

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__(cin, cout, kernel, stride, padding, bias=False)
    self.norm = FrozenBatchNorm2d(cout)

  def forward(self, x):
    return self.norm(super().forward(x))


class BottleneckBlock(torch.nn.Module):
  """detectron2's BottleneckBlock, MSRA (stride_in_1x1); a shortcut when channels change."""

  def __init__(self, cin, cout, width, stride):
    super().__init__()
    self.shortcut = Conv2d(cin, cout, 1, stride) if cin != cout else None
    self.conv1 = Conv2d(cin, width, 1, stride)
    self.conv2 = Conv2d(width, width, 3, 1, 1)
    self.conv3 = Conv2d(width, cout, 1)

  def forward(self, x):
    y = F.relu(self.conv2(F.relu(self.conv1(x))))
    y = self.conv3(y)
    return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class BasicStem(torch.nn.Module):
  def __init__(self, width):
    super().__init__()
    self.conv1 = Conv2d(3, width, 7, 2, 3)

  def forward(self, x):
    return F.max_pool2d(F.relu(self.conv1(x)), 3, 2, 1)


class ResNetBackbone(torch.nn.Module):
  def __init__(self, config: resnet.ResNetConfig):
    super().__init__()
    self.stem = BasicStem(config.width)
    cin = config.width
    for index, (stage, num_blocks) in enumerate(zip(resnet.STAGES, config.stage_sizes)):
      width = config.width * 2 ** index
      blocks = []
      for block in range(num_blocks):
        blocks.append(BottleneckBlock(cin, 4 * width, width,
                                      2 if index > 0 and block == 0 else 1))
        cin = 4 * width
      self.add_module(stage, torch.nn.Sequential(*blocks))

  def forward(self, x):
    x = self.stem(x)
    for stage in resnet.STAGES:
      x = getattr(self, stage)(x)
    return x


class Detector(torch.nn.Module):
  """The GeneralizedRCNN under `cnn.feature`: the backbone and parts ClipBERT never runs."""

  def __init__(self, config):
    super().__init__()
    self.backbone = ResNetBackbone(config)
    channels = resnet.output_channels(config)
    self.register_buffer('pixel_mean', torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1))
    self.proposal_generator = torch.nn.ModuleDict(
        {'rpn_head': torch.nn.Conv2d(channels, 4, 1)})
    self.roi_heads = torch.nn.ModuleDict({'box_predictor': torch.nn.Linear(channels, 5)})


class GridFeatBackbone(torch.nn.Module):
  def __init__(self, config, hidden):
    super().__init__()
    self.feature = Detector(config)
    self.grid_encoder = torch.nn.Sequential(
        torch.nn.Conv2d(resnet.output_channels(config), hidden, 3, 1, 1, bias=False),
        torch.nn.MaxPool2d(kernel_size=2, stride=2), torch.nn.ReLU(inplace=True))

  def forward(self, x):
    """(B, n_frm, C, H, W) -> (B, n_frm, h, w, hidden)."""
    bsz, n_frms = x.shape[:2]
    grid = self.grid_encoder(self.feature.backbone(x.flatten(0, 1)))
    return grid.view(bsz, n_frms, *grid.shape[1:]).permute(0, 1, 3, 4, 2)


class VisualInputEmbedding(torch.nn.Module):
  def __init__(self, config, rows, cols):
    super().__init__()
    self.position_embeddings = torch.nn.Embedding(config.max_position_embeddings,
                                                  config.hidden_size)  # built, never read
    self.row_position_embeddings = torch.nn.Embedding(rows, config.hidden_size)
    self.col_position_embeddings = torch.nn.Embedding(cols, config.hidden_size)
    self.token_type_embeddings = torch.nn.Embedding(1, config.hidden_size)
    self.LayerNorm = torch.nn.LayerNorm(  # pylint: disable=invalid-name
        config.hidden_size, eps=config.layer_norm_eps)
    self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)

  def forward(self, grid):
    """(B, n_frm, H, W, d) -> (B, H * W, d)."""
    bsz, _, height, width, hsz = grid.shape
    grid = grid.mean(1)
    grid = grid + self.row_position_embeddings(torch.arange(height)).view(height, 1, hsz)
    grid = grid + self.col_position_embeddings(torch.arange(width)).view(1, width, hsz)
    tokens = grid.view(bsz, -1, hsz)
    tokens = tokens + self.token_type_embeddings(torch.zeros(tokens.shape[:-1], dtype=torch.long))
    return self.dropout(self.LayerNorm(tokens))


class ClipBertBaseModel(torch.nn.Module):
  def __init__(self, config, rows, cols):
    super().__init__()
    hf = transformers.BertModel(config)
    self.embeddings, self.encoder, self.pooler = hf.embeddings, hf.encoder, hf.pooler
    self.visual_embeddings = VisualInputEmbedding(config, rows, cols)

  def forward(self, text_input_ids, visual_inputs, attention_mask):
    text = self.embeddings(input_ids=text_input_ids)
    visual = self.visual_embeddings(visual_inputs)
    mask = torch.cat([attention_mask, attention_mask.new_ones(visual.shape[:2])], -1)
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    states = self.encoder(torch.cat([text, visual], 1), attention_mask=extended)[0]
    return states, self.pooler(states)


class TaskModel(torch.nn.Module):
  """ClipBertForVideoTextRetrieval / ForMultipleChoice / ForSequenceClassification."""

  def __init__(self, config, rows, cols, outputs):
    super().__init__()
    self.bert = ClipBertBaseModel(config, rows, cols)
    self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)
    hidden = config.hidden_size
    self.classifier = torch.nn.Sequential(torch.nn.Linear(hidden, 2 * hidden),
                                          torch.nn.ReLU(True),
                                          torch.nn.Linear(2 * hidden, outputs))

  def forward(self, text_input_ids, visual_inputs, text_input_mask):
    pooled = self.bert(text_input_ids, visual_inputs, text_input_mask)[1]
    return self.classifier(self.dropout(pooled))


class ClipBertReference(torch.nn.Module):
  """ClipBERT's e2e `ClipBert`: `cnn` and `transformer`, one clip per forward."""

  def __init__(self, config, resnet_config, rows, cols, outputs):
    super().__init__()
    self.cnn = GridFeatBackbone(resnet_config, config.hidden_size)
    self.transformer = TaskModel(config, rows, cols, outputs)

  def forward(self, text_input_ids, text_input_mask, frames, repeat_counts):
    visual = self.cnn(frames)
    rows = torch.tensor([i for i, n in enumerate(repeat_counts) for _ in range(n)])
    return self.transformer(text_input_ids, visual.index_select(0, rows), text_input_mask)


def _reference(bert_config, outputs, seed=0):
  torch.manual_seed(seed)
  hf_config = transformers.BertConfig(
      vocab_size=bert_config.vocab_size, hidden_size=bert_config.hidden_size,
      num_hidden_layers=bert_config.num_layers, num_attention_heads=bert_config.num_heads,
      intermediate_size=bert_config.mlp_dim,
      max_position_embeddings=bert_config.max_position_embeddings,
      attn_implementation='eager')
  reference = ClipBertReference(hf_config, TINY_RESNET, ROWS, COLS, outputs).eval()
  with torch.no_grad():
    for name, value in reference.transformer.named_parameters():
      # BERT's 0.02 init would leave every logit near the same small value;
      # 1 / sqrt(fan_in) keeps activations at unit scale through the tiny model.
      if value.ndim == 2:
        value.normal_(0, value.shape[1] ** -0.5)
    for name, value in reference.named_parameters():
      if 'LayerNorm' in name or name.endswith('bias'):  # away from their identity init
        value.add_(0.1 * torch.randn_like(value))
  return reference


def _inputs(texts_per_video, seed=1):
  rng = np.random.default_rng(seed)
  frames = rng.normal(size=(BATCH, CLIPS, FRAMES, HEIGHT, WIDTH, 3)).astype(np.float32)
  ids = rng.integers(1, 64, size=(BATCH, texts_per_video, LENGTH)).astype(np.int32)
  ids[..., 0] = 2  # a [CLS]
  lengths = rng.integers(3, LENGTH + 1, size=(BATCH, texts_per_video))
  mask = (np.arange(LENGTH) < lengths[..., None]).astype(np.int32)
  ids = ids * mask
  return ids, mask, frames


def _reference_logits(reference, ids, mask, frames):
  """ClipBERT's training loop: one forward per clip, logits stacked -> [B, clips, texts, out]."""
  batch, texts = ids.shape[:2]
  flat_ids = torch.tensor(ids.reshape(batch * texts, -1), dtype=torch.long)
  flat_mask = torch.tensor(mask.reshape(batch * texts, -1), dtype=torch.long)
  per_clip = []
  with torch.no_grad():
    for clip in range(frames.shape[1]):
      pixels = torch.from_numpy(np.ascontiguousarray(frames[:, clip].transpose(0, 1, 4, 2, 3)))
      per_clip.append(reference(flat_ids, flat_mask, pixels, [texts] * batch)
                      .view(batch, texts, -1).numpy())
  return np.stack(per_clip, 1)


def _state_dict(reference):
  return {k: v.detach().numpy() for k, v in reference.state_dict().items()}


def _config(bert_config, task=clipbert.MATCHING, **overrides):
  return clipbert.ClipBertConfig(bert_config=bert_config, resnet_config=TINY_RESNET, task=task,
                                 max_grid_rows=ROWS, max_grid_cols=COLS, **overrides)


# ------------------------------------------------------------------ parity


@pytest.fixture(scope='module')
def matching(tmp_path_factory):
  """(reference, config, params): a random retrieval model saved as ClipBERT saves it, loaded."""
  bert_config = _bert_config()
  reference = _reference(bert_config, outputs=2)
  path = tmp_path_factory.mktemp('clipbert') / 'model_step_100.pt'
  torch.save(reference.state_dict(), path)  # as ClipBERT's ModelSaver does
  config = _config(bert_config)
  return reference, config, clipbert.from_clipbert_checkpoint(str(path), config)


def test_matching_matches_clipbert_reference(matching):
  reference, config, params = matching
  model = clipbert.ClipBert(config)
  ids, mask, frames = _inputs(TEXTS)

  # The visual embeddings of one clip, against VisualInputEmbedding(GridFeatBackbone(...)).
  pixels = torch.from_numpy(np.ascontiguousarray(frames[:, 0].transpose(0, 1, 4, 2, 3)))
  with torch.no_grad():
    want_tokens = reference.transformer.bert.visual_embeddings(reference.cnn(pixels)).numpy()
  got_tokens = jax.jit(functools.partial(model.apply, method='visual_tokens'))(
      {'params': params}, frames[:, 0])
  assert got_tokens.shape == (BATCH, GRID[0] * GRID[1], config.bert_config.hidden_size)
  np.testing.assert_allclose(got_tokens, want_tokens, atol=ATOL)

  want = _reference_logits(reference, ids, mask, frames)
  got = jax.jit(model.apply)({'params': params}, ids, mask, frames)
  assert got.shape == (BATCH, CLIPS, TEXTS, 2) == want.shape
  assert np.abs(want).max() > 0.1  # not a degenerate near-zero output
  np.testing.assert_allclose(got, want, atol=ATOL)
  # A clip's logits depend on its own frames: a swap of clips would fail the tolerance.
  assert np.abs(np.asarray(got[:, 0]) - np.asarray(got[:, 1])).max() > 10 * ATOL


def test_multiple_choice_and_qa_match_clipbert_reference():
  bert_config = _bert_config()
  options, answers = 3, 5
  ids, mask, frames = _inputs(options, seed=2)
  reference = _reference(bert_config, outputs=1, seed=3)
  config = _config(bert_config, clipbert.MULTIPLE_CHOICE)
  params = clipbert.from_clipbert_checkpoint(_state_dict(reference), config)
  got = jax.jit(clipbert.ClipBert(config).apply)({'params': params}, ids, mask, frames)
  assert got.shape == (BATCH, CLIPS, options)
  np.testing.assert_allclose(got, _reference_logits(reference, ids, mask, frames)[..., 0],
                             atol=ATOL)

  reference = _reference(bert_config, outputs=answers, seed=4)
  config = _config(bert_config, clipbert.QA, num_answers=answers)
  params = clipbert.from_clipbert_checkpoint(_state_dict(reference), config)
  got = jax.jit(clipbert.ClipBert(config).apply)({'params': params}, ids[:, 0], mask[:, 0],
                                                 frames)
  assert got.shape == (BATCH, CLIPS, answers)
  want = _reference_logits(reference, ids[:, :1], mask[:, :1], frames)[:, :, 0]
  np.testing.assert_allclose(got, want, atol=ATOL)


def test_pretraining_checkpoint_gets_a_fresh_head_and_bad_ones_are_refused():
  bert_config = _bert_config()
  sd = _state_dict(_reference(bert_config, outputs=2))
  pretraining = {k: v for k, v in sd.items() if not k.startswith('transformer.classifier.')}
  pretraining['transformer.cls.seq_relationship.weight'] = np.zeros((2, 32), np.float32)
  pretraining['transformer.cls.predictions.bias'] = np.zeros(64, np.float32)
  config = _config(bert_config)
  with pytest.raises(ValueError, match='rng'):
    clipbert.from_clipbert_checkpoint(pretraining, config)
  params = clipbert.from_clipbert_checkpoint(pretraining, config, rng=jax.random.key(0))
  assert params['classifier']['output']['kernel'].shape == (64, 2)
  np.testing.assert_array_equal(
      params['grid_encoder']['conv']['kernel'],
      sd['cnn.grid_encoder.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['visual_embeddings']['row_position_embeddings']
                                ['embedding'],
                                sd['transformer.bert.visual_embeddings.'
                                   'row_position_embeddings.weight'])

  with pytest.raises(ValueError, match='no place'):
    clipbert_torch.to_flax({**sd, 'transformer.bert.visual_embeddings.extra.weight':
                            np.zeros(3, np.float32)}, bert_config, TINY_RESNET,
                           max_grid_rows=ROWS, max_grid_cols=COLS)
  with pytest.raises(ValueError, match='layers'):
    clipbert_torch.to_flax(sd, dataclasses.replace(bert_config, num_layers=3), TINY_RESNET,
                           max_grid_rows=ROWS, max_grid_cols=COLS)
  with pytest.raises(ValueError, match='shapes differ'):
    clipbert.from_clipbert_checkpoint(sd, _config(bert_config, clipbert.MULTIPLE_CHOICE))
  with pytest.raises(KeyError, match='grid_encoder'):
    clipbert_torch.to_flax({k: v for k, v in sd.items() if 'grid_encoder' not in k},
                           bert_config, TINY_RESNET, max_grid_rows=ROWS, max_grid_cols=COLS)


# ------------------------------------------------------------------ gradients


def test_gradients_reach_trainable_frame_encoder_parts_only(matching):
  _, config, params = matching
  model = clipbert.ClipBert(config)
  ids, mask, frames = _inputs(TEXTS, seed=5)
  frames = frames[:, :, :, :96, :96]  # res5 3 x 3, a 1 x 1 grid: enough for gradients
  labels = jnp.asarray([[1, 0], [1, 0]])

  def loss(p):
    logits = model.apply({'params': p}, ids, mask, frames, train=True,
                         rngs={'dropout': jax.random.key(1)})
    fused = consensus.reduce(logits, consensus.LSE)  # [batch, texts, 2]
    return -jnp.take_along_axis(jax.nn.log_softmax(fused), labels[..., None], -1).mean()

  grads = jax.jit(jax.grad(loss))(params)
  mask_tree = clipbert.frame_encoder_trainable_mask(params, config)
  encoder_grads = jax.tree_util.tree_flatten_with_path(grads['frame_encoder'])[0]
  encoder_mask = jax.tree_util.tree_leaves(mask_tree['frame_encoder'])
  trained = frozen = 0
  for (path, grad), trainable in zip(encoder_grads, encoder_mask):
    name = jax.tree_util.keystr(path)
    if trainable:
      assert np.abs(np.asarray(grad)).max() > 0, name
      trained += 1
    else:
      assert not np.asarray(grad).any(), name  # exactly zero
      frozen += 1
  # freeze_at=2: stem and res2 frozen, every folded norm frozen; res3..res5 convs train.
  assert trained == 3 * 4 and frozen > trained
  for module in ('grid_encoder', 'visual_embeddings', 'bert', 'classifier'):
    assert all(jax.tree_util.tree_leaves(mask_tree[module]))
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads[module])) > 0, \
        module


def test_vit_frame_encoder_gives_patch_tokens():
  vit_config = vit.get_config('tiny', hidden_size=16, num_layers=1, image_size=32)
  config = clipbert.ClipBertConfig(bert_config=_bert_config(), resnet_config=None,
                                   vit_config=vit_config, task=clipbert.MULTIPLE_CHOICE)
  model = clipbert.ClipBert(config)
  ids, mask, _ = _inputs(3, seed=6)
  frames = np.random.default_rng(7).normal(size=(BATCH, 1, FRAMES, 48, 32, 3)).astype(np.float32)
  abstract = clipbert.abstract_params(model, (48, 32))
  assert abstract['grid_encoder']['projection']['kernel'].shape == (16, 32)
  # Random values without compiling an init (slow on CPU): any will do for shapes.
  rng = np.random.default_rng(8)
  params = jax.tree.map(lambda leaf: (0.1 * rng.normal(size=leaf.shape)).astype(np.float32),
                        abstract)
  scores = jax.jit(model.apply)({'params': params}, ids, mask, frames)
  assert scores.shape == (BATCH, 1, 3) and np.isfinite(scores).all()
  tokens = jax.eval_shape(functools.partial(model.apply, method='visual_tokens'),
                          {'params': params}, frames[:, 0])
  assert tokens.shape == (BATCH, 3 * 2, 32)  # a 3 x 2 grid of 16 px patches


def test_config_checks():
  with pytest.raises(ValueError, match='exactly one'):
    clipbert.ClipBertConfig(resnet_config=None)
  with pytest.raises(ValueError, match='task'):
    clipbert.ClipBertConfig(task='captioning')
  with pytest.raises(ValueError, match='num_answers'):
    clipbert.ClipBertConfig(task=clipbert.QA)
  with pytest.raises(ValueError, match='res5'):
    clipbert.ClipBertConfig(resnet_config=dataclasses.replace(resnet.CLIPBERT, outputs=('res4',)))



def test_text_checkpoint_starts_the_joint_bert_from_hugging_face_weights():
  """configs/clipbert.py:tiny's MiniLM: with no visual token the joint BERT is transformers'
  BertModel on the checkpoint; the frame side stays random; both checkpoints set is refused."""
  from configs import clipbert as clipbert_config  # pylint: disable=import-outside-toplevel
  from vlm_jax.clipbert import checks  # pylint: disable=import-outside-toplevel
  from vlm_jax.clipbert import step as step_lib  # pylint: disable=import-outside-toplevel
  from vlm_jax.config_checks import ConfigError  # pylint: disable=import-outside-toplevel
  from vlm_jax.convert import hf_bert  # pylint: disable=import-outside-toplevel
  from vlm_jax.data import tokenizer  # pylint: disable=import-outside-toplevel

  config = clipbert_config.get_config('tiny,runlocal')
  config.model.text_checkpoint = 'minilm'
  setup = step_lib.build(config, devices=jax.devices()[:1])
  assert setup.model.config.bert_config.hidden_size == 384
  assert setup.model.config.bert_config.num_layers == 6
  params = jax.device_get(step_lib.initial_params(setup))
  random = jax.device_get(setup.sharded.init_params(jax.random.key(config.seed)))
  np.testing.assert_array_equal(params['grid_encoder']['conv']['kernel'],
                                random['grid_encoder']['conv']['kernel'])

  tok = tokenizer.load(tokenizer.default_vocab_file())
  enc = tok.encode_batch(['slice the onion thinly', 'a red screen'])
  length = max(len(e.ids) for e in enc)
  ids = np.zeros((2, length), np.int32)
  mask = np.zeros_like(ids)
  for i, e in enumerate(enc):
    ids[i, :len(e.ids)], mask[i, :len(e.ids)] = e.ids, 1
  hidden = setup.model.config.bert_config.hidden_size
  states, pooled = setup.model.apply({'params': params}, ids, mask,
                                     jnp.zeros((2, 0, hidden)), method='encode')
  reference = transformers.BertModel.from_pretrained(hf_bert.minilm_checkpoint_dir()).eval()
  with torch.no_grad():
    out = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(states)[real], out.last_hidden_state.numpy()[real],
                             atol=ATOL)
  np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=ATOL)

  config.model.init_checkpoint = 'clipbert.pt'
  with pytest.raises(ConfigError, match='model.text_checkpoint.*both set'):
    checks.validate(config, 1, 1)


# ------------------------------------------------------------------ consensus


def test_consensus_reductions_by_hand():
  # [batch 1, clips 3, classes 2]
  logits = np.array([[[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]]])
  mean = consensus.reduce(logits, consensus.MEAN)
  maximum = consensus.reduce(logits, consensus.MAX)
  lse = consensus.reduce(logits, consensus.LSE)
  np.testing.assert_allclose(mean, [[1.0, 1.0 / 3.0]], rtol=1e-6)
  np.testing.assert_allclose(maximum, [[2.0, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(lse, [[np.log(1 + np.e ** 2 + np.e), np.log(2 * np.e + np.e ** -1)]],
                             rtol=1e-6)
  assert (np.asarray(lse) >= np.asarray(maximum)).all()
  assert (np.asarray(maximum) >= np.asarray(mean)).all()
  assert (np.asarray(lse) <= np.asarray(maximum) + np.log(3) + 1e-6).all()

  # More axes after the clips axis; bfloat16 input reduced in float32.
  rng = np.random.default_rng(0)
  many = rng.normal(size=(4, 8, 3, 5)).astype(np.float32)
  got = consensus.reduce(jnp.asarray(many, jnp.bfloat16), consensus.LSE)
  assert got.shape == (4, 3, 5) and got.dtype == jnp.float32
  want = np.log(np.exp(np.asarray(jnp.asarray(many, jnp.bfloat16), np.float64)).sum(1))
  np.testing.assert_allclose(got, want, rtol=1e-5)

  # ClipBERT's LSE loss, LSE over (clip, class) minus LSE over clips of the true
  # class, is softmax cross-entropy of the LSE-reduced logits.
  clip_logits = rng.normal(size=(4, 8, 5))
  labels = rng.integers(0, 5, size=4)
  theirs = (np.log(np.exp(clip_logits.reshape(4, -1)).sum(-1))
            - np.log(np.exp(clip_logits[np.arange(4), :, labels]).sum(-1)))
  fused = np.asarray(consensus.reduce(clip_logits, consensus.LSE), np.float64)
  ours = np.log(np.exp(fused).sum(-1)) - fused[np.arange(4), labels]
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)

  with pytest.raises(ValueError, match='consensus method'):
    consensus.reduce(logits, 'median')


# ------------------------------------------------------------------ sampling


def _train(duration, video_index=0, step=0, seed=0, **kw):
  args = dict(num_clips=8, num_frames=2, fps=2.0)
  args.update(kw)
  return sampling.train_timestamps(duration, 30.0, seed=seed, step=step,
                                   video_index=video_index, **args)


def test_training_clips_are_keyed_and_independent():
  a = _train(60.0, video_index=3, step=7)
  assert a.shape == (8, 2)
  np.testing.assert_array_equal(a, _train(60.0, video_index=3, step=7))
  assert not np.allclose(a, _train(60.0, video_index=3, step=8))
  assert not np.allclose(a, _train(60.0, video_index=4, step=7))
  assert not np.allclose(a, _train(60.0, video_index=3, step=7, seed=1))
  # Frames spread over the 1 s window from its first to its last source frame.
  np.testing.assert_allclose(a[:, 1] - a[:, 0], 1.0 - 1.0 / 30.0)
  assert (a >= 0).all() and (a < 60.0).all()

  # Each clip's start on its own: uniform over [0, slack], uncorrelated across
  # clips of a video, not sorted, not evenly spaced.
  starts = np.stack([_train(10.0, video_index=v)[:, 0] for v in range(1500)])  # slack 9 s
  assert starts.min() >= 0 and starts.max() <= 9.0
  np.testing.assert_allclose(starts.mean(), 4.5, atol=0.15)
  np.testing.assert_allclose(starts.std(), 9.0 / np.sqrt(12), atol=0.1)
  correlation = np.corrcoef(starts.T)[np.triu_indices(8, 1)]
  assert np.abs(correlation).max() < 0.1
  assert not all(np.all(np.diff(row) >= 0) for row in starts[:10])

  with pytest.raises(ValueError, match='video_index'):
    _train(10.0, video_index=-1)


def test_inference_clips_are_uniform_as_clipbert():
  duration, source_fps = 20.0, 25.0
  times = sampling.inference_timestamps(duration, source_fps, num_clips=4, num_frames=2, fps=2.0)
  slack = duration - 1.0
  np.testing.assert_allclose(times[:, 0], slack * np.arange(4) / 4)
  np.testing.assert_allclose(np.diff(times[:, 0]), slack / 4)
  one = sampling.inference_timestamps(duration, source_fps, num_clips=1, num_frames=3, fps=1.0)
  np.testing.assert_allclose(one, [[(duration - 3.0) / 3 + k * (3.0 - 1 / 25) / 2
                                    for k in range(3)]])

  # The same source frames as ClipBERT's decoder: get_start_end_idx (uniform
  # clip_idx / num_clips), linspace(start, start + clip_size - 1, T), clamp, long().
  num_source = int(duration * source_fps)
  clip_size = 2 / 2.0 * source_fps
  for clip_idx in range(4):
    start = max(num_source - clip_size, 0) * clip_idx / 4
    theirs = torch.clamp(torch.linspace(start, start + clip_size - 1, 2), 0,
                         num_source - 1).long().numpy()
    np.testing.assert_array_equal(np.floor(times[clip_idx] * source_fps + 1e-6), theirs)


def test_short_videos_repeat_the_last_frame():
  # 0.4 s at 30 fps (12 frames), clips of 2 frames over 1 s: ClipBERT starts at 0
  # and clamps frame 29 to frame 11.
  train = _train(0.4)
  np.testing.assert_allclose(train, np.tile([[0.0, 11 / 30]], (8, 1)), atol=1e-12)
  infer = sampling.inference_timestamps(0.4, 30.0, num_clips=3, num_frames=4, fps=2.0)
  np.testing.assert_allclose(infer, np.tile([[0.0, 11 / 30, 11 / 30, 11 / 30]], (3, 1)))
  assert (infer < 0.4).all() and (train < 0.4).all()
  one_frame = sampling.inference_timestamps(0.01, 30.0, num_clips=2, num_frames=1, fps=2.0)
  np.testing.assert_array_equal(one_frame, [[0.0], [0.0]])
