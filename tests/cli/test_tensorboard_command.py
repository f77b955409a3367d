"""`./run.sh tensorboard`: serves on 127.0.0.1 only, stops cleanly, checks args.

The serving test starts the real command in its own session, so that stopping
it and looking for leftovers covers every process it started (TensorBoard may
start a data server of its own).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import portpicker
import pytest

from tests.helpers import REPO_ROOT

_RUN_SH = os.path.join(REPO_ROOT, 'run.sh')
_LISTEN = '0A'
_START_TIMEOUT_SECONDS = 180

# Every test runs run.sh (pytest.ini's e2e); the argument checks exit at once.
pytestmark = pytest.mark.e2e


def _write_events(logdir):
  # TensorBoard's own writer: no TensorFlow import in the test process.
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
  writer = event_file_writer.EventFileWriter(str(logdir))
  for step in (1, 2):
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag='eval/accuracy', simple_value=0.5)
    ])
    writer.add_event(
        event_pb2.Event(step=step, wall_time=time.time(), summary=summary))
  writer.close()


def _session_pids(sid):
  """Pids of session `sid`: the live ones, and zombies that a process of the
  session has not reaped (an orphan's zombie waits on its new parent, PID 1,
  which in some containers reaps late or never: not ours to reap)."""
  members = {}
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue  # Exited while we looked.
    # After the command name: state, ppid, pgrp, session.
    if int(fields[3]) == sid:
      members[int(entry)] = (fields[0], int(fields[1]))
  return sorted(pid for pid, (state, ppid) in members.items()
                if state != 'Z' or ppid in members)


def _socket_inodes(pids):
  inodes = set()
  for pid in pids:
    try:
      fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
      continue
    for fd in fds:
      try:
        target = os.readlink(f'/proc/{pid}/fd/{fd}')
      except OSError:
        continue
      if target.startswith('socket:['):
        inodes.add(int(target[len('socket:['):-1]))
  return inodes


def _hex_to_address(hex_address):
  raw = bytes.fromhex(hex_address)
  # /proc prints each 32-bit word of the address in little-endian order.
  packed = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
  return socket.inet_ntop(family, packed)


def _listening():
  """[(address, port, inode)] of every listening TCP socket."""
  sockets = []
  for name in ('tcp', 'tcp6'):
    with open(f'/proc/net/{name}') as f:
      for line in f.read().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(':')
        if fields[3] == _LISTEN:
          sockets.append((_hex_to_address(address), int(port,
                                                        16), int(fields[9])))
  return sockets


def _get(url):
  with urllib.request.urlopen(url, timeout=10) as response:
    return response.status, response.read()


def _wait_serving(process, url, log_path):
  deadline = time.monotonic() + _START_TIMEOUT_SECONDS
  while time.monotonic() < deadline:
    assert process.poll() is None, (
        f'run.sh tensorboard exited with {process.returncode}: ' +
        log_path.read_text())
    try:
      return _get(url)
    except OSError:
      time.sleep(0.2)
  pytest.fail(f'not serving {url} after {_START_TIMEOUT_SECONDS} s: ' +
              log_path.read_text())


def test_serves_on_loopback_only_and_leaves_nothing_behind(tmp_path):
  logdir = tmp_path / 'runs'
  _write_events(logdir / 'my_run')
  port = portpicker.pick_unused_port()
  log_path = tmp_path / 'tensorboard.log'
  with open(log_path, 'wb') as log:
    process = subprocess.Popen([
        'bash', _RUN_SH, 'tensorboard', '--port',
        str(port), '--logdir',
        str(logdir)
    ],
                               cwd=REPO_ROOT,
                               stdin=subprocess.DEVNULL,
                               stdout=log,
                               stderr=subprocess.STDOUT,
                               start_new_session=True)
  sid = process.pid
  try:
    status, _ = _wait_serving(process, f'http://127.0.0.1:{port}/', log_path)
    assert status == 200

    # Every listening socket of every process the command started.
    ours = _socket_inodes(_session_pids(sid))
    listening = [(a, p) for a, p, inode in _listening() if inode in ours]
    assert (('127.0.0.1', port)) in listening, listening
    assert all(a == '127.0.0.1' or a == '::1' for a, _ in listening), listening
    # Nothing else on the machine holds the port on another address.
    assert {a for a, p, _ in _listening() if p == port} == {'127.0.0.1'}

    # It serves our logdir (TensorBoard loads runs in the background).
    deadline = time.monotonic() + 60
    runs = []
    while 'my_run' not in runs and time.monotonic() < deadline:
      runs = json.loads(_get(f'http://127.0.0.1:{port}/data/runs')[1])
      time.sleep(0.5)
    assert 'my_run' in runs
  finally:
    try:
      os.killpg(sid, signal.SIGTERM)
    except ProcessLookupError:
      pass
    try:
      process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      os.killpg(sid, signal.SIGKILL)
      process.wait(timeout=30)
  deadline = time.monotonic() + 30
  while _session_pids(sid) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert _session_pids(sid) == []
  assert not [p for _, p, _ in _listening() if p == port]


def _run(*args):
  return subprocess.run(['bash', _RUN_SH, 'tensorboard', *args],
                        cwd=REPO_ROOT,
                        capture_output=True,
                        text=True,
                        timeout=60)


@pytest.mark.parametrize('args,message', [
    (['--port', '0'], '--port=0: must be an integer in [1, 65535]'),
    (['--port=abc'], '--port=abc: must be an integer in [1, 65535]'),
    (['--port', '08x'], '--port=08x'),
    (['--port', '18446744073709551617'], '--port=18446744073709551617'),
    (['--port'], '--port needs a value'),
    (['--host', '0.0.0.0'], "unknown argument '--host'"),
    (['extra'], "unknown argument 'extra'"),
])
def test_bad_arguments_exit_non_zero_naming_the_value(args, message):
  result = _run(*args)
  assert result.returncode == 2, result
  assert message in result.stderr
  assert 'line ' not in result.stderr  # A message of ours, not bash's.


def test_missing_logdir_is_named(tmp_path):
  missing = tmp_path / 'no_such_dir'
  result = _run('--port', '6006', '--logdir', str(missing))
  assert result.returncode == 2, result
  assert f'--logdir={missing}: no such directory' in result.stderr


def test_leading_zero_port_is_decimal(tmp_path):
  # 08 is not octal (bash arithmetic would reject it) and reaches the next
  # check: the missing logdir, not a port error.
  missing = tmp_path / 'no_such_dir'
  result = _run('--port', '08', '--logdir', str(missing))
  assert result.returncode == 2, result
  assert '--port' not in result.stderr
  assert 'no such directory' in result.stderr
