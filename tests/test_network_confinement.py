"""The TFF worker is not reachable from other hosts.

`worker_binary` binds "[::]:port" and has no flag to change that; tff-dp
preloads `tff_dp/native/loopback_bind.c` into it (tff_dp/runtime.py). These
tests look at what the kernel says the worker listens on (/proc/net/tcp{,6},
parsed here independently of tff_dp.runtime), try to connect through an
address of this machine that is not loopback, and run a computation through
the confined worker. A missing shim is a failure, not a skip: the worker would
then be exposed.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tff_dp import native
from tff_dp import runtime

_LISTEN = '0A'
_RTF_UP = 0x1


def _shim_or_fail() -> str:
  path = native.loopback_bind_library()
  assert path is not None, (
      'the loopback shim is not built, so the TFF worker listens on all '
      'interfaces; to build it, ' + native.build_hint())
  return path


def _hex_to_address(hex_address: str) -> str:
  raw = bytes.fromhex(hex_address)
  # /proc prints each 32-bit word of the address in little-endian order.
  packed = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
  return socket.inet_ntop(family, packed)


def _listening_sockets(port: int) -> dict[int, str]:
  """inode -> local address of every TCP socket listening on `port`."""
  sockets = {}
  for name in ('tcp', 'tcp6'):
    with open(f'/proc/net/{name}') as f:
      for line in f.read().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(':')
        if fields[3] == _LISTEN and int(hex_port, 16) == port:
          sockets[int(fields[9])] = _hex_to_address(address)
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
          addresses.append(socket.inet_ntop(socket.AF_INET6,
                                            bytes.fromhex(hex_address)))
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


def test_shim_rewrites_wildcard_binds_only():
  # Every branch of the shim, including the two the worker does not take on
  # a dual-stack host (IPv4 wildcard, IPv6-only socket).
  shim = _shim_or_fail()
  probe = subprocess.run(
      [sys.executable, '-c', _BIND_PROBE], capture_output=True, text=True,
      env=dict(os.environ, LD_PRELOAD=shim), timeout=60, check=True)
  bound = dict(line.split('=') for line in probe.stdout.splitlines())
  assert bound == {
      'ipv4 wildcard': '127.0.0.1',
      'ipv6 wildcard, dual-stack': '::ffff:127.0.0.1',
      'ipv6 wildcard, ipv6 only': '::1',
      'ipv4 specific': '127.0.0.2',
  }
  unshimmed = subprocess.run(
      [sys.executable, '-c', _BIND_PROBE], capture_output=True, text=True,
      env={k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'},
      timeout=60, check=True)
  assert 'ipv4 wildcard=0.0.0.0' in unshimmed.stdout  # The probe can tell.


@pytest.mark.tff
def test_worker_listens_on_loopback_only_and_still_computes(tff_runtime):
  # tff_runtime is a worker started by runtime.local_runtime.
  _shim_or_fail()
  worker = tff_runtime
  sockets = _listening_sockets(worker.port)
  assert sockets, f'nothing listens on port {worker.port}'
  # They are the worker's own sockets, not another process's on that port.
  assert set(sockets) <= _socket_inodes(worker.pid)
  assert all(_is_loopback(a) for a in sockets.values()), sockets

  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  @tff.tensorflow.computation(np.int32)
  def add_one(x):
    return x + 1

  assert add_one(41) == 42  # Runs on the confined worker.
  assert _connect_error('127.0.0.1', worker.port) is None
  external = _external_addresses()
  if not external:
    pytest.skip('this machine has no non-loopback address to connect from')
  for address in external:
    error = _connect_error(address, worker.port)
    assert isinstance(error, ConnectionRefusedError), (address, error)


def _wait_listening(worker: runtime.Worker) -> list[str]:
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    addresses = worker.listening_addresses()
    if addresses or not worker.alive():
      return addresses
    time.sleep(0.05)
  return []


@pytest.mark.tff
def test_unshimmed_worker_is_exposed_and_warned_about_once(
    tmp_path, monkeypatch, capfd):
  # The control: without the shim the same checks see an exposed worker, and
  # runtime warns (once per process, however many workers start).
  monkeypatch.setattr(native, 'loopback_bind_library', lambda: None)
  monkeypatch.setattr(runtime, '_exposure_warned', False)
  exposed = []
  for _ in range(2):
    worker = runtime.start_worker(log_path=str(tmp_path / 'worker.log'))
    try:
      assert _wait_listening(worker), 'the worker did not come up'
      sockets = _listening_sockets(worker.port)
      assert not all(_is_loopback(a) for a in sockets.values()), sockets
      assert not worker.confined()
      external = _external_addresses()
      if external:
        assert _connect_error(external[0], worker.port) is None
      exposed.append(runtime.warn_if_exposed(worker))
    finally:
      worker.stop()
  assert exposed == [True, True]
  stderr = capfd.readouterr().err
  assert stderr.count('tff-dp: WARNING: the TFF worker') == 1, stderr
  assert 'was not built' in stderr
  assert 'README, "Security notes"' in stderr


@pytest.mark.tff
def test_confined_worker_is_not_warned_about(tmp_path, monkeypatch, capfd):
  _shim_or_fail()
  monkeypatch.setattr(runtime, '_exposure_warned', False)
  worker = runtime.start_worker(log_path=str(tmp_path / 'worker.log'))
  try:
    assert _wait_listening(worker)
    assert worker.confined()
    assert runtime.warn_if_exposed(worker) is False
  finally:
    worker.stop()
  assert 'WARNING' not in capfd.readouterr().err
