"""The TFF worker is reachable neither from other hosts nor over TCP at all.

`worker_binary` binds "[::]:port" and has no flag to change that; tff-dp
preloads `tff_dp/execution/native/loopback_bind.c` into it (tff_dp/execution/worker_launch.py), which
turns that bind into a bind of a Unix socket in a private directory. These
tests exercise every branch of the shim in a plain Python process, look at
what the kernel says the worker listens on (/proc/net/{tcp,tcp6,unix}, parsed
here independently of tff_dp.execution.tcp_listeners), try to connect through an address of
this machine that is not loopback, and run a computation through the confined
worker. A missing shim is a failure, not a skip: the worker would then be
refused (or, if allowed, exposed). Other users are kept out by the socket's
directory: tests/execution/test_worker_security.py.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from tff_dp.execution import native
from tff_dp.execution import worker_connect
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_launch
from tff_dp.execution import worker_process

_LISTEN = '0A'
_RTF_UP = 0x1
_SO_ACCEPTCON = 0x10000  # Flags column of /proc/net/unix: listening.


def _shim_or_fail() -> str:
  path = native.loopback_bind_library()
  assert path is not None, (
      'the worker shim is not built, so tff-dp refuses to start the TFF '
      'worker; to build it, ' + native.build_hint())
  return path


def _hex_to_address(hex_address: str) -> str:
  raw = bytes.fromhex(hex_address)
  # /proc prints each 32-bit word of the address in little-endian order.
  packed = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
  return socket.inet_ntop(family, packed)


def _tcp_listening_sockets() -> dict[int, str]:
  """inode -> 'address:port' of every TCP socket listening on this host."""
  sockets = {}
  for name in ('tcp', 'tcp6'):
    with open(f'/proc/net/{name}') as f:
      for line in f.read().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(':')
        if fields[3] == _LISTEN:
          sockets[int(fields[9])] = (f'{_hex_to_address(address)}:'
                                     f'{int(hex_port, 16)}')
  return sockets


def _unix_listening_sockets() -> dict[int, str]:
  """inode -> path of every Unix socket listening on this host."""
  sockets = {}
  with open('/proc/net/unix') as f:
    for line in f.read().splitlines()[1:]:
      fields = line.split()
      if int(fields[3], 16) & _SO_ACCEPTCON and len(fields) >= 8:
        sockets[int(fields[6])] = fields[7]
  return sockets


def _socket_inodes(pid: int) -> set[int]:
  inodes = set()
  for fd in os.listdir(f'/proc/{pid}/fd'):
    try:
      target = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue  # Closed while we looked.
    if target.startswith('socket:['):
      inodes.add(int(target[len('socket:['):-1]))
  return inodes


def _is_loopback(address: str) -> bool:
  return address in ('::1', '::ffff:127.0.0.1') or address.startswith('127.')


def _external_addresses() -> list[str]:
  """Addresses of this machine that other hosts can send to (no loopback)."""
  addresses = []
  with open('/proc/net/route') as f:
    for line in f.read().splitlines()[1:]:
      fields = line.split()
      if fields[1] == '00000000' and int(fields[3], 16) & _RTF_UP:
        gateway = _hex_to_address(fields[2])
        # Connecting a UDP socket sends nothing; it only picks the source
        # address the kernel would use to reach the gateway.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
          probe.connect((gateway, 9))
          addresses.append(probe.getsockname()[0])
        break
  if os.path.exists('/proc/net/if_inet6'):
    with open('/proc/net/if_inet6') as f:
      for line in f:
        hex_address, _, _, scope, _, interface = line.split()
        if scope == '00' and interface != 'lo':  # Global scope only.
          addresses.append(
              socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex_address)))
  return addresses


def _connect_error(address: str, port: int):
  """None if a TCP connection to address:port succeeds, else the error."""
  family = socket.AF_INET6 if ':' in address else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as s:
    s.settimeout(5)
    try:
      s.connect((address, port))
    except OSError as e:
      return e
  return None


def test_shim_is_built():
  _shim_or_fail()


_BIND_PROBE = r'''
import socket, sys
cases = [
    ('ipv4 wildcard', socket.AF_INET, '0.0.0.0', None),
    ('ipv6 wildcard, dual-stack', socket.AF_INET6, '::', 0),
    ('ipv6 wildcard, ipv6 only', socket.AF_INET6, '::', 1),
    ('ipv4 specific', socket.AF_INET, '127.0.0.2', None),
]
for name, family, host, v6only in cases:
  s = socket.socket(family, socket.SOCK_STREAM)
  if v6only is not None:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
  s.bind((host, 0))
  print(f'{name}={s.getsockname()[0]}')
  s.close()
'''


def test_shim_without_a_socket_path_rewrites_wildcard_binds_to_loopback():
  # The shim's loopback mode, every branch, including the two the worker
  # would not take on a dual-stack host (IPv4 wildcard, IPv6-only socket).
  shim = _shim_or_fail()
  env = {k: v for k, v in os.environ.items() if k != native.SOCKET_ENV}
  probe = subprocess.run([sys.executable, '-c', _BIND_PROBE],
                         capture_output=True,
                         text=True,
                         env=dict(env, LD_PRELOAD=shim),
                         timeout=60,
                         check=True)
  bound = dict(line.split('=') for line in probe.stdout.splitlines())
  assert bound == {
      'ipv4 wildcard': '127.0.0.1',
      'ipv6 wildcard, dual-stack': '::ffff:127.0.0.1',
      'ipv6 wildcard, ipv6 only': '::1',
      'ipv4 specific': '127.0.0.2',
  }
  unshimmed = subprocess.run(
      [sys.executable, '-c', _BIND_PROBE],
      capture_output=True,
      text=True,
      env={
          k: v for k, v in env.items() if k != 'LD_PRELOAD'
      },
      timeout=60,
      check=True)
  assert 'ipv4 wildcard=0.0.0.0' in unshimmed.stdout  # The probe can tell.


_UNIX_PROBE = r'''
import errno, fcntl, os, socket, sys
path = sys.argv[1]
def bind(family, host, kind=socket.SOCK_STREAM):
  s = socket.socket(family, kind)
  try:
    s.bind((host, 0))
  except OSError as e:
    return s, errno.errorcode[e.errno]
  return s, 'ok'
# As gRPC does it: dual-stack, non-blocking and close-on-exec before bind().
first = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
first.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
first.setblocking(False)
first.bind(('::', 0))
# A socket object of the fd as it is now: `first` caches the AF_INET6
# family, and with it the size of the address it reads back.
now = socket.socket(fileno=os.dup(first.fileno()))
print('family', int(now.family))
print('name', now.getsockname())
now.close()
print('nonblocking', bool(fcntl.fcntl(first.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK))
print('cloexec', bool(fcntl.fcntl(first.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
first.listen(1)
with socket.socket(socket.AF_UNIX) as client:
  client.connect(path)
  print('connect ok')
print('second wildcard', bind(socket.AF_INET, '0.0.0.0')[1])
s, result = bind(socket.AF_INET, '127.0.0.1')
print('specific', result, s.getsockname()[0])
s, result = bind(socket.AF_INET, '0.0.0.0', socket.SOCK_DGRAM)
print('datagram', result, s.getsockname()[0])
'''


def _run_probe(code, socket_path, shim):
  return subprocess.run([sys.executable, '-c', code, socket_path],
                        capture_output=True,
                        text=True,
                        env=dict(os.environ,
                                 LD_PRELOAD=shim,
                                 **{native.SOCKET_ENV: socket_path}),
                        timeout=60,
                        check=True).stdout.splitlines()


def test_shim_with_a_socket_path_serves_there_and_never_on_tcp():
  shim = _shim_or_fail()
  directory = tempfile.mkdtemp(prefix='tff-dp-test-')
  path = os.path.join(directory, 's.sock')
  try:
    lines = _run_probe(_UNIX_PROBE, path, shim)
  finally:
    if os.path.exists(path):
      os.unlink(path)
    os.rmdir(directory)
  assert lines == [
      f'family {int(socket.AF_UNIX)}',
      f'name {path}',
      'nonblocking True',
      'cloexec True',
      'connect ok',
      # One listener, and never a TCP one.
      'second wildcard EADDRINUSE',
      'specific ok 127.0.0.1',
      'datagram ok 127.0.0.1',
  ]


_SQUATTED_PROBE = r'''
import errno, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
try:
  s.bind(('::', 0))
  print('bound', s.getsockname())
except OSError as e:
  print('refused', errno.errorcode[e.errno], s.family == socket.AF_INET6)
'''


@pytest.mark.parametrize('planted', ['file', 'relative'])
def test_shim_fails_closed_on_a_taken_or_bad_path(tmp_path, planted):
  # A path that exists (or one the shim cannot use) makes the bind fail; it
  # never falls back to binding the TCP address.
  shim = _shim_or_fail()
  if planted == 'file':
    path = str(tmp_path / 's.sock')
    open(path, 'w').close()
    expected = 'refused EADDRINUSE True'
  else:
    path = 'relative.sock'
    expected = 'refused ENAMETOOLONG True'
  assert _run_probe(_SQUATTED_PROBE, path, shim) == [expected]


@pytest.mark.tff
def test_worker_listens_on_no_tcp_port_and_still_computes(tff_runtime):
  # tff_runtime is a worker started by runtime.local_runtime.
  _shim_or_fail()
  worker = tff_runtime
  inodes = _socket_inodes(worker.pid)
  tcp = {i: a for i, a in _tcp_listening_sockets().items() if i in inodes}
  assert not tcp, f'the worker listens on TCP: {tcp}'
  unix = {i: p for i, p in _unix_listening_sockets().items() if i in inodes}
  assert list(unix.values()) == [worker.socket_path]
  assert worker.target == f'unix:{worker.socket_path}'

  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  @tff.tensorflow.computation(np.int32)
  def add_one(x):
    return x + 1

  assert add_one(41) == 42  # Runs on the confined worker.
  for address in ['127.0.0.1', '::1'] + _external_addresses():
    error = _connect_error(address, worker.port)
    assert isinstance(error,
                      (ConnectionRefusedError, OSError)), (address, error)


def test_unshimmed_worker_is_refused_without_starting_anything(
    tmp_path, monkeypatch):
  monkeypatch.setattr(native, 'loopback_bind_library', lambda: None)
  log_path = tmp_path / 'worker.log'
  with pytest.raises(worker_errors.ConfinementUnavailableError) as refused:
    worker_launch.start_worker(log_path=str(log_path))
  message = str(refused.value)
  assert 'refusing to start the TFF worker' in message
  assert 'was not built' in message
  assert '--allow_unconfined_worker' in message
  assert '\n' not in message
  assert not log_path.exists()  # No worker was started.


def _wait_listening(worker: worker_process.Worker) -> list[str]:
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    addresses = worker.listening_addresses()
    if addresses or not worker.alive():
      return addresses
    time.sleep(0.05)
  return []


@pytest.mark.tff
def test_unshimmed_worker_if_allowed_is_exposed_and_warned_about_once(
    tmp_path, monkeypatch, capfd):
  # The control for the checks above, and the explicit opt-in: without the
  # shim the same checks see an exposed worker, and worker_connect warns (once
  # per process, however many workers start).
  monkeypatch.setattr(native, 'loopback_bind_library', lambda: None)
  monkeypatch.setattr(worker_connect, '_exposure_warned', False)
  exposed = []
  for _ in range(2):
    worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'),
                                        allow_unconfined_worker=True)
    try:
      assert worker.socket_path is None
      assert _wait_listening(worker), 'the worker did not come up'
      assert not all(_is_loopback(a) for a in worker.listening_addresses())
      assert not worker.confined()
      external = _external_addresses()
      if external:
        assert _connect_error(external[0], worker.port) is None
      exposed.append(worker_connect.warn_if_exposed(worker))
    finally:
      worker.stop()
  assert exposed == [True, True]
  stderr = capfd.readouterr().err
  assert stderr.count('tff-dp: WARNING: the TFF worker') == 1, stderr
  assert 'was not built' in stderr
  assert 'other hosts' in stderr
  assert 'README, "Security notes"' in stderr


@pytest.mark.tff
@pytest.mark.parametrize('allow', [False, True])
def test_a_shim_that_does_not_take_effect_is_caught(tmp_path, monkeypatch,
                                                    allow):
  # The shim is found but not preloaded (as if ld.so skipped it): the worker
  # binds TCP on all interfaces, which worker_connect sees before it dials
  # anything.
  real_environment = worker_launch._worker_environment  # pylint: disable=protected-access
  monkeypatch.setattr(worker_launch, '_worker_environment',
                      lambda shim, path: real_environment(None, path))
  monkeypatch.setattr(worker_connect, '_exposure_warned', True)  # Quiet.
  worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'),
                                      allow_unconfined_worker=allow)
  socket_dir = worker.socket_dir
  try:
    if not allow:
      with pytest.raises(worker_errors.ConfinementUnavailableError,
                         match='listens on TCP port'):
        worker_connect.connect(worker)
    else:
      worker_connect.connect(worker)
      assert worker.socket_path is None and not worker.confined()
      assert worker.target == f'127.0.0.1:{worker.port}'
  finally:
    worker.stop()
  assert not os.path.exists(socket_dir)


@pytest.mark.tff
def test_confined_worker_is_not_warned_about(tmp_path, monkeypatch, capfd):
  _shim_or_fail()
  monkeypatch.setattr(worker_connect, '_exposure_warned', False)
  worker = worker_launch.start_worker(log_path=str(tmp_path / 'worker.log'))
  try:
    worker_connect.connect(worker)
    assert worker.confined()
    assert not worker.listening_addresses()
    assert worker_connect.warn_if_exposed(worker) is False
  finally:
    worker.stop()
  assert 'WARNING' not in capfd.readouterr().err
