"""MMPT's VideoCLIP checkpoint (fairseq examples/MMPT, `checkpoint_best.pt`) -> VideoCLIP params.

MMPT's retrieval model (`MMFusionSeparate`) holds two towers, named in its
state dict (fairseq wraps the model as `mmmodel`, so a released checkpoint's
keys read `mmmodel.video_encoder...` under `model`):

  video_encoder.videomlp.{linear1, LayerNorm, linear2}.{weight, bias}
      the per-second MLP (Linear 512 -> hidden, GELU, LayerNorm, Linear);
  video_encoder.bert.{embeddings, encoder.layer.<i>, pooler}.*
      a Hugging Face BERT cut to its first layers (6 of bert-base's 12);
  text_encoder.{embeddings, encoder.layer.<i>, pooler}.*
      a whole Hugging Face BertModel.

`to_flax` returns the params tree of `vlm_jax.videoclip.model.VideoClip`
({'video_mlp', 'video_bert', 'text_bert'}), whose video word table keeps only
the `[CLS]` and `[SEP]` rows (the only ones MMPT's video sequence reads);
`bert_config` and `video_layers` give the shape to build that model with. The
weights say everything about the shape except the number of attention heads
(bert-base-uncased, MMPT's backbone: 12).
"""

import dataclasses
from typing import Any, Mapping

import numpy as np

from vlm_jax.convert import hf_bert
from vlm_jax.models import bert

VIDEO, TEXT = 'video_encoder.', 'text_encoder.'
# What fairseq's FairseqMMModel calls the MMPT model it wraps.
FAIRSEQ_PREFIX = 'mmmodel.'
# bert-base-uncased's [CLS] and [SEP] (MMPT tokenizes with it).
BERT_UNCASED_CLS, BERT_UNCASED_SEP = 101, 102


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """MMPT's float tensors by name, as float32 NumPy, from a `.pt` file.

  Accepts fairseq's checkpoint dict (tensors under 'model'), a dict with
  'state_dict', or a bare state dict; strips fairseq's `mmmodel.` prefix.
  A fairseq checkpoint also pickles its config objects, which torch's
  weights-only loader refuses: it is then read with full unpickling, which
  runs code from the file, so convert only checkpoints you trust.
  """
  import pickle  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError:
    loaded = torch.load(path, map_location='cpu', weights_only=False)
  return strip_state_dict({k: v.float().numpy() for k, v in _tensors(loaded).items()
                           if v.is_floating_point()})


def _tensors(loaded: Mapping[str, Any]) -> Mapping[str, Any]:
  for key in ('state_dict', 'model'):
    if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
      loaded = loaded[key]
  return loaded


def strip_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Names without fairseq's `mmmodel.` prefix; raises if either tower is absent."""
  out = {(k[len(FAIRSEQ_PREFIX):] if k.startswith(FAIRSEQ_PREFIX) else k): np.asarray(v)
         for k, v in sd.items()}
  for prefix in (VIDEO + 'videomlp.', VIDEO + 'bert.', TEXT):
    if not any(k.startswith(prefix) for k in out):
      raise KeyError(f'no {prefix}* tensors: not an MMPT MMFusionSeparate (VideoCLIP) '
                     'state dict')
  return out


def _sub(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _layers(sd: Mapping[str, np.ndarray]) -> int:
  """How many `encoder.layer.<i>` a BERT state dict holds."""
  ids = {int(k.split('.')[2]) for k in sd if k.startswith('encoder.layer.')}
  if ids != set(range(len(ids))):
    raise KeyError(f'encoder layers {sorted(ids)} are not 0..n-1')
  return len(ids)


def video_layers(sd: Mapping[str, np.ndarray]) -> int:
  """The video tower's BERT layers (6 in MMPT's release)."""
  return _layers(_sub(sd, VIDEO + 'bert.'))


def feature_dim(sd: Mapping[str, np.ndarray]) -> int:
  """D of the per-second features the video MLP reads (S3D: 512)."""
  return int(sd[VIDEO + 'videomlp.linear1.weight'].shape[1])


def bert_config(sd: Mapping[str, np.ndarray], num_heads: int = 12,
                **overrides) -> bert.BertConfig:
  """The text tower's BertConfig, read from its tensors' shapes (heads: `num_heads`)."""
  text = _sub(sd, TEXT)
  words = text['embeddings.word_embeddings.weight']
  fields = dict(vocab_size=words.shape[0], hidden_size=words.shape[1], num_layers=_layers(text),
                num_heads=num_heads, mlp_dim=text['encoder.layer.0.intermediate.dense.weight'].shape[0],
                max_position_embeddings=text['embeddings.position_embeddings.weight'].shape[0],
                type_vocab_size=text['embeddings.token_type_embeddings.weight'].shape[0])
  fields.update(overrides)
  return bert.BertConfig(**fields)


def to_flax(sd: Mapping[str, np.ndarray], cls_id: int = BERT_UNCASED_CLS,
            sep_id: int = BERT_UNCASED_SEP) -> dict[str, Any]:
  """MMPT tensors (`strip_state_dict`'s names) -> the VideoClip params tree.

  Args:
    sd: name -> array.
    cls_id, sep_id: the rows of the video tower's word table that MMPT's
      video sequence reads (its tokenizer's [CLS] and [SEP]).
  """
  video_sd, text_sd = _sub(sd, VIDEO + 'bert.'), _sub(sd, TEXT)
  text_config = bert_config(sd)
  video_config = dataclasses.replace(text_config, num_layers=video_layers(sd))
  video = hf_bert.to_flax(video_sd, video_config)
  words = video_sd['embeddings.word_embeddings.weight']
  video['embeddings']['word_embeddings'] = {'embedding': words[[cls_id, sep_id]]}
  mlp = _sub(sd, VIDEO + 'videomlp.')
  return {
      'video_mlp': {'fc1': {'kernel': mlp['linear1.weight'].T, 'bias': mlp['linear1.bias']},
                    'norm': {'scale': mlp['LayerNorm.weight'], 'bias': mlp['LayerNorm.bias']},
                    'fc2': {'kernel': mlp['linear2.weight'].T, 'bias': mlp['linear2.bias']}},
      'video_bert': video,
      'text_bert': hf_bert.to_flax(text_sd, text_config),
  }
