"""The TFF worker never outlives tff-dp: normal exit, exception, signals.

Each case runs in a subprocess (a fresh interpreter that imports TFF, ~5 s), so
that the process whose death we provoke is not pytest itself.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
import worker_utils

pytestmark = pytest.mark.tff

_CHILD = r'''
import sys, time
from tff_dp import runtime
mode, log_path = sys.argv[1], sys.argv[2]
with runtime.local_runtime(log_path=log_path) as worker:
  print('ready', worker.pid, flush=True)
  if mode == 'raise':
    raise RuntimeError('boom')
  if mode == 'wait':
    time.sleep(600)
print('exited', flush=True)
'''


def _start_child(mode, log_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen(
      [sys.executable, '-c', _CHILD, mode, str(log_path)],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _wait_ready(child) -> int:
  line = child.stdout.readline()
  assert line.startswith('ready'), (line, child.stderr.read())
  return int(line.split()[1])


@pytest.mark.parametrize('mode,expected_code', [('exit', 0), ('raise', 1)])
def test_worker_stops_when_the_body_returns_or_raises(tmp_path, mode,
                                                      expected_code):
  log_path = tmp_path / 'worker.log'
  child = _start_child(mode, log_path)
  pid = _wait_ready(child)
  # communicate() would hang here if the worker still held our pipes.
  child.communicate(timeout=60)
  assert child.returncode == expected_code
  assert worker_utils.worker_pids_from_log(str(log_path)) == [pid]
  assert worker_utils.wait_until_gone([pid]) == []


def test_worker_dies_with_a_sigkilled_parent(tmp_path):
  log_path = tmp_path / 'worker.log'
  child = _start_child('wait', log_path)
  pid = _wait_ready(child)
  assert worker_utils.is_running_worker(pid)
  child.kill()  # SIGKILL: no Python cleanup runs; only PR_SET_PDEATHSIG helps.
  child.communicate(timeout=60)
  assert worker_utils.wait_until_gone([pid]) == []


def _start_training(tmp_path, extra=()):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  args = [sys.executable, '-m', 'tff_dp.train',
          f'--flagfile={os.path.join(REPO_ROOT, "configs", "smoke.cfg")}',
          f'--output_dir={tmp_path}', '--run_name=run', *extra]
  return subprocess.Popen(args, cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


@pytest.mark.parametrize('sig,expected_code',
                         [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_training_leaves_no_worker(tmp_path, sig, expected_code):
  child = _start_training(tmp_path, ['--rounds=100000'])
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    line = child.stdout.readline()
    if not line or line.startswith('round 1/'):
      break
  assert line.startswith('round 1/'), child.stderr.read()
  child.send_signal(sig)
  _, stderr = child.communicate(timeout=60)
  assert child.returncode == expected_code, stderr
  assert 'worker was stopped' in stderr
  assert 'Traceback' not in stderr
  pids = worker_utils.worker_pids_from_log(
      str(tmp_path / 'run' / 'worker.log'))
  assert len(pids) == 1
  assert worker_utils.wait_until_gone(pids) == []
