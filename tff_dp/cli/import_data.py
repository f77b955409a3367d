"""tff-dp data import program: a CSV or .npz table to TFF's SQLite format.

Usage (one command line; `python -m tff_dp.cli.import_data` is the same):
  ./run.sh import-data --input=data.csv --output=data.sqlite
      --client_column=user --label_column=label [--num_classes=10]
      [--feature_columns=a,b,c] [--test_split=clients|rows|none]
      [--test_fraction=0.2] [--seed=0] [--overwrite]
  ./run.sh import-data ... --shards=K --output=DIR   (several machines)

Train on the result with `./run.sh train --dataset=sqlite
--client_data=data.sqlite` and the settings of your run; the import prints a
command that works on the file it wrote. The conversion streams the input
(bounded memory) and writes the output only when it is complete and valid. A
bad input stops with one line naming the file, the line (or array row), the
column and the reason, and exit code 2. See `tff_dp.data.csv_import` for the
format and the choices made.

With --shards=K, --output is a directory: the table is imported as above,
then split into K shards of whole clients, DIR/shard-<s>/clients.sqlite (copy
one to each worker host, its --data_dir), DIR/test.npz (the server's test
set) and DIR/manifest.json, which the driver trains from (`train
--dataset=sqlite --client_data=DIR/manifest.json --workers=...`); see
`tff_dp.data.shard_manifest`.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.import_data`: Ctrl-C during the imports below is one
  # line, as in the other programs (`tff_dp.cli.launch`).
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-import')

# pylint: disable=g-import-not-at-top,wrong-import-position
import math
import os
import shlex
import sys
import time
from typing import Optional

from absl import flags

from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.data import csv_import

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """Defines the program's flags on `fv`.

  Called by `entry_point`, not at import: names such as --seed and
  --test_fraction are also training flags, and importing this module next to
  `tff_dp.cli.train` must not clash on the global FlagValues.

  Args:
    fv: Where to define them.
  """
  flags.DEFINE_string('input',
                      None, 'The table to import: a .csv file '
                      '(UTF-8, header row) or a .npz archive of column '
                      'arrays.',
                      flag_values=fv)
  flags.DEFINE_string('output',
                      None, 'The SQLite file to write (its '
                      'directory must exist).',
                      flag_values=fv)
  flags.DEFINE_string('client_column',
                      None, 'Column (or .npz array) holding '
                      'the client ids.',
                      flag_values=fv)
  flags.DEFINE_string('label_column',
                      None, 'Column (or .npz array) holding '
                      'the integer labels.',
                      flag_values=fv)
  flags.DEFINE_list('feature_columns',
                    None, 'Feature columns in order, '
                    'comma-separated; default: every other column.',
                    flag_values=fv)
  flags.DEFINE_integer('num_classes',
                       None, 'Number of classes; labels must '
                       'be in [0, num_classes). Default: inferred as max '
                       'label + 1 (a statistic of the data; give it when it '
                       'is public).',
                       lower_bound=2,
                       flag_values=fv)
  flags.DEFINE_enum('test_split',
                    csv_import.TestSplit.CLIENTS.value,
                    [s.value for s in csv_import.TestSplit],
                    'Held-out test set for server-side evaluation: clients = '
                    'whole clients held out (not in the training '
                    'population); rows = a fraction of every client\'s rows; '
                    'none.',
                    flag_values=fv)
  flags.DEFINE_float('test_fraction',
                     0.2, 'Fraction of clients (or of each '
                     'client\'s rows) held out.',
                     flag_values=fv)
  flags.register_validator('test_fraction',
                           lambda v: 0.0 < v < 1.0,
                           'must be in (0, 1)',
                           flag_values=fv)
  flags.DEFINE_integer('seed',
                       0, 'Key of the hash choosing the held-out '
                       'clients or rows.',
                       lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer('shards',
                       0, 'K > 0: write K shards of whole clients and a '
                       'manifest into the directory --output (README, '
                       '"Running on several machines"); 0: one file.',
                       lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_bool('overwrite',
                    False,
                    'Replace an existing --output.',
                    flag_values=fv)
  for name in ('input', 'output', 'client_column', 'label_column'):
    flags.mark_flag_as_required(name, flag_values=fv)


PROGRAM = 'tff-dp-import'


def _summary(s: csv_import.ImportSummary, input_path: str,
             seconds: float) -> str:
  classes = (f'{s.num_classes} (inferred: max label + 1)'
             if s.num_classes_inferred else str(s.num_classes))
  clients = f'{s.test_clients} client{"" if s.test_clients == 1 else "s"}'
  if s.test_split is csv_import.TestSplit.CLIENTS:
    held_out = f'{clients} held out whole'
  elif s.test_split is csv_import.TestSplit.ROWS:
    held_out = f'rows of {clients}'
  else:
    held_out = 'no test split'
  return '\n'.join([
      f'imported {input_path} -> {s.output_path} in {seconds:.1f} s',
      f'  rows: {s.rows} (train {s.train_examples}, test {s.test_examples}: '
      f'{held_out})',
      f'  clients: {s.train_clients} (the training population N)',
      f'  examples per client: min {s.examples_per_client_min}, median '
      f'{s.examples_per_client_median:g}, max {s.examples_per_client_max}',
      f'  features: {len(s.feature_names)}, classes: {classes}',
  ])


# The clients per round of the printed training command (fewer if the file
# has fewer): with so few, adaptive clipping would need z < 0.1 * 10 = 1, so
# the command clips at a fixed norm (McMahan et al. 2018) at z = 1.0
# (configs/default.cfg).
HINT_CLIENTS_PER_ROUND = 10
# configs/default.cfg's delta; it must stay below 1/N.
_DEFAULT_DELTA = 1e-5


def train_command(s: csv_import.ImportSummary) -> Optional[str]:
  """A `./run.sh train` command that trains on the file `s` describes, or
  None if nothing can (no test split: server-side evaluation needs one)."""
  if s.test_examples == 0:
    return None
  args = [
      './run.sh', 'train', '--dataset=sqlite',
      f'--client_data={shlex.quote(s.output_path)}',
      '--model=logistic_regression', '--dp_mechanism=gaussian_fixed',
      '--clip=0.5',
      f'--clients_per_round={min(HINT_CLIENTS_PER_ROUND, s.train_clients)}'
  ]
  if not _DEFAULT_DELTA < 1.0 / s.train_clients:
    args.append(f'--delta=1e-{math.ceil(math.log10(s.train_clients)) + 1}')
  return ' '.join(args)


def _import_sharded(shards: int) -> None:
  """--shards=K: the import into a temporary file in --output, then the
  shards, the test set and the manifest (`shard_writer`)."""
  from tff_dp.data import shard_writer  # pylint: disable=g-import-not-at-top
  out_dir = FLAGS.output
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or
                                  (os.listdir(out_dir) and
                                   not FLAGS.overwrite)):
    raise ValueError(f'--output={out_dir}: with --shards it is a directory, '
                     'and it must be new or empty (or pass --overwrite)')
  os.makedirs(out_dir, exist_ok=True)
  start = time.monotonic()
  whole = os.path.join(out_dir, '.unsharded.sqlite')
  try:
    summary = _import(whole, overwrite=True)
    manifest = shard_writer.write_shards(whole, out_dir, shards)
  finally:
    if os.path.exists(whole):
      os.remove(whole)
  print(_summary(summary, FLAGS.input, time.monotonic() - start))
  print(f'  shards: {shards} in {out_dir}/shard-0 .. shard-{shards - 1} '
        f'(whole clients); manifest {manifest}')
  print('  on worker host s: ./run.sh worker --tls --port=P --certs_dir=certs '
        f'--data_dir={out_dir}/shard-<s>')
  print('  on the driver: ./run.sh train --dataset=sqlite '
        f'--client_data={shlex.quote(manifest)} --workers=HOST:P,... '
        '--worker_certs=certs (one worker per shard)')


def _import(output_path: str, *, overwrite: bool) -> csv_import.ImportSummary:
  return csv_import.import_table(FLAGS.input,
                                 output_path=output_path,
                                 client_column=FLAGS.client_column,
                                 label_column=FLAGS.label_column,
                                 feature_columns=FLAGS.feature_columns,
                                 num_classes=FLAGS.num_classes,
                                 test_split=csv_import.TestSplit(
                                     FLAGS.test_split),
                                 test_fraction=FLAGS.test_fraction,
                                 seed=FLAGS.seed,
                                 overwrite=overwrite)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected positional arguments: {argv[1:]}')
  if FLAGS.shards:
    _import_sharded(FLAGS.shards)
    return
  start = time.monotonic()
  summary = _import(FLAGS.output, overwrite=FLAGS.overwrite)
  print(_summary(summary, FLAGS.input, time.monotonic() - start))
  command = train_command(summary)
  if command is None:
    print('no test split: training evaluates on one; import again with '
          '--test_split=clients or --test_split=rows')
  else:
    print(f'train on it (README, "Your own data"): {command}')


def entry_point() -> None:
  """Console-script entry point; errors are one line, never a traceback."""
  define_flags(FLAGS)
  program_help.define_help_flags(FLAGS,
                                 doc=__doc__,
                                 groups=program_help.flag_groups([
                                     ('Import', define_flags)
                                 ]))
  # TableError is a ValueError.
  exits.run_program(PROGRAM,
                    lambda: main(FLAGS(sys.argv)),
                    user_errors=(ValueError,),
                    interrupted='interrupted; nothing was written')


if __name__ == '__main__':
  entry_point()
