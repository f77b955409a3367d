"""Bringing a started worker into service: wait until it serves, check it is ours, warn if exposed.

Before we dial a confined worker's `unix:<path>`, `worker_socket` checks that
the socket is ours and that our worker's pid listens on it; a worker that
listens on TCP anyway (an ineffective shim) is refused unless the caller
allowed an unconfined one. Start-up waits have a deadline
(`_STARTUP_TIMEOUT_SECONDS`) and a liveness check, so a worker that dies or
never serves ends the start with `RuntimeStartError`.
"""

import os
import sys
import time

import grpc
import tensorflow_federated as tff

from tff_dp.execution import remote_executor
from tff_dp.execution import tcp_listeners
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_process
from tff_dp.execution import worker_socket

# Same limits as TFF's own local context: model updates can be large.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
GRPC_OPTIONS = [
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
        f'{worker_errors.describe_exit(worker.returncode())} during start-up; '
        f'see {worker.log_path}')
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
      error; the caller owns it (`runtime.local_runtime` stops it).

  Returns:
    TFF's gRPC stub to the worker, guarded (`Worker.diagnose`).

  Raises:
    RuntimeStartError: If the worker died, did not serve in time, or is not
      the one serving on its socket.
  """
  deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
  if worker.socket_path is not None:
    _wait_for_socket(worker, deadline)
  channel = grpc.insecure_channel(worker.target, GRPC_OPTIONS)
  worker.watch(channel)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  while not stub.is_ready:
    _check_starting(worker, deadline)
    time.sleep(worker_process.POLL_SECONDS)
  return remote_executor.GuardedStub(stub, worker.diagnose)
