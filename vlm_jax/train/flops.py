"""Model FLOPs of a VideoBERT train step, and accelerator peaks, for MFU.

Model FLOPs count the matrix products the model needs (2 per multiply-add) for
the forward pass and twice that for the backward pass, as in the PaLM paper's
MFU: rematerialised recomputation, softmax, LayerNorm and the optimizer are not
counted, so MFU does not reward recomputation.
"""

import jax

# Dense bf16 matrix peak per chip (FLOP/s), from the vendors' data sheets; the
# first name the device kind contains wins (the H100's PCIe and NVL boards are
# slower than its SXM board).
PEAK_BF16_FLOPS = (
    ('H200', 989e12),
    ('H100 PCIe', 756e12),
    ('H100 NVL', 835e12),
    ('H100', 989e12),
    ('A100', 312e12),
    ('TPU v6', 918e12),
    ('TPU v5p', 459e12),
    ('TPU v5 lite', 197e12),
    ('TPU v5e', 197e12),
    ('TPU v4', 275e12),
)


def forward_flops(model_config, vocab_size: int, batch: int, seq_len: int,
                  num_predictions: int) -> float:
  """Matrix-product FLOPs of one forward pass over [batch, seq_len] tokens.

  Encoder layers: Q, K, V and output projections (4 h^2), the MLP (2 h m), and
  attention scores and mixing (2 s h per token). The masked-token head runs at
  `num_predictions` gathered positions per sequence: a transform (h^2) and tied
  logits over the joint vocabulary (h V). The pooler and alignment classifier
  act on one position per sequence.
  """
  h, m, layers = model_config.hidden_size, model_config.mlp_dim, model_config.num_layers
  tokens = batch * seq_len
  per_token_layer = 4 * h * h + 2 * h * m + 2 * seq_len * h
  encoder = tokens * layers * per_token_layer
  head = batch * num_predictions * (h * h + h * vocab_size)
  pooled = batch * (h * h + 2 * h)
  visual_projection = 0
  if model_config.visual_embedding_dim != h:
    visual_projection = model_config.num_visual_tokens * model_config.visual_embedding_dim * h
  return 2.0 * (encoder + head + pooled + visual_projection)


def train_flops(model_config, vocab_size: int, batch: int, seq_len: int,
                num_predictions: int) -> float:
  """Forward plus backward (twice the forward) FLOPs of one train step."""
  return 3.0 * forward_flops(model_config, vocab_size, batch, seq_len, num_predictions)


def peak_flops(device: jax.Device | None = None) -> float | None:
  """The bf16 peak of `device` (default: the first), or None when unknown."""
  device = device or jax.devices()[0]
  kind = device.device_kind
  for name, peak in PEAK_BF16_FLOPS:
    if name.lower() in kind.lower():
      return peak
  return None
