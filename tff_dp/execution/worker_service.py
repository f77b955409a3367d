"""A TFF worker served to remote drivers: the confined worker, and stunnel in front of it.

`start_service` starts the worker exactly as a training run does
(`worker_launch.start_worker`: its private Unix socket, the shim, the
parent-death signal; never unconfined), waits until it serves and is ours
(`worker_connect.connect`), then starts the TLS proxy on the chosen address
(`tls_proxy`). The `Service` is a pair whose halves live and die together:
`Service.stop` stops the proxy, then the worker; `Service.failure` tells a
supervisor which one exited on its own.

Who can reach what: the worker listens on no TCP port at all (its socket
is in a 0700 directory of ours); the only TCP listener is stunnel's, and it
lets a connection through only after a TLS handshake with a client
certificate signed by our CA. Plaintext TCP serving does not exist.
"""

import dataclasses
import os
from typing import Optional

from tff_dp.execution import tls_proxy
from tff_dp.execution import worker_connect
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_launch
from tff_dp.execution import worker_process

WORKER_LOG = 'worker.log'
PROXY_LOG = 'stunnel.log'


@dataclasses.dataclass
class Service:
  """The running worker and its TLS proxy."""
  worker: worker_process.Worker
  proxy: tls_proxy.TlsProxy

  def stop(self) -> None:
    """Stops the proxy (no new connections), then the worker."""
    try:
      self.proxy.stop()
    finally:
      self.worker.stop()

  def failure(self) -> Optional[str]:
    """One line naming the half that exited on its own, or None."""
    if not self.worker.alive():
      return (f'the TFF worker (pid {self.worker.pid}) '
              f'{worker_errors.describe_exit(self.worker.returncode())}; its '
              f'log: {self.worker.log_path}')
    if not self.proxy.alive():
      return (f'stunnel (pid {self.proxy.pid}) '
              f'{worker_errors.describe_exit(self.proxy.process.returncode)}; '
              f'its log: {self.proxy.log_path}')
    return None


def start_service(*,
                  port: int,
                  listen_host: str,
                  certs_dir: str,
                  log_dir: str,
                  cwd: Optional[str] = None) -> Service:
  """Starts the confined worker and stunnel in front of it.

  Args:
    port: The TCP port stunnel accepts TLS on.
    listen_host: The address it accepts on (an explicit interface).
    certs_dir: Holds ca.crt, worker.crt and worker.key (`certs`).
    log_dir: Receives worker.log and stunnel.log (created mode 0700).
    cwd: The worker's working directory (`worker_launch.start_worker`): a
      private directory with the shard's client files in `data`, or None.

  Returns:
    The running `Service`.

  Raises:
    RuntimeStartError: If either cannot be started (nothing is left
      running then).
  """
  os.makedirs(log_dir, mode=0o700, exist_ok=True)
  worker = worker_launch.start_worker(log_path=os.path.join(
      log_dir, WORKER_LOG),
                                      cwd=cwd)
  try:
    worker_connect.connect(worker)
    if not worker.confined():
      raise worker_errors.RuntimeStartError(
          f'the TFF worker (pid {worker.pid}) is not confined to its Unix '
          'socket; refusing to serve it')
    proxy = tls_proxy.start_proxy(listen_host=listen_host,
                                  port=port,
                                  socket_path=worker.socket_path,
                                  certs_dir=certs_dir,
                                  log_path=os.path.join(log_dir, PROXY_LOG))
  except BaseException:
    worker.stop()
    raise
  return Service(worker, proxy)
