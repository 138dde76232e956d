"""`vlm-jax <subcommand> [flags]`: one entry point for every stage.

Each subcommand is a module of vlm_jax/commands with absl flags and a
`main(argv)` that calls its stage (vlm_jax/stages) or evaluation
(vlm_jax/evaluate); `vlm-jax eval <task>` is vlm_jax/commands/eval_<task>.py.
Only the chosen one is imported, so their flags never collide (several define
--output, --annotations, ...) and start-up stays fast; a command whose stage
loads JAX or TensorFlow imports it in `main`, so that `--help` and flag errors
need neither.
Nothing else imports a command.
"""

import difflib
import importlib
import importlib.util
import os
import sys

from absl import app, flags, logging

from configs import common
from vlm_jax import host_memory
from vlm_jax import tf_startup

SUBCOMMANDS = {
    'demo': ('vlm_jax.commands.demo',
             'The main job: rendered videos -> S3D -> visual tokens -> VideoBERT -> report.'),
    'train': ('vlm_jax.commands.train',
              'Train VideoBERT, VideoCLIP, CBT or ClipBERT from a config file (configs/).'),
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
                     'VideoBERT or feature (VideoCLIP, CBT) TFRecords from clip features and transcripts.'),
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

`vlm-jax <subcommand> --help` describes a subcommand, its flags and its config's presets.
Configs take overrides: --config configs/videobert.py:tiny --config.train.num_steps=50;
--print_config prints the resolved config and exits.
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
  _random_numbers_that_shard()
  if not any(a.startswith(('--verbosity', '-v')) for a in args):
    # TensorFlow's C++ start-up notices, printed as its libraries load; --verbosity keeps them.
    tf_startup.install()
  # A config flag with a default file parses it as it is defined, with the
  # --config.* overrides it finds in sys.argv: a bad one would fail the import.
  # Imported with none there, the overrides wait for flag parsing, which
  # reports them like any other flag.
  argv, sys.argv = sys.argv, [program]
  try:
    module = importlib.import_module(module_name)
  finally:
    sys.argv = argv
  if any(a in ('-h', '--help') for a in args):
    print(_help(module))
    return
  takes_config = 'config' in flags.FLAGS
  print_config = takes_config and '--print_config' in args
  if print_config:
    args = [a for a in args if a != '--print_config']
  if takes_config and _config_spec(args) is None:
    # The default, as if typed first: the overrides after it apply to it.
    args = [f'--config={_default_config()}'] + args
  # ml_collections reads the overrides from sys.argv, absl from the argv it is given.
  sys.argv = [program] + args
  if not print_config:
    flags.mark_flags_as_required(getattr(module, 'REQUIRED_FLAGS', []))
  # Orbax and TF log every save at INFO; --verbosity=0 brings them back.
  logging.set_verbosity(logging.WARNING)
  app.run(module.main, argv=sys.argv, flags_parser=_flags_parser(program, print_config))


def _random_numbers_that_shard() -> None:
  """jax_threefry_partitionable=True: sharded and unsharded init (and dropout) draw the same values.

  Set before any computation, for every subcommand alike. JAX reads it from the
  environment when it is imported, so `--help` and flag errors need no JAX; a
  process that has imported JAX already (a notebook calling main) gets it too.
  """
  os.environ['JAX_THREEFRY_PARTITIONABLE'] = 'true'
  if 'jax' in sys.modules:
    sys.modules['jax'].config.update('jax_threefry_partitionable', True)


def _default_config() -> str:
  """The file --config defaults to: each command that takes a config has one."""
  return flags.FLAGS['config'].default_unparsed


def _help(module) -> str:
  """A subcommand's docstring and own flags (not absl's hundreds), then its config files."""
  text = [module.__doc__, flags.FLAGS.module_help(module.__name__)]
  if 'config' in flags.FLAGS:
    others = [common.config_file(f) for f in getattr(module, 'OTHER_CONFIGS', [])]
    text.append(_config_help(_default_config(), others))
  return '\n'.join(text)


def _config_help(default: str, others: list[str]) -> str:
  """The presets and options of the default config file and `others`, and how to set fields."""
  lines = [f'\nConfig: --config FILE[:PRESET[,OPTION...]], by default {_shown(default)}']
  for file in [default] + others:
    found = common.presets_of(_config_module(file).get_config)
    if found:
      presets, options, preset = found
      named = [f'{p} (default)' if p == preset else p for p in presets]
      lines.append(f'  {_shown(file)}  presets: {", ".join(named)}'
                   + (f'; options: {", ".join(options)}' if options else ''))
  lines.append('Override any field with --config.FIELD=VALUE (nested: '
               '--config.SECTION.FIELD=VALUE);\n--print_config prints the resolved config and '
               'exits. Each config file comments\nits fields and describes its presets.')
  return '\n'.join(lines)


def _shown(file: str) -> str:
  """`file` as a user here would type it: relative inside the working directory."""
  relative = os.path.relpath(file)
  return file if relative.startswith('..') else relative


def _config_module(file: str):
  """Config file `file` as a module, loaded by path as ml_collections loads it."""
  spec = importlib.util.spec_from_file_location('vlm_jax_config', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _flags_parser(program: str, print_config: bool):
  """absl's flag parsing, with config mistakes as one line naming the field (exit 2)."""

  def parse(argv: list[str]) -> list[str]:
    # ml_collections defers a missing file's error to the config's first use.
    file = (_config_spec(argv) or '').split(':', 1)[0] if 'config' in flags.FLAGS else None
    if file is not None and not os.path.isfile(file):
      print(f'{program}: config: no such file {file!r} ({_shipped_configs()})', file=sys.stderr)
      sys.exit(2)
    try:
      rest = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as e:
      print(f'{program}: {_flag_error_line(e, argv)}', file=sys.stderr)
      sys.exit(2)
    if print_config:
      print(flags.FLAGS['config'].value)
      sys.exit(0)
    return rest

  return parse


def _shipped_configs() -> str:
  """'the configs in DIR: a.py, b.py, ...': the config files of the configs package."""
  folder = os.path.dirname(common.__file__)
  names = sorted(n for n in os.listdir(folder)
                 if n.endswith('.py') and n not in ('__init__.py', 'common.py'))
  return f'the configs in {folder}: {", ".join(names)}'


def _config_spec(argv: list[str]) -> str | None:
  """The last --config value in `argv` (FILE[:ARG]), or None."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      spec = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _flag_error_line(error: Exception, argv: list[str]) -> str:
  """One line for a flag error: an unknown preset or option of the config file, a config
  field that does not exist and its nearest names, or else the error's last line."""
  spec = _config_spec(argv)
  if spec is not None:
    # Loaded again here, without the overrides: the one that failed is among them.
    file, *arg = spec.split(':', 1)
    try:
      config = _config_module(file).get_config(*arg)
    except common.PresetError as e:
      return f'config: {e.naming(file)}'
    except Exception:  # pylint: disable=broad-except  (a broken file: absl's error says why)
      return _last_line(error)
    for override in argv[1:]:
      if override.startswith('--config.'):
        missing = _missing_field(config, override[len('--config.'):].split('=', 1)[0])
        if missing:
          return missing
  return _last_line(error)


def _last_line(error: Exception) -> str:
  """The last line of an error's message (where a config file's traceback names its error)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _missing_field(config, field: str) -> str | None:
  """'config.<field>: no such field ...' naming the missing part and its nearest name, or None."""
  path = field.split('.')
  node = config
  for depth, name in enumerate(path):
    keys = list(node.keys()) if hasattr(node, 'keys') else []
    if name not in keys:
      close = difflib.get_close_matches(name, keys, n=1)
      hint = f'; did you mean {close[0]}?' if close else ''
      where = '' if depth == len(path) - 1 else f' ({name})'
      return f'config.{field}: no such field{where}{hint}'
    node = node[name]
  return None


if __name__ == '__main__':
  main()
