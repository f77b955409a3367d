"""`tls_proxy.remove_stale_dirs`: which private directories of dead stunnels go.

Pure Python and subprocesses, no stunnel: each directory is built as
`start_stunnel` leaves it (mode 0700, ours, a config and maybe a pid file),
with the pid file naming a process in the state under test.
"""

import os
import time

import pytest

from tests.helpers import workers
from tff_dp.execution import tls_proxy


def _private_dir(base, name: str, pid: int | None) -> str:
  directory = base / f'tff-dp-tls-{name}'
  directory.mkdir(mode=0o700)
  (directory / tls_proxy.CONFIG_NAME).write_text('; test\n')
  if pid is not None:
    (directory / tls_proxy.PID_NAME).write_text(f'{pid}\n')
  return str(directory)


def test_a_zombie_stunnel_counts_as_dead(tmp_path):
  with workers.zombie() as pid:
    directory = _private_dir(tmp_path, 'zombie', pid)
    tls_proxy.remove_stale_dirs(str(tmp_path))
    assert not os.path.exists(directory)


def test_a_reused_pid_counts_as_dead(tmp_path):
  # This interpreter is alive, but it is not a stunnel on that config.
  directory = _private_dir(tmp_path, 'reused', os.getpid())
  tls_proxy.remove_stale_dirs(str(tmp_path))
  assert not os.path.exists(directory)


def test_a_live_stunnel_keeps_its_directory(tmp_path):
  config = str(tmp_path / 'tff-dp-tls-live' / tls_proxy.CONFIG_NAME)
  # A stand-in whose argv names the config, as stunnel's does.
  with workers.sleeper(config) as pid:
    _private_dir(tmp_path, 'live', pid)
    tls_proxy.remove_stale_dirs(str(tmp_path))
    assert os.path.exists(config)


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
