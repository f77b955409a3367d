"""A --max_epsilon below the first round's epsilon is refused up front.

The training loop would stop before round 1 and exit 0 after importing
TensorFlow and starting a worker (a new user's review: `./run.sh train
--max_epsilon=0.01` "trained" 0 rounds). `prepare.check_budget` refuses such
a budget with the loop's own rule; these tests pin that it refuses exactly
the budgets under which the loop (on a fake process, as in
test_training_loop) runs no round, with the run's own ledger. Pure Python.
"""

import dataclasses
import re
from unittest import mock

from absl import flags
import pytest

from tests.helpers import REPO_ROOT
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.privacy import accounting
from tff_dp.program import prepare
from tff_dp.program import run_privacy
from tff_dp.program import training_loop

_DEFAULT = f'--flagfile={REPO_ROOT}/configs/default.cfg'

# Samplers and mechanisms whose first round is charged differently:
# Poisson (PLD is the tightest), fixed-size (two bounds, RDP's is the
# tighter), and DP-FTRL's tree (its whole first epoch at round 1).
_CONFIGS = {
    'poisson': [_DEFAULT],
    'fixed_size': [_DEFAULT, '--client_sampling=fixed_size'],
    'dp_ftrl': [
        _DEFAULT, '--algorithm=dp_ftrl', '--dp_mechanism=tree_aggregation',
        '--client_sampling=shuffled_epochs', '--accountants=rdp'
    ],
}


def _config(argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', *argv])
  return cli_flags.config_from_flags(fv)


def _rounds_the_loop_runs(config, data):
  """Rounds `training_loop.run_training_loop` runs under `config`'s budget,
  with the ledger a run of `config` keeps, on a process that does nothing."""
  sampler = run_privacy.build_sampler(config, data.population, secret=1)
  tracker = run_privacy.build_privacy_tracker(config, sampler, data)
  process = mock.Mock()
  process.next.side_effect = lambda state, _: mock.Mock(state=state, metrics={})
  result = training_loop.run_training_loop(process=process,
                                           state=0,
                                           sampler=sampler,
                                           round_datasets=lambda r, c: [],
                                           rounds=2,
                                           privacy=tracker,
                                           evaluate=None,
                                           eval_every=1,
                                           release=lambda r, v: None,
                                           round_values=lambda o, c, s: {},
                                           max_epsilon=config.max_epsilon)
  return result.rounds_completed


def _first_round_epsilon(config, data):
  sampler = run_privacy.build_sampler(config, data.population, secret=1)
  tracker = run_privacy.build_privacy_tracker(config, sampler, data)
  return accounting.tightest_epsilon(tracker.epsilons(next_round=1))[1]


@pytest.mark.parametrize('name', sorted(_CONFIGS))
def test_refused_exactly_when_the_loop_would_run_no_round(name):
  config = _config(_CONFIGS[name])
  data = prepare.prepare_run(config).data
  first = _first_round_epsilon(config, data)
  below = dataclasses.replace(config, max_epsilon=first * (1 - 1e-6))
  with pytest.raises(ConfigError) as refused:
    prepare.prepare_run(below)
  assert refused.value.flag == 'max_epsilon'
  assert str(refused.value).startswith(f'--max_epsilon={below.max_epsilon}: '
                                       'the first round')
  assert _rounds_the_loop_runs(below, data) == 0
  # The printed bound is rounded up: passed back, it admits the round.
  at_least = float(
      re.search(r'at least ([0-9.e+-]+) ', str(refused.value)).group(1))
  assert first <= at_least <= first * 1.001
  enough = dataclasses.replace(config, max_epsilon=at_least)
  prepare.prepare_run(enough)
  assert _rounds_the_loop_runs(enough, data) >= 1


def test_the_message_names_the_budget_the_round_and_the_accountant():
  config = _config([_DEFAULT, '--max_epsilon=0.01'])
  with pytest.raises(ConfigError) as refused:
    prepare.prepare_run(config)
  message = str(refused.value)
  first = _first_round_epsilon(
      config,
      prepare.prepare_run(dataclasses.replace(config, max_epsilon=None)).data)
  assert message.startswith('--max_epsilon=0.01: the first round alone costs '
                            f'epsilon {prepare._at_least(first)} (the pld '
                            'accountant, delta = 1e-05)')
  assert 'add noise (--noise_multiplier)' in message


def test_a_calibrated_run_is_checked_with_its_calibrated_noise():
  # --target_epsilon=4 over 100 rounds: far more noise than the flagfile's
  # z, so a budget the flagfile's first round exceeds can fit.
  config = _config([_DEFAULT, '--target_epsilon=4'])
  prepared = prepare.prepare_run(config)
  first = _first_round_epsilon(prepared.config, prepared.data)
  uncalibrated = _first_round_epsilon(config, prepared.data)
  assert first < uncalibrated
  prepare.prepare_run(dataclasses.replace(config, max_epsilon=first * 1.001))
  with pytest.raises(ConfigError, match='lower --target_epsilon'):
    prepare.prepare_run(
        dataclasses.replace(config, max_epsilon=first * (1 - 1e-6)))


def test_the_planner_is_not_refused_before_it_calibrates():
  # `./run.sh epsilon` prepares with calibrate_noise=False: the flagfile's
  # noise multiplier is not the run's, so the budget is not judged by it.
  config = _config([_DEFAULT, '--target_epsilon=4', '--max_epsilon=1'])
  prepare.prepare_run(config, calibrate_noise=False)


@pytest.mark.parametrize('value', [1.0, 1.68449, 0.000123456, 12345.6])
def test_at_least_never_rounds_down(value):
  text = prepare._at_least(value)
  assert value <= float(text) <= value * 1.001  # 4 significant digits.
