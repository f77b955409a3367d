"""tff-dp certificates program: a small CA, the workers' and the driver's certificates.

Usage:
  ./run.sh certs --out_dir=certs [--hosts=127.0.0.1,localhost] [--days=365]

Writes ca.crt/ca.key, worker.crt/worker.key (valid for --hosts) and
driver.crt/driver.key with openssl (`tff_dp.execution.certs`); keys are mode
0600. Copy ca.crt, worker.crt and worker.key to each worker host (its
`./run.sh worker --tls --certs_dir=DIR`), and ca.crt, driver.crt and
driver.key to the driver (`./run.sh train --workers=... --worker_certs=DIR`);
ca.key stays where it was made. Existing files are never overwritten: the
program refuses with one line and exit 2.
"""

if __name__ == '__main__':
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-certs')

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys

from absl import flags

from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.execution import certs

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
PROGRAM = 'tff-dp-certs'


def define_flags(fv: flags.FlagValues) -> None:
  """Defines the program's flags on `fv` (at start, not import: see
  `tff_dp.cli.import_data.define_flags`)."""
  flags.DEFINE_string('out_dir',
                      None,
                      'Directory to write the six files into (created mode '
                      '0700 if missing; existing files are never replaced).',
                      flag_values=fv)
  flags.DEFINE_list(
      'hosts', ['127.0.0.1', 'localhost'],
      'Host names and IP addresses the workers are dialled by '
      '(comma-separated): the worker certificate is valid for these only, '
      'and the driver checks the name in each --workers=HOST:PORT.',
      flag_values=fv)
  flags.DEFINE_integer('days',
                       certs.DEFAULT_DAYS,
                       'Validity of the certificates, in days.',
                       lower_bound=1,
                       upper_bound=3650,
                       flag_values=fv)
  flags.mark_flag_as_required('out_dir', flag_values=fv)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise certs.CertError(f'unexpected positional arguments: {argv[1:]}')
  written = certs.make_certs(out_dir=FLAGS.out_dir,
                             hosts=FLAGS.hosts,
                             days=FLAGS.days)
  for path in written:
    print(f'wrote {path}')
  print(f'worker hosts: copy {", ".join(certs.WORKER_FILES)} and run '
        f'./run.sh worker --tls --port=PORT --certs_dir=DIR')
  print(f'driver: copy {", ".join(certs.DRIVER_FILES)} and run ./run.sh train '
        '--workers=HOST:PORT,... --worker_certs=DIR')
  print(f'keep {certs.CA_KEY} here: whoever has it can make driver '
        'certificates')


def entry_point() -> None:
  """`./run.sh certs`; errors are one line, never a traceback."""
  define_flags(FLAGS)
  program_help.define_help_flags(FLAGS,
                                 doc=__doc__,
                                 groups=program_help.flag_groups([
                                     ('Certificates', define_flags)
                                 ]))
  exits.run_program(PROGRAM,
                    lambda: main(FLAGS(sys.argv)),
                    user_errors=(certs.CertError,))


if __name__ == '__main__':
  entry_point()
