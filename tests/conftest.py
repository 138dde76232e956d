"""Test set-up: 4 emulated devices (a 4-chip TPU), quiet TF, shared data paths."""

import os

# Before JAX starts: it reads XLA_FLAGS once, at backend initialisation.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import atexit  # pylint: disable=wrong-import-position
import shutil  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position

# One persistent compilation cache for this test run, its `vlm-jax` subprocesses
# included (they inherit the environment): many tests start the CLI on the same
# runlocal shapes, and each fresh process would compile the same programs again.
# Every entry is keyed by the program, its options and the backend, so a hit is
# the executable that compiling would give. Fresh per run: nothing carries over.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='vlm_jax_xla_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
# Only programs that take a while to compile: JAX's cache scans every entry (a stat
# and a read each) under its lock on each write, so caching the many
# millisecond compiles of eager ops made writes quadratic in the run's length
# (a 35-s test file took 11 minutes beside 20,000 entries).
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# A size limit turns on the cache's file lock: the test workers and their
# subprocesses write and read entries at the same time.
os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(16 << 30))

# torch 2.14.1 (the test extra's reference; a CUDA build) imports triton when
# transformers loads, and triton's LLVM crashes the process once jaxlib and
# TensorFlow are loaded (a segfault in `import triton`). The references run on
# the CPU and need no triton: make its import fail, which torch handles.
sys.modules.setdefault('triton', None)

import jax  # pylint: disable=wrong-import-position

# As vlm_jax.cli sets it for every command, before any computation: random
# numbers that shard (sharded and unsharded init and dropout draw the same values).
jax.config.update('jax_threefry_partitionable', True)

import pathlib  # pylint: disable=wrong-import-position

import pytest  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'realdata'


@pytest.fixture(scope='session')
def realdata() -> pathlib.Path:
  """../shared/realdata, or skip when this checkout has no shared folder."""
  if not SHARED.is_dir():
    pytest.skip('../shared/realdata is not present')
  return SHARED


@pytest.fixture(autouse=True, scope='session')
def _data_root(tmp_path_factory):
  """Generated corpora go to a temporary data root, not the repository's data/."""
  os.environ['VLM_JAX_DATA'] = str(tmp_path_factory.mktemp('data_root'))


@pytest.fixture(scope='session')
def run_dir(tmp_path_factory):
  """A 2-step `tiny,runlocal` VideoBERT run (144 visual tokens): config.json + checkpoint."""
  from configs import videobert as videobert_config  # pylint: disable=import-outside-toplevel
  from vlm_jax.videobert import trainer  # pylint: disable=import-outside-toplevel
  config = videobert_config.get_config('tiny,runlocal')
  config.train.global_batch_size, config.train.num_steps = 8, 2
  config.optim.warmup_steps = 1
  config.data.synthetic_videos = 16
  workdir = tmp_path_factory.mktemp('videobert_run')
  trainer.train(config, str(workdir))
  return workdir


@pytest.fixture(scope='session')
def loaded(run_dir):
  """That run, loaded for inference."""
  from vlm_jax.videobert import inference as videobert_inference  # pylint: disable=import-outside-toplevel
  return videobert_inference.load(str(run_dir))


# The files that take longest (minutes each on 2 cores), first in the queue: a worker
# that took the demo's file last would run it alone at the end of the run.
_LONGEST_FIRST = ('test_demo.py', 'test_clipbert_training.py', 'test_cbt_training.py',
                  'test_clipbert_pretraining.py', 'test_train_loop.py')


def pytest_collection_modifyitems(items):
  rank = {name: index for index, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order
