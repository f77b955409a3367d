"""The worker's TLS front: Debian's stunnel, requiring a client certificate from our CA.

TFF's worker has no authentication and no encryption, and whoever reaches it
can run TensorFlow graphs as its user (`worker_socket`). It stays on its
private Unix socket; remote drivers reach it only through stunnel, a
maintained TLS proxy, which:

* accepts TCP on one address chosen explicitly (`127.0.0.1` unless the
  operator names another interface);
* completes a TLS 1.2+ handshake only with a client that presents a
  certificate signed by our CA (`verifyChain` + `requireCert`): a client
  without one, with one from another CA, or speaking plaintext gRPC is cut
  off during the handshake and never reaches the worker;
* forwards the decrypted stream to the worker's Unix socket.

stunnel runs in the foreground as our child, tied to our life the way the
worker is (`worker_launch.tied_command`: the parent-death signal, default
signal dispositions, its own process group), with its configuration and pid
file in a fresh 0700 directory that `TlsProxy.stop` removes. Its log goes to
a file, never to our stdout.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Callable, Optional

from tff_dp import processes
from tff_dp.execution import certs
from tff_dp.execution import tcp_listeners
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_launch
from tff_dp.execution import worker_socket

_START_TIMEOUT_SECONDS = 20.0
_STOP_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.05
CONFIG_NAME = 'stunnel.conf'
PID_NAME = 'stunnel.pid'
_DIR_PREFIX = 'tff-dp-tls-'
# A private directory without a pid file this old never got its stunnel.
_STALE_SECONDS = 600.0


def stunnel_binary() -> Optional[str]:
  """Debian installs stunnel 5 as `stunnel4` (and `stunnel`)."""
  return shutil.which('stunnel4') or shutil.which('stunnel')


def global_options(pid_path: str) -> list[str]:
  return [
      '; Written by tff-dp (tff_dp/execution/tls_proxy.py).',
      'foreground = yes',
      'syslog = no',
      f'pid = {pid_path}',
      'debug = notice',
      '',
  ]


def config_text(*, listen_host: str, port: int, socket_path: str,
                certs_dir: str, pid_path: str) -> str:
  """stunnel's configuration (module docstring).

  Args:
    listen_host: The address stunnel accepts TLS on.
    port: Its TCP port.
    socket_path: The worker's Unix socket, where the plaintext goes.
    certs_dir: Holds `certs.WORKER_FILES`.
    pid_path: Where stunnel writes its pid (in our private directory).

  Returns:
    The text of stunnel.conf.
  """
  host = f'[{listen_host}]' if ':' in listen_host else listen_host
  path = lambda name: os.path.abspath(os.path.join(certs_dir, name))
  return '\n'.join(
      global_options(pid_path) + [
          '[tff-worker]',
          f'accept = {host}:{port}',
          f'connect = {socket_path}',
          f'cert = {path(certs.WORKER_CERT)}',
          f'key = {path(certs.WORKER_KEY)}',
          f'CAfile = {path(certs.CA_CERT)}',
          # A client certificate is required and must chain to our CA alone
          # (no system CA store is loaded).
          'requireCert = yes',
          'verifyChain = yes',
          'sslVersionMin = TLSv1.2',
          '',
      ])


class TlsProxy:
  """A running stunnel in front of a worker's Unix socket."""

  def __init__(self, process: subprocess.Popen, *, port: int, listen_host: str,
               private_dir: str, log_path: str):
    self.process = process
    self.port = port
    self.listen_host = listen_host
    self.private_dir = private_dir
    self.log_path = log_path

  @property
  def pid(self) -> int:
    return self.process.pid

  def alive(self) -> bool:
    return self.process.poll() is None

  def listening_addresses(self) -> list[str]:
    return tcp_listeners.listening_addresses(self.port, pid=self.pid)

  def stop(self) -> None:
    """SIGTERM, SIGKILL after a grace; removes the private directory."""
    try:
      for sig in (signal.SIGTERM, signal.SIGKILL):
        if self.process.poll() is not None:
          break
        with contextlib.suppress(ProcessLookupError):
          self.process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
          self.process.wait(timeout=_STOP_GRACE_SECONDS)
    finally:
      shutil.rmtree(self.private_dir, ignore_errors=True)


def last_log_line(log_path: str) -> str:
  with contextlib.suppress(OSError):
    with open(log_path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
    if lines:
      return lines[-1]
  return 'no log'


def _wait_listening(proxy: TlsProxy) -> None:
  deadline = time.monotonic() + _START_TIMEOUT_SECONDS
  while not proxy.listening_addresses():
    if not proxy.alive():
      raise worker_errors.RuntimeStartError(
          f'stunnel (the TLS proxy) '
          f'{worker_errors.describe_exit(proxy.process.returncode)} during '
          f'start-up: {last_log_line(proxy.log_path)} (log: '
          f'{proxy.log_path})')
    if time.monotonic() > deadline:
      raise worker_errors.RuntimeStartError(
          f'stunnel did not listen on {proxy.listen_host}:{proxy.port} within '
          f'{_START_TIMEOUT_SECONDS:.0f} s; log: {proxy.log_path}')
    time.sleep(_POLL_SECONDS)


def remove_stale_dirs(base: str) -> None:
  """Removes the private directories of stunnels that died with a SIGKILLed
  supervisor.

  Their pid file names no live stunnel on their configuration; an old directory without a pid file never got its
  stunnel.

  Args:
    base: The directory that holds them (the system's temporary directory).
  """
  try:
    names = [n for n in os.listdir(base) if n.startswith(_DIR_PREFIX)]
  except OSError:
    return
  for name in names:
    directory = os.path.join(base, name)
    with contextlib.suppress(OSError, ValueError,
                             worker_errors.RuntimeStartError):
      worker_socket.check_private_dir(directory)
      pid_path = os.path.join(directory, PID_NAME)
      if os.path.exists(pid_path):
        with open(pid_path) as f:
          pid = int(f.read().strip())
        # A zombie or a process that reused the pid is no stunnel of ours.
        if processes.runs_with_argument(pid,
                                        os.path.join(directory, CONFIG_NAME)):
          continue
      elif time.time() - os.lstat(directory).st_mtime < _STALE_SECONDS:
        continue
      shutil.rmtree(directory)


def start_stunnel(write_config: Callable[[str], str],
                  log_path: str) -> tuple[subprocess.Popen, str]:
  """Starts stunnel on the config `write_config(private_dir)` returns.

  Returns:
    The process and its private directory (mode 0700, ours).
  """
  binary = stunnel_binary()
  if binary is None:
    raise worker_errors.RuntimeStartError(
        'stunnel is not installed (apt-get install stunnel4; ./run.sh '
        'installs it)')
  remove_stale_dirs(tempfile.gettempdir())
  private_dir = tempfile.mkdtemp(prefix=_DIR_PREFIX)
  try:
    worker_socket.check_private_dir(private_dir)
    config = os.path.join(private_dir, CONFIG_NAME)
    with open(config, 'w', encoding='utf-8') as f:
      f.write(write_config(private_dir))
    with open(log_path, 'ab') as log:
      process = subprocess.Popen(worker_launch.tied_command([binary, config]),
                                 stdin=subprocess.DEVNULL,
                                 stdout=log,
                                 stderr=subprocess.STDOUT,
                                 close_fds=True,
                                 process_group=0)
  except BaseException:
    shutil.rmtree(private_dir, ignore_errors=True)
    raise
  return process, private_dir


def start_proxy(*, listen_host: str, port: int, socket_path: str,
                certs_dir: str, log_path: str) -> TlsProxy:
  """Starts stunnel (module docstring) and waits until it listens.

  Args:
    listen_host: The address to accept TLS on.
    port: The TCP port.
    socket_path: The worker's Unix socket.
    certs_dir: Holds `certs.WORKER_FILES`.
    log_path: stunnel's log file.

  Returns:
    The running proxy.

  Raises:
    RuntimeStartError: If stunnel is missing, certificates are missing, the
      port is taken, or stunnel exits or does not listen in time (it is
      stopped then).
  """
  missing = certs.missing_files(certs_dir, certs.WORKER_FILES)
  if missing:
    raise worker_errors.RuntimeStartError(
        f'--certs_dir={certs_dir}: missing {", ".join(missing)} (make them '
        'with ./run.sh certs)')
  taken = tcp_listeners.listening_addresses(port)
  if taken:
    raise worker_errors.RuntimeStartError(
        f'--port={port}: something already listens on it '
        f'({", ".join(taken)}); choose another port')
  process, private_dir = start_stunnel(
      lambda private_dir: config_text(listen_host=listen_host,
                                      port=port,
                                      socket_path=socket_path,
                                      certs_dir=certs_dir,
                                      pid_path=os.path.join(
                                          private_dir, PID_NAME)), log_path)
  proxy = TlsProxy(process,
                   port=port,
                   listen_host=listen_host,
                   private_dir=private_dir,
                   log_path=log_path)
  try:
    _wait_listening(proxy)
  except BaseException:
    proxy.stop()
    raise
  return proxy
