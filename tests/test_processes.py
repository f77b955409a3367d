"""`tff_dp.processes`: live, zombie, gone, and a pid reused by another program."""

import os
import subprocess
import sys

from tests.helpers import workers
from tff_dp import processes


def test_this_process_is_live_with_its_argv():
  assert processes.is_live(os.getpid())
  assert processes.argv(os.getpid())[0] == os.fsencode(
      open('/proc/self/cmdline', 'rb').read().split(b'\0')[0])


def test_a_zombie_is_not_live_and_has_no_argv():
  with workers.zombie() as pid:
    assert not processes.is_live(pid)
    assert processes.argv(pid) == []
    assert not processes.runs_with_argument(pid, 'true')


def test_a_reaped_pid_is_not_live():
  gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True,
                        text=True,
                        check=True)
  assert not processes.is_live(int(gone.stdout))


def test_runs_with_argument_matches_whole_arguments_only(tmp_path):
  config = str(tmp_path / 'stunnel.conf')
  with workers.sleeper(config) as pid:
    assert processes.runs_with_argument(pid, config)
    assert not processes.runs_with_argument(pid, config + '.old')
    assert not processes.runs_with_argument(pid, str(tmp_path))
