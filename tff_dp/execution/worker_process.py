"""A running TFF worker we own: whether it lives, stopping it, and why its calls fail.

`Worker.stop` ends the worker with SIGTERM, then SIGKILL after a grace, and
removes its socket directory.

No hangs. TFF's execution context retries calls that fail with UNAVAILABLE
forever, so a dead worker used to hang the run. `worker_connect.connect`
wraps TFF's stub in `remote_executor.GuardedStub`, which asks
`Worker.diagnose` about every call; a watchdog thread closes the channel the
moment the worker exits, so that a call in flight fails at once. A worker
that exited raises `WorkerDiedError` (pid, exit status or signal, log path),
one that is alive but keeps refusing calls for `_UNREACHABLE_SECONDS` raises
`WorkerUnreachableError`; TFF retries neither. Start-up waits have a
deadline and a liveness check (`worker_connect`). Calls have no deadline (a
round may rightly take long), so a worker that is alive but never answers
(e.g. stopped with SIGSTOP) is still waited for.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Optional

import grpc
from tensorflow_federated.python.core.impl.executors import executors_errors

from tff_dp.execution import tcp_listeners
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_socket

# SIGTERM ends the worker at once (default disposition, see
# `worker_launch._EXEC_WORKER`); the grace only covers a loaded machine.
_STOP_GRACE_SECONDS = 2.0
_KILL_WAIT_SECONDS = 10.0
# A call that failed on a broken connection is blamed on the worker if it
# exits within this long: the kernel closes a dying process's sockets a
# little before it reports the exit.
_DEATH_GRACE_SECONDS = 2.0
# How long a live worker may keep refusing calls before the run ends.
_UNREACHABLE_SECONDS = 10.0
POLL_SECONDS = 0.05
# An unconfined worker (allow_unconfined_worker=True) serves on "[::]:port";
# dialled as a literal rather than "localhost", whose resolution varies.
_LOOPBACK_TARGET = '127.0.0.1'
# gRPC codes of a broken connection ("Socket closed" when the worker dies
# mid-call, CANCELLED once the watchdog closed the channel). Errors the worker
# itself answers with (e.g. INTERNAL for a failed TF op) are not waited on.
_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class Worker:
  """A running `worker_binary` owned by this process."""

  def __init__(self,
               process: subprocess.Popen,
               port: int,
               log_path: str,
               *,
               socket_dir: Optional[str] = None,
               shim: Optional[str] = None,
               shim_missing_reason: str = '',
               allow_unconfined: bool = False):
    self.process = process
    # The --port it was given; it serves there only when unconfined.
    self.port = port
    self.log_path = log_path
    self.socket_dir = socket_dir
    # The Unix socket it serves on; None if unconfined (TCP on `port`).
    self.socket_path = (os.path.join(socket_dir, worker_socket.SOCKET_NAME)
                        if socket_dir else None)
    # The preloaded shim (None if none) and, if none, why.
    self.shim = shim
    self.shim_missing_reason = shim_missing_reason
    self.allow_unconfined = allow_unconfined
    self._stopping = False
    self._lock = threading.Lock()
    self._channels: list[grpc.Channel] = []
    self._watching = False
    self._exited = threading.Event()  # Set by the watchdog.
    self._exit_code: Optional[int] = None  # As Popen.returncode.

  @property
  def pid(self) -> int:
    return self.process.pid

  @property
  def target(self) -> str:
    """The gRPC target that reaches this worker."""
    if self.socket_path is not None:
      return f'unix:{self.socket_path}'
    return f'{_LOOPBACK_TARGET}:{self.port}'

  def listening_addresses(self) -> list[str]:
    """TCP addresses the worker listens on (in its network namespace)."""
    return tcp_listeners.listening_addresses(self.port, pid=self.pid)

  def confined(self) -> bool:
    """True if it serves on its private Unix socket and on no TCP port."""
    return self.socket_path is not None and not self.listening_addresses()

  def alive(self) -> bool:
    return not self._exited.is_set() and self.process.poll() is None

  def returncode(self) -> Optional[int]:
    """As `Popen.returncode`, once the worker exited; else None."""
    code = self.process.poll()
    return code if code is not None else self._exit_code

  def stop(self) -> None:
    """Stops the worker (SIGTERM, SIGKILL after a grace); removes its socket."""
    self._stopping = True
    try:
      for sig, wait in ((signal.SIGTERM, _STOP_GRACE_SECONDS),
                        (signal.SIGKILL, _KILL_WAIT_SECONDS)):
        if self.process.poll() is not None:
          break
        try:
          self.process.send_signal(sig)
          self.process.wait(timeout=wait)
          break
        except subprocess.TimeoutExpired:
          continue
        except ProcessLookupError:
          break
    finally:
      self._close_channels()
      self._remove_socket_dir()

  def unconfine(self, reason: str) -> None:
    """Records that the worker serves on TCP after all (`worker_connect`)."""
    self._remove_socket_dir()
    self.socket_path = None
    self.shim_missing_reason = reason

  def _remove_socket_dir(self) -> None:
    if self.socket_dir is None:
      return
    with contextlib.suppress(OSError):
      os.unlink(os.path.join(self.socket_dir, worker_socket.SOCKET_NAME))
    with contextlib.suppress(OSError):
      os.rmdir(self.socket_dir)

  def watch(self, channel: grpc.Channel) -> None:
    """Closes `channel` the moment the worker exits (a call in flight fails).

    Args:
      channel: A channel to this worker.
    """
    with self._lock:
      self._channels.append(channel)
      start, self._watching = not self._watching, True
    if start:
      threading.Thread(target=self._watchdog,
                       daemon=True,
                       name=f'tff-dp-worker-{self.pid}-watchdog').start()

  def _watchdog(self) -> None:
    try:
      # WNOWAIT: only look; `Popen` reaps the worker, and its lock stays free.
      info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
      self._exit_code = (info.si_status
                         if info.si_code == os.CLD_EXITED else -info.si_status)
    except ChildProcessError:
      pass  # Already reaped by `stop` or `returncode`.
    self._exited.set()
    self._close_channels()

  def _close_channels(self) -> None:
    with self._lock:
      channels, self._channels = self._channels, []
    for channel in channels:
      channel.close()

  def _wait_exit(self, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while self.alive():
      if time.monotonic() > deadline:
        return False
      time.sleep(POLL_SECONDS)
    return True

  def died_error(self) -> worker_errors.WorkerDiedError:
    """The one-line error of a worker that exited."""
    if self._stopping:
      how = 'was stopped by tff-dp'
    else:
      how = (worker_errors.describe_exit(self.returncode()) +
             ' while the run used it')
    return worker_errors.WorkerDiedError(
        f'the TFF worker (pid {self.pid}) {how}; its '
        f'log: {self.log_path}')

  def diagnose(self, error: Optional[BaseException],
               failing_for: float) -> Optional[worker_errors.WorkerError]:
    """Tells `remote_executor.GuardedStub` whether the worker is usable.

    Args:
      error: The error of a failed call, or None before a call.
      failing_for: Seconds since calls began to fail in a row.

    Returns:
      The error that ends the run, or None to let the call's error (or the
      call) proceed.
    """
    if error is None:
      return None if self.alive() else self.died_error()
    transport = not isinstance(error, grpc.Call) or (error.code()
                                                     in _TRANSPORT_CODES)
    if not self.alive() or (transport and
                            self._wait_exit(_DEATH_GRACE_SECONDS)):
      return self.died_error()
    # TFF retries these forever; anything else ends the call anyway.
    retried = isinstance(error, executors_errors.RetryableError)
    if retried and failing_for > _UNREACHABLE_SECONDS:
      return worker_errors.WorkerUnreachableError(
          f'the TFF worker (pid {self.pid}) is running but has refused '
          f'calls for {failing_for:.0f} s (last: {_rpc_summary(error)}); its '
          f'log: {self.log_path}')
    return None


def _rpc_summary(error: BaseException) -> str:
  if isinstance(error, grpc.Call):
    return f'{error.code().name}: {error.details()}'
  return f'{type(error).__name__}: {error}'
