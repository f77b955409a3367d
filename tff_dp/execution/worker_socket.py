"""The worker's private Unix socket: a fresh 0700 directory of ours, and who serves on it.

Who can reach the worker. It serves unauthenticated, plaintext gRPC, and
whoever connects can run TensorFlow graphs (read and write files) as this
user. Loopback is no boundary: every local user can connect to a loopback
port, or bind it first and pose as the worker. So the worker serves on a Unix
domain socket in a directory that only we can enter, and on no TCP port:

* `private_socket_dir` creates a fresh directory with `mkdtemp` (mode 0700,
  a new name, never an existing path) under $XDG_RUNTIME_DIR or the temp
  directory, after checking that no other user can rename things in the
  directories above it, and checks with lstat that it is a real directory,
  ours, mode 0700. Nothing exists at `<dir>/worker.sock` before the worker
  binds it (`worker_launch.start_worker` checks).
* The shim we preload into the worker only (`tff_dp/execution/native/loopback_bind.c`,
  with `TFF_DP_WORKER_SOCKET` set) replaces the worker's wildcard TCP bind by
  a bind of a Unix socket at that path; its gRPC serves on it unchanged.
* Before we dial `unix:<path>` we check that it is a socket owned by us and,
  with SO_PEERCRED, that the process listening on it is our worker's pid
  (`verify_worker_socket`); `worker_connect` also checks that the worker
  listens on no TCP port (an ineffective shim).
* The kernel refuses other users' connect() (no search permission on the
  directory), and they cannot create anything in it, so they can neither
  drive the worker nor pose as it. Root can: root can read our memory anyway.
  The directory is removed when the worker stops; one left behind by a
  trainer that was SIGKILLed is removed by a later start (`_is_stale`).

Why not the other ways: a private network namespace needs CAP_SYS_ADMIN or
unprivileged user namespaces (often disabled), and the worker has no way to
check a per-run secret (no authentication in the binary; it would take a TLS
proxy in front of it). Unix-socket permissions need no privilege and are
enforced by the kernel.
"""

import contextlib
import os
import socket
import stat
import struct
import tempfile
import time

from tff_dp.execution import worker_errors

SOCKET_NAME = 'worker.sock'
_SOCKET_DIR_PREFIX = 'tff-dp-worker-'
# A socket directory this old whose socket refuses connections (or that has
# none) belongs to a trainer that died without cleaning up (SIGKILL); the
# age keeps us off directories of workers still starting.
_STALE_SECONDS = 600.0
# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
_MAX_SOCKET_PATH = 107


def _check_no_other_writer(directory: str) -> None:
  """Refuses a directory another user could rename our directory out of.

  A directory (or one above it) writable by another user, without the
  sticky bit, lets that user replace our private directory by theirs.
  """
  euid = os.geteuid()
  path = os.path.realpath(directory)
  while True:
    info = os.stat(path)
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if info.st_uid not in (0, euid) or (writable_by_others and
                                        not info.st_mode & stat.S_ISVTX):
      raise worker_errors.RuntimeStartError(
          f'{path} can be modified by another user (owner uid '
          f'{info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}), so the TFF '
          f'worker socket cannot be made private below {directory}')
    parent = os.path.dirname(path)
    if parent == path:
      return
    path = parent


def check_private_dir(path: str) -> None:
  """Raises RuntimeStartError unless `path` is a real 0700 directory of ours.

  Args:
    path: The directory that holds (or will hold) the worker's socket.
  """
  try:
    info = os.lstat(path)
  except OSError as e:
    raise worker_errors.RuntimeStartError(
        f'worker socket directory {path}: {e}') from e
  problems = []
  if not stat.S_ISDIR(info.st_mode):
    problems.append('not a directory (a symlink or a file)')
  if info.st_uid != os.geteuid():
    problems.append(f'owned by uid {info.st_uid}, not by us '
                    f'({os.geteuid()})')
  if stat.S_IMODE(info.st_mode) & 0o077:
    problems.append(f'mode {stat.S_IMODE(info.st_mode):o} lets other users '
                    'in (must be 700)')
  if problems:
    raise worker_errors.RuntimeStartError(
        f'worker socket directory {path} is refused: ' + '; '.join(problems))


def _socket_dir_bases() -> list[str]:
  bases = []
  runtime_dir = os.environ.get('XDG_RUNTIME_DIR', '')
  if os.path.isabs(runtime_dir):
    bases.append(runtime_dir)
  for base in (tempfile.gettempdir(), '/tmp'):
    if base not in bases:
      bases.append(base)
  return bases


def _is_stale(directory: str) -> bool:
  """True for a socket directory of ours whose worker is long gone."""
  info = os.lstat(directory)
  if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or
      stat.S_IMODE(info.st_mode) & 0o077 or
      time.time() - info.st_mtime < _STALE_SECONDS or
      not set(os.listdir(directory)) <= {SOCKET_NAME}):
    return False
  path = os.path.join(directory, SOCKET_NAME)
  if not os.path.lexists(path):
    return True
  try:
    socket_peer(path, timeout=1.0)
  except ConnectionRefusedError:
    return True  # Nothing listens: its worker died.
  except OSError:
    return False
  return False  # A live worker (another run of ours).


def _remove_stale_socket_dirs(base: str) -> None:
  """Removes socket directories left by trainers that were SIGKILLed."""
  try:
    names = [n for n in os.listdir(base) if n.startswith(_SOCKET_DIR_PREFIX)]
  except OSError:
    return
  for name in names:
    directory = os.path.join(base, name)
    with contextlib.suppress(OSError):
      if _is_stale(directory):
        with contextlib.suppress(FileNotFoundError):
          os.unlink(os.path.join(directory, SOCKET_NAME))
        os.rmdir(directory)


def private_socket_dir() -> str:
  """Creates the worker's socket directory (module docstring)."""
  problems = []
  for base in _socket_dir_bases():
    # mkdtemp adds 8 characters to the prefix.
    if len(os.path.join(base, _SOCKET_DIR_PREFIX + '12345678',
                        SOCKET_NAME)) > _MAX_SOCKET_PATH:
      problems.append(f'{base}: path too long for a Unix socket')
      continue
    try:
      _check_no_other_writer(base)
      _remove_stale_socket_dirs(base)
      directory = tempfile.mkdtemp(prefix=_SOCKET_DIR_PREFIX, dir=base)
    except (OSError, worker_errors.RuntimeStartError) as e:
      problems.append(str(e))
      continue
    check_private_dir(directory)
    return directory
  raise worker_errors.RuntimeStartError(
      'no directory for the TFF worker socket: ' + '; '.join(problems))


def socket_peer(path: str, timeout: float = 5.0) -> tuple[int, int, int]:
  """(pid, uid, gid) of the process listening on the Unix socket `path`."""
  with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(timeout)
    s.connect(path)
    credentials = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                               struct.calcsize('3i'))
  pid, uid, gid = struct.unpack('3i', credentials)
  return pid, uid, gid


def verify_worker_socket(path: str, pid: int) -> None:
  """Raises RuntimeStartError unless `path` is served by our worker `pid`.

  Args:
    path: The Unix socket the worker was told to serve on.
    pid: The worker's pid.
  """
  check_private_dir(os.path.dirname(path))
  info = os.lstat(path)
  if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
    raise worker_errors.RuntimeStartError(
        f'{path} is not a socket of ours (mode {info.st_mode:o}, owner uid '
        f'{info.st_uid}): refusing to talk to it')
  try:
    peer_pid, peer_uid, _ = socket_peer(path)
  except OSError as e:
    raise worker_errors.RuntimeStartError(
        f'cannot connect to {path}: {e}') from e
  if peer_pid != pid or peer_uid != os.geteuid():
    raise worker_errors.RuntimeStartError(
        f'{path} is served by pid {peer_pid} (uid {peer_uid}), not by the TFF '
        f'worker we started (pid {pid}): refusing to talk to it')
