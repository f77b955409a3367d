"""The local TFF runtime: a C++ worker process that tff-dp starts, owns and stops.

TFF's default local context (`tff.backends.native.set_sync_local_cpp_execution_context`)
starts `worker_binary` lazily on first use, lets it inherit the parent's stdout and
stderr, and stops it only from a `__del__`. We have seen the worker outlive a normal
exit of Python, which keeps `python train.py | tee log` from ever returning. Here
the worker is started eagerly from the main thread and is tied to us three ways:

* `local_runtime()` is a context manager that stops the worker on exit,
  whether the body returns or raises (KeyboardInterrupt included): SIGTERM,
  then SIGKILL after a 2 s grace. The worker gets default SIGINT/SIGTERM
  dispositions even when ours are ignored (`nohup`, `&`), and its own process
  group, so a Ctrl-C reaches tff-dp alone, which then stops it;
* the program (`tff_dp.cli.train`) turns SIGTERM/SIGHUP into an exception, so the
  same cleanup runs when a scheduler or terminal ends us;
* the worker is started with the Linux parent-death signal (`PR_SET_PDEATHSIG`),
  so the kernel kills it even when we are killed with SIGKILL.

The worker writes to a log file, never to our stdout/stderr.

Who can reach the worker: only we. It serves on a Unix socket in a
directory that only we can enter, and on no TCP port (`worker_socket`, which
also says why not the other ways). Without the shim (no C compiler at
install time, not Linux) `start_worker` refuses (`ConfinementUnavailableError`)
unless the caller passes `allow_unconfined_worker=True`; only then does the
worker serve on all interfaces, as TFF ships it, with a loud warning on
stderr.

No hangs: a worker that dies or stops answering ends the run with a
one-line `WorkerError`, where TFF would retry its calls forever
(`worker_process`).
"""

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator, Optional

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

from tff_dp.execution import native
from tff_dp.execution import remote_executor
from tff_dp.execution import tcp_listeners
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_process
from tff_dp.execution import worker_socket

# Same limits as TFF's own local context: model updates can be large.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]
_STARTUP_TIMEOUT_SECONDS = 120.0
WORKER_LOG_PREFIX = 'tff-dp: started TFF worker pid '
# Set once the exposure warning was printed: it is about the machine, not the
# run, so repeating it for every worker would only bury it.
_exposure_warned = False


def worker_binary_path() -> str:
  """Returns the path of the C++ worker shipped inside the TFF wheel."""
  package_dir = os.path.dirname(tff.__file__)
  return os.path.join(package_dir, 'data', 'worker_binary')


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


def start_worker(
    *,
    log_path: str,
    max_concurrent_computation_calls: int = -1,
    allow_unconfined_worker: bool = False) -> worker_process.Worker:
  """Starts the C++ worker, confined to a private Unix socket.

  Args:
    log_path: File that receives the worker's stdout and stderr.
    max_concurrent_computation_calls: Passed to the worker; nonpositive means
      no limit.
    allow_unconfined_worker: If the worker cannot be confined (no shim, not
      Linux), start it anyway, serving on all interfaces. Off by default: a
      caller must choose to let every local user and host drive it.

  Returns:
    The started `Worker`; `connect` waits until it serves.

  Raises:
    ConfinementUnavailableError: If it cannot be confined and
      `allow_unconfined_worker` is False; no worker is started.
    RuntimeStartError: If the binary is missing or no private directory for
      its socket can be made.
  """
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
          f'{socket_path} exists before the worker '
          'started: refusing to use it')
    with open(log_path, 'ab') as log:
      process = subprocess.Popen(
          _worker_command(args),
          stdin=subprocess.DEVNULL,
          stdout=log,
          stderr=subprocess.STDOUT,
          close_fds=True,
          env=_worker_environment(shim, socket_path),
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
  return worker_process.Worker(process,
                               port,
                               log_path,
                               socket_dir=socket_dir,
                               shim=shim,
                               shim_missing_reason=reason or '',
                               allow_unconfined=allow_unconfined_worker)


def warn_if_exposed(worker: worker_process.Worker) -> bool:
  """Warns once per process if a serving worker is not confined.

  Args:
    worker: A worker that already serves.

  Returns:
    True if other users or hosts can reach it (it serves on TCP).
  """
  global _exposure_warned
  if worker.confined():
    return False
  if not _exposure_warned:
    _exposure_warned = True
    addresses = worker.listening_addresses() or ['::']
    where = ', '.join(
        f'[{a}]:{worker.port}' if ':' in a else f'{a}:{worker.port}'
        for a in addresses)
    who = 'every local user'
    if not all(tcp_listeners.is_loopback(a) for a in addresses):
      who += ' and other hosts'
    print(
        f'tff-dp: WARNING: the TFF worker (pid {worker.pid}) serves '
        f'unauthenticated gRPC on {where}, reachable by {who}: anyone who '
        'can connect can run computations as this user (allowed by '
        f'--allow_unconfined_worker). Cause: {worker.shim_missing_reason}. '
        'See README, "Security notes".',
        file=sys.stderr,
        flush=True)
  return True


def _check_starting(worker: worker_process.Worker, deadline: float) -> None:
  """Raises RuntimeStartError if the worker died or start-up took too long."""
  if not worker.alive():
    raise worker_errors.RuntimeStartError(
        f'the TFF worker (pid {worker.pid}) '
        f'{worker_errors.describe_exit(worker.returncode())} during start-up; see '
        f'{worker.log_path}')
  if time.monotonic() > deadline:
    raise worker_errors.RuntimeStartError(
        f'the TFF worker (pid {worker.pid}) did not serve within '
        f'{_STARTUP_TIMEOUT_SECONDS:.0f} s; see {worker.log_path}')


def _wait_for_socket(worker: worker_process.Worker, deadline: float) -> None:
  """Waits until our worker, and only it, listens on its Unix socket."""
  while True:
    _check_starting(worker, deadline)
    if worker.listening_addresses():
      reason = (f'the worker shim {worker.shim} was preloaded but the worker '
                f'listens on TCP port {worker.port} anyway; see '
                f'{worker.log_path}')
      if not worker.allow_unconfined:
        raise worker_errors.ConfinementUnavailableError(
            worker_errors.refusal(reason))
      worker.unconfine(reason)
      return
    if os.path.lexists(worker.socket_path):
      try:
        worker_socket.socket_peer(worker.socket_path)
      except ConnectionRefusedError:
        pass  # Bound, not yet listening.
      else:
        worker_socket.verify_worker_socket(worker.socket_path, worker.pid)
        return
    time.sleep(worker_process.POLL_SECONDS)


def connect(worker: worker_process.Worker) -> remote_executor.GuardedStub:
  """Waits until `worker` serves; returns a stub whose failures end the run.

  Args:
    worker: A worker from `start_worker`. It is not stopped on error; the
      caller owns it (`local_runtime` stops it).

  Returns:
    TFF's gRPC stub to the worker, guarded (`Worker.diagnose`).

  Raises:
    RuntimeStartError: If the worker died, did not serve in time, or is not
      the one serving on its socket.
  """
  deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
  if worker.socket_path is not None:
    _wait_for_socket(worker, deadline)
  channel = grpc.insecure_channel(worker.target, _GRPC_OPTIONS)
  worker.watch(channel)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  while not stub.is_ready:
    _check_starting(worker, deadline)
    time.sleep(worker_process.POLL_SECONDS)
  return remote_executor.GuardedStub(stub, worker.diagnose)


# Executors (one per number of TFF clients) kept open on the worker: enough
# for a run's initialize, training rounds (a cohort of one or two sizes on the
# grouped path) and federated evaluation; more varied cohort sizes (Poisson
# sampling, one client per call) re-create their executor on the worker.
_MAX_EXECUTORS = 8


def execution_context(stub) -> tff.framework.SyncExecutionContext:
  """The same context TFF's local C++ context builds, on our own worker.

  Args:
    stub: A `remote_executor.GuardedStub` from `connect` (or any object with
      the methods of TFF's `RemoteExecutorGrpcStub`).

  Returns:
    The execution context.
  """

  def stack_fn(cardinalities):
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = remote_executor.CachingRemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  factory = remote_executor.ClosingExecutorFactory(stack_fn,
                                                   max_executors=_MAX_EXECUTORS)
  return tff.framework.SyncExecutionContext(
      executor_fn=factory,
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def disable_default_context() -> None:
  """Makes TFF computations outside `local_runtime` fail loudly.

  Importing TFF installs a default context that starts its own worker on
  first use and never reliably stops it; a computation that slips outside
  our runtime (e.g. `process.initialize()`) would silently leave that worker
  behind. Programs call this once at start-up.
  """
  tff.framework.set_default_context(runtime_error_context.RuntimeErrorContext())


@contextlib.contextmanager
def local_runtime(
    *,
    log_path: str,
    max_concurrent_computation_calls: int = -1,
    allow_unconfined_worker: bool = False) -> Iterator[worker_process.Worker]:
  """Runs the body with TFF computations executing on a worker we own.

  Args:
    log_path: File that receives the worker's output.
    max_concurrent_computation_calls: Passed to the worker.
    allow_unconfined_worker: See `start_worker`.

  Yields:
    The running `Worker`; it is stopped when the body exits in any way.

  Raises:
    ConfinementUnavailableError: See `start_worker`.
    RuntimeStartError: If the worker does not come up.
    WorkerDiedError, WorkerUnreachableError: From the body's computations,
      when the worker exits or stops answering.
  """
  worker = start_worker(
      log_path=log_path,
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      allow_unconfined_worker=allow_unconfined_worker)
  try:
    stub = connect(worker)
    warn_if_exposed(worker)
    tff.framework.set_default_context(execution_context(stub))
    yield worker
  finally:
    # Computations invoked after this point fail loudly instead of silently
    # starting TFF's unmanaged default worker.
    tff.framework.set_default_context(
        runtime_error_context.RuntimeErrorContext())
    worker.stop()
