"""Starting the C++ worker: confined to its private socket, tied to our life, logging to a file.

The worker is started eagerly, from the main thread, in its own process
group (a Ctrl-C reaches tff-dp alone, which then stops it), with default
SIGINT/SIGTERM dispositions even when ours are ignored (`nohup`, `&`), and
with the Linux parent-death signal (`PR_SET_PDEATHSIG`), so the kernel
kills it even when we are killed with SIGKILL. It writes to a log file,
never to our stdout/stderr.

The shim `tff_dp/execution/native/loopback_bind.c` is preloaded into the
worker only, to serve on a Unix socket in a private directory
(`worker_socket`). Without the shim (no C compiler at install time, not
Linux) `start_worker` refuses (`ConfinementUnavailableError`) unless the
caller passes `allow_unconfined_worker=True`; only then does the worker serve
on all interfaces, as TFF ships it, with a loud warning on stderr
(`worker_connect.warn_if_exposed`).
"""

import contextlib
import dataclasses
import importlib.util
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Optional

import portpicker

from tff_dp.execution import native
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_socket

if TYPE_CHECKING:
  from tff_dp.execution import worker_process

WORKER_LOG_PREFIX = 'tff-dp: started TFF worker pid '


def worker_binary_path() -> str:
  """Returns the path of the C++ worker shipped inside the TFF wheel.

  Found without importing TFF (seconds), so that `prestart` can start the
  worker before the program imports TensorFlow.
  """
  spec = importlib.util.find_spec('tensorflow_federated')
  if spec is None or spec.origin is None:
    raise worker_errors.RuntimeStartError('tensorflow_federated not found')
  return os.path.join(os.path.dirname(spec.origin), 'data', 'worker_binary')


# Runs in a fresh interpreter (no threads, no gRPC) between our vfork and the
# worker's exec: argv = [parent pid, worker binary, its arguments...].
_EXEC_WORKER = r"""
import ctypes, os, signal, sys
# Ignored signals stay ignored across exec (a trainer under nohup or `&`
# would have a worker that ignores our SIGTERM); blocked ones stay blocked.
# SIGPIPE and SIGXFSZ: Python ignores them, subprocess would restore them.
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
  signal.signal(sig, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
if sys.platform.startswith('linux'):
  ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
  if os.getppid() != int(sys.argv[1]):
    os._exit(1)  # tff-dp died before prctl: nobody would stop the worker.
os.execv(sys.argv[2], sys.argv[2:])
"""


def _worker_command(args: list[str]) -> list[str]:
  """The command that starts the worker `args` through `_EXEC_WORKER`.

  Why not a `preexec_fn`: it makes subprocess fork() rather than vfork(),
  and a fork() runs gRPC's fork handlers, which can deadlock the child of a
  process that uses gRPC (seen here: such a child hung in gRPC's handler,
  before exec, while the parent had a channel to a worker open). Without
  `preexec_fn`, subprocess uses
  vfork() and the child runs no Python code of ours before exec; the work of
  the hook moves to a small interpreter that then execs the worker (same
  pid, same process group, the parent-death signal survives exec).

  Args:
    args: The worker's argv.

  Returns:
    The argv to hand to `subprocess.Popen`.
  """
  return [
      sys.executable, '-I', '-S', '-c', _EXEC_WORKER,
      str(os.getpid()), *args
  ]


def tied_command(args: list[str]) -> list[str]:
  """`args` started as the worker is: tied to our life (`_worker_command`).

  Also used for the worker's TLS proxy (`tls_proxy`), which must not outlive
  us either.
  """
  return _worker_command(args)


def _worker_environment(shim: Optional[str],
                        socket_path: Optional[str]) -> dict[str, str]:
  """Our environment, plus the shim preloaded; for the worker only."""
  env = dict(os.environ)
  env.pop(native.SOCKET_ENV, None)
  if shim is not None:
    # Ours first; a preload the user set (e.g. an allocator) is kept.
    env['LD_PRELOAD'] = ' '.join(
        p for p in (shim, env.get('LD_PRELOAD', '')) if p)
  if socket_path is not None:
    env[native.SOCKET_ENV] = socket_path
  return env


@dataclasses.dataclass
class _Launched:
  """A started worker process, before it is wrapped in a `Worker`."""
  process: subprocess.Popen
  port: int
  socket_dir: Optional[str]
  shim: Optional[str]
  reason: Optional[str]
  allow_unconfined: bool


# (log_path, max calls, allow_unconfined, cwd) and the worker `prestart`
# started, for the next `start_worker` with those arguments to adopt.
_prestarted: Optional[tuple[tuple, _Launched]] = None


def prestart(*, log_path: str, allow_unconfined_worker: bool = False) -> None:
  """Starts the local worker now; the next matching `start_worker` adopts it.

  The worker binary takes ~0.5 s to load and serve; started before the
  program imports TensorFlow and builds its process (seconds), it is ready
  when the runtime connects. A worker that cannot start now is left to
  `start_worker`, which reports why. `discard_prestarted` stops a worker nobody
  adopted (the run failed before its runtime started); the parent-death
  signal stops it if we die.
  """
  global _prestarted
  discard_prestarted()
  try:
    launched = _launch(log_path=log_path,
                       max_concurrent_computation_calls=-1,
                       allow_unconfined_worker=allow_unconfined_worker,
                       cwd=None)
  except (worker_errors.RuntimeStartError, OSError):
    return  # `start_worker` tries again, where its errors are reported.
  _prestarted = ((log_path, -1, allow_unconfined_worker, None), launched)


def discard_prestarted() -> None:
  """Stops the `prestart`ed worker if no `start_worker` adopted it."""
  global _prestarted
  if _prestarted is None:
    return
  launched = _prestarted[1]
  _prestarted = None
  launched.process.kill()
  launched.process.wait()
  if launched.socket_dir is not None:
    with contextlib.suppress(OSError):  # Left alone if not empty.
      os.rmdir(launched.socket_dir)


def _adopt(arguments: tuple) -> Optional[_Launched]:
  """The prestarted worker, if started with `arguments` and still alive."""
  global _prestarted
  if _prestarted is None or _prestarted[0] != arguments:
    return None
  if _prestarted[1].process.poll() is not None:
    discard_prestarted()  # It died: start a new one (its log says why).
    return None
  launched, _prestarted = _prestarted[1], None
  return launched


def start_worker(*,
                 log_path: str,
                 max_concurrent_computation_calls: int = -1,
                 allow_unconfined_worker: bool = False,
                 cwd: Optional[str] = None) -> 'worker_process.Worker':
  """Starts the C++ worker, confined to a private Unix socket.

  Args:
    log_path: File that receives the worker's stdout and stderr.
    max_concurrent_computation_calls: Passed to the worker; nonpositive means
      no limit.
    allow_unconfined_worker: If the worker cannot be confined (no shim, not
      Linux), start it anyway, serving on all interfaces. Off by default: a
      caller must choose to let every local user and host drive it.
    cwd: The worker's working directory (None: ours). A worker serving a
      data shard runs in a private directory whose `data` holds the shard's
      client files, which computations name through /proc/self/cwd
      (`tff_dp.data.shard_files`).

  Returns:
    The started `Worker`; `worker_connect.connect` waits until it serves.

  Raises:
    ConfinementUnavailableError: If it cannot be confined and
      `allow_unconfined_worker` is False; no worker is started.
    RuntimeStartError: If the binary is missing or no private directory for
      its socket can be made.
  """
  # pylint: disable-next=g-import-not-at-top
  from tff_dp.execution import worker_process  # gRPC and TFF: seconds.
  launched = _adopt(
      (log_path, max_concurrent_computation_calls, allow_unconfined_worker,
       cwd)) or _launch(
           log_path=log_path,
           max_concurrent_computation_calls=(max_concurrent_computation_calls),
           allow_unconfined_worker=allow_unconfined_worker,
           cwd=cwd)
  return worker_process.Worker(launched.process,
                               launched.port,
                               log_path,
                               socket_dir=launched.socket_dir,
                               shim=launched.shim,
                               shim_missing_reason=launched.reason or '',
                               allow_unconfined=launched.allow_unconfined)


def _launch(*, log_path: str, max_concurrent_computation_calls: int,
            allow_unconfined_worker: bool, cwd: Optional[str]) -> _Launched:
  """`start_worker`'s process, started (its refusals raised)."""
  binary = worker_binary_path()
  if not os.path.isfile(binary):
    raise worker_errors.RuntimeStartError(
        f'TFF worker binary not found at {binary}')
  reason = native.confinement_unavailable_reason()
  if reason is not None and not allow_unconfined_worker:
    raise worker_errors.ConfinementUnavailableError(
        worker_errors.refusal(reason))
  shim = None if reason else native.loopback_bind_library()
  socket_dir = None if reason else worker_socket.private_socket_dir()
  socket_path = socket_dir and os.path.join(socket_dir,
                                            worker_socket.SOCKET_NAME)
  port = portpicker.pick_unused_port()
  args = [
      binary,
      f'--port={port}',
      f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
  ]
  try:
    if socket_path and os.path.lexists(socket_path):
      raise worker_errors.RuntimeStartError(
          f'{socket_path} exists before the worker started: refusing to use '
          'it')
    with open(log_path, 'ab') as log:
      process = subprocess.Popen(
          _worker_command(args),
          stdin=subprocess.DEVNULL,
          stdout=log,
          stderr=subprocess.STDOUT,
          close_fds=True,
          env=_worker_environment(shim, socket_path),
          cwd=cwd,
          # Its own group: a Ctrl-C reaches us alone, and we stop it.
          process_group=0)
      # The pid line lets operators (and our tests) find the worker of a run.
      where = f'unix:{socket_path}' if socket_path else f'port {port}'
      log.write(f'{WORKER_LOG_PREFIX}{process.pid} on {where}\n'.encode())
  except BaseException:
    if socket_dir is not None:
      with contextlib.suppress(OSError):  # Left alone if not empty.
        os.rmdir(socket_dir)
    raise
  return _Launched(process, port, socket_dir, shim, reason,
                   allow_unconfined_worker)
