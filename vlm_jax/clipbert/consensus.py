"""ClipBERT's consensus: the logits of a video's sampled clips reduced to one prediction.

ClipBERT runs each clip through the model, stacks the logits and reduces the
clips axis (its `score_agg_func`, read from run_video_retrieval.py and
run_video_qa.py):
- MEAN: the mean of the logits (its default);
- MAX: the elementwise max over clips;
- LSE: LogSumExp over clips, log sum_c exp(logit_c) (MSR-VTT, DiDeMo,
  ActivityNet retrieval and MSRVTT-QA configs).
LSE >= MAX >= MEAN elementwise, and LSE <= MAX + log(num_clips).

Training with LSE, ClipBERT writes the loss as LSE over (clip, class) minus
LSE over clips of the true class; that is exactly softmax cross-entropy of
the LSE-reduced logits, so one loss serves all three reductions. Inference
applies the same reduction (softmax of the matching logits, index 1, for
retrieval scores).
"""

import jax
import jax.numpy as jnp

Array = jax.Array

MEAN, MAX, LSE = 'mean', 'max', 'lse'
METHODS = (MEAN, MAX, LSE)


def reduce(logits: Array, method: str) -> Array:
  """[batch, num_clips, ...] logits -> [batch, ...], by MEAN, MAX or LSE over axis 1.

  Computed in float32 whatever the input dtype (a bfloat16 LSE over 8 clips
  would round away most of the log(8) it adds).
  """
  if method not in METHODS:
    raise ValueError(f'consensus method {method!r}: one of {METHODS}')
  logits = jnp.asarray(logits, jnp.float32)
  if logits.ndim < 2:
    raise ValueError(f'logits of shape {logits.shape}: need [batch, num_clips, ...]')
  if method == MEAN:
    return logits.mean(axis=1)
  if method == MAX:
    return logits.max(axis=1)
  return jax.nn.logsumexp(logits, axis=1)
