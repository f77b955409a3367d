"""A sweep's plan: grid x target epsilons x seeds, the twin, names, plan.json.

Pure Python: the base settings are the smoke config's, parsed by the
training program's own flag definitions.
"""

import json
import os

from absl import flags
import pytest

from tests.helpers import REPO_ROOT
from tff_dp import config_checks
from tff_dp.cli import cli_flags
from tff_dp.cli import sweep_flags
from tff_dp.sweeps import plan as plan_lib

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _base(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['x', f'--flagfile={_SMOKE}', *argv])
  return cli_flags.config_from_flags(fv).to_json()


_NUMERIC = sweep_flags.numeric_flags()


def test_numeric_flags_are_the_numbers_of_the_training_program():
  assert _NUMERIC['noise_multiplier'] is float and _NUMERIC['rounds'] is int
  assert 'dp_mechanism' not in _NUMERIC and 'example_dp' not in _NUMERIC


def test_grid_x_seeds_and_one_twin_per_seed():
  grid = plan_lib.parse_grid('noise_multiplier=0.5,1,2', _NUMERIC)
  assert grid == ('noise_multiplier', (0.5, 1.0, 2.0))
  plan = plan_lib.expand(_base('--seed=3'),
                         base_name='smoke',
                         grids=[grid],
                         seeds=2)
  assert [run.name for run in plan.runs] == [
      'noise_multiplier-0.5_seed3', 'noise_multiplier-0.5_seed4',
      'noise_multiplier-1_seed3', 'noise_multiplier-1_seed4',
      'noise_multiplier-2_seed3', 'noise_multiplier-2_seed4',
      'nonprivate_seed3', 'nonprivate_seed4'
  ]
  assert plan.setting_labels() == [
      'noise_multiplier=0.5', 'noise_multiplier=1', 'noise_multiplier=2',
      'nonprivate'
  ]
  first = plan.runs[0]
  assert first.overrides == {'noise_multiplier': 0.5, 'seed': 3}
  settings = plan.settings(first, sweep_dir='/s')
  assert settings['output_dir'] == '/s' and settings['run_name'] == first.name
  twin = plan.settings(plan.runs[-1], sweep_dir='/s')
  assert twin['dp_mechanism'] == 'none' and twin['seed'] == 4
  assert twin['client_weighting'] == 'num_examples'


def test_target_epsilons_times_a_grid_and_no_twin_on_request():
  plan = plan_lib.expand(_base(),
                         base_name='smoke',
                         grids=[plan_lib.parse_grid('rounds=2,4', _NUMERIC)],
                         target_epsilons=plan_lib.parse_epsilons('4,8'),
                         nonprivate_twin=False)
  assert [run.name for run in plan.runs] == [
      'eps4_rounds-2_seed0', 'eps4_rounds-4_seed0', 'eps8_rounds-2_seed0',
      'eps8_rounds-4_seed0'
  ]
  assert plan.runs[1].overrides == {
      'rounds': 4,
      'seed': 0,
      'target_epsilon': 4.0
  }
  assert plan.runs[1].target_epsilon == 4.0
  assert plan.setting_labels()[0] == 'eps4 rounds=2'


def test_a_base_that_is_not_private_has_no_twin():
  plan = plan_lib.expand(_base('--dp_mechanism=none'), base_name='smoke')
  assert [run.name for run in plan.runs] == ['smoke_seed0']


def test_every_run_passes_the_training_programs_checks():
  # The flags a run gets reproduce its settings, and its twin's flagfile
  # value of --target_epsilon is left out (it needs a DP mechanism).
  plan = plan_lib.expand(_base('--max_epsilon=50'),
                         base_name='smoke',
                         target_epsilons=(4.0,))
  for run in plan.runs:
    settings = plan.settings(run, sweep_dir='/tmp/s')
    fv = flags.FlagValues()
    cli_flags.define_train_flags(fv)
    fv(['x', *plan_lib.argv(settings)])
    config = cli_flags.config_from_flags(fv)
    config_checks.check_config(config)
    assert config.to_json() == settings
  assert plan.settings(plan.runs[-1], sweep_dir='/s')['max_epsilon'] is None


@pytest.mark.parametrize('text, message', [
    ('noise_mutliplier=1,2', '--noise_mutliplier is not a numeric'),
    ('dp_mechanism=none', '--dp_mechanism is not a numeric'),
    ('noise_multiplier=1,x', "'x' is not a number"),
    ('rounds=1.5', "'1.5' is not an integer"),
    ('noise_multiplier=', 'must be a comma-separated list'),
    ('noise_multiplier=1,,2', 'must be a comma-separated list'),
    ('noise_multiplier=nan', "'nan' is not a finite number"),
    ('noise_multiplier=1,1', 'repeats a value'),
    ('noise_multiplier', 'must be FLAG=V1,V2'),
    ('seed=1,2', 'sweep --seed with --seeds instead'),
])
def test_a_bad_grid_names_the_flag_and_value(text, message):
  with pytest.raises(plan_lib.PlanError) as error:
    plan_lib.parse_grid(text, _NUMERIC)
  assert str(error.value).startswith(f'--grid={text}: ')
  assert message in str(error.value)


@pytest.mark.parametrize('text', ['', '1,-2', '0', 'a', '1,1', 'inf'])
def test_bad_target_epsilons_are_refused(text):
  with pytest.raises(plan_lib.PlanError, match=r'^--target_epsilons='):
    plan_lib.parse_epsilons(text)


def test_contradictions_are_refused():
  with pytest.raises(plan_lib.PlanError, match='calibrated to each target'):
    plan_lib.expand(_base(),
                    base_name='smoke',
                    grids=[('noise_multiplier', (1.0,))],
                    target_epsilons=(4.0,))
  with pytest.raises(plan_lib.PlanError, match='^--target_epsilon=2.0'):
    plan_lib.expand(_base('--target_epsilon=2'),
                    base_name='smoke',
                    target_epsilons=(4.0,))
  with pytest.raises(plan_lib.PlanError, match='^--seeds=0'):
    plan_lib.expand(_base(), base_name='smoke', seeds=0)


def test_plan_json_is_kept_and_another_plan_is_refused(tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  plan = plan_lib.expand(_base(), base_name='smoke', target_epsilons=(4.0,))
  assert not plan_lib.write_or_check(sweep_dir, plan, command='cmd one')
  assert plan_lib.read(sweep_dir) == plan
  # The same plan, written elsewhere and resumed: accepted.
  moved = plan_lib.expand(_base('--output_dir=elsewhere'),
                          base_name='smoke',
                          target_epsilons=(4.0,))
  assert plan_lib.write_or_check(sweep_dir, moved, command='cmd two')
  other = plan_lib.expand(_base('--rounds=5'),
                          base_name='smoke',
                          target_epsilons=(4.0,))
  with pytest.raises(plan_lib.PlanMismatchError) as error:
    plan_lib.write_or_check(sweep_dir, other, command='cmd three')
  message = str(error.value)
  assert '--rounds: plan.json 3, now 5' in message
  assert '`cmd one`' in message  # How to resume the sweep that is there.
  fewer = plan_lib.expand(_base(), base_name='smoke', target_epsilons=(8.0,))
  with pytest.raises(plan_lib.PlanMismatchError, match='runs: plan.json'):
    plan_lib.write_or_check(sweep_dir, fewer, command='cmd four')
  with open(os.path.join(sweep_dir, plan_lib.PLAN_FILE)) as f:
    assert json.load(f)['command'] == 'cmd one'


def test_the_default_directory_follows_the_plan():
  one = plan_lib.expand(_base(), base_name='smoke', seeds=2)
  assert one.digest() == plan_lib.expand(_base(), base_name='smoke',
                                         seeds=2).digest()
  assert one.digest() != plan_lib.expand(_base(), base_name='smoke',
                                         seeds=3).digest()
