"""`vlm-jax <subcommand> [flags]`: one entry point for every stage.

Each subcommand is a module of vlm_jax/commands with absl flags and a
`main(argv)` that calls its stage (vlm_jax/stages) or evaluation
(vlm_jax/evaluate); `vlm-jax eval <task>` is vlm_jax/commands/eval_<task>.py.
Only the chosen one is imported, so their flags never collide (several define
--output, --annotations, ...) and start-up stays fast. Nothing else imports a
command.
"""

import difflib
import importlib
import os
import re
import sys

from absl import app, flags, logging

from vlm_jax import host_memory

SUBCOMMANDS = {
    'demo': ('vlm_jax.commands.demo',
             'The main job: rendered videos -> S3D -> visual tokens -> VideoBERT -> report.'),
    'train': ('vlm_jax.commands.train',
              'Pretrain VideoBERT or VideoCLIP from a config file (configs/).'),
    'encode-text': ('vlm_jax.commands.encode_text',
                    'Encode one text per line with a BERT checkpoint or a VideoCLIP run.'),
    'encode-video': ('vlm_jax.commands.encode_video',
                     'VideoCLIP embeddings (pooled or per second) of videos or segments.'),
    'synth-videos': ('vlm_jax.commands.synth_videos',
                     'Render a synthetic cooking corpus: MP4 videos + WebVTT narration, by seed.'),
    'preview-video': ('vlm_jax.commands.preview_video',
                      'Decode videos into clips at --fps; save a PNG grid per video.'),
    'parse-transcripts': ('vlm_jax.commands.parse_transcripts',
                          'Timed sentences (JSONL) from VTT/SRT/HowTo100M/YouCook2 transcripts.'),
    'build-codebook': ('vlm_jax.commands.build_codebook',
                       'Hierarchical k-means visual-token codebook over <video_id>.npy features.'),
    'assign-tokens': ('vlm_jax.commands.assign_tokens',
                      'Map <video_id>.npy clip features to visual-token ids with a codebook.'),
    'prepare-youcook2': ('vlm_jax.commands.prepare_youcook2',
                         'YouCook2 validation sets (classification labels, captions) from the '
                         'annotation JSON.'),
    'extract-features': ('vlm_jax.commands.extract_features',
                         'S3D / S3D-G clip features of videos, batched and sharded over devices.'),
    'make-records': ('vlm_jax.commands.make_records',
                     'VideoBERT or VideoCLIP TFRecords from clip features and transcripts.'),
    'generate': ('vlm_jax.commands.generate',
                 'VideoBERT text-to-video and forecasting from a trained run, as PNG strips.'),
    'caption': ('vlm_jax.commands.caption',
                'VideoBERT captioning: segment features, a transformer captioner, captions.'),
}
# `vlm-jax eval <task>` runs vlm_jax.commands.eval_<task> (hyphens become underscores).
EVAL_PREFIX = 'eval_'
EVAL = ('eval', 'Evaluation binaries: vlm-jax eval <task> --help (tasks listed by vlm-jax eval).')

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
  lines.append(f'  {EVAL[0]:<{width}}  {EVAL[1]}')
  return USAGE.format(commands='\n'.join(lines))


def main(argv=None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's start-up chatter
  if os.environ.get('VLM_JAX_MALLOC', 'retain') == 'retain':
    host_memory.retain_freed_memory()  # before JAX's first computation
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return
  name = argv[1]
  if name == 'eval':
    _run_eval(argv)
    return
  if name not in SUBCOMMANDS:
    print(f'vlm-jax: unknown subcommand {name!r}\n', file=sys.stderr)
    print(usage(), file=sys.stderr)
    sys.exit(2)
  _run(SUBCOMMANDS[name][0], f'vlm-jax {name}', argv[2:])


def eval_tasks() -> dict[str, str]:
  """{task: module}: every vlm_jax/commands/eval_<task>.py, the task hyphenated, sorted."""
  import pkgutil  # pylint: disable=import-outside-toplevel
  # By name, as every command: the package only (empty), so listing imports no command.
  commands = importlib.import_module('vlm_jax.commands')
  tasks = {m.name[len(EVAL_PREFIX):].replace('_', '-'): f'{commands.__name__}.{m.name}'
           for m in pkgutil.iter_modules(commands.__path__) if m.name.startswith(EVAL_PREFIX)}
  return dict(sorted(tasks.items()))


def _run_eval(argv: list[str]) -> None:
  tasks = eval_tasks()
  if len(argv) < 3 or argv[2] not in tasks:
    given = f'unknown task {argv[2]!r}; ' if len(argv) >= 3 and not argv[2].startswith('-') else ''
    print(f'usage: vlm-jax eval <task> [--flags]\n{given}tasks: {", ".join(tasks)}',
          file=sys.stderr if given else sys.stdout)
    if given:
      sys.exit(2)
    return
  _run(tasks[argv[2]], f'vlm-jax eval {argv[2]}', argv[3:])


def _run(module_name: str, program: str, args: list[str]) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  # Random numbers that shard: sharded and unsharded init (and dropout) draw the
  # same values. Set before any computation, for every subcommand alike (not on
  # `vlm-jax --help`, which needs no JAX).
  jax.config.update('jax_threefry_partitionable', True)
  try:
    module = importlib.import_module(module_name)
  except (AttributeError, KeyError) as e:
    # A config file given as a flag's default applies --config.x overrides as
    # the flag is defined, on import.
    if not any(a.startswith('--config.') for a in args):
      raise
    print(f'{program}: {_flag_error_line(e, [program] + args)}', file=sys.stderr)
    sys.exit(2)
  if any(a in ('-h', '--help') for a in args):
    # This subcommand's docstring and own flags, not absl's and JAX's hundreds.
    print(module.__doc__)
    print(flags.FLAGS.module_help(module.__name__))
    return
  flags.mark_flags_as_required(getattr(module, 'REQUIRED_FLAGS', []))
  # Orbax and TF log every save at INFO; --verbosity=0 brings them back.
  logging.set_verbosity(logging.WARNING)
  app.run(module.main, argv=[program] + args, flags_parser=_flags_parser(program))


def _flags_parser(program: str):
  """absl's flag parsing, with config mistakes as one line naming the field (exit 2)."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as e:
      print(f'{program}: {_flag_error_line(e, argv)}', file=sys.stderr)
      sys.exit(2)

  return parse


def _config_of(argv: list[str]):
  """The ConfigDict that --config names in `argv` (or its default); None if there is none."""
  if 'config' not in flags.FLAGS:
    return None
  flag = flags.FLAGS['config']
  if flag.value is not None:
    return flag.value
  spec = flag.default if isinstance(flag.default, str) else None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  try:
    return flag.parser.parse(spec) if spec else None
  except Exception:  # pylint: disable=broad-except  (the error being reported may be this one)
    return None


def _flag_error_line(error: Exception, argv: list[str]) -> str:
  """One line for a flag error: a config field that does not exist and its nearest names,
  or the last line of a config file's own error (an unknown preset or option)."""
  config = _config_of(argv)
  for arg in argv[1:]:
    if not arg.startswith('--config.') or config is None:
      continue
    path = arg[len('--'):].split('=', 1)[0].split('.')[1:]
    node = config
    for depth, name in enumerate(path):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if name not in keys:
        field = 'config.' + '.'.join(path)
        close = difflib.get_close_matches(name, keys, n=1)
        hint = f'; did you mean {close[0]}?' if close else ''
        where = '' if depth == len(path) - 1 else f' ({name})'
        return f'{field}: no such field{where}{hint}'
      node = node[name]
  # Without the config at hand: ml_collections names the missing key (and maybe a close one).
  missing = re.search(r'(\w+)', str(error))
  hint = re.search(r'Did you mean "(\w+)"', str(error))
  for arg in argv[1:]:
    path = arg[len('--'):].split('=', 1)[0].split('.')[1:]
    if arg.startswith('--config.') and missing and missing.group(1) in path:
      where = '' if path[-1] == missing.group(1) else f' ({missing.group(1)})'
      return (f'config.{".".join(path)}: no such field{where}'
              + (f'; did you mean {hint.group(1)}?' if hint else ''))
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


if __name__ == '__main__':
  main()
