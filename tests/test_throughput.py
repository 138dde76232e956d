"""benchmarks/throughput.py: its CPU smoke plan runs every section; the budget skips, and a
failing section is recorded."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import throughput  # pylint: disable=wrong-import-position


def test_the_smoke_plan_runs_every_section_without_tensorflow(tmp_path):
  output = tmp_path / 'rows.jsonl'
  # One CPU device: beside the suite's 4 emulated ones the Pallas interpreter's barrier
  # now and then waited for ever (tests/test_attention_impls.py).
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run([sys.executable, 'benchmarks/throughput.py', '--plan', 'cpu_smoke',
                         '--output', str(output)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in output.read_text().splitlines()]
  sections = [s for s, _ in throughput.PLANS['cpu_smoke'].sections]
  assert sorted({r['section'] for r in rows}) == sorted(sections)
  assert not [r for r in rows if 'skipped' in r]
  assert all(r['device'] and r['jax'] and r['date'] for r in rows)
  by = lambda section: [r for r in rows if r['section'] == section]
  assert by('preflight')[0]['problems'] == []  # TensorFlow among them, had it been imported
  attention = {r['impl']: r for r in by('attention')}
  assert set(attention) == {'xla', 'tpu_flash'} and all(r['passed'] for r in attention.values())
  profile = by('profile:recipe')[0]
  assert profile['kernel_ms_per_step']['gemm'] > 0 and len(profile['top_kernels']) == 20
  steps = {r['section']: r for r in rows if r['section'].startswith('step:')}
  assert steps['step:recipe_b64']['batch'] == 2 * steps['step:recipe']['batch']
  assert steps['step:recipe_gemm_options']['compiler_options'] == {'xla_cpu_use_xnnpack': False}
  assert steps['step:default']['attention_dropout'] == 0.1
  assert steps['step:recipe']['attention_dropout'] == 0.0
  assert {r['mode'] for r in by('dropout_bits')} == {'unrolled', 'kernel'}
  assert '| step:recipe | large |' in proc.stdout  # the summary table, against the reference
  assert all(r['steps_per_s'] > 0 for r in rows if 'steps_per_s' in r)


def test_overrunning_sections_are_skipped_and_failing_ones_recorded(tmp_path, monkeypatch,
                                                                    capsys):
  ran = []
  def fails(plan, rec, name):
    raise RuntimeError('no cuDNN here')
  monkeypatch.setattr(throughput, 'SECTIONS', dict(
      {kind: (lambda plan, rec, name, kind=kind: ran.append(kind))
       for kind in throughput.SECTIONS}, attention=fails))
  plan = throughput.Plan('test', {}, steps=1, windows=1, accelerator=False, sections=(
      ('preflight', 1), ('attention', 1), ('step:recipe', 100), ('dropout_bits', 1)))
  rec = throughput.Recorder(str(tmp_path / 'rows.jsonl'), plan)
  throughput.run_plan(plan, rec, budget_s=10)
  assert ran == ['preflight', 'dropout_bits']
  rows = [json.loads(l) for l in (tmp_path / 'rows.jsonl').read_text().splitlines()]
  assert [r['section'] for r in rows] == ['attention', 'step:recipe']
  assert rows[0]['error'] == 'RuntimeError: no cuDNN here'
  assert 'over budget' in rows[1]['skipped']
  monkeypatch.setattr(sys, 'argv', ['throughput.py', '--only', 'step:nope'])
  with pytest.raises(SystemExit):
    throughput.main()
  assert "unknown sections ['step:nope']" in capsys.readouterr().err
