"""Helpers for tests that check the TFF worker is never left behind."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from typing import Iterator

from tests.helpers import REPO_ROOT
from tff_dp import processes
from tff_dp.execution import worker_launch


def worker_pids_from_log(log_path: str) -> list[int]:
  """Pids of the workers a run started, from the lines tff-dp writes."""
  with open(log_path, errors='replace') as f:
    text = f.read()
  pattern = re.escape(worker_launch.WORKER_LOG_PREFIX) + r'(\d+)'
  return [int(pid) for pid in re.findall(pattern, text)]


def is_running_worker(pid: int) -> bool:
  """True if `pid` is alive and still a TFF worker (not a reused pid)."""
  return any(b'worker_binary' in arg for arg in processes.argv(pid))


def wait_until_gone(pids, timeout: float = 15.0) -> list[int]:
  """Returns the pids still running as workers after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  alive = [pid for pid in pids if is_running_worker(pid)]
  while alive and time.monotonic() < deadline:
    time.sleep(0.1)
    alive = [pid for pid in alive if is_running_worker(pid)]
  return alive


# The line `./run.sh worker` prints once both halves serve.
_SERVING = re.compile(r'TFF worker pid (\d+) .*; stunnel pid (\d+) accepting')


class ServedWorker:
  """A `python -m tff_dp.cli.worker --tls` process and the pids it reported."""

  def __init__(self, process, worker_pid: int, proxy_pid: int, port: int,
               logs_dir: str):
    self.process = process
    self.logs_dir = logs_dir
    self.worker_pid = worker_pid
    self.proxy_pid = proxy_pid
    self.port = port

  @property
  def address(self) -> str:
    return f'127.0.0.1:{self.port}'

  def stop(self, timeout: float = 30.0) -> int:
    """SIGTERM, then waits; returns the exit code (kills on timeout)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    try:
      return self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      raise


def start_served_worker(certs_dir: str,
                        log_dir: str,
                        port: int,
                        timeout: float = 120.0,
                        data_dir: str = '') -> ServedWorker:
  """Starts `python -m tff_dp.cli.worker --tls` and waits until it serves.

  Args:
    certs_dir: Holds ca.crt, worker.crt and worker.key.
    log_dir: Its --logs_dir.
    port: Its --port.
    timeout: Seconds to wait for the serving line.
    data_dir: Its --data_dir (a shard directory), if any.

  Returns:
    The running worker program.
  """
  command = [
      sys.executable, '-m', 'tff_dp.cli.worker', '--tls', f'--port={port}',
      f'--certs_dir={certs_dir}', f'--logs_dir={log_dir}'
  ]
  if data_dir:
    command.append(f'--data_dir={data_dir}')
  process = subprocess.Popen(command,
                             cwd=REPO_ROOT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             text=True)
  deadline = time.monotonic() + timeout
  lines = []
  while time.monotonic() < deadline:
    line = process.stdout.readline()
    if not line:
      break  # It exited.
    lines.append(line)
    match = _SERVING.search(line)
    if match:
      return ServedWorker(process, int(match.group(1)), int(match.group(2)),
                          port, log_dir)
  process.kill()
  _, err = process.communicate(timeout=30)
  raise AssertionError(f'the worker program did not serve: {lines} {err}')


def is_running(pid: int) -> bool:
  """True if `pid` is alive and not a zombie."""
  return processes.is_live(pid)


@contextlib.contextmanager
def sleeper(*args: str) -> Iterator[int]:
  """The pid of a live process whose argv ends with `args`.

  Yields once /proc shows that argv: right after fork, and during exec, it
  shows the parent's or an empty one.
  """
  child = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(60)', *args])
  try:
    want = [os.fsencode(a) for a in args]
    deadline = time.monotonic() + 10
    while processes.argv(child.pid)[-len(want):] != want:
      assert time.monotonic() < deadline, processes.argv(child.pid)
      time.sleep(0.01)
    yield child.pid
  finally:
    child.kill()
    child.wait()


@contextlib.contextmanager
def zombie() -> Iterator[int]:
  """The pid of a child that has exited and that nobody has reaped yet.

  What an orphan becomes where PID 1 does not reap (many containers).
  """
  child = subprocess.Popen(['true'])
  try:
    deadline = time.monotonic() + 10
    while processes.is_live(child.pid):
      assert time.monotonic() < deadline, 'the child did not exit'
      time.sleep(0.01)
    assert os.path.exists(f'/proc/{child.pid}')
    yield child.pid
  finally:
    child.wait()
