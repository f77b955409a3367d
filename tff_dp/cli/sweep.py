"""tff-dp sweep program: one configuration over a grid of settings and seeds.

Usage:
  ./run.sh sweep [--flagfile=configs/default.cfg] [training flags]
      [--grid=FLAG=V1,V2,... ...] [--target_epsilons=E1,E2,...] [--seeds=N]
      [--parallel=K] [--nononprivate_twin]

Each setting (one value of every --grid flag, times each target epsilon,
which the run calibrates its noise multiplier to as --target_epsilon does)
runs --seeds times (--seed = the base seed + 0, 1, ...), and the non-private
twin once per seed, each as an ordinary run of the training program in
<output_dir>/<run_name>/<run>/ (default run_name: sweep-<config>-<8 hex
digits of the plan>, so the same command finds the same directory). Run the
same command again after an interruption: finished runs are skipped, the
others resume from their checkpoints. Writes results.md and results.csv (per
setting: epsilon per accountant, delta, test accuracy mean ± sd (range) over
the seeds, rounds), accuracy_vs_epsilon.png, epsilon_vs_rounds.png,
accuracy_vs_rounds.png, and the measured wall times apart, in
nonprivate/wall_times.md (not covered by the guarantee; only runs that release
their wall time: the non-private twin, --release_nonprivate_metrics). `./run.sh
tensorboard --logdir <sweep dir>` compares the runs in the HParams dashboard.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.sweep`: Ctrl-C during the imports is one line.
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-sweep')

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import shlex
import sys

from absl import flags

from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.cli import sweep_flags
from tff_dp.sweeps import outputs
from tff_dp.sweeps import plan as plan_lib
from tff_dp.sweeps import progress as progress_lib
from tff_dp.sweeps import results
from tff_dp.sweeps import runner

# pylint: enable=g-import-not-at-top,wrong-import-position

PROGRAM = 'tff-dp-sweep'
FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)
sweep_flags.define_sweep_flags(FLAGS)


def _sweep_dir(plan: plan_lib.Plan, argv: list[str]) -> str:
  name = FLAGS.run_name or (
      f'sweep-{sweep_flags.base_name(argv)}-{plan.digest()}')
  return os.path.join(FLAGS.output_dir, name)


def _report(plan: plan_lib.Plan, sweep_dir: str) -> None:
  runs = [
      results.read_run(os.path.join(sweep_dir, run.name), setting=run.setting)
      for run in plan.runs
  ]
  groups = results.group(runs, by_label=True)
  totals = progress_lib.WallTimes(sweep_dir).totals()
  written = outputs.write_outputs(
      sweep_dir,
      groups,
      wall_seconds=totals,
      wall_source='seconds of the run\'s training process(es), measured by '
      'the sweep from outside the run, summed over its invocations',
      title=os.path.basename(os.path.normpath(sweep_dir)))
  print(f'\n{written.table}', flush=True)
  timed = [r.name for r in plan.runs if plan.releases_timing(r)]
  if timed:
    print(progress_lib.summary_line(totals, timed))
  print('files: ' +
        ', '.join(os.path.relpath(path, sweep_dir) for path in written.files))
  print(f'compare the runs: ./run.sh tensorboard --logdir {sweep_dir} '
        '(HParams dashboard)')


def run(argv: list[str]) -> int:
  """Runs the sweep on parsed flags; returns the exit code."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  plan = sweep_flags.make_plan(FLAGS, sys.argv)
  sweep_dir = _sweep_dir(plan, sys.argv)
  sweep_flags.check_runs(plan, sweep_dir)
  command = shlex.join(['./run.sh', 'sweep', *sys.argv[1:]])
  try:
    resumed = plan_lib.write_or_check(sweep_dir, plan, command=command)
  except plan_lib.PlanMismatchError as e:
    raise exits.UserError(f'--run_name={os.path.basename(sweep_dir)}: '
                          f'{e}') from e
  except OSError as e:
    raise exits.UserError(f'--output_dir={FLAGS.output_dir}: cannot write '
                          f'{sweep_dir}: {e.strerror}') from e
  settings = len(plan.setting_labels())
  print(
      f'sweep directory: {sweep_dir} ({len(plan.runs)} runs, {settings} '
      f'settings; {"resumed" if resumed else "new"})',
      flush=True)
  outcome = runner.run_plan(plan, sweep_dir, parallel=FLAGS.parallel)
  if outcome.skipped:
    print(f'finished before, not rerun: {", ".join(outcome.skipped)}')
  if outcome.code:
    print(f'{PROGRAM}: {outcome.message}', file=sys.stderr)
    return outcome.code
  _report(plan, sweep_dir)
  return 0


def entry_point() -> None:
  """`python -m tff_dp.cli.sweep`."""
  program_help.define_help_flags(
      FLAGS,
      doc=__doc__,
      groups=[('Sweep', sweep_flags.SWEEP_FLAGS),
              *program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS)])
  exits.run_program(PROGRAM,
                    lambda: run(FLAGS(sys.argv)),
                    user_errors=(exits.UserError, results.NotARunError))


if __name__ == '__main__':
  entry_point()
