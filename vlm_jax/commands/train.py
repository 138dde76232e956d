"""vlm-jax train: pretrain a model from a config.

  vlm-jax train --workdir /tmp/vb [--config configs/videobert.py:tiny] \\
      [--config.train.num_steps=100 ...]
  vlm-jax train --config configs/videoclip.py:tiny --workdir /tmp/vc \\
      --config.data.train_files='records/*.tfrecord'
  vlm-jax train --config configs/clipbert.py:tiny --workdir /tmp/cb \\
      --config.data.train_jsonl=pairs.jsonl --config.data.video_dir=videos/

The config says which system trains: VideoBERT (configs/videobert.py) or
VideoCLIP (configs/videoclip.py, `system = 'videoclip'`). Without --config it
is configs/videobert.py's tiny preset, on the generated synthetic corpus unless
--config.data.train_files names records.

Writes checkpoints, metrics.jsonl, TensorBoard events, curves.png and
manifest.json to the workdir; re-running with the same workdir resumes, under
the same config (a changed one is refused, naming the fields, unless
--config.train.allow_config_change=True; changes are then listed in the manifest).
The workdir and --config.data.train_files may be local or on Cloud Storage:

  vlm-jax train --config configs/videobert.py:base --workdir gs://BUCKET/runs/vb \\
      --config.data.train_files='gs://BUCKET/tokens/train-*.tfrecord'

(Orbax lists gs:// checkpoints through the google-cloud-storage package.)
"""

from absl import flags
from ml_collections import config_flags

from configs import common

_CONFIG = config_flags.DEFINE_config_file(
    'config', common.config_file('videobert.py'),
    'Config file, then a preset and options: FILE[:PRESET[,OPTION...]], e.g. '
    'configs/videoclip.py:tiny,runlocal; the default is VideoBERT\'s tiny preset.',
    lock_config=True)
# --help lists their presets and options beside the default's.
OTHER_CONFIGS = ['videoclip.py', 'cbt.py', 'clipbert.py']
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints and metrics go: a local directory or a URL such as '
    'gs://bucket/run (TPU VMs: write to Cloud Storage, their disks do not outlive them).')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() first (TPU pod slices: '
    'launch_tpu.sh sets it); each host then reads its own share of the files.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --multihost off a TPU/cluster: host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address.')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  # pylint: disable=import-outside-toplevel
  from vlm_jax import config_checks
  from vlm_jax.data import files as files_lib
  from vlm_jax.stages import train
  from vlm_jax.train import loop
  # pylint: enable=import-outside-toplevel
  if _MULTIHOST.value:
    train.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train.run(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, files_lib.DataError, loop.TrainingDiverged,
          FileNotFoundError) as e:
    raise SystemExit(f'vlm-jax train: {e}') from e
