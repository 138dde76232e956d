"""ClipBERT's losses and accuracies: per-clip logits -> consensus -> cross-entropy.

Every task reduces the clips axis first (`consensus.reduce`: mean, max or
LSE), then takes softmax cross-entropy, as jayleicn/ClipBERT's training loops
do (run_video_retrieval.py, run_video_qa.py; with LSE its "LSE over (clip,
class) minus LSE over clips of the true class" is this same loss):
- matching (video-text retrieval, `ClipBertForVideoTextRetrieval` with
  loss_type 'ce'): each (video, text) pair is a 2-way classification, label 1
  for the video's own caption and 0 for each negative; the loss is the mean
  over all pairs, positives and negatives alike (ClipBERT's `loss.mean()`
  over B x (1 + itm_neg_size) pairs);
- multiple choice (TGIF-QA action / transition, `ClipBertForMultipleChoice`):
  one score per option, cross-entropy over the options;
- QA (FrameQA, MSRVTT-QA, `ClipBertForSequenceClassification`): cross-entropy
  over the answer classes;
- masked language modelling (image-text pretraining, `ClipBertForPreTraining`):
  the MLM head's logits at the predicted WordPieces, clips reduced by the same
  consensus, cross-entropy averaged over the real predictions of the batch
  (ClipBERT's loop averages its per-position CE over every text position,
  the ignored ones counting 0, which scales the term by the masked fraction;
  ours is BERT's per-prediction mean, as CBT's L_bert).
Each returns (loss, metrics) with float32 scalars, for jax.value_and_grad(...,
has_aux=True).
"""

import jax
import jax.numpy as jnp
import optax

from vlm_jax.clipbert import consensus
from vlm_jax.clipbert import model as clipbert_model

Array = jax.Array


def _mean_ce(logits: Array, labels: Array) -> tuple[Array, Array]:
  """[..., classes] float32 logits, [...] int labels -> (mean CE, mean accuracy)."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  accuracy = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32).mean()
  return loss, accuracy


def matching_loss(logits: Array, labels: Array, method: str) -> tuple[Array, dict]:
  """Video-text matching.

  Args:
    logits: [batch, clips, texts, 2] per-clip logits (index 1 = match).
    labels: [batch, texts] 1 for a video's own caption, 0 for a negative.
    method: the consensus reduction ('mean', 'max', 'lse').

  Returns:
    The mean CE over the batch x texts pairs, and {'matching_accuracy': the
    fraction of pairs classified right, 'positive_score': the mean match
    probability of the positives, 'negative_score': of the negatives}.
  """
  reduced = consensus.reduce(logits, method)  # [batch, texts, 2]
  labels = labels.astype(jnp.int32)
  loss, accuracy = _mean_ce(reduced, labels)
  match = jax.nn.softmax(reduced, axis=-1)[..., 1]
  positive = (labels == 1).astype(jnp.float32)

  def mean_over(weights):
    return (match * weights).sum() / jnp.maximum(weights.sum(), 1.0)

  return loss, {'matching_accuracy': accuracy, 'positive_score': mean_over(positive),
                'negative_score': mean_over(1.0 - positive)}


def multiple_choice_loss(logits: Array, labels: Array, method: str) -> tuple[Array, dict]:
  """Multiple-choice QA: [batch, clips, options] scores, [batch] right option."""
  loss, accuracy = _mean_ce(consensus.reduce(logits, method), labels.astype(jnp.int32))
  return loss, {'accuracy': accuracy}


def qa_loss(logits: Array, labels: Array, method: str) -> tuple[Array, dict]:
  """Open-ended QA as classification: [batch, clips, answers] logits, [batch] answer class."""
  loss, accuracy = _mean_ce(consensus.reduce(logits, method), labels.astype(jnp.int32))
  return loss, {'accuracy': accuracy}


def mlm_loss(logits: Array, labels: Array, weights: Array, method: str
             ) -> tuple[Array, dict]:
  """Masked language modelling of a caption against its video's clips.

  Args:
    logits: [batch, clips, P, vocab] the MLM head's, per clip, at the
      predicted positions (vlm_jax.clipbert.model.ClipBert.pretraining_logits).
    labels: [batch, P] the original ids there.
    weights: [batch, P] 1 for a real prediction, 0 for a row's padding slots.
    method: the consensus reduction of the clips ('mean', 'max', 'lse').

  Returns:
    The mean CE over the real predictions of the batch, and {'mlm_accuracy':
    the fraction of them predicted right (top 1)}.
  """
  reduced = consensus.reduce(logits, method)  # [batch, P, vocab]
  weights = weights.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  count = jnp.maximum(weights.sum(), 1.0)  # a batch without predictions gives 0, not NaN
  per_token = optax.softmax_cross_entropy_with_integer_labels(reduced, labels)
  right = (jnp.argmax(reduced, axis=-1) == labels).astype(jnp.float32)
  return (per_token * weights).sum() / count, {'mlm_accuracy': (right * weights).sum() / count}


LOSSES = {clipbert_model.MATCHING: matching_loss,
          clipbert_model.MULTIPLE_CHOICE: multiple_choice_loss, clipbert_model.QA: qa_loss}


def loss(task: str, logits: Array, labels: Array, method: str) -> tuple[Array, dict]:
  """The loss of `task`, one of vlm_jax.clipbert.model.TASKS."""
  if task not in LOSSES:
    raise ValueError(f'task {task!r}: one of {tuple(LOSSES)}')
  return LOSSES[task](logits, labels, method)


def match_scores(logits: Array, method: str) -> Array:
  """Retrieval scores: [batch, clips, texts, 2] -> [batch, texts] match probabilities.

  ClipBERT's inference: the clips reduced by the training consensus, then the
  softmax's index 1 (run_video_retrieval.py `inference_retrieval`).
  """
  return jax.nn.softmax(consensus.reduce(logits, method), axis=-1)[..., 1]
