"""Flag parsing and validation: every bad input is refused with its flag and value.

Pure Python (no TensorFlow): these checks run before the program imports TFF.
"""

import os

from absl import flags
import pytest

from tests.helpers import REPO_ROOT
from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags

CONFIGS = os.path.join(REPO_ROOT, 'configs')


def _parse(argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp'] + list(argv))
  return fv


def _config(argv):
  return cli_flags.config_from_flags(_parse(argv))


# (argument, text the error must contain). absl reports "flag --x=v: reason".
BAD_FLAG_VALUES = [
    ('--noise_multiplier=nan', 'flag --noise_multiplier=nan'),
    ('--noise_multiplier=inf', 'flag --noise_multiplier=inf'),
    ('--noise_multiplier=-1', 'flag --noise_multiplier=-1'),
    ('--noise_multiplier=abc', 'flag --noise_multiplier=abc'),
    ('--clip=0', 'flag --clip=0'),
    ('--clip=-0.5', 'flag --clip=-0.5'),
    ('--clip=nan', 'flag --clip=nan'),
    ('--initial_clip=0', 'flag --initial_clip=0'),
    ('--delta=0', 'flag --delta=0'),
    ('--delta=1', 'flag --delta=1'),
    ('--delta=nan', 'flag --delta=nan'),
    ('--delta=-0.001', 'flag --delta=-0.001'),
    ('--rounds=0', 'flag --rounds=0'),
    ('--rounds=-3', 'flag --rounds=-3'),
    ('--rounds=10000000', 'flag --rounds=10000000'),
    ('--clients_per_round=0', 'flag --clients_per_round=0'),
    ('--num_clients=0', 'flag --num_clients=0'),
    ('--client_batch_size=0', 'flag --client_batch_size=0'),
    ('--client_epochs=0', 'flag --client_epochs=0'),
    ('--client_learning_rate=0', 'flag --client_learning_rate=0'),
    ('--client_learning_rate=inf', 'flag --client_learning_rate=inf'),
    ('--server_learning_rate=-0.1', 'flag --server_learning_rate=-0.1'),
    ('--server_momentum=1.0', 'flag --server_momentum=1.0'),
    ('--client_momentum=nan', 'flag --client_momentum=nan'),
    ('--target_unclipped_quantile=1.5', 'flag --target_unclipped_quantile=1.5'),
    ('--clip_learning_rate=-1', 'flag --clip_learning_rate=-1'),
    ('--test_fraction=1', 'flag --test_fraction=1'),
    ('--test_fraction=0', 'flag --test_fraction=0'),
    ('--dirichlet_alpha=0', 'flag --dirichlet_alpha=0'),
    ('--eval_every=0', 'flag --eval_every=0'),
    ('--hidden_units=0', 'flag --hidden_units=0'),
    ('--seed=-1', 'flag --seed=-1'),
    ('--dp_mechanism=laplace', 'flag --dp_mechanism=laplace'),
    ('--client_sampling=random', 'flag --client_sampling=random'),
    ('--model=resnet', 'flag --model=resnet'),
    ('--dataset=mnist_online', 'flag --dataset=mnist_online'),
    ('--run_name=../escape', 'flag --run_name=../escape'),
    ('--accountants=rdp,moments', "flag --accountants=['rdp', 'moments']"),
    ('--accountants=rdp,rdp', "flag --accountants=['rdp', 'rdp']"),
    ('--target_epsilon=0', 'flag --target_epsilon=0'),
    ('--target_epsilon=nan', 'flag --target_epsilon=nan'),
    ('--max_epsilon=inf', 'flag --max_epsilon=inf'),
    ('--max_epsilon=-2', 'flag --max_epsilon=-2'),
    # Empty: it would write into the current directory.
    ('--output_dir=', 'flag --output_dir='),
    ('--insecure_sampling_seed=-1', 'flag --insecure_sampling_seed=-1'),
]


@pytest.mark.parametrize('arg,message', BAD_FLAG_VALUES)
def test_bad_flag_value_is_refused_naming_flag_and_value(arg, message):
  with pytest.raises(flags.IllegalFlagValueError) as error:
    _parse([arg])
  assert message in str(error.value)


def test_unknown_flag_and_missing_flagfile_are_refused():
  with pytest.raises(flags.UnrecognizedFlagError):
    _parse(['--noise_multiplyer=1.0'])
  with pytest.raises(flags.CantOpenFlagFileError):
    _parse(['--flagfile=/nonexistent/tff-dp.cfg'])


# (arguments, flag named in the error, population or None).
BAD_COMBINATIONS = [
    (['--dp_mechanism=gaussian_fixed',
      '--noise_multiplier=0'], '--noise_multiplier=0.0', None),
    ([
        '--dp_mechanism=gaussian_adaptive', '--noise_multiplier=1.0',
        '--clients_per_round=4', '--num_clients=40'
    ], '--noise_multiplier=1.0', None),
    (['--clients_per_round=50',
      '--num_clients=40'], '--clients_per_round=50', None),
    (['--delta=0.01', '--num_clients=700'], '--delta=0.01', 700),
    ([
        '--client_sampling=full', '--num_clients=40', '--clients_per_round=10',
        '--dp_mechanism=gaussian_fixed'
    ], '--clients_per_round=10', 40),
    (['--num_clients=40',
      '--clients_per_round=30'], '--clients_per_round=30', 20),
    (['--dp_mechanism=none',
      '--target_epsilon=3'], '--target_epsilon=3.0', None),
    (['--dp_mechanism=none', '--max_epsilon=3'], '--max_epsilon=3.0', None),
    # Private, but not centrally: the budget flags say what they are about.
    ([
        '--dp_mechanism=none', '--local_dp=laplace', '--local_epsilon=1',
        '--max_epsilon=3'
    ], '--max_epsilon=3.0: is about the central epsilon', None),
    ([
        '--dp_mechanism=gaussian_fixed', '--noise_multiplier=0',
        '--allow_zero_noise', '--max_epsilon=3'
    ], '--max_epsilon=3.0', None),
    (['--client_weighting=num_examples'], '--client_weighting=num_examples',
     None),
    (['--client_weighting=capped'], '--client_weighting=capped: needs '
     '--weight_cap (', None),
    (['--weight_cap=5'], '--weight_cap=5.0: is used only with', None),
    (['--local_epsilon=1'], '--local_epsilon=1.0: is used only with '
     '--local_dp=laplace', None),
    (['--local_dp=laplace', '--local_epsilon=1', '--local_noise_multiplier=1'
     ], '--local_noise_multiplier=1.0: is used only with --local_dp=gaussian',
     None),
    (['--proximal_strength=0.1'], '--proximal_strength=0.1', None),
    # What a mechanism's row (tff_dp.mechanisms.registry) says it runs with.
    ([
        '--algorithm=dp_ftrl', '--dp_mechanism=gaussian_fixed',
        '--client_sampling=shuffled_epochs'
    ], '--dp_mechanism=gaussian_fixed', None),
    (['--dp_mechanism=tree_aggregation'], '--dp_mechanism=tree_aggregation',
     None),
    ([
        '--algorithm=dp_ftrl', '--dp_mechanism=tree_aggregation',
        '--client_sampling=shuffled_epochs', '--target_epsilon=3'
    ], '--target_epsilon=3.0', None),
    ([
        '--algorithm=dp_ftrl', '--dp_mechanism=tree_aggregation',
        '--client_sampling=shuffled_epochs', '--local_dp=laplace',
        '--local_epsilon=1'
    ], '--local_dp=laplace', None),
    ([
        '--dp_mechanism=none', '--example_dp', '--client_epochs=2',
        '--clients_per_call=4'
    ], '--example_dp=True with --client_epochs=2', None),
    # A file without --dataset=sqlite trained on the default digits, silently.
    (['--client_data=mine.sqlite'], '--client_data=mine.sqlite: is read only '
     'with --dataset=sqlite (this run: --dataset=digits)', None),
]

# A setting whose partner flag is unset: (argv, the message's start). The
# message names the flag that is set and what the missing one is, never
# '--local_epsilon=None: is required' (a new user's review: it reads as if
# None had been passed).
MISSING_PARTNERS = [
    (['--local_dp=laplace'], '--local_dp=laplace: needs --local_epsilon (a '
     'positive number; the Laplace mechanism\'s epsilon per client per round)'),
    (['--local_dp=gaussian'], '--local_dp=gaussian: needs '
     '--local_noise_multiplier (a positive number'),
    (['--client_weighting=capped'], '--client_weighting=capped: needs '
     '--weight_cap (a positive number'),
    (['--evaluation=federated', '--release_nonprivate_metrics'],
     '--evaluation=federated: needs --eval_clients (a positive integer'),
    (['--workers=127.0.0.1:7000'], '--workers=127.0.0.1:7000: needs '
     '--worker_certs (the directory'),
]


@pytest.mark.parametrize('argv,start', MISSING_PARTNERS)
def test_a_missing_partner_flag_is_named_with_what_it_needs(argv, start):
  with pytest.raises(ConfigError) as error:
    config_checks.check_config(_config(argv))
  assert str(error.value).startswith(start)
  assert '=None' not in str(error.value) and '=:' not in str(error.value)


@pytest.mark.parametrize('argv,message,population', BAD_COMBINATIONS)
def test_contradictory_settings_are_refused(argv, message, population):
  config = _config(argv)
  with pytest.raises(ConfigError) as error:
    config_checks.check_config(config)
    if population is not None:
      config_checks.check_population(config, population)
  assert message in str(error.value)


def test_adaptive_limit_is_tffs_limit():
  # TFF raises for z >= 2 * 0.05 * clients_per_round; we refuse the same set
  # up front with a message instead of a traceback from inside TFF.
  ok = _config(['--noise_multiplier=6.99', '--clients_per_round=70'])
  config_checks.check_config(ok)
  bad = _config(['--noise_multiplier=7.0', '--clients_per_round=70'])
  with pytest.raises(ConfigError):
    config_checks.check_config(bad)


def test_zero_noise_with_a_dp_mechanism_needs_the_explicit_flag():
  config = _config([
      '--dp_mechanism=gaussian_fixed', '--noise_multiplier=0',
      '--allow_zero_noise'
  ])
  config_checks.check_config(config)
  assert config.uses_dp_aggregator and not config.private


def test_target_epsilon_lets_noise_be_calibrated_later():
  # The noise flag is replaced after calibration, so z = 0 is not an error.
  config = _config(['--target_epsilon=4', '--noise_multiplier=0'])
  config_checks.check_config(config)


def test_nonprivate_run_accepts_zero_noise_and_any_delta():
  config = _config(
      ['--dp_mechanism=none', '--noise_multiplier=0', '--delta=0.5'])
  config_checks.check_config(config)
  config_checks.check_population(config, 700)


def _flagfile_values(name):
  with open(os.path.join(CONFIGS, name)) as f:
    lines = [
        line.strip() for line in f if line.strip() and not line.startswith('#')
    ]
  return dict(line[2:].split('=', 1) for line in lines)


@pytest.mark.parametrize('name', sorted(os.listdir(CONFIGS)))
def test_every_shipped_config_parses_and_validates(name):
  config = _config([f'--flagfile={os.path.join(CONFIGS, name)}'])
  config_checks.check_config(config)
  config_checks.check_population(config, config.num_clients)


def test_nonprivate_twin_differs_from_default_only_in_privacy():
  default = _flagfile_values('default.cfg')
  twin = _flagfile_values('nonprivate.cfg')
  # Weighting by |D_k| is the twin's only other difference: DP forbids it.
  privacy_flags = {
      'dp_mechanism', 'noise_multiplier', 'delta', 'client_weighting'
  }
  assert twin['dp_mechanism'] == 'none'
  for key in (set(default) | set(twin)) - privacy_flags:
    assert default.get(key) == twin.get(key), key


def test_command_line_overrides_flagfile():
  config = _config(
      [f'--flagfile={os.path.join(CONFIGS, "default.cfg")}', '--rounds=7'])
  assert config.rounds == 7


def test_a_data_dir_given_to_a_dataset_that_reads_none_is_noted():
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', '--data_dir=/srv/tff'])
  assert cli_flags.unread_data_dir_note(
      fv, cli_flags.config_from_flags(fv)
  ) == ('note: --data_dir=/srv/tff is not read: --dataset=digits reads nothing '
        'from it')
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', '--data_dir=/srv/tff', '--dataset=emnist_digits'])
  assert cli_flags.unread_data_dir_note(fv,
                                        cli_flags.config_from_flags(fv)) is None
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp'])
  assert cli_flags.unread_data_dir_note(fv,
                                        cli_flags.config_from_flags(fv)) is None
