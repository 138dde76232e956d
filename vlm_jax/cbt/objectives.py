"""CBT's losses (SPEC section 2), pure functions of the model's outputs.

L = w_bert L_bert + w_visual L_visual + w_cross L_cross. L_bert, the text
MLM term, is off by default (w_bert = 0, configs/cbt.py): it is cross-entropy
over the masked WordPieces of the batch's sentences.

L_visual, at a masked clip t with output e_t and projected feature y_t:

  -log exp(e_t . y_t / tau) / sum_{y' in candidates} exp(e_t . y' / tau)

the candidates being the projected features of every real clip of the global
batch (`negatives='all'`, the paper's "other clip features in the batch") or of
its masked clips only ('masked'); padding clips never are. tau = None: no
temperature, as the paper. The mean is over the masked clips of the batch.

L_cross, for window v and its sentence: -log exp(s(v, v)) / sum_{s'} exp(s(v, s')),
s' over the batch's sentences, one per video (the pipeline draws each window of
a batch from another video), so every other sentence is of another video.

Under `jit` with the batch sharded over the mesh's data axis both score
matrices span the global batch: XLA gathers what the matmuls need.
"""

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
NEGATIVES = ('all', 'masked')


def visual_nce(outputs: Array, targets: Array, masked: Array, clip_mask: Array,
               negatives: str = 'all', temperature: float | None = None
               ) -> tuple[Array, dict[str, Array]]:
  """The masked-clip NCE loss.

  Args:
    outputs: [batch, T, hidden] the visual transformer's states e.
    targets: [batch, T, hidden] the projected input features y.
    masked: [batch, T] 1 at the masked clips (the ones predicted).
    clip_mask: [batch, T] 1 at real clips.
    negatives: 'all' (every real clip is a candidate) or 'masked'.
    temperature: scores are divided by it; None for none.

  Returns:
    (loss, metrics): the mean over masked clips, and the top-1 accuracy of the
    true feature among the candidates.
  """
  if negatives not in NEGATIVES:
    raise ValueError(f'negatives={negatives!r}; expected one of {NEGATIVES}')
  hidden = outputs.shape[-1]
  e = outputs.reshape(-1, hidden).astype(jnp.float32)
  y = targets.reshape(-1, hidden).astype(jnp.float32)
  predicted = masked.reshape(-1).astype(jnp.float32)
  candidates = (masked if negatives == 'masked' else clip_mask).reshape(-1) > 0
  scores = e @ y.T  # [batch * T (outputs), batch * T (candidates)]
  if temperature:
    scores = scores / temperature
  # The most negative finite value rather than -inf: rows of unmasked clips may
  # have no candidate at all, and their (ignored) loss must stay finite.
  scores = jnp.where(candidates[None, :], scores, jnp.finfo(jnp.float32).min)
  labels = jnp.arange(scores.shape[0])
  per_clip = optax.softmax_cross_entropy_with_integer_labels(scores, labels)
  count = jnp.maximum(predicted.sum(), 1.0)
  accuracy = ((scores.argmax(axis=1) == labels) * predicted).sum() / count
  return (per_clip * predicted).sum() / count, {'visual_accuracy': accuracy}


def cross_nce(scores: Array) -> tuple[Array, dict[str, Array]]:
  """The cross-modal loss over all (window, sentence) pairs of the batch.

  Args:
    scores: [batch (windows), batch (sentences)] s(sentence s, window v) at [v, s];
      the diagonal pairs each window with its own sentence.

  Returns:
    (loss, metrics): the mean over windows of CE(row, its diagonal), and the
    accuracy of picking a window's own sentence.
  """
  scores = scores.astype(jnp.float32)
  labels = jnp.arange(scores.shape[0])
  loss = optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()
  return loss, {'cross_accuracy': (scores.argmax(axis=1) == labels).mean()}


def text_mlm(logits: Array, labels: Array, weights: Array) -> tuple[Array, dict[str, Array]]:
  """L_bert: BERT's masked-token cross-entropy, over the predicted WordPieces of the batch.

  Args:
    logits: [batch, P, vocab] the MLM head's, at the predicted positions.
    labels: [batch, P] the original ids there.
    weights: [batch, P] 1 for a real prediction, 0 for a row's padding slots.

  Returns:
    (loss, metrics): the mean over real predictions, and the top-1 accuracy
    there (`bert_accuracy`).
  """
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  count = jnp.maximum(weights.sum(), 1.0)
  per_token = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  accuracy = ((logits.argmax(axis=-1) == labels) * weights).sum() / count
  return (per_token * weights).sum() / count, {'bert_accuracy': accuracy}


def cbt_loss(outputs: dict[str, Array], batch: dict[str, Array], *, visual_weight: float,
             cross_weight: float, negatives: str = 'all', temperature: float | None = None,
             bert_weight: float = 0.0) -> tuple[Array, dict[str, Array]]:
  """bert_weight * L_bert + visual_weight * L_visual + cross_weight * L_cross, terms as metrics.

  Args:
    outputs: the model's (vlm_jax.cbt.model.Cbt.__call__), with 'mlm_logits'
      [batch, P, vocab] when bert_weight > 0.
    batch: with 'masked' and 'clip_mask' [batch, T] (vlm_jax.cbt.pipeline), and
      'mlm_labels', 'mlm_weights' [batch, P] when bert_weight > 0.
    bert_weight: 0 leaves L_bert (and its metrics `loss_bert`, `bert_accuracy`) out.
  """
  visual, metrics = visual_nce(outputs['visual_states'], outputs['visual_targets'],
                               batch['masked'], batch['clip_mask'], negatives, temperature)
  cross, cross_metrics = cross_nce(outputs['cross_scores'])
  metrics.update(cross_metrics, loss_visual=visual, loss_cross=cross)
  total = visual_weight * visual + cross_weight * cross
  if bert_weight > 0:  # a Python branch: with the term off, the loss is the same ops and bits
    bert_loss, bert_metrics = text_mlm(outputs['mlm_logits'], batch['mlm_labels'],
                                       batch['mlm_weights'])
    metrics.update(bert_metrics, loss_bert=bert_loss)
    total = total + bert_weight * bert_loss
  return total, metrics
