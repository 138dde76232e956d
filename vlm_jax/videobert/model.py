"""VideoBERT (Sun et al. 2019): one BERT over WordPieces and visual tokens.

Input: `[CLS] wordpieces [>] visual tokens [SEP]` in the joint vocabulary of
`vlm_jax.videobert.vocab.JointVocab`. WordPieces and `[>]` are looked up in BERT's word
table (extended by one row); visual tokens in a table of their own that can be
initialised from the codebook centroids, projected when the centroid dimension
differs from the hidden size, and frozen. The masked-token head scores the
joint vocabulary with the input embeddings (tied) and is evaluated only at the
gathered masked positions; the alignment head classifies the pooled `[CLS]`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlm_jax.models import bert
from vlm_jax.videobert import vocab as vocab_lib

Array = jax.Array


class VisualEmbeddings(nn.Module):
  """The [num_visual_tokens, hidden] table of visual-token embeddings."""
  config: bert.BertConfig
  num_tokens: int
  embedding_dim: int
  frozen: bool = False

  @nn.compact
  def __call__(self) -> Array:
    cfg = self.config
    table = self.param(
        'embedding',
        nn.with_logical_partitioning(
            nn.initializers.truncated_normal(cfg.initializer_range),
            ('vocab', 'visual_dim')),
        (self.num_tokens, self.embedding_dim), cfg.param_dtype)
    table = jnp.asarray(table, cfg.dtype)
    if self.frozen:
      table = jax.lax.stop_gradient(table)
    if self.embedding_dim != cfg.hidden_size:
      table = nn.Dense(
          cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
          kernel_init=nn.with_logical_partitioning(
              nn.initializers.lecun_normal(), ('visual_dim', 'embed')),
          name='projection')(table)
    return table


class VideoBert(nn.Module):
  """The VideoBERT encoder with its two pretraining heads."""
  config: bert.BertConfig  # vocab_size = text WordPieces + 1 (the `[>]` row)
  vocab: vocab_lib.JointVocab
  visual_embedding_dim: int
  freeze_visual_embeddings: bool = False

  def setup(self):
    if self.config.vocab_size != self.vocab.text_vocab_size + 1:
      raise ValueError('VideoBert.config.vocab_size must be text_vocab_size + 1')
    self.bert = bert.BertModel(self.config)
    self.visual_embeddings = VisualEmbeddings(
        self.config, self.vocab.num_visual_tokens, self.visual_embedding_dim,
        self.freeze_visual_embeddings)
    self.mlm_head = bert.MaskedTokenHead(self.config, self.vocab.size)
    self.alignment_head = bert.dense(self.config, 2, ('embed', None), 'alignment_head')

  def token_table(self) -> Array:
    """The [joint_vocab, hidden] input embedding table."""
    return jnp.concatenate([self.bert.word_table(), self.visual_embeddings()], axis=0)

  def __call__(self, input_ids: Array, token_type_ids: Array, attention_mask: Array,
               masked_positions: Array, *, deterministic: bool = True) -> dict[str, Array]:
    """Runs the encoder and both heads.

    Args:
      input_ids: [batch, seq] joint-vocabulary ids.
      token_type_ids: [batch, seq], 0 for text and 1 for video.
      attention_mask: [batch, seq], 1 on real tokens.
      masked_positions: [batch, P] positions whose tokens are predicted.
      deterministic: disables dropout when True.

    Returns:
      `mlm_logits` [batch, P, joint_vocab], `alignment_logits` [batch, 2],
      `hidden` [batch, seq, hidden].
    """
    table = self.token_table()
    embeddings = jnp.take(table, input_ids, axis=0)
    hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids,
                               deterministic=deterministic, token_embeddings=embeddings)
    gathered = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)
    return {
        'mlm_logits': self.mlm_head(gathered, table),
        'alignment_logits': self.alignment_head(pooled),
        'hidden': hidden,
    }


def build(model_config, vocab: vocab_lib.JointVocab) -> VideoBert:
  """VideoBert from the `model` block of a config."""
  # Training batches (pipeline.py) and inference queries (inference.py) pad
  # after each sequence's tokens.
  bert_config = dataclasses.replace(
      bert.BertConfig.from_model_config(model_config, vocab.text_vocab_size + 1),
      trailing_padding=True)
  return VideoBert(bert_config, vocab, model_config.visual_embedding_dim,
                   model_config.freeze_visual_embeddings)


def with_pretrained_text(params: dict, bert_params: dict, mlm_head: dict | None,
                         vocab: vocab_lib.JointVocab) -> dict:
  """Returns `params` with BERT weights in place (NumPy trees, unsharded).

  The word table keeps its extra `[>]` row (initialised as `[SEP]`'s embedding,
  the nearest existing role); the MLM head's text part of the bias is copied
  when the checkpoint has one. A visual table of the hidden size is redrawn
  with the word table's per-dimension mean and spread: at the default 0.02
  scale the new tokens are drowned by the pretrained position embeddings and
  their tied logits stay near zero, so they learn far slower than words
  (`with_visual_init` replaces it with centroids when there are some).
  """
  params = jax.tree.map(np.asarray, params)
  params = dict(params)
  new_bert = jax.tree.map(np.asarray, bert_params)
  word = new_bert['embeddings']['word_embeddings']['embedding']
  if word.shape[0] != vocab.text_vocab_size:
    raise ValueError(f'checkpoint word table has {word.shape[0]} rows, the vocab '
                     f'{vocab.text_vocab_size}')
  new_bert['embeddings']['word_embeddings']['embedding'] = np.concatenate(
      [word, word[vocab.sep_id][None]], axis=0)
  if 'pooler' not in new_bert:
    new_bert['pooler'] = params['bert']['pooler']
  _check_same_shapes(params['bert'], new_bert)
  params['bert'] = new_bert
  visual = params['visual_embeddings']['embedding']
  if visual.shape[1] == word.shape[1]:
    rng = np.random.default_rng(0)
    params['visual_embeddings'] = dict(
        params['visual_embeddings'],
        embedding=(word.mean(0) + word.std(0) * rng.standard_normal(visual.shape)).astype(
            visual.dtype))
  if mlm_head is not None:
    head = dict(params['mlm_head'])
    head['transform'] = mlm_head['transform']
    head['transform_norm'] = mlm_head['transform_norm']
    bias = np.array(head['bias'])
    bias[:vocab.text_vocab_size] = mlm_head['bias']
    head['bias'] = bias
    params['mlm_head'] = head
  return params


def with_visual_init(params: dict, centroids: np.ndarray) -> dict:
  """Returns `params` with the visual table set to codebook centroids [K, D]."""
  table = params['visual_embeddings']['embedding']
  if centroids.shape != table.shape:
    raise ValueError(f'centroids have shape {centroids.shape}; the visual table needs '
                     f'{table.shape} (model.num_visual_tokens, model.visual_embedding_dim)')
  params = dict(params)
  params['visual_embeddings'] = dict(params['visual_embeddings'],
                                     embedding=np.asarray(centroids, np.float32))
  return params


def _check_same_shapes(expected, got):
  expected_shapes = jax.tree.map(np.shape, expected)
  got_shapes = jax.tree.map(np.shape, got)
  if expected_shapes != got_shapes:
    raise ValueError('BERT checkpoint does not fit the model config: '
                     f'expected {expected_shapes}, got {got_shapes}')
