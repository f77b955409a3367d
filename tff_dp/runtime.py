"""The local TFF runtime: a C++ worker process that tff-dp starts, owns and stops.

TFF's default local context (`tff.backends.native.set_sync_local_cpp_execution_context`)
starts `worker_binary` lazily on first use, lets it inherit the parent's stdout and
stderr, and stops it only from a `__del__`. We have seen the worker outlive a normal
exit of Python, which keeps `python train.py | tee log` from ever returning. Here
the worker is started eagerly from the main thread and is tied to us three ways:

* `local_runtime()` is a context manager that terminates the worker on exit,
  whether the body returns or raises (KeyboardInterrupt included);
* the program (`tff_dp.train`) turns SIGTERM/SIGHUP into an exception, so the
  same cleanup runs when a scheduler or terminal ends us;
* the worker is started with the Linux parent-death signal (`PR_SET_PDEATHSIG`),
  so the kernel kills it even when we are killed with SIGKILL.

The worker writes to a log file, never to our stdout/stderr.

The worker serves unauthenticated gRPC and binds "[::]:port" (all interfaces)
with no flag to change it. On Linux we preload `tff_dp/native/loopback_bind.c`
into the worker (its environment only, not ours), which turns its wildcard
binds into loopback ones, and then check in /proc which addresses it actually
listens on: if any is not loopback (shim not built, not loaded, or not
effective) we warn once, loudly, on stderr.
"""

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

from tff_dp import native
from tff_dp import remote_executor

# Same limits as TFF's own local context: model updates can be large.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]
_PR_SET_PDEATHSIG = 1
_STARTUP_TIMEOUT_SECONDS = 120.0
_STOP_TIMEOUT_SECONDS = 10.0
WORKER_LOG_PREFIX = 'tff-dp: started TFF worker pid '
# The address the worker serves on once confined (the shim maps its wildcard
# binds onto it; see loopback_bind.c), and also unconfined (gRPC's dual-stack
# or 0.0.0.0 socket). Dialled as a literal rather than "localhost", whose
# resolution (::1, 127.0.0.1, or both, in some order) varies between hosts.
_LOOPBACK_TARGET = '127.0.0.1'
_TCP_LISTEN = '0A'  # State column of /proc/net/tcp{,6}.
# Set once the exposure warning was printed: it is about the machine, not the
# run, so repeating it for every worker would only bury it.
_exposure_warned = False


class RuntimeStartError(RuntimeError):
  """The TFF worker could not be started."""


def worker_binary_path() -> str:
  """Returns the path of the C++ worker shipped inside the TFF wheel."""
  package_dir = os.path.dirname(tff.__file__)
  return os.path.join(package_dir, 'data', 'worker_binary')


def _parent_death_signal_fn() -> Optional[callable]:
  """Returns a pre-exec hook that asks the kernel to SIGKILL the child with us.

  The libc handle is resolved here, in the parent, so that the forked child
  only makes a single C call before exec.
  """
  if not sys.platform.startswith('linux'):
    return None
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6',
                     use_errno=True)
  prctl = libc.prctl
  parent_pid = os.getpid()

  def hook():
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # If the parent died between fork and prctl, nobody will signal us.
    if os.getppid() != parent_pid:
      os._exit(1)  # pylint: disable=protected-access

  return hook


def _loopback_shim() -> tuple[Optional[str], str]:
  """Returns (LD_PRELOAD value for the shim or None, why it is None)."""
  if not sys.platform.startswith('linux'):
    return None, f'the loopback shim needs Linux (this is {sys.platform})'
  path = native.loopback_bind_library()
  if path is None:
    return None, ('the loopback shim (tff_dp/native/loopback_bind.c) was not '
                  'built; to build it, ' + native.build_hint())
  if any(c in path for c in ' \t\n:'):
    # ld.so splits LD_PRELOAD on these and would silently skip the shim.
    return None, f'the loopback shim path {path!r} cannot be preloaded'
  return path, ''


def _worker_environment(shim: Optional[str]) -> dict[str, str]:
  """Our environment, plus the shim preloaded; for the worker only."""
  env = dict(os.environ)
  if shim is not None:
    # Ours first; a preload the user set (e.g. an allocator) is kept.
    env['LD_PRELOAD'] = ' '.join(
        p for p in (shim, env.get('LD_PRELOAD', '')) if p)
  return env


def _proc_address(hex_address: str) -> str:
  """Text form of an address as /proc/net/tcp{,6} prints it."""
  raw = bytes.fromhex(hex_address)
  # The kernel prints each 32-bit word in host (little-endian) byte order.
  packed = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
  return socket.inet_ntop(family, packed)


def listening_addresses(port: int, *, pid: Optional[int] = None) -> list[str]:
  """Local addresses of the TCP sockets listening on `port`.

  Args:
    port: The TCP port.
    pid: Read the network namespace of this process (default: ours).

  Returns:
    Addresses in text form, e.g. ['127.0.0.1'] or ['::'] (all interfaces);
    empty if nothing listens or /proc is not available.
  """
  proc = f'/proc/{pid}/net' if pid is not None else '/proc/net'
  addresses = []
  for name in ('tcp', 'tcp6'):
    try:
      with open(os.path.join(proc, name)) as f:
        lines = f.read().splitlines()[1:]
    except OSError:
      continue
    for line in lines:
      fields = line.split()
      local, state = fields[1], fields[3]
      address, hex_port = local.split(':')
      if state == _TCP_LISTEN and int(hex_port, 16) == port:
        addresses.append(_proc_address(address))
  return addresses


def is_loopback(address: str) -> bool:
  """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x)."""
  ip = ipaddress.ip_address(address)
  mapped = getattr(ip, 'ipv4_mapped', None)
  return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class Worker:
  """A running `worker_binary` owned by this process."""

  def __init__(self, process: subprocess.Popen, port: int, log_path: str,
               shim: Optional[str] = None, shim_missing_reason: str = ''):
    self.process = process
    self.port = port
    self.log_path = log_path
    # The preloaded shim (None if none) and, if none, why.
    self.shim = shim
    self.shim_missing_reason = shim_missing_reason

  def listening_addresses(self) -> list[str]:
    """Addresses the worker listens on (in its network namespace)."""
    return listening_addresses(self.port, pid=self.pid)

  def confined(self) -> bool:
    """True if the worker listens on loopback addresses only."""
    addresses = self.listening_addresses()
    return bool(addresses) and all(is_loopback(a) for a in addresses)

  @property
  def pid(self) -> int:
    return self.process.pid

  def alive(self) -> bool:
    return self.process.poll() is None

  def stop(self) -> None:
    """Stops the worker: SIGINT (its clean shutdown), then SIGKILL."""
    if not self.alive():
      return
    for sig in (signal.SIGINT, signal.SIGKILL):
      try:
        self.process.send_signal(sig)
        self.process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        return
      except subprocess.TimeoutExpired:
        continue
      except ProcessLookupError:
        return


def start_worker(*, log_path: str,
                 max_concurrent_computation_calls: int = -1) -> Worker:
  """Starts the C++ worker and waits until it serves.

  Args:
    log_path: File that receives the worker's stdout and stderr.
    max_concurrent_computation_calls: Passed to the worker; nonpositive means
      no limit.

  Returns:
    The running `Worker`.

  Raises:
    RuntimeStartError: If the binary is missing or does not come up.
  """
  binary = worker_binary_path()
  if not os.path.isfile(binary):
    raise RuntimeStartError(f'TFF worker binary not found at {binary}')
  port = portpicker.pick_unused_port()
  args = [
      binary,
      f'--port={port}',
      f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
  ]
  shim, shim_missing_reason = _loopback_shim()
  with open(log_path, 'ab') as log:
    process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        close_fds=True,
        env=_worker_environment(shim),
        preexec_fn=_parent_death_signal_fn(),
    )
    # The pid line lets operators (and our tests) find the worker of a run.
    log.write(f'{WORKER_LOG_PREFIX}{process.pid} port {port}\n'.encode())
  return Worker(process, port, log_path, shim=shim,
                shim_missing_reason=shim_missing_reason)


def warn_if_exposed(worker: Worker) -> bool:
  """Warns once per process if the serving worker is reachable from outside.

  Args:
    worker: A worker that already serves (its sockets are listening).

  Returns:
    True if the worker listens on a non-loopback address (or, without /proc,
    if the shim was not preloaded).
  """
  global _exposure_warned
  addresses = worker.listening_addresses()
  if addresses:
    exposed = [a for a in addresses if not is_loopback(a)]
  else:
    # No /proc to look at (not Linux): only the shim can vouch for us.
    exposed = [] if worker.shim else ['::']
  if not exposed:
    return False
  if worker.shim is None:
    reason = worker.shim_missing_reason
  else:
    reason = (f'the loopback shim {worker.shim} was preloaded but did not '
              f'take effect; see {worker.log_path}')
  if not _exposure_warned:
    _exposure_warned = True
    where = ', '.join(f'[{a}]:{worker.port}' if ':' in a else
                      f'{a}:{worker.port}' for a in exposed)
    print(f'tff-dp: WARNING: the TFF worker (pid {worker.pid}) serves '
          f'unauthenticated gRPC on {where}, reachable from other hosts: '
          'anyone who can connect can run computations as this user. Cause: '
          f'{reason}. Until then, block inbound connections to this machine '
          '(firewall) or run in a network namespace without external '
          'interfaces; see README, "Security notes".',
          file=sys.stderr, flush=True)
  return True


def _connect(worker: Worker) -> tff.framework.RemoteExecutorGrpcStub:
  channel = grpc.insecure_channel(f'{_LOOPBACK_TARGET}:{worker.port}',
                                  _GRPC_OPTIONS)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
  while not stub.is_ready:
    if not worker.alive():
      raise RuntimeStartError(
          f'TFF worker exited with code {worker.process.returncode} during '
          f'start-up; see {worker.log_path}')
    if time.monotonic() > deadline:
      worker.stop()
      raise RuntimeStartError(
          f'TFF worker did not serve within {_STARTUP_TIMEOUT_SECONDS:.0f} s; '
          f'see {worker.log_path}')
    time.sleep(0.05)
  return stub


# Executors (one per number of TFF clients) kept open on the worker: enough
# for a run's initialize, training rounds (a cohort of one or two sizes on the
# grouped path) and federated evaluation; more varied cohort sizes (Poisson
# sampling, one client per call) re-create their executor on the worker.
_MAX_EXECUTORS = 8


def execution_context(
    stub: tff.framework.RemoteExecutorGrpcStub,
) -> tff.framework.SyncExecutionContext:
  """The same context TFF's local C++ context builds, on our own worker."""

  def stack_fn(cardinalities):
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = remote_executor.CachingRemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  factory = remote_executor.ClosingExecutorFactory(
      stack_fn, max_executors=_MAX_EXECUTORS)
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
  tff.framework.set_default_context(
      runtime_error_context.RuntimeErrorContext())


@contextlib.contextmanager
def local_runtime(*, log_path: str,
                  max_concurrent_computation_calls: int = -1
                  ) -> Iterator[Worker]:
  """Runs the body with TFF computations executing on a worker we own.

  Args:
    log_path: File that receives the worker's output.
    max_concurrent_computation_calls: Passed to the worker.

  Yields:
    The running `Worker`; it is stopped when the body exits in any way.
  """
  worker = start_worker(
      log_path=log_path,
      max_concurrent_computation_calls=max_concurrent_computation_calls)
  try:
    stub = _connect(worker)
    warn_if_exposed(worker)
    tff.framework.set_default_context(execution_context(stub))
    yield worker
  finally:
    # Computations invoked after this point fail loudly instead of silently
    # starting TFF's unmanaged default worker.
    tff.framework.set_default_context(
        runtime_error_context.RuntimeErrorContext())
    worker.stop()

