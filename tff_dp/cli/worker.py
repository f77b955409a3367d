"""tff-dp worker program: serve this host's TFF worker to a remote driver, over mutual TLS only.

Usage:
  ./run.sh worker --tls --port=7000 --certs_dir=certs [--listen_host=10.0.0.5]
      [--data_dir=DIR]

Starts the TFF worker as a training run does (a private Unix socket, no TCP
port, tied to this program's life) and stunnel in front of it, accepting TLS
on --listen_host:--port (127.0.0.1 unless another interface is named) and
letting through only clients with a certificate signed by the CA in
--certs_dir (`./run.sh certs`). Prints how to connect, then serves until
SIGTERM or Ctrl-C, which stop both; if either exits on its own the other is
stopped and the program exits 3. Plaintext TCP serving does not exist:
without --tls the program refuses.

--data_dir=DIR serves one shard of `./run.sh import-data --shards=K` (DIR is
a copy of its shard-<s> directory): the shard is checked in full, its
clients' examples are written as client files into a private directory
(mode 0700, removed when the program stops) that becomes the TFF worker's
working directory, and the driver's grouped rounds read them there; the
driver sends client ids, never examples (README, "Running on several
machines").
"""

if __name__ == '__main__':
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-worker')

# pylint: disable=g-import-not-at-top,wrong-import-position
import ipaddress
import os
import shutil
import signal
import sys
import time
from typing import Optional

from absl import flags

from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.execution import certs
from tff_dp.execution import native

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
PROGRAM = 'tff-dp-worker'
_POLL_SECONDS = 0.2


def define_flags(fv: flags.FlagValues) -> None:
  """Defines the program's flags on `fv` (at start, not import)."""
  flags.DEFINE_integer('port',
                       None,
                       'TCP port to accept mutual TLS on.',
                       lower_bound=1,
                       upper_bound=65535,
                       flag_values=fv)
  flags.DEFINE_bool('tls',
                    False,
                    'Serve through mutual TLS (stunnel). Required: plaintext '
                    'TCP serving does not exist.',
                    flag_values=fv)
  flags.DEFINE_string('certs_dir',
                      None, 'Directory with ca.crt, worker.crt and worker.key '
                      '(./run.sh certs).',
                      flag_values=fv)
  flags.DEFINE_string('listen_host',
                      '127.0.0.1',
                      'Address to accept TLS on; name this host\'s interface '
                      'that the driver reaches (e.g. 10.0.0.5) to serve '
                      'beyond this machine.',
                      flag_values=fv)
  flags.DEFINE_string('logs_dir',
                      '', 'Where worker.log and stunnel.log go; default: '
                      'runs/worker-<port>.',
                      flag_values=fv)
  flags.DEFINE_string('data_dir',
                      '', 'A shard directory of ./run.sh import-data '
                      '--shards=K (holding clients.sqlite): this worker '
                      'serves that shard\'s clients, read from this host\'s '
                      'disk. Default: no data (the driver sends examples).',
                      flag_values=fv)
  flags.mark_flag_as_required('port', flag_values=fv)


def _check_flags() -> None:
  """Bad input as one line, before TensorFlow is imported."""
  if not FLAGS.tls:
    raise exits.UserError(
        'plaintext TCP serving does not exist: the TFF worker has no '
        'authentication, so it is served only through mutual TLS; pass --tls '
        '--certs_dir=DIR (make DIR with ./run.sh certs)')
  if not FLAGS.certs_dir:
    raise exits.UserError('--certs_dir is required with --tls (make it with '
                          './run.sh certs --out_dir=DIR)')
  missing = certs.missing_files(FLAGS.certs_dir, certs.WORKER_FILES)
  if missing:
    raise exits.UserError(f'--certs_dir={FLAGS.certs_dir}: missing '
                          f'{", ".join(missing)} (make them with ./run.sh '
                          'certs)')
  host = FLAGS.listen_host
  try:
    ipaddress.ip_address(host)
  except ValueError:
    if not host or any(c in host for c in ' \t\n:;[]/'):
      raise exits.UserError(f'--listen_host={host!r}: not an address or a '
                            'host name') from None
  reason = native.confinement_unavailable_reason()
  if reason is not None:
    raise exits.UserError(f'{reason}; a worker served to other hosts must be '
                          'confined')


class _Stop(Exception):
  """SIGTERM, SIGINT or SIGHUP arrived."""


def _stop_on_signals() -> None:
  """From here on a signal unwinds the stack: whatever runs is stopped."""

  def handler(signum, frame):
    del frame
    raise _Stop(signal.Signals(signum).name)

  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, handler)


def _serve(service, log_dir: str, shard: Optional[dict]) -> int:
  """Says how to connect, waits for a signal or for half of the service to
  exit; stops both."""
  try:
    _announce(service, log_dir, shard)
    while True:
      failure = service.failure()
      if failure is not None:
        print(f'{PROGRAM}: error: {failure}; stopping', file=sys.stderr)
        return exits.EXIT_INTERNAL
      time.sleep(_POLL_SECONDS)
  except _Stop as e:
    print(f'{PROGRAM}: {e}: stopping stunnel and the TFF worker',
          file=sys.stderr)
    return 0
  finally:
    # No second signal may cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      signal.signal(sig, signal.SIG_IGN)
    service.stop()


def _prepare_shard(root: str) -> Optional[dict]:
  """--data_dir: the shard's client files in `root`/data; its identity."""
  if not FLAGS.data_dir:
    return None
  from tff_dp.data import shard_files  # pylint: disable=g-import-not-at-top
  data = os.path.join(root, shard_files.WORKER_DATA_NAME)
  os.mkdir(data, 0o700)
  print(
      f'{PROGRAM}: checking the shard in {FLAGS.data_dir} and writing its '
      'client files for the TFF worker',
      flush=True)
  try:
    return shard_files.write_worker_data(FLAGS.data_dir, data)
  except ValueError as e:
    raise exits.UserError(f'--data_dir={FLAGS.data_dir}: {e}') from e


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  _check_flags()
  log_dir = FLAGS.logs_dir or os.path.join('runs', f'worker-{FLAGS.port}')
  from tff_dp.algorithms import grouped_data  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_errors  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_service  # pylint: disable=g-import-not-at-top
  _stop_on_signals()
  root = None
  try:
    if FLAGS.data_dir:
      # Named as the grouped path's client files are, so that the next run
      # removes them if this program is killed (SIGKILL) before it can.
      root = grouped_data.private_files_dir()
    shard = _prepare_shard(root)
    service = worker_service.start_service(port=FLAGS.port,
                                           listen_host=FLAGS.listen_host,
                                           certs_dir=FLAGS.certs_dir,
                                           log_dir=log_dir,
                                           cwd=root)
  except worker_errors.RuntimeStartError as e:
    _remove(root)
    raise exits.UserError(str(e)) from e
  except _Stop as e:  # `start_service` stopped what it had started.
    _remove(root)
    print(f'{PROGRAM}: {e} during start-up: nothing left running',
          file=sys.stderr)
    return 0
  except BaseException:
    _remove(root)
    raise
  try:
    return _serve(service, log_dir, shard)
  finally:
    _remove(root)


def _remove(root: Optional[str]) -> None:
  if root is not None:
    shutil.rmtree(root, ignore_errors=True)


def _announce(service, log_dir: str, shard: Optional[dict]) -> None:
  proxy, worker = service.proxy, service.worker
  host = FLAGS.listen_host
  where = f'[{host}]:{FLAGS.port}' if ':' in host else f'{host}:{FLAGS.port}'
  print(
      f'{PROGRAM}: TFF worker pid {worker.pid} (on its private Unix socket, '
      f'no TCP port); stunnel pid {proxy.pid} accepting mutual TLS on '
      f'{where}; logs in {log_dir}',
      flush=True)
  if shard is not None:
    print(
        f'{PROGRAM}: serving shard {shard["index"]} of {shard["count"]} '
        f'({shard["clients"]} clients from index {shard["first_client"]}, '
        f'{shard["fingerprint"]})',
        flush=True)
  print(
      f'{PROGRAM}: connect from the driver with ./run.sh train '
      f'--workers=<this host>:{FLAGS.port} --worker_certs=DIR (DIR: ca.crt, '
      'driver.crt, driver.key); stop with Ctrl-C or SIGTERM',
      flush=True)


def entry_point() -> None:
  """`./run.sh worker`; errors are one line, never a traceback."""
  define_flags(FLAGS)
  program_help.define_help_flags(FLAGS,
                                 doc=__doc__,
                                 groups=program_help.flag_groups([
                                     ('Worker', define_flags)
                                 ]))
  exits.run_program(PROGRAM,
                    lambda: main(FLAGS(sys.argv)),
                    interrupted='interrupted during start-up; nothing left '
                    'running')


if __name__ == '__main__':
  entry_point()
