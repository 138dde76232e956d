"""VideoCLIP's symmetric InfoNCE loss (SPEC section 3).

Scores are raw dot products divided by a temperature (1.0 and no L2
normalisation in the paper). Every other pair of the global batch is a
negative, other clips of the same video included. Under `jit` with the batch
sharded over the data axis, the [batch, batch] score matrix spans the whole
global batch: XLA gathers the embeddings across devices.
"""

import jax
import jax.numpy as jnp
import optax


def symmetric_infonce(z_video: jax.Array, z_text: jax.Array,
                      temperature: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CE(z_v z_t^T, diag) + CE(z_t z_v^T, diag), each a mean over the batch.

  Args:
    z_video: [batch, dim] video embeddings; row i pairs with text row i.
    z_text: [batch, dim] text embeddings.
    temperature: scores are divided by it.

  Returns:
    (loss, metrics): the two directions' losses and in-batch top-1 accuracies.
  """
  scores = (z_video.astype(jnp.float32) @ z_text.astype(jnp.float32).T) / temperature
  labels = jnp.arange(scores.shape[0])
  video_to_text = optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()
  text_to_video = optax.softmax_cross_entropy_with_integer_labels(scores.T, labels).mean()
  metrics = {
      'loss_video_to_text': video_to_text, 'loss_text_to_video': text_to_video,
      'accuracy_video_to_text': (scores.argmax(axis=1) == labels).mean(),
      'accuracy_text_to_video': (scores.argmax(axis=0) == labels).mean(),
  }
  return video_to_text + text_to_video, metrics
