"""Remote workers for a driver: gRPC channels to `./run.sh worker --tls` services.

Each worker is reached through the driver's stunnel (`driver_tunnels`:
mutual TLS, the worker's certificate checked against our CA and the name
dialled, the driver's presented). A worker that cannot be reached, or whose
TLS handshake fails, within `CONNECT_TIMEOUT_SECONDS` ends the start with
one line naming it (`RuntimeStartError`). During a run, TFF's stub is
wrapped in `remote_executor.GuardedStub`: calls that keep failing on the
transport for `_UNREACHABLE_SECONDS` raise `WorkerUnreachableError` naming
the worker, which TFF does not retry (it retries UNAVAILABLE forever).
"""

import time
from typing import Optional, Sequence

import grpc
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.executors import executors_errors

from tff_dp.execution import driver_tunnels
from tff_dp.execution import remote_executor
from tff_dp.execution import worker_addresses
from tff_dp.execution import worker_connect
from tff_dp.execution import worker_errors

CONNECT_TIMEOUT_SECONDS = 30.0
# How long calls to a remote worker may keep failing before the run ends.
_UNREACHABLE_SECONDS = 30.0
_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class RemoteWorker:
  """A mutual-TLS channel to one worker service, and why its calls fail."""

  def __init__(self, address: worker_addresses.WorkerAddress, target: str,
               tunnels: driver_tunnels.DriverTunnels):
    self.address = address
    self._tunnels = tunnels
    # Plaintext to our own stunnel's private socket; TLS from there on.
    self.channel = grpc.insecure_channel(target, worker_connect.GRPC_OPTIONS)

  def wait_ready(self, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raises RuntimeStartError unless the TLS channel is up in `timeout` s."""
    try:
      grpc.channel_ready_future(self.channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
      said = self._tunnels.last_words(self.address)
      raise worker_errors.RemoteWorkerStartError(
          f'worker {self.address} not reachable over mutual TLS within '
          f'{timeout:.0f} s (is `./run.sh worker --tls --port='
          f'{self.address.port}` running there, and were both certificates '
          'made by the same ./run.sh certs, for this host name?)' +
          (f'; stunnel: {said}' if said else '')) from None

  def stub(self) -> remote_executor.GuardedStub:
    return remote_executor.GuardedStub(
        tff.framework.RemoteExecutorGrpcStub(self.channel), self.diagnose)

  def close(self) -> None:
    self.channel.close()

  def diagnose(self, error: Optional[BaseException],
               failing_for: float) -> Optional[worker_errors.WorkerError]:
    """As `worker_process.Worker.diagnose`, for a worker we cannot see."""
    if error is None:
      return None
    transport = (isinstance(error, executors_errors.RetryableError) or
                 not isinstance(error, grpc.Call) or
                 error.code() in _TRANSPORT_CODES)
    if transport and failing_for >= _UNREACHABLE_SECONDS:
      return worker_errors.WorkerUnreachableError(
          f'worker {self.address} has refused calls for {failing_for:.0f} s '
          f'(last: {_summary(error)})')
    if isinstance(error, ValueError):  # Our channel was closed.
      return worker_errors.WorkerUnreachableError(
          f'the channel to worker {self.address} was closed')
    return None


def _summary(error: BaseException) -> str:
  if isinstance(error, grpc.Call):
    return f'{error.code().name}: {error.details()}'
  return f'{type(error).__name__}: {error}'


def connect_all(
    addresses: Sequence[worker_addresses.WorkerAddress], *, certs_dir: str,
    log_path: str) -> tuple[driver_tunnels.DriverTunnels, list[RemoteWorker]]:
  """The driver's tunnels and a channel to every worker, each up.

  Args:
    addresses: The workers.
    certs_dir: The driver's certificates (`certs.DRIVER_FILES`).
    log_path: The driver's stunnel log.

  Returns:
    The tunnels (stop them last) and one `RemoteWorker` per address.

  Raises:
    RuntimeStartError: Missing certificates, or a worker not reachable
      within `CONNECT_TIMEOUT_SECONDS` (one line naming the first); nothing is
      left open or running then.
  """
  tunnels = driver_tunnels.start_tunnels(addresses,
                                         certs_dir=certs_dir,
                                         log_path=log_path)
  remotes = [
      RemoteWorker(a, t, tunnels) for a, t in zip(addresses, tunnels.targets)
  ]
  try:
    deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
    for remote in remotes:
      remote.wait_ready(max(1.0, deadline - time.monotonic()))
  except BaseException:
    for remote in remotes:
      remote.close()
    tunnels.stop()
    raise
  return tunnels, remotes
