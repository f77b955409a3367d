"""`./run.sh worker --tls`: only a driver with a certificate of our CA reaches the worker.

One served worker (the worker program in a subprocess: the confined TFF
worker behind stunnel, on loopback) for the module. A gRPC call over TLS
with the driver's certificate reaches the worker (GetExecutor, the first
call of every computation); a client without a certificate, one with a
certificate of another CA, and a plaintext gRPC client are refused before
any gRPC is spoken. The worker itself listens on no TCP port; after SIGTERM
neither the worker nor stunnel is left, nor their private directories.
"""

import os
import socket
import ssl
import subprocess
import sys
import time

import grpc
import portpicker
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import workers
from tff_dp.execution import certs
from tff_dp.execution import driver_tunnels
from tff_dp.execution import tcp_listeners
from tff_dp.execution import tls_proxy
from tff_dp.execution import worker_addresses

pytestmark = pytest.mark.skipif(tls_proxy.stunnel_binary() is None,
                                reason='stunnel is not installed (./run.sh '
                                'test installs it)')

_GET_EXECUTOR = '/tensorflow_federated.v0.ExecutorGroup/GetExecutor'
# GetExecutorRequest(cardinalities={CLIENTS: 0}), as TFF serializes it.
_REQUEST = b'\n\x0b\n\t\n\x07clients'


@pytest.fixture(name='pki', scope='module')
def fixture_pki(tmp_path_factory):
  """Our CA's files, and another CA's (an impostor's)."""
  base = tmp_path_factory.mktemp('pki')
  ours, theirs = str(base / 'ours'), str(base / 'theirs')
  certs.make_certs(out_dir=ours, hosts=['127.0.0.1', 'localhost'])
  certs.make_certs(out_dir=theirs, hosts=['127.0.0.1', 'localhost'])
  return ours, theirs


@pytest.fixture(name='served', scope='module')
def fixture_served(pki, tmp_path_factory):
  served = workers.start_served_worker(pki[0],
                                       str(tmp_path_factory.mktemp('logs')),
                                       portpicker.pick_unused_port())
  yield served
  served.stop()


def _read(directory: str, name: str) -> bytes:
  with open(os.path.join(directory, name), 'rb') as f:
    return f.read()


def _call(channel: grpc.Channel) -> str:
  """GetExecutor on `channel`: 'ok' or the gRPC status name."""
  try:
    response = channel.unary_unary(_GET_EXECUTOR)(_REQUEST, timeout=20)
  except grpc.RpcError as e:
    return e.code().name
  finally:
    channel.close()
  return 'ok' if response else 'empty'


def _mixed_dir(tmp_path, ca_dir: str, client_dir: str) -> str:
  """Trusts `ca_dir`'s CA, presents `client_dir`'s driver certificate."""
  mixed = tmp_path / 'mixed'
  mixed.mkdir()
  (mixed / certs.CA_CERT).write_bytes(_read(ca_dir, certs.CA_CERT))
  for name in (certs.DRIVER_CERT, certs.DRIVER_KEY):
    (mixed / name).write_bytes(_read(client_dir, name))
  return str(mixed)


def _through_tunnel(served, certs_dir: str, log_dir) -> str:
  """GetExecutor through the driver's stunnel (`driver_tunnels`)."""
  address = worker_addresses.WorkerAddress('127.0.0.1', served.port)
  tunnels = driver_tunnels.start_tunnels([address],
                                         certs_dir=certs_dir,
                                         log_path=str(log_dir / 'client.log'))
  try:
    return _call(grpc.insecure_channel(tunnels.targets[0]))
  finally:
    tunnels.stop()


@pytest.mark.e2e
def test_a_driver_with_our_certificate_reaches_the_worker(
    served, pki, tmp_path):
  assert _through_tunnel(served, pki[0], tmp_path) == 'ok'
  # gRPC's own TLS cannot talk to stunnel (no ALPN): why the driver uses
  # stunnel too (tff_dp/execution/driver_tunnels.py).
  credentials = grpc.ssl_channel_credentials(
      root_certificates=_read(pki[0], certs.CA_CERT),
      private_key=_read(pki[0], certs.DRIVER_KEY),
      certificate_chain=_read(pki[0], certs.DRIVER_CERT))
  assert _call(grpc.secure_channel(served.address,
                                   credentials)) == 'UNAVAILABLE'


def _tls_handshake(served, ca_dir: str, client_dir: str | None) -> str:
  """A raw TLS client: what happens when it says something after the
  handshake (in TLS 1.3 a refused client certificate surfaces there)."""
  context = ssl.create_default_context(
      cafile=os.path.join(ca_dir, certs.CA_CERT))
  if client_dir:
    context.load_cert_chain(os.path.join(client_dir, certs.DRIVER_CERT),
                            os.path.join(client_dir, certs.DRIVER_KEY))
  with socket.create_connection(('127.0.0.1', served.port), timeout=20) as raw:
    try:
      with context.wrap_socket(raw, server_hostname='127.0.0.1') as tls:
        tls.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
        data = tls.recv(1024)
        return 'answered' if data else 'closed'
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
      return f'refused: {type(e).__name__}: {e}'


@pytest.mark.e2e
def test_clients_without_a_valid_certificate_are_refused_at_the_tls_layer(
    served, pki, tmp_path):
  ours, theirs = pki
  # The control: with our certificate the worker's gRPC answers.
  assert _tls_handshake(served, ours, ours) == 'answered'
  for client_dir in (None, theirs):
    outcome = _tls_handshake(served, ours, client_dir)
    assert outcome.startswith('refused') or outcome == 'closed', outcome
  impostor = _mixed_dir(tmp_path, ours, theirs)
  assert _through_tunnel(served, impostor, tmp_path) == 'UNAVAILABLE'
  # A driver that trusts another CA does not accept our worker either.
  assert _through_tunnel(served, theirs, tmp_path) == 'UNAVAILABLE'


@pytest.mark.e2e
def test_plaintext_grpc_is_refused(served):
  assert _call(grpc.insecure_channel(served.address)) == 'UNAVAILABLE'


@pytest.mark.e2e
def test_only_stunnel_listens_on_tcp_and_the_worker_on_no_port(served):
  result = subprocess.run(['ss', '-ltnpH'],
                          capture_output=True,
                          text=True,
                          check=True)
  owners = [line for line in result.stdout.splitlines() if 'pid=' in line]
  assert not [line for line in owners if f'pid={served.worker_pid},' in line
             ], owners
  on_port = [line for line in owners if f':{served.port} ' in line]
  assert on_port and all(f'pid={served.proxy_pid},' in line for line in on_port)
  assert tcp_listeners.listening_addresses(served.port) == ['127.0.0.1']


def _private_dirs() -> set[str]:
  base = tls_proxy.tempfile.gettempdir()
  return {d for d in os.listdir(base) if d.startswith('tff-dp-tls-')}


@pytest.mark.e2e
def test_sigterm_stops_the_worker_and_stunnel(pki, tmp_path):
  before = _private_dirs()
  served = workers.start_served_worker(pki[0], str(tmp_path / 'logs'),
                                       portpicker.pick_unused_port())
  assert len(_private_dirs() - before) == 1  # stunnel's config and pid.
  assert served.stop() == 0
  assert not workers.is_running(served.worker_pid)
  assert not workers.is_running(served.proxy_pid)
  assert not _private_dirs() - before
  err = served.process.stderr.read()
  assert 'SIGTERM: stopping stunnel and the TFF worker' in err, err


@pytest.mark.e2e
@pytest.mark.parametrize('args,expected', [
    (['--port=7000'], 'plaintext TCP serving does not exist'),
    (['--port=7000', '--tls'], '--certs_dir is required'),
    (['--port=7000', '--tls', '--certs_dir=/nonexistent'
     ], '--certs_dir=/nonexistent: missing ca.crt, worker.crt, worker.key'),
])
def test_bad_input_is_one_line_and_exit_2(args, expected):
  result = subprocess.run([sys.executable, '-m', 'tff_dp.cli.worker', *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          check=False,
                          timeout=60)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert expected in result.stderr


@pytest.mark.e2e
def test_neither_outlives_a_supervisor_killed_with_sigkill(pki, tmp_path):
  served = workers.start_served_worker(pki[0], str(tmp_path / 'logs'),
                                       portpicker.pick_unused_port())
  served.process.kill()
  served.process.wait(timeout=30)
  deadline = time.monotonic() + 15
  while time.monotonic() < deadline and (workers.is_running(
      served.worker_pid) or workers.is_running(served.proxy_pid)):
    time.sleep(0.1)
  # The kernel's parent-death signal, for both.
  assert not workers.is_running(served.worker_pid)
  assert not workers.is_running(served.proxy_pid)
  # The next start removes the private directory the dead one left.
  left = _private_dirs()
  again = workers.start_served_worker(pki[0], str(tmp_path / 'logs2'),
                                      portpicker.pick_unused_port())
  try:
    assert len(_private_dirs() - left) == 1
    assert len(left - _private_dirs()) >= 1
  finally:
    again.stop()
