"""Helpers for tests that check the TFF worker is never left behind."""

import re
import time

from tff_dp.execution import worker_launch


def worker_pids_from_log(log_path: str) -> list[int]:
  """Pids of the workers a run started, from the lines tff-dp writes."""
  with open(log_path, errors='replace') as f:
    text = f.read()
  pattern = re.escape(worker_launch.WORKER_LOG_PREFIX) + r'(\d+)'
  return [int(pid) for pid in re.findall(pattern, text)]


def is_running_worker(pid: int) -> bool:
  """True if `pid` is alive and still a TFF worker (not a reused pid)."""
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      cmdline = f.read()
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return b'worker_binary' in cmdline and state != 'Z'


def wait_until_gone(pids, timeout: float = 15.0) -> list[int]:
  """Returns the pids still running as workers after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  alive = [pid for pid in pids if is_running_worker(pid)]
  while alive and time.monotonic() < deadline:
    time.sleep(0.1)
    alive = [pid for pid in alive if is_running_worker(pid)]
  return alive
