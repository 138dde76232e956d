"""ClipBERT's image-text pretraining: images as 1-frame videos, MLM + matching.

The oracles: the MLM loss by hand in NumPy; the MLM logits against
ClipBERT's `ClipBertForPreTraining` computation written with transformers'
modules (BertEmbeddings, BertEncoder on [text; visual], BertPreTrainingHeads
tied to the word table), from a ClipBERT-named state dict through the
converter; the image frames against a hand computation of ClipBERT's resize,
pad and normalisation; the step's losses against NumPy over the model's own
forward; and a CLI run on generated PNGs whose loss_mlm falls.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special
import pytest
from PIL import Image

from configs import clipbert as clipbert_config
from test_clipbert_model import (COLS, ROWS, TINY_RESNET, _bert_config,  # the ClipBERT reference
                                 _reference, _state_dict)
from vlm_jax import config_checks
from vlm_jax.clipbert import checks
from vlm_jax.clipbert import data as data_lib
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import objectives
from vlm_jax.clipbert import step as step_lib
from vlm_jax.clipbert import trainer
from vlm_jax.data import text_masking
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.data.files import DataError
from vlm_jax.train import optim, partitioning

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Colour of each image; the images are 60 wide x 40 high (landscape: padded below).
COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 40), 'blue': (30, 40, 220),
           'yellow': (230, 220, 30), 'white': (240, 240, 240), 'black': (10, 10, 10)}
DETECTRON2_MEAN_BGR = np.array([103.53, 116.28, 123.675])


def _log_softmax(x):
  return special.log_softmax(x, axis=-1)


def _lse(x, axis):
  return special.logsumexp(x, axis=axis)


# ------------------------------------------------------------------ the MLM loss


@pytest.mark.parametrize('method', ['mean', 'lse'])
def test_mlm_loss_is_the_mean_ce_over_real_predictions(method):
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 2, 4, 7)).astype(np.float32)  # batch, clips, P, vocab
  labels = rng.integers(0, 7, (3, 4))
  weights = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  loss, metrics = objectives.mlm_loss(jnp.asarray(logits), jnp.asarray(labels),
                                      jnp.asarray(weights), method)
  reduced = logits.mean(1) if method == 'mean' else _lse(logits, 1)
  ce = -np.take_along_axis(_log_softmax(reduced), labels[..., None], -1)[..., 0]
  real = weights > 0
  np.testing.assert_allclose(loss, ce[real].mean(), rtol=1e-5)  # 7 predictions, not 12
  np.testing.assert_allclose(metrics['mlm_accuracy'],
                             (reduced.argmax(-1) == labels)[real].mean(), rtol=1e-6)
  # No prediction at all: 0, not NaN.
  empty, _ = objectives.mlm_loss(jnp.asarray(logits), jnp.asarray(labels),
                                 jnp.zeros_like(jnp.asarray(weights)), method)
  assert float(empty) == 0.0


# ------------------------------------------------------------------ the MLM head


def test_mlm_logits_match_clipberts_pretraining_model_from_its_checkpoint():
  """ClipBERT's checkpoint with `transformer.cls.*` -> our `mlm_head`; pretraining_logits
  against ClipBertForPreTraining's: cls.predictions on the text part of BertEncoder over
  [BertEmbeddings(masked ids); visual tokens], per clip."""
  bert_config = _bert_config()
  reference = _reference(bert_config, outputs=2, seed=5)  # test_clipbert_model's ClipBERT
  hf_config = transformers.BertConfig(
      vocab_size=bert_config.vocab_size, hidden_size=bert_config.hidden_size,
      num_hidden_layers=bert_config.num_layers, num_attention_heads=bert_config.num_heads,
      intermediate_size=bert_config.mlp_dim,
      max_position_embeddings=bert_config.max_position_embeddings)
  torch.manual_seed(6)
  heads = transformers.models.bert.modeling_bert.BertPreTrainingHeads(hf_config).eval()
  with torch.no_grad():  # away from the identity / zero inits, at unit scale
    heads.predictions.transform.dense.weight.normal_(0, bert_config.hidden_size ** -0.5)
    heads.predictions.transform.dense.bias.normal_(0, 0.1)
    heads.predictions.transform.LayerNorm.weight.uniform_(0.5, 1.5)
    heads.predictions.transform.LayerNorm.bias.normal_(0, 0.1)
    heads.predictions.bias.normal_()
  # Tied as BertPreTrainedModel ties them: decoder = the word table, its bias = `bias`.
  heads.predictions.decoder.weight = reference.transformer.bert.embeddings.word_embeddings.weight
  heads.predictions.decoder.bias = heads.predictions.bias
  sd = {k: v for k, v in _state_dict(reference).items()
        if not k.startswith('transformer.classifier.')}  # a pretraining checkpoint has none
  sd.update({f'transformer.cls.{k}': v.detach().numpy() for k, v in heads.state_dict().items()})

  config = clipbert_model.ClipBertConfig(bert_config=bert_config, resnet_config=TINY_RESNET,
                                         max_grid_rows=ROWS, max_grid_cols=COLS, mlm_head=True)
  params = clipbert_model.from_clipbert_checkpoint(sd, config, rng=jax.random.key(0))
  np.testing.assert_array_equal(params['mlm_head']['bias'], sd['transformer.cls.predictions.bias'])
  # Without the head the checkpoint gives the tree the model had before it existed.
  plain = clipbert_model.from_clipbert_checkpoint(
      sd, clipbert_model.ClipBertConfig(bert_config=bert_config, resnet_config=TINY_RESNET,
                                        max_grid_rows=ROWS, max_grid_cols=COLS),
      rng=jax.random.key(0))
  assert set(params) - set(plain) == {'mlm_head'}

  rng = np.random.default_rng(7)
  batch, clips, length = 2, 2, 7
  frames = rng.normal(size=(batch, clips, 1, 128, 96, 3)).astype(np.float32)  # grid 2 x 1
  ids = rng.integers(5, 64, size=(batch, 2, length)).astype(np.int32)
  ids[..., 0] = 2
  mask = (np.arange(length) < np.array([[[6], [7]], [[4], [5]]])).astype(np.int32)
  ids *= mask
  masked = ids[:, 0].copy()
  positions = np.array([[1, 3, 4], [2, 1, 0]], np.int32)  # the last slot: padding
  masked[0, [1, 3]] = masked[1, 2] = 1  # a [MASK] id of this vocab

  logits, mlm = jax.jit(lambda p, *a: clipbert_model.ClipBert(config).apply(
      {'params': p}, *a, method='pretraining_logits'))(params, ids, mask, frames, masked,
                                                       positions)
  assert logits.shape == (batch, clips, 2, 2) and mlm.shape == (batch, clips, 3, 64)
  bert = reference.transformer.bert
  with torch.no_grad():
    for clip in range(clips):
      pixels = torch.from_numpy(np.ascontiguousarray(frames[:, clip].transpose(0, 1, 4, 2, 3)))
      visual = bert.visual_embeddings(reference.cnn(pixels))
      text = bert.embeddings(input_ids=torch.tensor(masked, dtype=torch.long))
      joint_mask = torch.cat([torch.tensor(mask[:, 0]), torch.ones(visual.shape[:2])], -1)
      extended = (1.0 - joint_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
      states = bert.encoder(torch.cat([text, visual], 1), attention_mask=extended)[0]
      scores, _ = heads(states[:, :length], states[:, 0])  # ClipBertForPreTraining's cls
      want = np.take_along_axis(scores.numpy(), positions[..., None], axis=1)
      assert np.abs(want).max() > 0.5
      np.testing.assert_allclose(mlm[:, clip], want, atol=1e-4)


# ------------------------------------------------------------------ images and masked batches


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """Six solid-colour PNGs (60 x 40), a corrupt 'broken.png', and captions.jsonl of them."""
  folder = tmp_path_factory.mktemp('clipbert_images')
  for name, rgb in COLOURS.items():
    Image.new('RGB', (60, 40), rgb).save(folder / f'{name}.png')
  (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' +
                                      np.random.default_rng(0).bytes(300))
  rows = [{'video': f'{name}.png', 'text': f'a photo of a {name} square on a plain background'}
          for name in COLOURS]
  rows.insert(2, {'video': 'broken.png', 'text': 'a photo of a broken square'})
  (folder / 'captions.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return folder


def _options(**overrides):
  fields = dict(num_clips=2, num_frames=3, longest_side=64, max_text_len=16,
                text_mask_rate=0.15, mask_id=103, vocab_size=30522)
  fields.update(overrides)
  return data_lib.BatchOptions(**fields)


def test_images_are_1_frame_videos_resized_padded_and_normalised_as_clipbert(images):
  vocab = tokenizer_lib.load()
  found = data_lib.read_jsonl(str(images / 'captions.jsonl'))
  assert len(found.items) == 7 and not found.missing
  with data_lib.BatchBuilder(found.items, vocab, _options(), seed=1) as builder:
    batch, skips = builder.batch(3, 7)  # every item, the broken one included
  assert batch['frames'].shape == (7, 2, 3, 64, 64, 3)
  # ClipBERT's get_resize_size: the longer side to 64, the other int(40 * 64 / 60) = 42;
  # ImagePad: zeros below; then BGR minus the pixel mean. Solid colours stay exact.
  for row, index in enumerate(batch['item_index']):
    rgb = COLOURS[os.path.splitext(os.path.basename(found.items[index].video))[0]]
    want = np.zeros((64, 64, 3))
    want[:42] = np.array(rgb[::-1], np.float64)
    want -= DETECTRON2_MEAN_BGR
    for clip in range(2):
      for frame in range(3):  # the one image repeated over clips x frames
        np.testing.assert_allclose(batch['frames'][row, clip, frame], want, atol=1e-4)
  [skip] = skips
  assert skip.video == str(images / 'broken.png') and 'cannot read the image' in skip.reason
  assert batch['num_skipped'].sum() == 1
  # The trainer's probe opens the first readable item, an image.
  checks.readable_video(found.items, 'captions.jsonl')


def test_masked_captions_are_deterministic_and_leave_the_rest_of_the_batch(images):
  vocab = tokenizer_lib.load()
  items = [i for i in data_lib.read_jsonl(str(images / 'captions.jsonl')).items
           if 'broken' not in i.video]
  with data_lib.BatchBuilder(items, vocab, _options(), seed=2) as on, \
       data_lib.BatchBuilder(items, vocab, _options(text_mask_rate=0.0), seed=2) as off:
    masked, _ = on.batch(4, 4)
    halves = [on.batch(4, 4, p, 2)[0] for p in range(2)]
    plain, _ = off.batch(4, 4)
    dataset = next(data_lib.make_dataset(on, 4, 3, 4).as_numpy_iterator())
  assert set(plain) == set(data_lib.NAMES)
  assert set(masked) == set(data_lib.NAMES + data_lib.MLM_NAMES) == set(dataset)
  for key in data_lib.NAMES:  # masking draws from its own generator
    np.testing.assert_array_equal(masked[key], plain[key], err_msg=key)
  for key in masked:
    np.testing.assert_array_equal(masked[key], dataset[key], err_msg=key)
    np.testing.assert_array_equal(masked[key], np.concatenate([h[key] for h in halves]))
  # "a photo of a <colour> square on a plain background": 10 WordPieces -> round(1.5) = 2
  # predictions of P = round(0.15 * 14) = 2 slots, from the positive caption only.
  assert masked['mlm_positions'].shape == (4, 2)
  np.testing.assert_array_equal(masked['mlm_weights'], 1.0)
  positive = masked['input_ids'][:, 0]
  np.testing.assert_array_equal(
      np.take_along_axis(positive, masked['mlm_positions'], 1), masked['mlm_labels'])
  changed = masked['masked_ids'] != positive
  assert changed.sum() >= 1 and (changed.sum(1) <= 2).all()
  with pytest.raises(DataError, match='matching items only'):
    qa = [data_lib.Item(i.video, 'what colour?', answer='red') for i in items]
    data_lib.BatchBuilder(qa, vocab, _options(), seed=0)


# ------------------------------------------------------------------ config and checks


def test_the_pretrain_option_and_the_new_fields_checks():
  for arg in ('tiny', 'base', 'tiny,runlocal'):
    config = clipbert_config.get_config(arg)
    assert config.loss.mlm_weight == 0.0 and config.data.text_mask_rate == 0.15
    assert not step_lib.model_config(config).mlm_head
  config = clipbert_config.get_config('base,pretrain')
  assert (config.data.num_clips, config.data.num_frames, config.data.image_size,
          config.data.max_text_tokens, config.loss.mlm_weight) == (1, 1, 768, 30, 1.0)
  assert checks.grid_size(config.data.image_size) == 12
  checks.validate(config, 4, 1)
  config = clipbert_config.get_config('tiny,runlocal,pretrain')
  checks.validate(config, 4, 1)
  assert trainer.batch_options(config, mask_id=103).text_mask_rate == 0.15
  for field, value, message in [
      ('loss.mlm_weight', -1.0, r'^config.loss.mlm_weight: must be >= 0'),
      ('data.text_mask_rate', 0.0, r'^config.data.text_mask_rate: must be in \(0, 1\]'),
      ('data.text_mask_rate', 1.5, r'^config.data.text_mask_rate: must be in \(0, 1\]'),
      ('model.task', 'multiple_choice', r"^config.loss.mlm_weight: 1.0 masks captions, which "
       r"only 'matching' items have")]:
    bad = clipbert_config.get_config('tiny,runlocal,pretrain')
    section, name = field.split('.')
    bad[section][name] = value
    with pytest.raises(config_checks.ConfigError, match=message):
      checks.validate(bad, 4, 1)


# ------------------------------------------------------------------ the step


def _step_config(mlm_weight):
  config = clipbert_config.get_config('tiny,runlocal')  # 2 clips x 2 frames: consensus counts
  config.model.text_vocab_size, config.model.max_position_embeddings = 100, 32
  config.loss.mlm_weight = mlm_weight
  config.mesh.data = 1
  return config


def _step_batch(config):
  shapes = step_lib.abstract_batch(config)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 100, shapes['input_ids'].shape).astype(np.int32)
  mask = np.ones(shapes['attention_mask'].shape, np.int32)
  mask[..., -3:] = 0
  batch = {'input_ids': ids * mask, 'attention_mask': mask,
           'frames': (50 * rng.standard_normal(shapes['frames'].shape)).astype(np.float32),
           'labels': np.tile(np.array([[1, 0]], np.int32), (len(ids), 1))}
  masked = [text_masking.mask_text(rng, batch['input_ids'][r, 0], int(mask[r, 0].sum()) - 2,
                                   0.15, 3, 100, step_lib.mlm_predictions(config))
            for r in range(len(ids))]
  batch.update({k: np.stack([m[k] for m in masked]) for k in data_lib.MLM_NAMES})
  return batch


def _random_params(abstract, seed=0):
  """Values for every leaf without compiling an init (~20 s on 2 CPU cores): kernels at
  1 / sqrt(fan-in), norm scales near 1, the rest small."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = optim.path_names(path)[-1]
    if name == 'scale':
      return (1 + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    std = np.prod(x.shape[:-1]) ** -0.5 if name == 'kernel' else 0.02
    return (std * rng.standard_normal(x.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, abstract)


@pytest.fixture(scope='module')
def steps():
  """One step from the same parameters without and with the term (mlm_weight 0 and 0.5)."""
  out, mlm_params = {}, None
  for weight in (0.5, 0.0):
    config = _step_config(weight)
    setup = step_lib.build(config, jax.devices()[:1])
    if mlm_params is None:
      mlm_params = _random_params(setup.sharded.abstract_state.params)
    params = {k: v for k, v in mlm_params.items() if weight or k != 'mlm_head'}
    batch = _step_batch(config)
    given = batch if weight else {k: batch[k] for k in ('input_ids', 'attention_mask',
                                                        'frames', 'labels')}
    state, metrics = setup.train_step(setup.sharded.create_state(params),
                                      partitioning.device_batch(given, setup.mesh))
    out[weight] = (config, setup, params, batch, jax.device_get(state),
                   jax.device_get(metrics))
  return out


def test_with_mlm_weight_0_the_step_is_the_step_without_the_feature(steps):
  config, setup, params, _, _, metrics = steps[0.0]
  assert not setup.model.config.mlm_head and 'mlm_head' not in params
  assert set(step_lib.abstract_batch(config)) == {'input_ids', 'attention_mask', 'frames',
                                                  'labels'}
  assert not {'loss_mlm', 'mlm_accuracy', 'loss_matching'} & set(metrics)
  assert trainer.batch_options(config, mask_id=103).text_mask_rate == 0.0
  # The term on: the same parameter tree plus the head and, from the same values, the
  # same matching loss (the matching pass runs first, on the same dropout draws).
  _, mlm_setup, _, _, _, mlm_metrics = steps[0.5]
  abstract, mlm_abstract = (s.sharded.abstract_state.params for s in (setup, mlm_setup))
  assert set(mlm_abstract) - set(abstract) == {'mlm_head'}
  for key in abstract:
    assert jax.tree.map(np.shape, abstract[key]) == jax.tree.map(np.shape, mlm_abstract[key])
  np.testing.assert_allclose(mlm_metrics['loss_matching'], metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(mlm_metrics['matching_accuracy'], metrics['matching_accuracy'])


def test_the_step_adds_the_weighted_mlm_loss_of_the_positive_pairs(steps):
  config, setup, params, batch, state, metrics = steps[0.5]
  rng = jax.random.fold_in(jax.random.key(config.seed, impl=config.train.dropout_rng), 0)
  logits, mlm = jax.device_get(jax.jit(lambda p: setup.model.apply(
      {'params': p}, batch['input_ids'], batch['attention_mask'], batch['frames'],
      batch['masked_ids'], batch['mlm_positions'], train=True, rngs={'dropout': rng},
      method='pretraining_logits'))(params))
  assert mlm.shape == (4, 2, step_lib.mlm_predictions(config), 100)
  # NumPy: LSE over the clips (the config's consensus), then CE.
  matching = -np.take_along_axis(_log_softmax(_lse(logits.astype(np.float64), 1)),
                                 batch['labels'][..., None], -1).mean()
  reduced = _lse(mlm.astype(np.float64), 1)
  ce = -np.take_along_axis(_log_softmax(reduced), batch['mlm_labels'][..., None], -1)[..., 0]
  real = batch['mlm_weights'] > 0
  np.testing.assert_allclose(metrics['loss_matching'], matching, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_mlm'], ce[real].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['mlm_accuracy'],
                             (reduced.argmax(-1) == batch['mlm_labels'])[real].mean())
  np.testing.assert_allclose(metrics['loss'], matching + 0.5 * ce[real].mean(), rtol=1e-5)
  # The head trains.
  assert not np.array_equal(state.params['mlm_head']['bias'], params['mlm_head']['bias'])


# ------------------------------------------------------------------ the CLI


def test_the_cli_pretrains_on_images_and_loss_mlm_falls(images, tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config',
       'configs/clipbert.py:tiny,runlocal,pretrain', '--workdir', str(tmp_path),
       f'--config.data.train_jsonl={images / "captions.jsonl"}',
       # 16 tokens: the captions' 10 WordPieces fit, and MiniLM's steps cost half of 30's.
       '--config.data.max_text_tokens=16',
       '--config.model.text_checkpoint=minilm', '--config.train.num_steps=20',
       '--config.train.log_every=5', '--config.train.checkpoint_every=20',
       '--config.optim.learning_rate=3e-4', '--config.optim.frame_encoder_learning_rate=3e-4'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == list(range(5, 21, 5))
  for key in ('loss', 'loss_mlm', 'loss_matching', 'mlm_accuracy'):
    assert all(np.isfinite(r[key]) for r in rows), key
  first, last = rows[0]['loss_mlm'], np.mean([r['loss_mlm'] for r in rows[-2:]])
  assert last < 0.6 * first, [r['loss_mlm'] for r in rows]
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  [skipped] = manifest['videos_skipped']
  assert skipped['video'] == str(images / 'broken.png')
  assert 'cannot read the image' in skipped['reason']
  assert 'could not be used and were skipped' in out.stdout + out.stderr
