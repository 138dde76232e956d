"""ClipBERT checkpoints (jayleicn/ClipBERT) -> the params of `vlm_jax.clipbert.model.ClipBert`.

ClipBERT saves its end-to-end model's `state_dict()` (`ModelSaver`; its
training restorer nests it under 'model_state_dict'). The names, from its
`ClipBert` (src/modeling/e2e_model.py), `GridFeatBackbone` (grid_feat.py)
and `ClipBertBaseModel` / task heads (modeling.py):

  cnn.feature.backbone.{stem, res2 .. res5}.*   detectron2's R-50 (a whole
      GeneralizedRCNN sits under cnn.feature; its res5 is the backbone's,
      as the grid config has the ROI heads read res5)
  cnn.grid_encoder.0.weight                     Conv3x3 [hidden, 2048, 3, 3], no bias
  transformer.bert.{embeddings, encoder, pooler}.*   a Hugging Face BERT
  transformer.bert.visual_embeddings.{row_position_embeddings,
      col_position_embeddings, token_type_embeddings}.weight, .LayerNorm.*
  transformer.classifier.{0, 2}.{weight, bias}  the task head's two Linears
      (retrieval, multiple choice and QA fine-tuning; absent from the
      image-text pretraining checkpoint)
  transformer.cls.predictions.{transform.dense, transform.LayerNorm, bias}
      the pretraining checkpoint's MLM head (BertPreTrainingHeads) -> 'mlm_head'
      (`hf_bert.mlm_head_to_flax`; its decoder.weight is the word table, tied)

Ignored, because ClipBERT's forward never reads them: the rest of the
detector under cnn.feature (pixel_mean/std, proposal_generator, roi_heads),
visual_embeddings.position_embeddings (built, unused: visual tokens have no
1-D position), the MLM decoder's copy of the word table, and the image-text
matching Linear transformer.cls.seq_relationship (pretraining's 2-way head,
which fine-tuning replaces by a fresh classifier; our matching reads the
classifier MLP). Any other tensor is an error, as is a missing one.

The backbone goes through `resnet_torch.to_flax` (detectron2 naming), the
BERT through `hf_bert.to_flax`; shapes are checked against the BERT and
ResNet configs here, and against the whole model by
`vlm_jax.clipbert.model.from_clipbert_checkpoint`.
"""

import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.convert import hf_bert
from vlm_jax.convert import resnet_torch
from vlm_jax.convert import state_dicts
from vlm_jax.models import bert
from vlm_jax.models import resnet

BACKBONE = 'cnn.feature.backbone.'
DETECTOR = 'cnn.feature.'
GRID_CONV = 'cnn.grid_encoder.0.weight'
BERT = 'transformer.bert.'
VISUAL = BERT + 'visual_embeddings.'
CLASSIFIER = 'transformer.classifier.'
PRETRAINING_HEADS = 'transformer.cls.'
# The MLM head's transform, present in a pretraining checkpoint.
MLM_TRANSFORM = PRETRAINING_HEADS + 'predictions.transform.dense.weight'
UNUSED_VISUAL = (VISUAL + 'position_embeddings.weight',)
# ClipBERT's max_grid_{row,col}_position_embeddings (src/configs/base_model.json).
GRID_TABLE_ROWS = 100


def read(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A checkpoint path or state dict -> float32 arrays by ClipBERT name."""
  if isinstance(source, (str, os.PathLike)) and not os.fspath(source).endswith('.pkl'):
    import torch  # pylint: disable=import-outside-toplevel
    source = torch.load(os.fspath(source), map_location='cpu', weights_only=True)
  if isinstance(source, Mapping) and isinstance(source.get('model_state_dict'), Mapping):
    source = source['model_state_dict']
  return {k: np.asarray(v, np.float32) for k, v in state_dicts.read(source).items()}


def _sub(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _bert_layers(sd: Mapping[str, np.ndarray]) -> list[int]:
  return sorted({int(k.split('.')[2]) for k in sd if k.startswith('encoder.layer.')})


def _check_unplaced(sd: Mapping[str, np.ndarray]) -> None:
  known = (BACKBONE, DETECTOR, GRID_CONV, BERT, CLASSIFIER, PRETRAINING_HEADS)
  unplaced = sorted(k for k in sd if not k.startswith(known))
  visual = [k for k in sd if k.startswith(VISUAL) and k not in UNUSED_VISUAL]
  expected_visual = [VISUAL + name for name in (
      'row_position_embeddings.weight', 'col_position_embeddings.weight',
      'token_type_embeddings.weight', 'LayerNorm.weight', 'LayerNorm.bias')]
  unplaced += sorted(set(visual) - set(expected_visual))
  head = set(_sub(sd, CLASSIFIER))
  if head and head != {'0.weight', '0.bias', '2.weight', '2.bias'}:
    unplaced += sorted(CLASSIFIER + k for k in head)
  if unplaced:
    raise ValueError(f'ClipBERT state dict tensors with no place in the model: '
                     f'{unplaced[:10]}{" ..." if len(unplaced) > 10 else ""}')
  missing = [k for k in [GRID_CONV] + expected_visual if k not in sd]
  if missing:
    raise KeyError(f'not a ClipBERT state dict: it lacks {missing}')


def _abstract(shape) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), np.float32)


def to_flax(source, bert_config: bert.BertConfig,
            resnet_config: resnet.ResNetConfig = resnet.CLIPBERT, *,
            max_grid_rows: int = GRID_TABLE_ROWS,
            max_grid_cols: int = GRID_TABLE_ROWS) -> dict[str, Any]:
  """A ClipBERT checkpoint -> ClipBert params (NumPy float32).

  Args:
    source: a .pt path or a state dict (tensors or arrays), ClipBERT's names.
    bert_config: the transformer's shape (ClipBERT's base_model.json is
      bert-base: 12 layers, 768 hidden, 12 heads).
    resnet_config: the backbone's (ClipBERT's: resnet.CLIPBERT).
    max_grid_rows, max_grid_cols: the position tables' rows (ClipBERT: 100).

  Returns:
    {'frame_encoder', 'grid_encoder', 'visual_embeddings', 'bert'[,
    'classifier'][, 'mlm_head']}: the classifier only when the checkpoint has
    one (a fine-tuned model, not the pretraining checkpoint), the MLM head only
    when it has `transformer.cls.predictions` (the pretraining checkpoint).
  """
  sd = read(source)
  _check_unplaced(sd)
  backbone = resnet_torch.to_flax(sd, resnet_config, naming=resnet_torch.DETECTRON2,
                                  prefix=BACKBONE)
  if set(backbone) != {'params'}:
    raise ValueError('ClipBERT\'s backbone has FrozenBatchNorm2d everywhere: convert it '
                     'into a ResNetConfig with frozen_bn=True')

  text_sd = _sub(sd, BERT)
  layers = _bert_layers(text_sd)
  if layers != list(range(bert_config.num_layers)):
    raise ValueError(f'ClipBERT\'s BERT has layers {layers}, the config '
                     f'{bert_config.num_layers}')
  text = hf_bert.to_flax(text_sd, bert_config)
  state_dicts.check_shapes(_bert_abstract(bert_config), text,
                           f'BertConfig(hidden={bert_config.hidden_size})')

  hidden = bert_config.hidden_size

  def table(name):
    return {'embedding': sd[VISUAL + name + '.weight']}
  params = {
      'frame_encoder': backbone['params'],
      'grid_encoder': {'conv': {'kernel': sd[GRID_CONV].transpose(2, 3, 1, 0)}},
      'visual_embeddings': {
          'row_position_embeddings': table('row_position_embeddings'),
          'col_position_embeddings': table('col_position_embeddings'),
          'token_type_embeddings': table('token_type_embeddings'),
          'LayerNorm': {'scale': sd[VISUAL + 'LayerNorm.weight'],
                        'bias': sd[VISUAL + 'LayerNorm.bias']}},
      'bert': text,
  }
  expected = {
      'grid_encoder': {'conv': {'kernel': _abstract(
          (3, 3, resnet.output_channels(resnet_config, 'res5'), hidden))}},
      'visual_embeddings': {
          'row_position_embeddings': {'embedding': _abstract((max_grid_rows, hidden))},
          'col_position_embeddings': {'embedding': _abstract((max_grid_cols, hidden))},
          'token_type_embeddings': {'embedding': _abstract((1, hidden))},
          'LayerNorm': {'scale': _abstract((hidden,)), 'bias': _abstract((hidden,))}},
  }
  if any(k.startswith(CLASSIFIER) for k in sd):
    head = _sub(sd, CLASSIFIER)
    params['classifier'] = {
        'hidden': {'kernel': head['0.weight'].T, 'bias': head['0.bias']},
        'output': {'kernel': head['2.weight'].T, 'bias': head['2.bias']}}
    outputs = head['2.weight'].shape[0]
    expected['classifier'] = {
        'hidden': {'kernel': _abstract((hidden, 2 * hidden)), 'bias': _abstract((2 * hidden,))},
        'output': {'kernel': _abstract((2 * hidden, outputs)), 'bias': _abstract((outputs,))}}
  if MLM_TRANSFORM in sd:
    params['mlm_head'] = hf_bert.mlm_head_to_flax(_sub(sd, 'transformer.'))
    vocab = bert_config.vocab_size
    expected['mlm_head'] = {
        'transform': {'kernel': _abstract((hidden, hidden)), 'bias': _abstract((hidden,))},
        'transform_norm': {'scale': _abstract((hidden,)), 'bias': _abstract((hidden,))},
        'bias': _abstract((vocab,))}
  state_dicts.check_shapes(expected, {k: params[k] for k in expected},
                           f'ClipBERT (hidden={hidden})')
  return params


def _bert_abstract(config: bert.BertConfig) -> dict:
  ids = jnp.zeros((1, 2), jnp.int32)
  return nn.unbox(jax.eval_shape(
      lambda: bert.BertModel(config).init(jax.random.key(0), ids, ids)))['params']
