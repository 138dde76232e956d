"""CBT's text MLM term (L_bert): its config check, a checkpoint's head, the step, a CLI run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import cbt as cbt_config
from test_cbt_training import DIM, _corpus  # the hand-made records of the CBT training tests
from vlm_jax import config_checks
from vlm_jax.cbt import checks as cbt_checks
from vlm_jax.cbt import inference as cbt_inference
from vlm_jax.cbt import pipeline as cbt_pipeline
from vlm_jax.cbt import step as cbt_step
from vlm_jax.cbt import trainer as cbt_trainer
from vlm_jax.data import feature_records
from vlm_jax.data import records
from vlm_jax.train import partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLM_FLAGS = ['--config.model.freeze_text=False', '--config.loss.bert_weight=1.0']


def _mlm_config(files=()):
  c = cbt_config.get_config('tiny,runlocal')
  c.data.train_files = ','.join(files)
  c.model.feature_dim = DIM
  c.model.freeze_text = False
  c.loss.bert_weight = 1.0
  return c


@pytest.fixture(scope='module')
def record_files(tmp_path_factory):
  return records.write_shards(_corpus(16), str(tmp_path_factory.mktemp('cbt_mlm_records')), 2,
                              serialize=feature_records.to_example)


def test_the_term_is_off_by_default_and_refused_on_a_frozen_text_bert():
  config = cbt_config.get_config('tiny')
  assert config.loss.bert_weight == 0.0 and config.model.freeze_text
  assert config.data.text_mask_rate == 0.15
  batch = config.train.global_batch_size
  config.loss.bert_weight = 1.0
  with pytest.raises(config_checks.ConfigError,
                     match=r'^config.loss.bert_weight: 1.0 trains the text BERT, but '
                           r'model.freeze_text=True freezes it; set --config.model.freeze_text'):
    cbt_checks.validate(config, 4, 1, batch)
  config.model.freeze_text = False
  cbt_checks.validate(config, 4, 1, batch)
  config.data.text_mask_rate = 0.0
  with pytest.raises(config_checks.ConfigError, match=r'^config.data.text_mask_rate: must be'):
    cbt_checks.validate(config, 4, 1, batch)
  config.loss.bert_weight = -1.0
  with pytest.raises(config_checks.ConfigError, match=r'^config.loss.bert_weight: must be >= 0'):
    cbt_checks.validate(config, 4, 1, batch)


def test_a_pretraining_checkpoints_mlm_head_loads_and_predicts_as_transformers(tmp_path):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  reference = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=40)).eval()
  with torch.no_grad():  # HF initialises the output bias at zero: make it count
    reference.cls.predictions.bias.normal_()
  reference.save_pretrained(tmp_path)
  config = _mlm_config()
  config.model.init_checkpoint = str(tmp_path)
  config.mesh.data = 1
  setup = cbt_step.build(config, jax.devices()[:1])
  params = jax.device_get(cbt_step.initial_params(setup))
  np.testing.assert_allclose(params['mlm_head']['bias'],
                             reference.cls.predictions.bias.detach().numpy(), rtol=1e-6)
  ids = np.array([[101, 5, 17, 103, 64, 102, 0], [101, 103, 9, 102, 0, 0, 0]], np.int32)
  mask = (np.arange(7)[None] < np.array([[6], [4]])).astype(np.int32)
  positions = np.array([[3, 1], [1, 2]], np.int32)
  clips = np.ones((2, 3), np.int32)
  out = setup.model.apply({'params': params}, np.zeros((2, 3, DIM), np.float32), clips,
                          clips * 0, ids, mask, mlm_positions=positions)
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask)).prediction_logits.numpy()
  np.testing.assert_allclose(out['mlm_logits'], np.take_along_axis(
      expected, positions[..., None], axis=1), atol=1e-4)


def test_the_step_reads_the_masked_sentence_and_logs_the_term(record_files):
  config = _mlm_config(record_files)
  corpus = feature_records.load_corpus(record_files)
  opts = cbt_trainer.window_options(config)
  assert opts.text_mask_rate == 0.15 and opts.mask_id == 103  # MiniLM's vocab: [MASK]
  batch = cbt_pipeline.batch_at(corpus, 1, config.seed, 8, opts)
  batch.pop('video_index')
  setup = cbt_step.build(config, jax.devices()[:1])
  assert 'mlm_head' in setup.sharded.abstract_state.params
  initial = jax.device_get(cbt_step.initial_params(setup))

  def loss(b):
    state = setup.sharded.create_state(initial)
    _, metrics = setup.train_step(state, partitioning.device_batch(b, setup.mesh))
    return jax.device_get(metrics)

  base = loss(batch)
  assert np.isfinite(base['loss_bert']) and 0 <= base['bert_accuracy'] <= 1
  # One text pass, on the masked ids: the unmasked ones are read by nothing.
  unmasked_changed = loss(dict(batch, input_ids=np.full_like(batch['input_ids'], 2001)))
  assert unmasked_changed['loss'] == base['loss']
  masked_changed = loss(dict(batch, masked_ids=np.full_like(batch['masked_ids'], 2001)))
  assert masked_changed['loss_cross'] != base['loss_cross']
  assert masked_changed['loss_bert'] != base['loss_bert']


def test_the_cli_trains_the_text_bert_on_the_term_and_loss_bert_falls(record_files, tmp_path):
  subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'train', '--config', 'configs/cbt.py:tiny,runlocal',
       f'--workdir={tmp_path}', f'--config.data.train_files={",".join(record_files)}',
       f'--config.model.feature_dim={DIM}', *MLM_FLAGS],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ), check=True)
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == list(range(2, 13, 2))
  assert rows[-1]['loss_bert'] < rows[0]['loss_bert']
  assert all(np.isfinite(r['bert_accuracy']) for r in rows)
  # The run's checkpoint, head included, loads for inference.
  loaded = cbt_inference.load(str(tmp_path))
  assert loaded.step == 12 and 'mlm_head' in loaded.params
