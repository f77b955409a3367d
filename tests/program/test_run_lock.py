"""One trainer per run directory (`run_lock`, `run_dirs.open_run_dir`).

The accountant charges each round once; two trainers in one directory would
release rounds twice. These tests pin that a second trainer is refused with
the holder's pid before it writes anything, and that generated run names
never share (and so never resume) a directory. Pure Python and one
start-up of the training program that stops before TensorFlow (~2 s); the
race of two real trainers is in the slow tier.
"""

import csv
import datetime
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp.cli import exits
from tff_dp.cli import train
from tff_dp.program import run_dirs
from tff_dp.program import run_lock

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _snapshot(root):
  """Every file and directory under `root`: its bytes (files) and mtime."""
  found = {}
  for parent, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(parent, name)
      data = None if name in dirs else open(path, 'rb').read()
      found[os.path.relpath(path, root)] = (data, os.stat(path).st_mtime_ns)
  return found


def _a_run_dir(root):
  """A run directory as an earlier run left it (marker, rows, a checkpoint)."""
  run_dir = os.path.join(root, 'run')
  with run_dirs.open_run_dir(str(root), 'run', default_name='unused'):
    pass
  os.makedirs(os.path.join(run_dir, 'checkpoints', 'round_00000002'))
  for name, text in (('metrics.csv', 'round,eval/loss\n1,2.0\n2,1.5\n'),
                     ('ledger.json', '{"rounds": 2}\n')):
    with open(os.path.join(run_dir, name), 'w') as f:
      f.write(text)
  return run_dir


def test_a_second_holder_is_refused_and_told_the_pid(tmp_path):
  with run_lock.RunLock(str(tmp_path)) as lock:
    # A second open file description conflicts even in the same process.
    with pytest.raises(run_lock.RunLockedError) as raised:
      run_lock.RunLock(str(tmp_path)).acquire()
    assert raised.value.pid == os.getpid()
    assert f'{tmp_path} is in use' in str(raised.value)
    assert f'(pid {os.getpid()})' in str(raised.value)
    assert run_lock.live_holder(str(tmp_path)) == os.getpid()
    # Held by no child process: the TFF worker is started by fork and exec.
    assert not os.get_inheritable(lock._fd)  # pylint: disable=protected-access
  assert run_lock.live_holder(str(tmp_path)) is None
  with run_lock.RunLock(str(tmp_path)):
    pass  # Released on exit: the next trainer gets it.


def test_the_lock_dies_with_its_process(tmp_path):
  # SIGKILL included: the kernel drops a flock with the last descriptor.
  holder = subprocess.Popen([
      sys.executable, '-c', 'import sys; from tff_dp.program import run_lock; '
      f'run_lock.RunLock({str(tmp_path)!r}).acquire(); print(flush=True); '
      'sys.stdin.read()'
  ],
                            cwd=REPO_ROOT,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            text=True)
  holder.stdout.readline()
  assert run_lock.live_holder(str(tmp_path)) == holder.pid
  with pytest.raises(run_lock.RunLockedError, match=f'pid {holder.pid}'):
    run_lock.RunLock(str(tmp_path)).acquire()
  holder.kill()
  holder.wait()
  with run_lock.RunLock(str(tmp_path)):
    assert run_lock.live_holder(str(tmp_path)) == os.getpid()


@pytest.mark.e2e
def test_a_locked_run_directory_is_left_byte_identical(tmp_path):
  run_dir = _a_run_dir(tmp_path)
  with run_lock.RunLock(run_dir):
    before = _snapshot(tmp_path)
    # The library's path: the lock is taken before the resume is read.
    with pytest.raises(exits.UserError, match=f'pid {os.getpid()}'):
      train.open_run_dir(str(tmp_path), 'run')
    # The program's path: refused in its first second, exit 2, one line.
    result = programs.run_train(f'--flagfile={_SMOKE}',
                                f'--output_dir={tmp_path}',
                                '--run_name=run',
                                timeout=120)
    after = _snapshot(tmp_path)
  assert result.returncode == exits.EXIT_USAGE, result.stderr
  assert result.stderr == (
      f'tff-dp: error: run directory {run_dir} is in use by another tff-dp '
      f'process (pid {os.getpid()}); one process at a time writes in a run '
      'directory: wait for it to end, or choose another --run_name\n')
  assert after == before


def test_a_holder_writing_its_first_files_is_named_not_called_foreign(tmp_path):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  with run_lock.RunLock(str(run_dir)):
    # The run marker as `atomic_io` writes it: a temporary file first.
    (run_dir / '.tff-dp-run.x1y2.tmp').write_text('run_id=')
    with pytest.raises(run_dirs.RunDirError, match=f'pid {os.getpid()}'):
      run_dirs.open_run_dir(str(tmp_path), 'run', default_name='unused')
  with pytest.raises(run_dirs.RunDirError, match='not a tff-dp run directory'):
    run_dirs.open_run_dir(str(tmp_path), 'run', default_name='unused')


def test_generated_names_in_the_same_second_get_their_own_directories(tmp_path):
  now = datetime.datetime(2026, 12, 5, 10, 0, 0, tzinfo=datetime.timezone.utc)
  name = run_dirs.default_run_name(['--flagfile=configs/smoke.cfg'], now)
  assert name == 'smoke-20261205-100000'
  with run_dirs.open_run_dir(str(tmp_path), '', default_name=name) as first:
    with run_dirs.open_run_dir(str(tmp_path), '', default_name=name) as second:
      assert (first.name, second.name) == (name, f'{name}-2')
      assert not first.resume and not second.resume
  # Even once the first run has ended, a generated name never resumes it.
  with run_dirs.open_run_dir(str(tmp_path), '', default_name=name) as third:
    assert (third.name, third.resume) == (f'{name}-3', False)
  # A name the user gives resumes its directory.
  with run_dirs.open_run_dir(str(tmp_path), name, default_name='x') as again:
    assert (again.name, again.resume) == (name, True)


def test_two_audits_never_share_an_output_directory(tmp_path):
  """Nor does an audit write into an earlier one's (`--run_name`)."""
  # `tff_dp.cli.audit._run_dir` is this call with its generated name.
  root = str(tmp_path)
  first_dir, first = run_dirs.open_locked_dir(root, '', default_name='audit-x')
  with first:
    second_dir, second = run_dirs.open_locked_dir(root,
                                                  '',
                                                  default_name='audit-x')
    with second:
      assert (os.path.basename(first_dir),
              os.path.basename(second_dir)) == ('audit-x', 'audit-x-2')
    with pytest.raises(run_dirs.RunDirError, match=f'pid {os.getpid()}'):
      run_dirs.open_locked_dir(root, 'audit-x', default_name='unused')
  # Released with the audit, its outputs are still never written over.
  with open(os.path.join(first_dir, 'audit.json'), 'w') as f:
    f.write('{}\n')
  before = _snapshot(root)
  with pytest.raises(run_dirs.RunDirError) as raised:
    run_dirs.open_locked_dir(root, 'audit-x', default_name='unused')
  assert str(raised.value) == (
      f'--run_name=audit-x: {first_dir} exists (an earlier output?) and is '
      'never written over; choose another --run_name or remove it')
  assert _snapshot(root) == before
  # A new name is created (its output directory too) and locked.
  new_dir, new = run_dirs.open_locked_dir(os.path.join(root, 'out'),
                                          'audit-y',
                                          default_name='unused')
  with new:
    assert new_dir == os.path.join(root, 'out', 'audit-y')
    assert os.listdir(new_dir) == [run_lock.LOCK_FILE]


def _rounds(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return [int(row['round']) for row in csv.DictReader(f)]


@pytest.mark.e2e
@pytest.mark.slow
def test_resuming_a_run_that_still_runs_is_refused(tmp_path):
  """The reviewer's reproduction: a second `train` while the first runs."""
  args = (f'--flagfile={_SMOKE}', f'--output_dir={tmp_path}', '--run_name=dup',
          '--rounds=120')
  run_dir = os.path.join(tmp_path, 'dup')
  first = programs.start_train(*args)
  try:
    deadline = time.monotonic() + 240
    while not os.path.exists(os.path.join(run_dir, 'metrics.csv')):
      assert first.poll() is None, first.communicate()
      assert time.monotonic() < deadline, 'no round released in 240 s'
      time.sleep(0.2)
    # Measured at load 6 on 2 cores (60 rounds): refused 2.0 s after the
    # first's round 1, which then ran 10.4 s more; 120 rounds double that.
    second = programs.run_train(*args, timeout=120)
    assert first.poll() is None, 'the first run ended before the second began'
    out, err = first.communicate(timeout=600)
  finally:
    if first.poll() is None:
      first.kill()
      first.communicate()
  assert second.returncode == exits.EXIT_USAGE, second.stderr
  assert second.stderr.splitlines() == [
      f'tff-dp: error: run directory {run_dir} is in use by another tff-dp '
      f'process (pid {first.pid}); one process at a time writes in a run '
      'directory: wait for it to end, or choose another --run_name'
  ]
  assert 'resuming after' not in second.stdout
  assert first.returncode == 0, err[-3000:]
  assert 'resuming after' not in out
  assert _rounds(run_dir) == list(range(1, 121))
