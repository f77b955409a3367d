"""tff-dp compare program: the table and plots of a sweep, for any finished runs.

Usage:
  ./run.sh compare DIR... [--output_dir=runs] [--run_name=compare-<UTC time>]

Each DIR is a finished run's directory (one with summary.json), or a sweep's
directory (one with plan.json: all its runs). Runs that differ only in
--seed are one setting, labelled by the first one's name (less a `_seed<N>`
suffix). Writes, into <output_dir>/<run_name>/, what a sweep writes:
results.md and results.csv (per setting: epsilon per accountant, delta, test
accuracy mean ± sd (range), rounds), accuracy_vs_epsilon.png,
epsilon_vs_rounds.png, accuracy_vs_rounds.png, and in
nonprivate/wall_times.md the wall times the runs released (only runs that
release values outside the guarantee do; not covered by it).
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.compare`: Ctrl-C during the imports is one line.
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-compare')

# pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import os
import sys

from absl import flags

from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.sweeps import outputs
from tff_dp.sweeps import plan as plan_lib
from tff_dp.sweeps import results

# pylint: enable=g-import-not-at-top,wrong-import-position

PROGRAM = 'tff-dp-compare'
FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', 'runs',
                    'Directory that holds the comparison\'s directory.')
flags.DEFINE_string(
    'run_name', '', 'Name of the comparison\'s directory under --output_dir; '
    'default: compare-<UTC time>.')
COMPARE_FLAGS = ('output_dir', 'run_name')


def read_runs(dirs: list[str]) -> list[results.RunResult]:
  """The finished runs of each DIR (a run, or a sweep's runs), in order."""
  runs = []
  for path in dirs:
    if not os.path.isdir(path):
      raise results.NotARunError(f'DIR {path}: no such directory')
    try:
      sweep = plan_lib.read(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise results.NotARunError(
          f'DIR {path}: its {plan_lib.PLAN_FILE} is not a sweep\'s plan '
          f'({type(e).__name__}: {e})') from e
    if sweep is None:
      runs.append(results.read_run(path))
      continue
    runs += [
        results.read_run(os.path.join(path, run.name), setting=run.setting)
        for run in sweep.runs
    ]
  return runs


def run(argv: list[str]) -> int:
  """Compares the runs named by the positional arguments."""
  dirs = argv[1:]
  if not dirs:
    raise exits.UserError('no DIR given: ./run.sh compare DIR... (run or '
                          'sweep directories)')
  groups = results.group(read_runs(dirs), by_label=False)
  name = FLAGS.run_name or datetime.datetime.now(
      datetime.timezone.utc).strftime('compare-%Y%m%d-%H%M%S')
  out_dir = os.path.join(FLAGS.output_dir, name)
  released = {
      run.name: run.released_wall_seconds
      for g in groups for run in g.runs if run.released_wall_seconds is not None
  }
  try:
    written = outputs.write_outputs(
        out_dir,
        groups,
        wall_seconds=released,
        wall_source='the wall_seconds a run released in summary.json (only '
        'runs that release values outside the guarantee; others: none)',
        title=name)
  except OSError as e:
    raise exits.UserError(f'--output_dir={FLAGS.output_dir}: cannot write '
                          f'{out_dir}: {e.strerror}') from e
  print(written.table)
  print(f'outputs: {out_dir} (' +
        ', '.join(os.path.relpath(path, out_dir) for path in written.files) +
        ')')
  return 0


def entry_point() -> None:
  """`python -m tff_dp.cli.compare`."""
  program_help.define_help_flags(FLAGS,
                                 doc=__doc__,
                                 groups=[('Compare', COMPARE_FLAGS)])
  exits.run_program(PROGRAM,
                    lambda: run(FLAGS(sys.argv)),
                    user_errors=(exits.UserError, results.NotARunError))


if __name__ == '__main__':
  entry_point()
