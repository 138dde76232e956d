"""BERT encoder and Hugging Face checkpoint import, against transformers.BertModel."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vlm_jax.convert import hf_bert
from vlm_jax.data import tokenizer
from vlm_jax.models import bert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

FALLBACK_SENTENCES = [
    'now let me show you how to slice the tomato.',
    'Add the chopped onions and garlic, then stir for two minutes!',
    'A',
]


def real_sentences(shared_dir, count=24) -> list[str]:
  """YouCook2 captions from ../shared/realdata when present."""
  path = shared_dir / 'youcook2' / 'youcookii_annotations_trainval.json'
  if not path.exists():
    return FALLBACK_SENTENCES
  database = json.loads(path.read_text())['database']
  sentences = [a['sentence'] for video in list(database.values())[:10]
               for a in video['annotations']]
  return sentences[:count] + FALLBACK_SENTENCES


@pytest.fixture(scope='module')
def sentences():
  from conftest import SHARED  # pylint: disable=import-outside-toplevel
  return real_sentences(SHARED)


@pytest.fixture(scope='module')
def reference():
  return transformers.BertModel.from_pretrained(hf_bert.minilm_checkpoint_dir()).eval()


def _tokenize(texts):
  tok = tokenizer.load(tokenizer.default_vocab_file())
  encodings = tok.encode_batch(texts)
  length = max(len(e.ids) for e in encodings)
  ids = np.zeros((len(texts), length), np.int64)
  mask = np.zeros_like(ids)
  for i, e in enumerate(encodings):
    ids[i, :len(e.ids)] = e.ids
    mask[i, :len(e.ids)] = 1
  return ids, mask


def _reference_outputs(model, ids, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def test_minilm_matches_transformers(sentences, reference):
  ids, mask = _tokenize(sentences)
  config, params, _ = hf_bert.load('minilm')
  assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
  hidden, pooled = bert.BertModel(config).apply({'params': params}, ids, mask)
  ref_hidden, ref_pooled = _reference_outputs(reference, ids, mask)
  valid = mask.astype(bool)  # padded positions are not defined outputs
  assert np.abs(np.asarray(hidden)[valid] - ref_hidden[valid]).max() < 1e-4
  assert np.abs(np.asarray(pooled) - ref_pooled).max() < 1e-4


def test_pytorch_bin_checkpoint_loads_the_same(tmp_path, reference):
  """The same weights saved as pytorch_model.bin (BertForPreTraining-style keys)."""
  state = {f'bert.{k}': v for k, v in reference.state_dict().items()}
  torch.save(state, tmp_path / 'pytorch_model.bin')
  for name in ('config.json', 'vocab.txt'):
    (tmp_path / name).write_bytes(open(f'{hf_bert.resolve("minilm")}/{name}', 'rb').read())
  ids, mask = _tokenize(FALLBACK_SENTENCES)
  config, params, _ = hf_bert.load(str(tmp_path))
  hidden, _ = bert.BertModel(config).apply({'params': params}, ids, mask)
  ref_hidden, _ = _reference_outputs(reference, ids, mask)
  valid = mask.astype(bool)
  assert np.abs(np.asarray(hidden)[valid] - ref_hidden[valid]).max() < 1e-4


def test_missing_weights_file_is_named(tmp_path):
  (tmp_path / 'config.json').write_text(
      open(hf_bert.resolve('minilm') + '/config.json').read())
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    hf_bert.load(str(tmp_path))


def test_encode_text_command(tmp_path, reference):
  texts = FALLBACK_SENTENCES
  (tmp_path / 'in.txt').write_text('\n'.join(texts) + '\n\n')
  out = tmp_path / 'out.npz'
  subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'encode-text', '--checkpoint', 'minilm',
       '--input', str(tmp_path / 'in.txt'), '--output', str(out), '--batch_size', '2'],
      check=True, capture_output=True)
  result = np.load(out)
  ids, mask = _tokenize(texts)
  np.testing.assert_array_equal(result['input_ids'], ids)
  np.testing.assert_array_equal(result['attention_mask'], mask)
  ref_hidden, _ = _reference_outputs(reference, ids, mask)
  valid = mask.astype(bool)
  assert result['last_hidden_state'].shape == (len(texts), ids.shape[1], 384)
  assert np.abs(result['last_hidden_state'][valid] - ref_hidden[valid]).max() < 1e-4


def test_encode_text_rejects_bad_utf8(tmp_path):
  (tmp_path / 'bad.txt').write_bytes(b'fine line\n\xff\xfe broken\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'vlm_jax.cli', 'encode-text', '--input',
       str(tmp_path / 'bad.txt'), '--output', str(tmp_path / 'o.npz')],
      capture_output=True, text=True)
  assert proc.returncode != 0
  assert f'{tmp_path / "bad.txt"}:2' in proc.stderr


def test_gelu_is_the_erf_form():
  import math  # pylint: disable=import-outside-toplevel
  x = np.linspace(-8, 8, 2001).astype(np.float32)
  expected = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)]
  np.testing.assert_allclose(np.asarray(bert.gelu(x)), expected, atol=2e-6)


def test_bf16_embedding_gradients_reach_the_f32_tables_as_f32_sums():
  """The token-type table's gradient sums 16k bf16 rows onto 2: within 1e-3 of the exact
  sum (nn.Embed's bf16 lookup, a bf16 scatter-add, is off here by a third of the largest
  entry), and the word and position tables' gradients are f32 sums too."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  config = bert.BertConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2,
                           mlp_dim=32, max_position_embeddings=128, dtype=jnp.bfloat16)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 40, (128, 128))
  types = (rng.random((128, 128)) < 0.3).astype(np.int32)
  module = bert.Embeddings(config)
  params = module.init(jax.random.key(0), ids, types, deterministic=True)['params']
  params = nn.meta.unbox(params)
  summed = lambda p: module.apply({'params': p}, ids, types, method='summed')
  out, vjp = jax.vjp(summed, params)
  assert out.dtype == jnp.bfloat16
  cotangent = rng.normal(size=out.shape).astype(jnp.bfloat16)
  grads = vjp(jnp.asarray(cotangent))[0]
  ct = cotangent.astype(np.float64)
  expected = {
      'token_type_embeddings': np.stack([ct[types == v].sum(0) for v in (0, 1)]),
      'position_embeddings': ct.sum(0),
      'word_embeddings': np.stack([ct[ids == v].sum(0) for v in range(40)]),
  }
  for name, want in expected.items():
    got = np.asarray(grads[name]['embedding'])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_float32_embedding_gradients_are_bit_for_bit_those_of_flax_lookups():
  """Float32 runs (the CPU demos) train exactly as before the tables were read directly."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  config = bert.BertConfig(vocab_size=300, hidden_size=128, num_layers=1, num_heads=2,
                           mlp_dim=32)
  rng = np.random.default_rng(0)
  ids, types = rng.integers(0, 300, (16, 40)), (rng.random((16, 40)) < 0.3).astype(np.int32)
  module = bert.Embeddings(config)
  params = nn.meta.unbox(module.init(jax.random.key(0), ids, types, deterministic=True)['params'])
  cotangent = jnp.asarray(rng.normal(size=(16, 40, 128)), jnp.float32)

  def flax_lookups(p):
    table = lambda name, rows: jnp.take(p[name]['embedding'], rows, axis=0)
    return (table('word_embeddings', ids) + table('position_embeddings', np.arange(40)[None])
            + table('token_type_embeddings', types))
  ours = lambda p: module.apply({'params': p}, ids, types, method='summed')
  grads = lambda fn: jax.jit(lambda p: jax.vjp(fn, p)[1](cotangent)[0])(params)
  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(flax_lookups))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
