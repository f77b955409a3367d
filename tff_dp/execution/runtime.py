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

The worker writes to a log file, never to our stdout/stderr. It serves on a
Unix socket in a directory only we can enter, and on no TCP port, so no
other user or host can drive it or pose as it; no call on a dead worker
hangs the run. The parts, one module each:

* `worker_launch`: starts the worker, confined by the preloaded shim
  (`tff_dp/execution/native/loopback_bind.c`), tied to our life;
* `worker_socket`: the socket's private directory and who serves on it (the
  threat model, and why not the other ways);
* `worker_connect`: waits until the worker serves, checks that it is ours,
  warns if it is exposed on TCP (`tcp_listeners`);
* `worker_process`: the running `Worker`: stopping it, the watchdog, and
  which failed calls end the run (no hangs);
* `worker_errors`: the errors, each one line;
* this module: the execution context on the worker, and its lifetime.
"""

import contextlib
from typing import Any, Callable, Iterator, Optional

import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

from tff_dp.execution import compiled_forms
from tff_dp.execution import remote_executor
from tff_dp.execution import worker_connect
from tff_dp.execution import worker_launch
from tff_dp.execution import worker_process

# Executors (one per number of TFF clients) kept open on the worker: enough
# for a run's initialize, training rounds (a cohort of one or two sizes on the
# grouped path) and federated evaluation; more varied cohort sizes (Poisson
# sampling, one client per call) re-create their executor on the worker.
_MAX_EXECUTORS = 8


def execution_context(stub) -> tff.framework.SyncExecutionContext:
  """The same context TFF's local C++ context builds, on our own worker.

  Args:
    stub: A `remote_executor.GuardedStub` from `worker_connect.connect` (or
      any object with the methods of TFF's `RemoteExecutorGrpcStub`).

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
      compiler_fn=compiled_forms.compile,
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
      when the worker exits or stops answering (all in `worker_errors`).
  """
  worker = worker_launch.start_worker(
      log_path=log_path,
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      allow_unconfined_worker=allow_unconfined_worker)
  try:
    stub = worker_connect.connect(worker)
    worker_connect.warn_if_exposed(worker)
    # On top of the caller's context, not in place of it: a run inside a
    # process that has its own (a notebook's, a test session's runtime) gives
    # it back when it ends. The programs' own is the failing one
    # (`disable_default_context`), so that a computation invoked later fails
    # loudly instead of silently starting TFF's unmanaged default worker.
    with tff.framework.get_context_stack().install(execution_context(stub)):
      yield worker
  finally:
    worker.stop()


def _async_context(stub) -> tff.framework.AsyncExecutionContext:
  """`execution_context`, asynchronous: for `split_rounds`."""

  def stack_fn(cardinalities):
    # Without a default CLIENTS cardinality every call that has no CLIENTS
    # value (merge, after_merge) fails to build its executor.
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = remote_executor.CachingRemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.AsyncExecutionContext(
      executor_fn=remote_executor.ClosingExecutorFactory(
          stack_fn, max_executors=_MAX_EXECUTORS),
      compiler_fn=compiled_forms.compile,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


@contextlib.contextmanager
def split_runtime(
    *,
    log_path: str,
    workers: str,
    worker_certs: str,
    tunnel_log_path: str,
    on_connect: Optional[Callable[..., Any]] = None,
    on_worker_lost: Optional[Callable[[int, str, Exception], bool]] = None
) -> Iterator[worker_process.Worker]:
  """`local_runtime`, with each round's cohort split across remote workers.

  The driver's own confined worker runs everything but the clients' part of
  a round (`split_rounds`); each remote worker (`./run.sh worker --tls`) is
  reached through the driver's stunnel (`driver_tunnels`).

  Args:
    log_path: The driver's local worker's log.
    workers: 'HOST:PORT,...' (`worker_addresses.parse_workers`).
    worker_certs: Directory of the driver's certificates.
    tunnel_log_path: The driver's stunnel log.
    on_connect: Called once every worker is connected, before the body,
      with (run a no-argument computation on each worker -> the results in
      worker order, the workers' names): e.g. to check which data shard each
      serves (`tff_dp.algorithms.shard_routing`).
    on_worker_lost: None: a worker lost mid-run ends the run. Else the run
      continues without it (`split_rounds.SplitRoundsContext`).

  Yields:
    The driver's local `Worker`.

  Raises:
    RuntimeStartError: A worker not reachable (one line naming it), missing
      certificates, or the local worker not starting.
  """
  from tff_dp.execution import remote_workers  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import split_rounds  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_addresses  # pylint: disable=g-import-not-at-top
  addresses = worker_addresses.parse_workers(workers)
  tunnels, remotes = remote_workers.connect_all(addresses,
                                                certs_dir=worker_certs,
                                                log_path=tunnel_log_path)
  try:
    with local_runtime(log_path=log_path) as worker:
      stub = worker_connect.connect(worker)
      context = split_rounds.SplitRoundsContext(
          [_async_context(remote.stub()) for remote in remotes],
          _async_context(stub),
          execution_context(stub),
          names=[str(address) for address in addresses],
          on_worker_lost=on_worker_lost)
      try:
        if on_connect is not None:
          on_connect(context.invoke_on_each_worker,
                     [str(address) for address in addresses])
        with tff.framework.get_context_stack().install(context):
          yield worker
      finally:
        context.close()
  finally:
    for remote in remotes:
      remote.close()
    tunnels.stop()
