"""The sweep program's flags, and the plan they make.

Defined on a given `FlagValues` (the program passes absl's global one, tests
a fresh one), as `cli_flags` does for the training flags. Every run of a
plan goes through the training program's own flag definitions and checks
before the sweep starts any (`check_runs`), so a grid value out of range is
one line naming it, not a failed run minutes later.
"""

import os

from absl import flags

from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import checked_flags
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.sweeps import plan as plan_lib

# The sweep's own flags, listed first by --help.
SWEEP_FLAGS = ('grid', 'target_epsilons', 'seeds', 'parallel',
               'nonprivate_twin')


def define_sweep_flags(fv: flags.FlagValues) -> None:
  """What to sweep, how often, how many at a time."""
  flags.DEFINE_multi_string(
      'grid', [],
      'FLAG=V1,V2,...: sweep a numeric training flag over these values '
      '(repeat for a product of grids), e.g. noise_multiplier=0.5,1,2',
      flag_values=fv)
  flags.DEFINE_string(
      'target_epsilons',
      '', 'E1,E2,...: one setting per target epsilon, '
      'each run calibrating its noise multiplier as --target_epsilon does.',
      flag_values=fv)
  checked_flags.define_int(fv,
                           'seeds',
                           1, 'Runs per setting: --seed = the base --seed + 0, '
                           '1, ..., N-1.',
                           lower=1,
                           upper=1000)
  checked_flags.define_int(
      fv,
      'parallel',
      1, 'Runs at a time; the cores are split between them (TensorFlow\'s '
      'thread pools, through TF_NUM_INTRAOP_THREADS and friends).',
      lower=1,
      upper=64)
  flags.DEFINE_bool(
      'nonprivate_twin',
      True, 'Also run the non-private twin (no central mechanism, FedAvg '
      'weighted by |D_k|/|D|, as configs/nonprivate.cfg) once per seed; its '
      'accuracy is the line the private settings are compared with.',
      flag_values=fv)


def base_name(argv: list[str]) -> str:
  """The flagfiles' names joined by '+' (default, smoke+fast), or 'run'."""
  names = [
      os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
      for arg in argv
      if arg.startswith('--flagfile=')
  ]
  return '+'.join(names) or 'run'


def numeric_flags() -> dict[str, type]:
  """The training flags a grid may sweep (numbers), and their types."""
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  kinds = {}
  for name in fv:
    flag = fv[name]
    if name != flag.name or isinstance(flag, flags.BooleanFlag):
      continue  # A short name, or a switch.
    if isinstance(flag.parser, flags.IntegerParser):
      kinds[name] = int
    elif isinstance(flag.parser, flags.FloatParser):
      kinds[name] = float
  return kinds


def make_plan(fv: flags.FlagValues, argv: list[str]) -> plan_lib.Plan:
  """The plan of parsed flags `fv`; `UserError` naming a bad flag."""
  try:
    config = cli_flags.config_from_flags(fv)
    numeric = numeric_flags()
    grids = [plan_lib.parse_grid(text, numeric) for text in fv.grid]
    epsilons = (plan_lib.parse_epsilons(fv.target_epsilons)
                if fv['target_epsilons'].present else ())
    return plan_lib.expand(config.to_json(),
                           base_name=base_name(argv),
                           grids=grids,
                           target_epsilons=epsilons,
                           seeds=fv.seeds,
                           nonprivate_twin=fv.nonprivate_twin)
  except (plan_lib.PlanError, ConfigError) as e:
    raise exits.UserError(str(e)) from e


def check_runs(plan: plan_lib.Plan, sweep_dir: str) -> None:
  """Every run's flags through the training program's definitions and
  cross-flag checks; `UserError` naming the first run refused."""
  for run in plan.runs:
    fv = flags.FlagValues()
    cli_flags.define_train_flags(fv)
    try:
      fv(['tff-dp', *plan_lib.argv(plan.settings(run, sweep_dir=sweep_dir))])
      config_checks.check_config(cli_flags.config_from_flags(fv))
    except (flags.Error, ConfigError) as e:
      raise exits.UserError(f'run {run.name}: {e}') from e
