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
install time, not Linux) it is not started (`worker_launch`) unless the
caller passes `allow_unconfined_worker=True`.

No hangs: a worker that dies or stops answering ends the run with a
one-line `WorkerError`, where TFF would retry its calls forever
(`worker_process`).
"""

import contextlib
import os
import sys
import time
from typing import Iterator

import grpc
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

from tff_dp.execution import remote_executor
from tff_dp.execution import tcp_listeners
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_launch
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
# Set once the exposure warning was printed: it is about the machine, not the
# run, so repeating it for every worker would only bury it.
_exposure_warned = False


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
    worker: A worker from `worker_launch.start_worker`. It is not stopped on
      error; the caller owns it (`local_runtime` stops it).

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
    allow_unconfined_worker: See `worker_launch.start_worker`.

  Yields:
    The running `Worker`; it is stopped when the body exits in any way.

  Raises:
    ConfinementUnavailableError: See `worker_launch.start_worker`.
    RuntimeStartError: If the worker does not come up.
    WorkerDiedError, WorkerUnreachableError: From the body's computations,
      when the worker exits or stops answering.
  """
  worker = worker_launch.start_worker(
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
