"""tff-dp privacy accounting program: epsilon without training.

Usage:
  ./run.sh epsilon --run_dir=runs/default-20261126-071500
      Epsilon of a finished (or running) run, from its ledger.json.
  ./run.sh epsilon --population=700 --clients_per_round=70 \
      --noise_multiplier=1.0 --rounds=100 --delta=1e-5
      Planning: the epsilon these settings will report after --rounds rounds.
  ./run.sh epsilon --population=700 --clients_per_round=70 --rounds=100 \
      --target_epsilon=5 [--calibrate=noise_multiplier|rounds]
      Calibration: the noise multiplier for --rounds rounds (or the number of
      rounds at --noise_multiplier) that reaches --target_epsilon.

Planning uses the same events and accountants as a training run, so a run with
the same settings reports the same epsilon.
"""

import enum
import json
import math
import os
import sys

from absl import app
from absl import flags

from tff_dp import accounting
from tff_dp import calibration
from tff_dp import cli_flags
from tff_dp.config import DpMechanism
from tff_dp.sampling import ClientSampling

FLAGS = flags.FLAGS
cli_flags.define_cohort_flags(FLAGS)
cli_flags.define_privacy_flags(FLAGS)


class Calibrate(enum.Enum):
  NOISE_MULTIPLIER = 'noise_multiplier'
  ROUNDS = 'rounds'


flags.DEFINE_integer(
    'population', None,
    'Number of clients N (planning). In a training run this is the number of '
    'clients the data has (--num_clients for the offline datasets).')
flags.register_validator('population',
                         lambda v: v is None or 1 <= v <= 10**9,
                         'must be an integer in [1, 1e9]')
flags.DEFINE_string('run_dir', None,
                    'A run directory: report the epsilon of its ledger.json '
                    '(delta from its config.json unless --delta is given).')
flags.DEFINE_enum('calibrate', Calibrate.NOISE_MULTIPLIER.value,
                  [c.value for c in Calibrate],
                  'With --target_epsilon: what to solve for.')

EXIT_USAGE = 2


class UserError(Exception):
  """Bad input: one line, no traceback."""


def _accountants() -> list[accounting.AccountantKind]:
  return [accounting.AccountantKind(v) for v in FLAGS.accountants]


def _format(eps: float) -> str:
  return 'infinite (not private)' if math.isinf(eps) else f'{eps:.6g}'


def _report(epsilons: dict[accounting.AccountantKind, float],
            delta: float) -> None:
  for kind, eps in epsilons.items():
    if math.isnan(eps):
      print(f'epsilon ({kind.value}): n/a (this accountant cannot compose '
            'these events)')
    else:
      print(f'epsilon ({kind.value}): {_format(eps)}')
  tightest = accounting.tightest_epsilon(epsilons)
  if tightest is not None and math.isfinite(tightest[1]):
    print(f'guarantee: ({tightest[1]:.6g}, {delta:g})-DP per client '
          f'({tightest[0].value} accountant)')


def _epsilons(events, *, delta, relation):
  result = {}
  for kind in _accountants():
    try:
      result[kind] = accounting.compute_epsilon(
          events, delta=delta, accountant=kind, relation=relation)
    except accounting.UnsupportedAccountingError:
      result[kind] = math.nan
  return result


def from_run_dir(run_dir: str) -> None:
  ledger_path = os.path.join(run_dir, 'ledger.json')
  try:
    ledger = accounting.PrivacyLedger.load(ledger_path)
  except (FileNotFoundError, accounting.LedgerFormatError) as e:
    raise UserError(f'--run_dir={run_dir}: {e}') from e
  delta = FLAGS.delta
  config_path = os.path.join(run_dir, 'config.json')
  if not FLAGS['delta'].present and os.path.isfile(config_path):
    with open(config_path, encoding='utf-8') as f:
      delta = json.load(f).get('delta', delta)
  print(f'ledger: {ledger_path}: {ledger.rounds} rounds, '
        f'{ledger.relation.name} adjacency')
  _report(_epsilons(ledger.events, delta=delta, relation=ledger.relation),
          delta)


def plan() -> None:
  population = FLAGS.population
  if population is None:
    raise UserError('--population is required for planning (or pass '
                    '--run_dir to read a run\'s ledger)')
  if DpMechanism(FLAGS.dp_mechanism) is DpMechanism.NONE:
    raise UserError('--dp_mechanism=none: a non-private run has no epsilon')
  if FLAGS.clients_per_round > population:
    raise UserError(f'--clients_per_round={FLAGS.clients_per_round}: must not '
                    f'exceed --population={population}')
  if not FLAGS.delta < 1.0 / population:
    raise UserError(f'--delta={FLAGS.delta}: must be below 1/population = '
                    f'{1.0 / population:.3g}')
  sampling = ClientSampling(FLAGS.client_sampling)
  if sampling is ClientSampling.FULL and FLAGS.clients_per_round != population:
    raise UserError(f'--clients_per_round={FLAGS.clients_per_round}: must '
                    f'equal --population={population} with full sampling')
  cohort = dict(sampling=sampling, population=population,
                clients_per_round=FLAGS.clients_per_round)
  relation = accounting.neighboring_relation(sampling)
  print(f'plan: population {population}, {FLAGS.clients_per_round} clients '
        f'per round ({sampling.value} sampling), delta {FLAGS.delta:g}')

  if FLAGS.target_epsilon is not None:
    try:
      if Calibrate(FLAGS.calibrate) is Calibrate.NOISE_MULTIPLIER:
        z, kind = calibration.calibrate_noise_for_accountants(
            target_epsilon=FLAGS.target_epsilon, delta=FLAGS.delta,
            rounds=FLAGS.rounds, accountants=_accountants(), **cohort)
        print(f'--noise_multiplier={z:.6g} reaches epsilon '
              f'{FLAGS.target_epsilon:g} after {FLAGS.rounds} rounds '
              f'({kind.value} accountant)')
        noise, rounds = z, FLAGS.rounds
      else:
        noise = FLAGS.noise_multiplier
        rounds = max(
            _max_rounds(kind, noise, cohort) for kind in _accountants())
        print(f'--rounds={rounds}: the most rounds at --noise_multiplier='
              f'{noise:g} within epsilon {FLAGS.target_epsilon:g}')
        if rounds == 0:
          return
    except (ValueError, accounting.UnsupportedAccountingError) as e:
      raise UserError(f'--target_epsilon={FLAGS.target_epsilon}: {e}') from e
  else:
    noise, rounds = FLAGS.noise_multiplier, FLAGS.rounds
  event = accounting.gaussian_round_event(noise_multiplier=noise, **cohort)
  print(f'noise multiplier {noise:.6g}, {rounds} rounds:')
  _report(_epsilons([event] * rounds, delta=FLAGS.delta, relation=relation),
          FLAGS.delta)


def _max_rounds(kind, noise, cohort) -> int:
  try:
    return calibration.calibrate_rounds(
        target_epsilon=FLAGS.target_epsilon, delta=FLAGS.delta,
        noise_multiplier=noise, accountant=kind, **cohort)
  except accounting.UnsupportedAccountingError:
    return 0


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected positional arguments: {argv[1:]}')
  if FLAGS.run_dir is not None:
    from_run_dir(FLAGS.run_dir)
  else:
    plan()


def entry_point() -> None:
  """Console-script entry point (`tff-dp-epsilon`)."""
  app.define_help_flags()
  try:
    argv = FLAGS(sys.argv)
    main(argv)
  except flags.Error as e:
    print(f'tff-dp-epsilon: error: {e}', file=sys.stderr)
    sys.exit(EXIT_USAGE)
  except UserError as e:
    print(f'tff-dp-epsilon: error: {e}', file=sys.stderr)
    sys.exit(EXIT_USAGE)


if __name__ == '__main__':
  entry_point()
