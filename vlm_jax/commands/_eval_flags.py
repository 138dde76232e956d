"""The flags and the two modes shared by the zero-shot evaluation commands (eval_*.py).

Not a command itself (vlm_jax.cli lists only `eval_<task>` modules). The files
these flags name are documented in vlm_jax/evaluate/_embeddings.py.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

from absl import flags

from vlm_jax.evaluate import _embeddings


@dataclasses.dataclass(frozen=True)
class Flags:
  """The flags every binary has, beside its annotations."""
  features: flags.FlagHolder
  text_embeddings: flags.FlagHolder
  texts: flags.FlagHolder
  output: flags.FlagHolder
  write_texts: flags.FlagHolder


def define_flags(module_name: str, features_help: str) -> Flags:
  """Defines a binary's --features, --text_embeddings, --texts, --output and --write_texts.

  Args:
    module_name: the command's `__name__`: its --help lists them (vlm_jax.cli
      prints the flags of the command's module only).
    features_help: what --features holds for this task.
  """
  def define(name, text):
    return flags.DEFINE_string(name, None, text, module_name=module_name)

  return Flags(
      features=define('features', features_help),
      text_embeddings=define('text_embeddings', 'Text embeddings .npy [N, D].'),
      texts=define('texts', 'Texts of the embedding rows, one per line (default: the .npy '
                   'path with .txt).'),
      output=define('output', 'Metrics JSON to write.'),
      write_texts=define('write_texts', 'Write the texts to encode here and exit.'))


def run_binary(task: str, common: Flags, required: Sequence[flags.FlagHolder],
               texts: Callable[[], list[str]],
               evaluate: Callable[..., dict[str, Any]]) -> Optional[dict[str, Any]]:
  """A binary's two modes: --write_texts, or the evaluation.

  Args:
    task: the binary's name in messages, e.g. 'video-qa'.
    common: its define_flags.
    required: the flags both modes need (its annotations).
    texts: the texts the annotations need (what --write_texts writes).
    evaluate: runs the evaluation, given the values of --features,
      --text_embeddings, --output and --texts (the order of the evaluate
      modules' `run` arguments after their annotations); returns the metrics
      JSON dict.

  Returns:
    evaluate()'s dict, or None after --write_texts.

  Raises:
    SystemExit: `vlm-jax eval <task>: <why>` for a missing flag or an unusable input.
  """
  try:
    absent = [f'--{f.name}' for f in required if not f.value]
    if absent:
      raise ValueError(f'{" and ".join(absent)} {"is" if len(absent) == 1 else "are"} required')
    if common.write_texts.value:
      n = _embeddings.write_texts(common.write_texts.value, texts())
      print(f'wrote {n} texts to {common.write_texts.value}')
      return None
    for holder in (common.features, common.text_embeddings, common.output):
      if not holder.value:
        raise ValueError(f'--{holder.name} is required (unless --write_texts)')
    return evaluate(common.features.value, common.text_embeddings.value, common.output.value,
                    common.texts.value)
  except (ValueError, OSError, KeyError) as e:
    raise SystemExit(f'vlm-jax eval {task}: {e}') from e
