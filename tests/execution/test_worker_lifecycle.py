"""The TFF worker never outlives tff-dp, and a dead worker never hangs it.

Normal exit, exception and signals leave no worker behind; a worker killed
under a running trainer ends the trainer's call within seconds with
`worker_errors.WorkerDiedError`; stopping the worker takes about a second even
when the trainer inherited SIGINT and SIGTERM as ignored (`nohup`, `&`).
Most cases run in a subprocess (a fresh interpreter that imports TFF, ~5 s),
so that the process whose death we provoke is not pytest itself.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tests.helpers import workers

pytestmark = pytest.mark.tff

_CHILD = r'''
import sys, time
from tff_dp.execution import runtime
mode, log_path = sys.argv[1], sys.argv[2]
with runtime.local_runtime(log_path=log_path) as worker:
  print('ready', worker.pid, flush=True)
  if mode == 'raise':
    raise RuntimeError('boom')
  if mode == 'wait':
    time.sleep(600)
print('exited', flush=True)
'''


def _start_child(code, *args):
  """`python -c code args...`, its output piped as text."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, '-c', code, *map(str, args)],
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)


def _wait_ready(child) -> int:
  line = child.stdout.readline()
  assert line.startswith('ready'), (line, child.stderr.read())
  return int(line.split()[1])


@pytest.mark.parametrize('mode,expected_code', [('exit', 0), ('raise', 1)])
def test_worker_stops_when_the_body_returns_or_raises(tmp_path, mode,
                                                      expected_code):
  log_path = tmp_path / 'worker.log'
  child = _start_child(_CHILD, mode, log_path)
  pid = _wait_ready(child)
  # communicate() would hang here if the worker still held our pipes.
  child.communicate(timeout=60)
  assert child.returncode == expected_code
  assert workers.worker_pids_from_log(str(log_path)) == [pid]
  assert workers.wait_until_gone([pid]) == []


def test_worker_dies_with_a_sigkilled_parent(tmp_path):
  log_path = tmp_path / 'worker.log'
  child = _start_child(_CHILD, 'wait', log_path)
  pid = _wait_ready(child)
  assert workers.is_running_worker(pid)
  child.kill()  # SIGKILL: no Python cleanup runs; only PR_SET_PDEATHSIG helps.
  child.communicate(timeout=60)
  assert workers.wait_until_gone([pid]) == []


def _start_training(tmp_path, extra=()):
  # Log level 2, not run_train's 3: TensorFlow's C++ errors stay in stderr.
  return programs.start_train(
      f'--flagfile={os.path.join(REPO_ROOT, "configs", "smoke.cfg")}',
      f'--output_dir={tmp_path}',
      '--run_name=run',
      *extra,
      env_extra={'TF_CPP_MIN_LOG_LEVEL': '2'})


# SIGTERM's exit code is also tested in tests/cli/test_program_signals.py.
@pytest.mark.e2e
@pytest.mark.parametrize(
    'sig,expected_code',
    [(signal.SIGINT, 130),
     pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
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
  pids = workers.worker_pids_from_log(str(tmp_path / 'run' / 'worker.log'))
  assert len(pids) == 1
  assert workers.wait_until_gone(pids) == []


_IGNORING_CHILD = r"""
import signal, sys, time
# As under `nohup` or `cmd &` in a script: both inherited as ignored.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from tff_dp.execution import runtime
with runtime.local_runtime(log_path=sys.argv[1]) as worker:
  with open(f'/proc/{worker.pid}/status') as f:
    ignored = [line for line in f if line.startswith('SigIgn:')][0]
  print('ready', worker.pid, int(ignored.split()[1], 16), flush=True)
  start = time.monotonic()
print('stopped in', time.monotonic() - start, flush=True)
"""


def test_stopping_is_quick_when_the_trainer_ignores_sigint_and_sigterm(
    tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  child = subprocess.run(
      [sys.executable, '-c', _IGNORING_CHILD,
       str(tmp_path / 'worker.log')],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
      check=False)
  assert child.returncode == 0, child.stderr
  ready, stopped = child.stdout.splitlines()[-2:]
  pid, ignored = int(ready.split()[1]), int(ready.split()[2])
  # The worker does not inherit the ignored signals that stop it (nor the
  # two that Python ignores, as a plain subprocess would not).
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
    assert not ignored & (1 << (sig - 1)), (sig, hex(ignored))
  seconds = float(stopped.split()[-1])
  assert seconds < 3.0, f'stopping the worker took {seconds:.1f} s'
  assert workers.wait_until_gone([pid]) == []


_DYING_CHILD = r"""
import os, sys
import numpy as np
import tensorflow_federated as tff
from tff_dp.execution import runtime
from tff_dp.execution import worker_errors

@tff.tensorflow.computation(np.int32)
def add_one(x):
  return x + 1

with runtime.local_runtime(log_path=sys.argv[1]) as worker:
  print('ready', worker.pid, flush=True)
  try:
    while True:  # Between calls or in one when the worker is killed.
      add_one(1)
  except worker_errors.WorkerDiedError as e:
    print('died', e, flush=True)
print('socket directory left', os.path.exists(worker.socket_dir), flush=True)
"""


def test_a_killed_worker_ends_the_runtime_body_within_seconds(tmp_path):
  log_path = tmp_path / 'worker.log'
  child = _start_child(_DYING_CHILD, log_path)
  try:
    pid = _wait_ready(child)
    time.sleep(1.0)  # Some calls go through first.
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stdout, stderr = child.communicate(timeout=60)
    seconds = time.monotonic() - killed_at
  finally:
    child.kill()
  assert child.returncode == 0, stderr
  died, left = stdout.splitlines()[-2:]
  assert died == (f'died the TFF worker (pid {pid}) was killed by signal 9 '
                  f'(SIGKILL) while the run used it; its log: {log_path}')
  assert left == 'socket directory left False'
  # Including the child's interpreter shutdown.
  assert seconds < 15, f'{seconds:.1f} s from SIGKILL to the end'


def _cpu_seconds(pid: int) -> float:
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_a_computation_in_flight_on_a_killed_worker_fails_within_seconds(
    tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_connect  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_errors  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_launch  # pylint: disable=g-import-not-at-top

  @tff.tensorflow.computation(np.int64)
  def spin(n):
    return tf.while_loop(lambda i: i < n, lambda i: i + 1,
                         [tf.constant(0, tf.int64)])[0]

  worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'))
  outcome = {}
  try:
    context = runtime.execution_context(worker_connect.connect(worker))

    def run():
      with tff.framework.get_context_stack().install(context):
        try:
          outcome['result'] = spin(10**13)  # Hours of work.
        except BaseException as e:  # pylint: disable=broad-except
          outcome['error'], outcome['at'] = e, time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    start_cpu, deadline = _cpu_seconds(worker.pid), time.monotonic() + 120
    while (_cpu_seconds(worker.pid) < start_cpu + 1.0 and
           time.monotonic() < deadline):
      time.sleep(0.1)  # Until the worker is busy with the call.
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(15)
    assert not thread.is_alive(), 'the call still waits on a dead worker'
  finally:
    worker.stop()
  error = outcome.get('error')
  assert isinstance(error, worker_errors.WorkerDiedError), outcome
  assert f'pid {worker.pid}' in str(error) and 'SIGKILL' in str(error)
  assert outcome['at'] - killed_at < 15
