"""Two training processes on localhost (2 emulated devices each) as one 4-device job."""

import json
import os
import socket
import subprocess
import sys

import pytest

from configs import videobert as videobert_config
from vlm_jax.videobert import step as step_lib
from vlm_jax.videobert import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(workdir, steps, port, *extra):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  common = [sys.executable, '-m', 'vlm_jax.cli', 'train', '--multihost',
            f'--coordinator_address=localhost:{port}', '--num_processes=2',
            '--config', 'configs/videobert.py:tiny,runlocal', f'--workdir={workdir}',
            f'--config.train.num_steps={steps}', '--config.train.global_batch_size=8',
            '--config.train.checkpoint_every=2', '--config.train.log_every=2',
            '--config.optim.warmup_steps=1', '--config.data.synthetic_videos=32', *extra]
  return [subprocess.Popen(common + [f'--process_id={i}'], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(2)]


def _wait(processes):
  outputs = []
  for p in processes:
    out, _ = p.communicate(timeout=600)
    outputs.append(out)
    assert p.returncode == 0, out[-3000:]
  return outputs


@pytest.mark.skipif(sys.platform != 'linux', reason='gloo collectives on Linux')
def test_two_processes_train_save_and_resume(tmp_path):
  # The synthetic corpus is made once up front: processes on one machine share the data root.
  config = videobert_config.get_config('tiny,runlocal')
  config.data.synthetic_videos = 32
  tok, _ = step_lib.load_vocab(config)
  trainer.training_files(config, tok)

  workdir = tmp_path / 'run'
  _wait(_launch(workdir, 2, _free_port()))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2']
  # Each process saves its own position in its own share of the data.
  saved = {name.split('.')[0] for name in os.listdir(workdir / 'data_state' / 'step_2')}
  assert saved == {'process_0', 'process_1'}
  # Extending the run changes its schedule: a resume allows it only when asked.
  outputs = _wait(_launch(workdir, 4, _free_port(), '--config.train.allow_config_change=True'))
  assert 'resumed from the checkpoint at step 2' in outputs[0]
  # Only process 0 logs.
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [2, 4]
  assert all(r['loss'] == r['loss'] and r['loss'] < 30 for r in rows)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
