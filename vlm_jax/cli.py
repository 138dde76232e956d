"""`vlm-jax <subcommand> [flags]`: one entry point for every stage.

Each subcommand is a module with absl flags and a `main(argv)`; only the chosen
one is imported, so their flags never collide and start-up stays fast.
"""

import importlib
import os
import sys

from absl import app, flags, logging

SUBCOMMANDS = {
    'train': ('vlm_jax.commands.train',
              'Pretrain VideoBERT from a config (--config configs/videobert.py:tiny).'),
    'encode-text': ('vlm_jax.commands.encode_text',
                    'Encode one text per line with a Hugging Face BERT checkpoint.'),
}

USAGE = """usage: vlm-jax <subcommand> [--flags]

vlm_jax: video-language representation learning in JAX (VideoBERT and kin).

subcommands:
{commands}

`vlm-jax <subcommand> --helpfull` lists a subcommand's flags.
Configs take overrides: --config configs/videobert.py:tiny --config.train.num_steps=50
"""


def usage() -> str:
  width = max(map(len, SUBCOMMANDS))
  lines = [f'  {name:<{width}}  {text}' for name, (_, text) in SUBCOMMANDS.items()]
  return USAGE.format(commands='\n'.join(lines))


def main(argv=None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's start-up chatter
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return
  name = argv[1]
  if name not in SUBCOMMANDS:
    print(f'vlm-jax: unknown subcommand {name!r}\n', file=sys.stderr)
    print(usage(), file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(SUBCOMMANDS[name][0])
  if any(a in ('-h', '--help') for a in argv[2:]):
    # This subcommand's docstring and own flags, not absl's and JAX's hundreds.
    print(module.__doc__)
    print(flags.FLAGS.module_help(module.__name__))
    return
  # Orbax and TF log every save at INFO; --verbosity=0 brings them back.
  logging.set_verbosity(logging.WARNING)
  app.run(module.main, argv=[f'vlm-jax {name}'] + argv[2:])


if __name__ == '__main__':
  main()
