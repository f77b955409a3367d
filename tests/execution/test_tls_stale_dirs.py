"""`tls_proxy.remove_stale_dirs`: which private directories of dead stunnels go.

Pure Python and subprocesses, no stunnel: each directory is built as
`start_stunnel` leaves it (mode 0700, ours, a config and maybe a pid file),
with the pid file naming a process in the state under test.
"""

import os
import subprocess
import sys
import time

import pytest

from tff_dp.execution import tls_proxy


def _private_dir(base, name: str, pid: int | None) -> str:
  directory = base / f'tff-dp-tls-{name}'
  directory.mkdir(mode=0o700)
  (directory / tls_proxy.CONFIG_NAME).write_text('; test\n')
  if pid is not None:
    (directory / tls_proxy.PID_NAME).write_text(f'{pid}\n')
  return str(directory)


def _zombie() -> subprocess.Popen:
  """A child that has exited and that nobody has reaped yet."""
  child = subprocess.Popen(['true'])
  deadline = time.monotonic() + 10
  while time.monotonic() < deadline:
    with open(f'/proc/{child.pid}/stat') as f:
      if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
        return child
    time.sleep(0.01)
  raise AssertionError('the child did not exit')


def test_a_zombie_stunnel_counts_as_dead(tmp_path):
  # What an orphaned stunnel becomes where PID 1 does not reap (containers).
  child = _zombie()
  try:
    directory = _private_dir(tmp_path, 'zombie', child.pid)
    assert os.path.exists(f'/proc/{child.pid}')
    tls_proxy.remove_stale_dirs(str(tmp_path))
    assert not os.path.exists(directory)
  finally:
    child.wait()


def test_a_reused_pid_counts_as_dead(tmp_path):
  # This interpreter is alive, but it is not a stunnel on that config.
  directory = _private_dir(tmp_path, 'reused', os.getpid())
  tls_proxy.remove_stale_dirs(str(tmp_path))
  assert not os.path.exists(directory)


def test_a_live_stunnel_keeps_its_directory(tmp_path):
  directory = tmp_path / 'tff-dp-tls-live'
  config = str(directory / tls_proxy.CONFIG_NAME)
  # A stand-in whose argv names the config, as stunnel's does.
  child = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(60)', config])
  try:
    _private_dir(tmp_path, 'live', child.pid)
    tls_proxy.remove_stale_dirs(str(tmp_path))
    assert os.path.exists(config)
  finally:
    child.kill()
    child.wait()


@pytest.mark.parametrize('age_seconds,kept', [(0, True), (3600, False)])
def test_without_a_pid_file_only_old_directories_go(tmp_path, age_seconds,
                                                    kept):
  directory = _private_dir(tmp_path, 'starting', None)
  then = time.time() - age_seconds
  os.utime(directory, (then, then))
  tls_proxy.remove_stale_dirs(str(tmp_path))
  assert os.path.exists(directory) == kept


def test_other_names_are_never_touched(tmp_path):
  other = tmp_path / 'someone-else'
  other.mkdir(mode=0o700)
  (other / tls_proxy.PID_NAME).write_text('999999999\n')
  tls_proxy.remove_stale_dirs(str(tmp_path))
  assert other.exists()
