"""Only the trainer that started a TFF worker can reach it, and it cannot be faked.

The red team's proof of concept (issue 14): as user `nobody`, connect to a
running trainer's worker and have it run a computation (it read /etc/shadow).
Here the same attack, as `nobody`, gets no connection to a worker that
tff_dp.execution.worker_launch started, cannot list or plant anything in the worker's socket
directory, and its gRPC call fails; the same script as the trainer's user
does reach the worker, and as `nobody` it reaches an unconfined worker (the
controls: the attack works when nothing stops it). The other tests check
that a socket directory or socket path that another user could have
prepared is refused.
"""

import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from tff_dp.execution import native
from tff_dp.execution import worker_connect
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_launch
from tff_dp.execution import worker_socket

_NOBODY = 65534

# Connects to a worker's gRPC target, tries to squat its socket directory,
# and asks the worker for an executor: a real call on the worker, the first
# step of any computation. Needs nothing but grpc.
_ATTACK = r'''
import errno, os, socket, sys
sys.path.insert(0, sys.argv[2])
target = sys.argv[1]
print('euid', os.geteuid(), 'egid', os.getegid())
def attempt(name, fn):
  try:
    fn()
    print(name, 'ok')
  except OSError as e:
    print(name, errno.errorcode.get(e.errno, e.errno))
if target.startswith('unix:'):
  path = target[len('unix:'):]
  directory = os.path.dirname(path)
  attempt('connect', lambda: socket.socket(socket.AF_UNIX).connect(path))
  attempt('list', lambda: os.listdir(directory))
  squat = os.path.join(directory, 'squat.sock')
  attempt('squat', lambda: socket.socket(socket.AF_UNIX).bind(squat))
  if os.path.exists(squat):
    os.unlink(squat)  # The control (the owner) may; leave no trace.
import grpc
channel = grpc.insecure_channel(target)
get_executor = channel.unary_unary(
    '/tensorflow_federated.v0.ExecutorGroup/GetExecutor')
try:
  # GetExecutorRequest(cardinalities={CLIENTS: 0}), as TFF serializes it.
  response = get_executor(b'\n\x0b\n\t\n\x07clients', timeout=10)
  print('rpc ok', b'clients=0' in response)
except grpc.RpcError as e:
  print('rpc', e.code().name)
'''


def _grpc_path() -> str:
  import grpc  # pylint: disable=g-import-not-at-top
  return os.path.dirname(os.path.dirname(grpc.__file__))


# Drops to nobody (groups, then gid, then uid), then execs argv[1:]. Why a
# separate interpreter rather than a preexec_fn: a preexec_fn makes pytest
# fork() while its gRPC channels are open, and the child can deadlock in
# gRPC's fork handlers before it ever runs the hook (seen here).
_AS_NOBODY = r"""
import os, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.execv(sys.argv[1], sys.argv[1:])
"""


def _run(python: str, code: str, *args: str, as_nobody: bool):
  command = [python, '-S', '-c', code, *args]
  if as_nobody:
    command = [sys.executable, '-I', '-S', '-c', _AS_NOBODY, *command]
  return subprocess.run(command,
                        capture_output=True,
                        text=True,
                        timeout=120,
                        check=False,
                        cwd='/',
                        env={'PATH': '/usr/bin:/bin'})


def _attack(python: str, target: str, *, as_nobody: bool) -> list[str]:
  result = _run(python, _ATTACK, target, _grpc_path(), as_nobody=as_nobody)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def _python_for_nobody() -> str:
  """A Python of our version that `nobody` can run and import grpc with."""
  version = f'{sys.version_info.major}.{sys.version_info.minor}'
  candidates = [
      os.path.realpath(sys.executable),
      shutil.which(f'python{version}', path='/usr/bin:/bin') or '',
      f'/usr/local/bin/python{version}'
  ]
  for python in candidates:
    if python and os.path.isfile(python) and _run(
        python,
        'import sys; sys.path.insert(0, sys.argv[1]); import grpc',
        _grpc_path(),
        as_nobody=True).returncode == 0:
      return python
  pytest.skip(f'no Python {version} that user nobody can run with our grpc '
              f'(tried {candidates})')


@pytest.mark.tff
def test_another_user_can_neither_reach_nor_squat_the_worker(
    tmp_path, monkeypatch):
  if os.geteuid() != 0:
    pytest.skip('needs root, to run the attack as user nobody')
  python = _python_for_nobody()
  worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'))
  try:
    worker_connect.connect(worker)
    attacked = _attack(python, worker.target, as_nobody=True)
    assert attacked == [
        f'euid {_NOBODY} egid {_NOBODY}',
        'connect EACCES',
        'list EACCES',
        'squat EACCES',
        'rpc UNAVAILABLE',
    ]
    # Control: the same script, as the trainer's user, reaches the worker.
    assert _attack(python, worker.target, as_nobody=False)[1:] == [
        'connect ok', 'list ok', 'squat ok', 'rpc ok True'
    ]
    assert worker.alive()
  finally:
    worker.stop()
  # Control: as nobody, the script drives a worker that is not confined
  # (what every worker was before; allowed only by an explicit opt-in).
  monkeypatch.setattr(native, 'loopback_bind_library', lambda: None)
  monkeypatch.setattr(worker_connect, '_exposure_warned', True)  # Quiet.
  exposed = worker_launch.start_worker(log_path=str(tmp_path / 'exposed.log'),
                                       allow_unconfined_worker=True)
  try:
    worker_connect.connect(exposed)
    assert _attack(python, exposed.target, as_nobody=True) == [
        f'euid {_NOBODY} egid {_NOBODY}', 'rpc ok True'
    ]
  finally:
    exposed.stop()


@pytest.mark.tff
def test_socket_directory_is_fresh_private_and_removed_on_stop(tmp_path):
  worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'))
  try:
    worker_connect.connect(worker)
    directory = os.lstat(worker.socket_dir)
    assert stat.S_ISDIR(directory.st_mode)
    assert directory.st_uid == os.geteuid()
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert os.listdir(
        worker.socket_dir) == [os.path.basename(worker.socket_path)]
    sock = os.lstat(worker.socket_path)
    assert stat.S_ISSOCK(sock.st_mode) and sock.st_uid == os.geteuid()
    # The kernel's word on who serves it: our worker.
    assert worker_socket.socket_peer(worker.socket_path)[:2] == (worker.pid,
                                                                 os.geteuid())
  finally:
    worker.stop()
  assert not os.path.lexists(worker.socket_dir)


@pytest.mark.parametrize('mode', [0o755, 0o710, 0o701])
def test_a_directory_others_can_enter_is_refused(tmp_path, mode):
  directory = tmp_path / 'sockets'
  directory.mkdir()
  directory.chmod(mode)
  with pytest.raises(worker_errors.RuntimeStartError, match='must be 700'):
    worker_socket.check_private_dir(str(directory))
  directory.chmod(0o700)
  # The same, private: accepted.
  worker_socket.check_private_dir(str(directory))


def test_a_directory_of_another_user_or_a_symlink_is_refused(tmp_path):
  good = tmp_path / 'good'
  good.mkdir(mode=0o700)
  link = tmp_path / 'link'
  link.symlink_to(good)
  with pytest.raises(worker_errors.RuntimeStartError, match='not a directory'):
    worker_socket.check_private_dir(str(link))
  if os.geteuid() != 0:
    pytest.skip('needs root to give a directory to another user')
  theirs = tmp_path / 'theirs'
  theirs.mkdir(mode=0o700)
  os.chown(theirs, _NOBODY, _NOBODY)
  with pytest.raises(worker_errors.RuntimeStartError,
                     match='owned by uid 65534'):
    worker_socket.check_private_dir(str(theirs))


def test_a_base_directory_others_can_write_is_not_used(tmp_path, monkeypatch):
  # Another user who can write the directory above ours could rename ours
  # away and put theirs, with their socket, in its place.
  shared = tmp_path / 'shared'
  shared.mkdir()
  shared.chmod(0o777)  # World-writable, no sticky bit.
  monkeypatch.setenv('XDG_RUNTIME_DIR', str(shared))
  directory = worker_socket.private_socket_dir()
  try:
    assert not directory.startswith(str(shared))
    worker_socket.check_private_dir(directory)
  finally:
    os.rmdir(directory)
  with pytest.raises(worker_errors.RuntimeStartError, match='another user'):
    worker_socket._check_no_other_writer(str(shared))  # pylint: disable=protected-access
  shared.chmod(0o1777)  # Sticky, as /tmp: others cannot rename our entries.
  worker_socket._check_no_other_writer(str(shared))  # pylint: disable=protected-access


def test_a_path_that_exists_before_the_worker_is_refused(tmp_path, monkeypatch):
  directory = tmp_path / 'sockets'
  directory.mkdir(mode=0o700)
  (directory / 'worker.sock').write_text('planted')
  monkeypatch.setattr(worker_socket, 'private_socket_dir',
                      lambda: str(directory))
  log_path = tmp_path / 'worker.log'
  with pytest.raises(worker_errors.RuntimeStartError, match='exists before'):
    worker_launch.start_worker(log_path=str(log_path))
  assert not log_path.exists()  # No worker was started.


def test_a_socket_served_by_another_process_is_refused(tmp_path):
  directory = tmp_path / 'sockets'
  directory.mkdir(mode=0o700)
  path = str(directory / 'worker.sock')
  with socket.socket(socket.AF_UNIX) as impostor:
    impostor.bind(path)
    impostor.listen(1)
    # Served, but by us (the impostor), not by the worker's pid.
    not_the_server = os.getppid()
    with pytest.raises(worker_errors.RuntimeStartError,
                       match=f'served by pid {os.getpid()}'):
      worker_socket.verify_worker_socket(path, not_the_server)
    # The right pid passes.
    worker_socket.verify_worker_socket(path, os.getpid())
  os.unlink(path)
  with open(path, 'w') as f:
    f.write('not a socket')
  with pytest.raises(worker_errors.RuntimeStartError,
                     match='not a socket of ours'):
    worker_socket.verify_worker_socket(path, os.getpid())


def test_stale_socket_dirs_are_removed_and_others_kept(tmp_path, monkeypatch):
  # A trainer killed with SIGKILL cannot remove its socket directory; the
  # next start removes it, and nothing else.
  monkeypatch.setenv('XDG_RUNTIME_DIR', str(tmp_path))
  old = 1_000_000_000  # 2001: far past the staleness age.

  def socket_dir(name, *, listening=False, age=old):
    directory = tmp_path / name
    directory.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(directory / 'worker.sock'))
    if listening:
      sock.listen(1)
    else:
      sock.close()  # The path stays; nothing listens (its worker died).
    if age is not None:
      os.utime(directory, (age, age))
    return directory, sock

  dead, _ = socket_dir('tff-dp-worker-dead0000')
  fresh, _ = socket_dir('tff-dp-worker-fresh000', age=None)  # Still starting?
  live, listener = socket_dir('tff-dp-worker-live0000', listening=True)
  other, _ = socket_dir('tff-dp-worker-other000')
  (other / 'notes.txt').write_text('not only a socket: not ours to remove')
  os.utime(other, (old, old))
  created = worker_socket.private_socket_dir()
  try:
    assert os.path.dirname(created) == str(tmp_path)
    assert not dead.exists()
    assert fresh.exists() and live.exists() and other.exists()
  finally:
    listener.close()
    os.rmdir(created)
