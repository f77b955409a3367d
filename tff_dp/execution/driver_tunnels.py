"""The driver's end of the workers' mutual TLS: stunnel in client mode, one Unix socket per worker.

Why not `grpc.secure_channel`: gRPC's C core refuses a TLS server that
selects no ALPN protocol ("Cannot check peer: missing selected ALPN
property"), and stunnel 5.68 (Debian's) has no ALPN setting, so gRPC cannot
speak TLS to the workers' stunnel itself. The TLS is therefore stunnel's on
both ends: the driver's gRPC speaks plaintext to a Unix socket in a fresh
0700 directory of ours (the kernel keeps every other user out, as for the
local worker, `worker_socket`), and stunnel carries each connection to its
worker over TLS 1.2+, presenting the driver's certificate and accepting the
worker only if its certificate chains to our CA (and no other: no system
store is loaded) and names the host dialled (`checkHost`/`checkIP`).

The client stunnel is tied to our life like the worker (`tls_proxy`), and
its directory (configuration, pid file, sockets) is removed when it stops.
"""

import ipaddress
import os
import time
from typing import Sequence

from tff_dp.execution import certs
from tff_dp.execution import tls_proxy
from tff_dp.execution import worker_addresses
from tff_dp.execution import worker_errors

_START_TIMEOUT_SECONDS = 20.0
_POLL_SECONDS = 0.05


def _section(index: int, address: worker_addresses.WorkerAddress,
             socket_path: str, certs_dir: str) -> list[str]:
  path = lambda name: os.path.abspath(os.path.join(certs_dir, name))
  try:
    ipaddress.ip_address(address.host)
    check = f'checkIP = {address.host}'
  except ValueError:
    check = f'checkHost = {address.host}'
  return [
      f'[worker-{index}]',
      'client = yes',
      f'accept = {socket_path}',
      f'connect = {address}',
      f'cert = {path(certs.DRIVER_CERT)}',
      f'key = {path(certs.DRIVER_KEY)}',
      f'CAfile = {path(certs.CA_CERT)}',
      'verifyChain = yes',
      check,
      'sslVersionMin = TLSv1.2',
      '',
  ]


def socket_name(index: int) -> str:
  return f'worker-{index}.sock'


class DriverTunnels(tls_proxy.TlsProxy):
  """The client stunnel; `targets[i]` is the gRPC target of worker i."""

  def __init__(self, *args, addresses, **kwargs):
    super().__init__(*args, **kwargs)
    self.addresses = list(addresses)
    self.targets = [
        'unix:' + os.path.join(self.private_dir, socket_name(i))
        for i in range(len(self.addresses))
    ]

  def last_words(self, address: worker_addresses.WorkerAddress) -> str:
    """stunnel's last log line about `address`'s worker, for an error."""
    section = f'[worker-{self.addresses.index(address)}]'
    try:
      with open(self.log_path, errors='replace') as f:
        lines = [line.strip() for line in f if section in line]
    except OSError:
      return ''
    return lines[-1] if lines else ''


def start_tunnels(addresses: Sequence[worker_addresses.WorkerAddress], *,
                  certs_dir: str, log_path: str) -> DriverTunnels:
  """Starts the client stunnel and waits until every socket listens.

  Args:
    addresses: The workers.
    certs_dir: Holds `certs.DRIVER_FILES`.
    log_path: stunnel's log file.

  Returns:
    The running tunnels.

  Raises:
    RuntimeStartError: Missing certificates, no stunnel, or stunnel not
      serving in time (stopped then).
  """
  missing = certs.missing_files(certs_dir, certs.DRIVER_FILES)
  if missing:
    raise worker_errors.RemoteWorkerStartError(
        f'--worker_certs={certs_dir}: missing {", ".join(missing)} (make them '
        'with ./run.sh certs)')

  def config(private_dir: str) -> str:
    lines = tls_proxy.global_options(
        os.path.join(private_dir, tls_proxy.PID_NAME))
    for i, address in enumerate(addresses):
      lines += _section(i, address, os.path.join(private_dir, socket_name(i)),
                        certs_dir)
    return '\n'.join(lines)

  process, private_dir = tls_proxy.start_stunnel(config, log_path)
  tunnels = DriverTunnels(process,
                          port=0,
                          listen_host='',
                          private_dir=private_dir,
                          log_path=log_path,
                          addresses=addresses)
  try:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while not all(os.path.exists(t[len('unix:'):]) for t in tunnels.targets):
      if not tunnels.alive() or time.monotonic() > deadline:
        raise worker_errors.RuntimeStartError(
            'stunnel (the driver\'s TLS client) did not start: '
            f'{tls_proxy.last_log_line(log_path)} (log: {log_path})')
      time.sleep(_POLL_SECONDS)
  except BaseException:
    tunnels.stop()
    raise
  return tunnels
