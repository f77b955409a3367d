"""The sweep's runner on a fake training program: skip, resume, parallel, stop.

The fake (`tests.helpers.fake_runs` run as a program) takes the training
program's flags, checkpoints every round, resumes after its last checkpoint
and logs what it did, in a fraction of a second: what is tested here is the
runner's logic, not training (tests/sweeps/test_sweep_program.py trains).
"""

import io
import os
import re
import signal
import sys
import threading
import time

import pytest

from tests.helpers import REPO_ROOT
from tff_dp.sweeps import plan as plan_lib
from tff_dp.sweeps import progress
from tff_dp.sweeps import runner

_FAKE = (sys.executable, '-m', 'tests.helpers.fake_runs')


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
  log = tmp_path / 'fake.log'
  monkeypatch.setenv('FAKE_TRAINER_LOG', str(log))
  monkeypatch.chdir(REPO_ROOT)  # `-m tests.helpers.fake_runs`.
  for name in runner.THREAD_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  return log


def _plan(seeds=2, rounds=3):
  base = {'rounds': rounds, 'dp_mechanism': 'gaussian_adaptive', 'seed': 0}
  return plan_lib.expand(base,
                         base_name='fake',
                         grids=[('noise_multiplier', (1.0, 2.0))],
                         seeds=seeds)


def _lines(log):
  return log.read_text().splitlines() if log.exists() else []


def _run(plan, sweep_dir, **kwargs):
  out = io.StringIO()
  outcome = runner.run_plan(plan,
                            sweep_dir,
                            program=_FAKE,
                            out=out,
                            terminal=False,
                            poll_seconds=0.02,
                            **kwargs)
  return outcome, out.getvalue()


def test_every_run_once_then_nothing_to_do(tmp_path, fake_env):
  plan = _plan()
  sweep_dir = str(tmp_path / 'sweep')
  outcome, out = _run(plan, sweep_dir)
  assert outcome.code == 0 and outcome.ran == [r.name for r in plan.runs]
  assert len(plan.runs) == 6  # 2 settings x 2 seeds + the twin x 2.
  assert 'sweep: 6/6 runs done' in out
  starts = [line for line in _lines(fake_env) if ' start ' in line]
  assert len(starts) == 6 and 'threads=-' in starts[0]  # Left to TF.
  summary = os.path.join(sweep_dir, 'noise_multiplier-1_seed0', 'summary.json')
  mtime = os.stat(summary).st_mtime_ns
  again, _ = _run(plan, sweep_dir)
  assert again.code == 0 and again.ran == [] and len(again.skipped) == 6
  assert len([line for line in _lines(fake_env) if ' start ' in line]) == 6
  assert os.stat(summary).st_mtime_ns == mtime
  # A DP run's wall time grows with its hidden cohorts: neither kept nor
  # shown (no elapsed time, no ETA); the non-private twin's is.
  seconds = progress.WallTimes(sweep_dir).totals()
  assert set(seconds) == {'nonprivate_seed0', 'nonprivate_seed1'}
  assert 'elapsed' not in out and 'ETA' not in out
  assert os.path.isfile(os.path.join(sweep_dir, 'logs', 'nonprivate_seed1.log'))
  # Nor in the logs: start times of runs one after another are durations.
  with open(os.path.join(sweep_dir, 'logs', 'noise_multiplier-1_seed0.log'),
            encoding='utf-8') as f:
    header = f.readline()
  assert header.startswith('=== ') and not re.search(r'\d\d:\d\d', header)


def test_runs_that_release_values_outside_the_guarantee_are_timed(
    tmp_path, fake_env):
  base = {
      'rounds': 2,
      'dp_mechanism': 'gaussian_adaptive',
      'seed': 0,
      'release_nonprivate_metrics': True
  }
  plan = plan_lib.expand(base,
                         base_name='fake',
                         grids=[('noise_multiplier', (1.0, 2.0))],
                         seeds=1)
  assert all(plan.releases_timing(run) for run in plan.runs)
  sweep_dir = str(tmp_path / 'sweep')
  outcome, out = _run(plan, sweep_dir)
  assert outcome.code == 0
  assert set(
      progress.WallTimes(sweep_dir).totals()) == {r.name for r in plan.runs}
  assert 'elapsed' in out and 'ETA' in out


def test_an_unfinished_run_is_started_again_and_resumes(tmp_path, fake_env):
  plan = _plan(seeds=1, rounds=4)
  sweep_dir = str(tmp_path / 'sweep')
  # As an interrupted invocation leaves it: two rounds checkpointed.
  checkpoints = os.path.join(sweep_dir, plan.runs[0].name, 'checkpoints')
  os.makedirs(checkpoints)
  with open(os.path.join(checkpoints, 'round'), 'w') as f:
    f.write('2')
  outcome, _ = _run(plan, sweep_dir)
  assert outcome.code == 0
  assert f'{plan.runs[0].name} resume 2 threads=-' in _lines(fake_env)


def test_parallel_runs_split_the_cores(tmp_path, fake_env, monkeypatch):
  monkeypatch.setenv('FAKE_TRAINER_SECONDS', '0.2')
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3})
  plan = _plan(seeds=1)
  start = time.monotonic()
  outcome, _ = _run(plan, str(tmp_path / 'sweep'), parallel=2)
  assert outcome.code == 0
  lines = _lines(fake_env)
  assert all('threads=2' in line for line in lines if ' start ' in line)
  # Two at a time: the second run started before the first was done.
  assert lines.index(f'{plan.runs[1].name} start 0 threads=2') < lines.index(
      f'{plan.runs[0].name} done')
  assert time.monotonic() - start < 3 * 3 * 0.2 + 5  # Not 3 after 3.


def test_a_failed_run_stops_the_sweep_with_its_code(tmp_path, fake_env,
                                                    monkeypatch):
  plan = _plan(seeds=1)
  monkeypatch.setenv('FAKE_TRAINER_FAIL', plan.runs[1].name)
  outcome, _ = _run(plan, str(tmp_path / 'sweep'))
  assert outcome.code == 2
  assert outcome.ran == [r.name for r in plan.runs[:2]]  # None after it.
  assert f'run {plan.runs[1].name} exited 2: tff-dp: error: ' in (
      outcome.message)
  assert 'refused by the fake' in outcome.message


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_forwarded_and_the_sweep_resumes_later(
    tmp_path, fake_env, monkeypatch, signum):
  monkeypatch.setenv('FAKE_TRAINER_SECONDS', '0.3')
  plan = _plan(seeds=1, rounds=6)
  sweep_dir = str(tmp_path / 'sweep')
  first = os.path.join(sweep_dir, plan.runs[0].name, 'summary.json')
  second = os.path.join(sweep_dir, plan.runs[1].name, 'checkpoints', 'round')

  def interrupt():
    # After the first run finished, while the second trains.
    deadline = time.monotonic() + 30
    while not os.path.exists(second) and time.monotonic() < deadline:
      time.sleep(0.02)
    os.kill(os.getpid(), signum)

  threading.Thread(target=interrupt, daemon=True).start()
  outcome, _ = _run(plan, sweep_dir)
  assert outcome.code == 128 + signum
  assert os.path.exists(first) and not os.path.exists(
      os.path.join(sweep_dir, plan.runs[1].name, 'summary.json'))
  mtime = os.stat(first).st_mtime_ns
  again, _ = _run(plan, sweep_dir)
  assert again.code == 0 and plan.runs[0].name in again.skipped
  assert os.stat(first).st_mtime_ns == mtime
  resumed = [
      line for line in _lines(fake_env) if line.startswith(plan.runs[1].name)
  ]
  assert ' resume ' in resumed[-2] and resumed[-1].endswith(' done')
