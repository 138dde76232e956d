"""VideoBERT pretraining losses, computed at the gathered masked positions only.

The head scores the joint vocabulary; each masked token's softmax is taken over
its own modality (WordPieces for text, the visual vocabulary for visual tokens),
as the paper's text and video cloze objectives are: otherwise the 144-20,736
visual classes start out competing with 30k pretrained words and learn slowly.

Each term is a sum over the micro-batch divided by a count over the whole
global batch (`normalizers`), so accumulating micro-batch gradients gives the
gradient of the global-batch loss exactly.
"""

import jax
import jax.numpy as jnp
import optax

from vlm_jax.videobert import regimes

MLM_TERMS = (('text_mlm', regimes.TEXT), ('video_mlm', regimes.VIDEO),
             ('video_text_mlm', regimes.VIDEO_TEXT))


def _masks(batch) -> dict[str, jax.Array]:
  regime = batch['regime']
  masks = {name: batch['masked_weights'] * (regime[:, None] == r) for name, r in MLM_TERMS}
  masks['alignment'] = (regime == regimes.VIDEO_TEXT).astype(jnp.float32)
  masks['masked_tokens'] = batch['masked_weights']
  return masks


def normalizers(batch) -> dict[str, jax.Array]:
  """Counts of predictions per term in a (global) batch, at least 1."""
  return {k: jnp.maximum(m.sum(), 1.0) for k, m in _masks(batch).items()}


def modality_logits(logits: jax.Array, targets: jax.Array, visual_offset: int) -> jax.Array:
  """[batch, P, vocab] logits with the other modality's classes at -inf (finite min)."""
  visual_class = jnp.arange(logits.shape[-1]) >= visual_offset
  visual_target = targets >= visual_offset
  same = visual_class[None, None, :] == visual_target[..., None]
  return jnp.where(same, logits, jnp.finfo(logits.dtype).min)


def videobert_loss(outputs, batch, loss_weights, norms, visual_offset: int,
                   per_modality_softmax: bool = True) -> tuple[jax.Array, dict]:
  """Weighted sum of the MLM terms per regime and the alignment loss.

  Args:
    outputs: `mlm_logits` [batch, P, vocab], `alignment_logits` [batch, 2].
    batch: `masked_ids`, `masked_weights` [batch, P], `regime`,
      `alignment_label` [batch].
    loss_weights: mapping term name -> weight.
    norms: `normalizers()` of the global batch.
    visual_offset: first visual id of the joint vocabulary.
    per_modality_softmax: a masked word is predicted among the words and a
      masked visual token among the visual tokens (this codebase's default);
      False is the paper's one softmax over the whole joint vocabulary.

  Returns:
    (scalar loss, metrics): per-term losses and accuracies, each already
    normalised by the global counts (so they add up across micro-batches);
    `accuracy_alignment_baseline` is the accuracy of always predicting
    "aligned" on the same video-text examples, normalised alike.
  """
  masks = _masks(batch)
  logits = outputs['mlm_logits'].astype(jnp.float32)
  if per_modality_softmax:
    logits = modality_logits(logits, batch['masked_ids'], visual_offset)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['masked_ids'])
  correct = (jnp.argmax(logits, -1) == batch['masked_ids']).astype(jnp.float32)
  align_logits = outputs['alignment_logits'].astype(jnp.float32)
  align_ce = optax.softmax_cross_entropy_with_integer_labels(align_logits, batch['alignment_label'])
  align_correct = (jnp.argmax(align_logits, -1) == batch['alignment_label']).astype(jnp.float32)

  metrics, loss = {}, 0.0
  for name, _ in MLM_TERMS:
    metrics[f'loss_{name}'] = (ce * masks[name]).sum() / norms[name]
    metrics[f'accuracy_{name}'] = (correct * masks[name]).sum() / norms[name]
    loss += loss_weights[name] * metrics[f'loss_{name}']
  metrics['loss_alignment'] = (align_ce * masks['alignment']).sum() / norms['alignment']
  metrics['accuracy_alignment'] = (align_correct * masks['alignment']).sum() / norms['alignment']
  # Most video-text examples are aligned: a head that learned nothing scores this much.
  always_aligned = (batch['alignment_label'] == 1).astype(jnp.float32)
  metrics['accuracy_alignment_baseline'] = (
      (always_aligned * masks['alignment']).sum() / norms['alignment'])
  loss += loss_weights['alignment'] * metrics['loss_alignment']
  metrics['accuracy_masked_tokens'] = (correct * masks['masked_tokens']).sum() / norms['masked_tokens']
  metrics['loss'] = loss
  return loss, metrics
