"""tff-dp privacy accounting program: epsilon without training.

Usage:
  ./run.sh epsilon --run_dir=runs/default-20261126-071500
      The guarantees of a finished (or running) run, from its ledgers.
  ./run.sh epsilon --flagfile=configs/dp_ftrl.cfg [--rounds=N ...]
      Planning a preset (or any training flags): the epsilons a run with the
      same flags will report, with the population taken from its data.
  ./run.sh epsilon --population=700 --clients_per_round=70 \
      --noise_multiplier=1.0 --rounds=100 --delta=1e-5
      Planning with a population given by hand.
  ./run.sh epsilon --population=700 --clients_per_round=70 --rounds=100 \
      --target_epsilon=5 [--calibrate=noise_multiplier|rounds]
      Calibration: the noise multiplier for --rounds rounds (or the number of
      rounds at --noise_multiplier) that reaches --target_epsilon.
  ./run.sh epsilon --population=700 --target_epsilon=5 --recommend \
      [--recommend_cohorts=35,70,140 --recommend_rounds=50,100]
      Recommendation: for candidate cohorts and rounds, the noise multiplier
      that reaches --target_epsilon and the noise on the averaged update,
      the least noisy settings marked.

Planning reads every training flag (training-only ones are accepted and
change nothing) and charges the ledgers a run builds
(`tff_dp.program.run_privacy`): the central guarantee of every mechanism (sampled
Gaussian, fixed-size, full participation, DP-FTRL's tree), the local one and
the record-level one. So a run with the same settings reports the same
epsilon (for local and record-level DP: the epsilon of a client that takes
part in every round, which a run reaches only if some client does).
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.epsilon`: Ctrl-C during the imports below is one
  # line, and TensorFlow is quiet if the data's loading imports it.
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-epsilon')

# pylint: disable=g-import-not-at-top,wrong-import-position
import enum
import math
import sys

from absl import flags

from tff_dp import config as config_lib
from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import checked_flags
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.cli import launch
from tff_dp.cli import program_help
from tff_dp.cli import recommend_table
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy import privacy_tracking
from tff_dp.program import prepare
from tff_dp.program import run_ledgers
from tff_dp.program import run_lock
from tff_dp.program import run_privacy

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)


class Calibrate(enum.Enum):
  NOISE_MULTIPLIER = 'noise_multiplier'
  ROUNDS = 'rounds'


flags.DEFINE_integer(
    'population', None,
    'Number of clients N (planning). Without it, N is taken from the data '
    'of --dataset (as a training run takes it), if --dataset is given '
    'directly or in a --flagfile.')
flags.register_validator('population', lambda v: v is None or 1 <= v <= 10**9,
                         'must be an integer in [1, 1e9]')
flags.DEFINE_string(
    'run_dir', None, 'A run directory: report the guarantees of its ledgers '
    '(delta from its config.json unless --delta is given).')
flags.DEFINE_enum('calibrate', Calibrate.NOISE_MULTIPLIER.value,
                  [c.value for c in Calibrate],
                  'With --target_epsilon: what to solve for.')

flags.DEFINE_bool(
    'recommend', False,
    'With --target_epsilon: tabulate, for candidate cohort sizes m and round '
    'counts T, the noise multiplier z that meets the budget, its epsilon and '
    'the noise std of the averaged update z*C/m, and mark the least noisy '
    'settings (README: "Which cohort size and how many rounds").')
_MAX_CANDIDATES = 12


def _define_candidates(name: str, what: str, default: str, upper: int) -> None:
  # A string, not DEFINE_list: absl's error then shows the value as typed
  # ("--recommend_cohorts=0,abc"), not as a Python list.
  flags.DEFINE_string(
      name, None, f'With --recommend: the candidate {what} (comma-separated '
      f'integers, at most {_MAX_CANDIDATES}). Default: {default}.')
  flags.register_validator(
      name, lambda v: v is None or _parse_candidates(v, upper) is not None,
      f'must be a comma-separated list of 1 to {_MAX_CANDIDATES} integers in '
      f'[1, {upper}]')


def _parse_candidates(text: str, upper: int):
  """The integers of a candidate list; None if it is not a valid one."""
  values = [v.strip() for v in text.split(',')]
  if not 1 <= len(values) <= _MAX_CANDIDATES or not all(
      v.isdigit() and 1 <= int(v) <= upper for v in values):
    return None
  return [int(v) for v in values]


_CANDIDATE_LIMITS = {
    'recommend_cohorts': checked_flags.MAX_CLIENTS,
    'recommend_rounds': checked_flags.MAX_ROUNDS
}
_define_candidates(
    'recommend_cohorts', 'cohort sizes m',
    '--clients_per_round times 1/4, 1/2, 1, 2 and 4 (at most '
    'the population)', _CANDIDATE_LIMITS['recommend_cohorts'])
_define_candidates('recommend_rounds', 'round counts T',
                   '--rounds times 1/2, 1 and 2',
                   _CANDIDATE_LIMITS['recommend_rounds'])

# What --help lists: this program's flags, then the training flags a plan
# reads (as the README groups them).
HELP_GROUPS = [('Accounting',
                ('run_dir', 'population', 'calibrate', 'recommend',
                 'recommend_cohorts', 'recommend_rounds')),
               *program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS)]


def _format(eps: float) -> str:
  if math.isnan(eps):
    return 'n/a (this accountant cannot compose these events)'
  return 'infinite (not private)' if math.isinf(eps) else f'{eps:.6g}'


def _report_central(epsilons: dict[accounting.AccountantKind, float],
                    delta: float) -> None:
  for kind, eps in epsilons.items():
    print(f'epsilon ({kind.value}): {_format(eps)}')
  tightest = accounting.tightest_epsilon(epsilons)
  if tightest is not None and math.isfinite(tightest[1]):
    print(f'guarantee: ({tightest[1]:.6g}, {delta:g})-DP per client '
          f'({tightest[0].value} accountant)')


def _report(tracker: privacy_tracking.PrivacyTracker, *, delta: float,
            local_words: str) -> None:
  """Prints every guarantee `tracker` holds; 'not private' if none."""
  if tracker.central_claim:
    _report_central(tracker.epsilons(), delta)
  local = tracker.local_guarantee()
  if local is not None:
    print(f'local epsilon (against the server, {local_words}): '
          f'{_format(local.epsilon)} at delta {delta:g} ({local.source})')
  report = tracker.record_level_report()
  worst = None if report is None else report.worst()
  if worst is not None:
    print(f'record-level epsilon (worst client, {worst.num_examples} '
          f'records): {_format(worst.guarantee[1])} at delta {delta:g}')
  if not tracker.guarantees():
    print('not private: no mechanism adds noise (epsilon is infinite)')


# --- A run directory. --------------------------------------------------------


def from_run_dir(run_dir: str) -> None:
  """Reports the central, local and record-level guarantees of a run."""
  accountants = [accounting.AccountantKind(v) for v in FLAGS.accountants]
  try:
    delta = FLAGS.delta if FLAGS['delta'].present else (
        run_ledgers.run_delta(run_dir) or FLAGS.delta)
    run = run_ledgers.load_run_guarantees(run_dir,
                                          delta=delta,
                                          accountants=accountants)
  except run_ledgers.RunDirError as e:
    raise exits.UserError(f'--run_dir={run_dir}: {e}') from e
  # Read without the trainers' lock (a report must never stop a run); says
  # whether one holds it, since its epsilon grows with every round.
  holder = run_lock.live_holder(run_dir)
  if holder is not None:
    print(f'note: the run is live (training process pid {holder}): this is '
          'the cost of the rounds it has checkpointed so far')
  for warning in run.warnings:
    print(f'warning: {warning}')
  print(f'ledger: {run.source}: {run.ledger.rounds} rounds, '
        f'{run.ledger.relation.name} adjacency')
  if run.central_claim:
    _report_central(run.central_epsilons(delta=delta, accountants=accountants),
                    delta)
  if run.local is not None:
    print(f'local epsilon (against the server, {run.local.participations} '
          f'participations: {run.local_counted}): '
          f'{_format(run.local.epsilon)} at delta {delta:g} '
          f'({run.local.source})')
  if run.record_level is not None:
    print(f'record-level epsilon (worst client, '
          f'{run.record_level.num_examples} records): '
          f'{_format(run.record_level.guarantee[1])} at delta {delta:g}')
  found = run.local is not None or run.record_level is not None
  if run.ledger.rounds and not run.central_claim:
    print('central epsilon: none (the released models carry no central '
          'claim)' if found else
          'not private: no mechanism adds noise (epsilon is infinite)')


# --- Planning. ---------------------------------------------------------------


class _Population:
  """The data of a plan given only --population."""

  def __init__(self, population: int):
    self.population = population

  def client_sizes(self):
    raise exits.UserError(
        '--example_dp: the record-level epsilon depends on each '
        'client\'s number of records; plan with the run\'s '
        '--flagfile or --dataset instead of --population')


def _planned_config_and_data():
  """The configuration and training clients a run with these flags has."""
  config = cli_flags.config_from_flags(FLAGS)
  if FLAGS.population is not None:
    # The given N stands for the data: also for the offline datasets' split.
    config = config_lib.dataclasses.replace(config,
                                            num_clients=FLAGS.population)
    try:
      config_checks.check_config(config)
    except ConfigError as e:
      raise exits.UserError(str(e)) from e
    return config, _Population(FLAGS.population)
  if not FLAGS['dataset'].present:
    raise exits.UserError('--population is required for planning (or pass the '
                          'run\'s --flagfile or --dataset to take it from the '
                          'data, or --run_dir to read a run\'s ledgers)')
  try:
    prepared = prepare.prepare_run(config, calibrate_noise=False)
  except ConfigError as e:
    hint = ('; to plan without the data, pass --population=N'
            if e.flag == 'dataset' else '')
    raise exits.UserError(f'{e}{hint}') from e
  return prepared.config, prepared.data


def plan() -> None:
  """Prints the guarantees of the planned run (calibrating first if asked)."""
  config, data = _planned_config_and_data()
  population = data.population
  try:
    config_checks.check_population(config, population)
  except ConfigError as e:
    raise exits.UserError(str(e)) from e
  print(f'plan: population {population}, {config.clients_per_round} clients '
        f'per round ({config.client_sampling.value} sampling), delta '
        f'{config.delta:g}')
  if FLAGS.recommend:
    recommend_table.print_recommendation(
        config,
        population,
        cohorts=_candidates('recommend_cohorts'),
        rounds=_candidates('recommend_rounds'))
    return
  if config.target_epsilon is not None:
    config = _calibrated(config, population)
    if config is None:
      return
  try:
    # As the trainer refuses it (`prepare.prepare_run`), with any data source
    # and once the noise multiplier is final.
    prepare.check_budget(config, population + config.audit_canaries)
  except ConfigError as e:
    raise exits.UserError(str(e)) from e
  tracker = run_privacy.planned_tracker(config, data)
  noise = (f'noise multiplier {config.noise_multiplier:.6g}, '
           if config.central_private else '')
  print(f'{noise}{config.rounds} rounds:')
  _report(tracker,
          delta=config.delta,
          local_words=f'a client in all {config.rounds} rounds')


def _calibrated(config, population):
  """`config` with the noise multiplier or rounds --target_epsilon allows;
  None if not even one round fits."""
  cohort = dict(sampling=config.client_sampling,
                population=population,
                clients_per_round=config.clients_per_round)
  target = config.target_epsilon
  if Calibrate(FLAGS.calibrate) is Calibrate.NOISE_MULTIPLIER:
    try:
      # As the trainer calibrates, adaptive clipping's limit included.
      config, kind = prepare.calibrate(config, population)
    except ConfigError as e:
      raise exits.UserError(str(e)) from e
    z = calibration.format_noise_multiplier(config.noise_multiplier)
    print(f'--noise_multiplier={z} reaches epsilon {target:g} after '
          f'{config.rounds} rounds ({kind.value} accountant)')
    return config_lib.dataclasses.replace(config, target_epsilon=None)
  try:
    rounds = max(
        _max_rounds(kind, config, cohort) for kind in config.accountants)
    print(f'--rounds={rounds}: the most rounds at --noise_multiplier='
          f'{config.noise_multiplier:g} within epsilon {target:g}')
  except (ValueError, accounting.UnsupportedAccountingError) as e:
    raise exits.UserError(f'--target_epsilon={target}: {e}') from e
  if rounds == 0:
    return None
  return config_lib.dataclasses.replace(config,
                                        rounds=rounds,
                                        target_epsilon=None)


def _max_rounds(kind, config, cohort) -> int:
  try:
    return calibration.calibrate_rounds(
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        noise_multiplier=config.noise_multiplier,
        accountant=kind,
        **cohort)
  except accounting.UnsupportedAccountingError:
    return 0


def _candidates(name: str):
  text = FLAGS[name].value
  return None if text is None else _parse_candidates(text,
                                                     _CANDIDATE_LIMITS[name])


def _check_recommend_flags() -> None:
  """--recommend's flags go together, with a target and no run directory."""
  for name in ('recommend_cohorts', 'recommend_rounds'):
    if FLAGS[name].present and not FLAGS.recommend:
      raise exits.UserError(f'--{name}={FLAGS[name].value} is read only '
                            'with --recommend')
  if not FLAGS.recommend:
    return
  if FLAGS.run_dir is not None:
    raise exits.UserError('--recommend plans settings; it does not read '
                          f'--run_dir={FLAGS.run_dir}')
  if FLAGS.target_epsilon is None:
    raise exits.UserError('--recommend needs --target_epsilon (the budget '
                          'each row meets)')
  if Calibrate(FLAGS.calibrate) is not Calibrate.NOISE_MULTIPLIER:
    raise exits.UserError(f'--calibrate={FLAGS.calibrate}: --recommend '
                          'calibrates the noise multiplier of each row')
  if FLAGS.client_sampling not in ('poisson', 'fixed_size'):
    raise exits.UserError(
        f'--client_sampling={FLAGS.client_sampling}: --recommend compares '
        'cohort sizes, which only poisson and fixed_size sampling choose')


def main(argv: list[str]) -> None:
  # Before anything imports TensorFlow (streamed data sources do); the entry
  # points did it already, this is for callers of `main`.
  launch.quiet()
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  _check_recommend_flags()
  if FLAGS.run_dir is not None:
    from_run_dir(FLAGS.run_dir)
  else:
    plan()


def entry_point() -> None:
  """Console-script entry point (`tff-dp-epsilon`)."""
  program_help.define_help_flags(FLAGS, doc=__doc__, groups=HELP_GROUPS)
  try:
    argv = FLAGS(sys.argv)
    main(argv)
  except flags.Error as e:
    print(f'tff-dp-epsilon: error: {exits.flag_error_message(e)}',
          file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)
  except exits.UserError as e:
    print(f'tff-dp-epsilon: error: {e}', file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)


if __name__ == '__main__':
  entry_point()
