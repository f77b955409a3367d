"""The Python API (`tff_dp.train`, `tff_dp.make_config`) and its example.

Settings parse exactly as the command line's (defaults of configs/default.cfg,
the flags' validators, the same refusals); a run from Python writes the run
directory a command-line run writes and returns the weights, the released
history and the epsilons; a user's own Keras model and ClientData train.
"""

import collections
import json
import os
import re
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests import helpers
import tff_dp
from tff_dp import api
from tff_dp import simulation_path
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.config import DpMechanism
from tff_dp.data import loading
from tff_dp.data import python_client_data
from tff_dp.program import run_lock

_SMOKE = os.path.join(helpers.REPO_ROOT, 'configs', 'smoke.cfg')


def _cli_config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['train', *argv])
  return cli_flags.config_from_flags(fv)


def test_defaults_are_the_main_job_and_settings_are_flags():
  default = os.path.join(helpers.REPO_ROOT, 'configs', 'default.cfg')
  assert api.make_config() == _cli_config(f'--flagfile={default}')
  config = tff_dp.make_config(rounds=7,
                              dp_mechanism=DpMechanism.GAUSSIAN_FIXED,
                              accountants=['rdp'],
                              release_nonprivate_metrics=True,
                              max_epsilon=None)
  assert config == _cli_config(f'--flagfile={default}', '--rounds=7',
                               '--dp_mechanism=gaussian_fixed',
                               '--accountants=rdp',
                               '--release_nonprivate_metrics')
  assert api.make_config(None).rounds == _cli_config().rounds


@pytest.mark.parametrize('settings, message', [
    (dict(roundz=3), '--roundz=3: is not a setting'),
    (dict(rounds=0), 'rounds'),
    (dict(dp_mechanism='laplace'), 'dp_mechanism'),
])
def test_bad_settings_are_refused_naming_them(settings, message):
  with pytest.raises(ConfigError, match=message):
    api.make_config(**settings)


@pytest.mark.parametrize(
    'settings, flag, value',
    [
        (dict(noise_multiplier=float('nan')), 'noise_multiplier', 'nan'),
        (dict(rounds=0, seed=3), 'rounds', '0'),
        # A bool for a flag that takes a value: absl's 'Missing value for flag'.
        (dict(rounds=True), 'rounds', 'True'),
    ])
def test_a_refused_value_is_named_as_its_setting(settings, flag, value):
  with pytest.raises(ConfigError) as refused:
    api.make_config(**settings)
  assert refused.value.flag == flag
  assert str(refused.value).startswith(f'--{flag}={value}: ')


def test_a_refused_value_from_the_flagfile_names_the_flagfile(tmp_path):
  flagfile = tmp_path / 'bad.cfg'
  flagfile.write_text('--rounds=0\n')
  with pytest.raises(ConfigError) as refused:
    api.make_config(str(flagfile), seed=3)
  assert refused.value.flag == 'flagfile'
  assert str(flagfile) in str(refused.value) and '--rounds=0' in str(
      refused.value)


def test_a_missing_flagfile_is_named():
  with pytest.raises(ConfigError, match='--flagfile=nope.cfg: no such file'):
    api.make_config('nope.cfg')


def test_client_data_becomes_checked_federated_data():
  client_data = tff.simulation.datasets.TestClientData({
      'a':
          collections.OrderedDict(x=np.ones((3, 2, 2), np.float32),
                                  y=np.array([0, 1, 2], np.int32)),
      'b':
          collections.OrderedDict(x=np.zeros((1, 2, 2), np.float32),
                                  y=np.array([1], np.int32)),
  })
  test_data = tf.data.Dataset.from_tensor_slices((np.ones(
      (2, 4), np.float32), np.array([3, 0], np.int32)))
  data = python_client_data.from_client_data(client_data, test_data=test_data)
  assert data.client_ids == ('a', 'b') and data.input_dim == 4
  assert data.num_classes == 4 and data.client_x[0].shape == (3, 4)
  renamed = python_client_data.from_client_data(
      tff.simulation.datasets.TestClientData({
          'a':
              collections.OrderedDict(pixels=np.ones((2, 4), np.float32),
                                      label=np.array([0, 1], np.int32))
      }),
      # Test elements are like the clients': the same element_fn maps them.
      test_data=tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(pixels=np.ones((2, 4), np.float32),
                                  label=np.array([3, 0], np.int32))),
      element_fn=lambda e: (e['pixels'], e['label']))
  assert renamed.client_sizes().tolist() == [2]
  with pytest.raises(loading.DataError, match="expected 'x' and 'y'"):
    python_client_data.from_client_data(tff.simulation.datasets.TestClientData(
        {'a': collections.OrderedDict(pixels=np.ones((2, 4), np.float32))}),
                                        test_data=test_data)


@pytest.mark.tff
def test_train_returns_weights_history_and_epsilons(tmp_path):
  seen = []
  # A notebook's (here: the test session's) TFF context is its own: a run
  # trains on tff-dp's worker and gives the caller's context back.
  callers = tff.framework.get_context_stack().current
  run_dir = str(tmp_path / 'api')
  # The run holds its directory's lock while it trains (`run_lock`).
  result = tff_dp.train(flagfile=_SMOKE,
                        rounds=2,
                        output_dir=str(tmp_path),
                        run_name='api',
                        on_round=lambda r, values: seen.append(
                            (r, run_lock.live_holder(run_dir))))
  assert seen == [(1, os.getpid()), (2, os.getpid())]
  assert tff.framework.get_context_stack().current is callers
  assert [row['round'] for row in result.history] == [1.0, 2.0]
  # Released when train returns; another holder's lock refuses a call.
  with run_lock.RunLock(run_dir):
    with pytest.raises(ConfigError, match=f'in use .*pid {os.getpid()}'):
      tff_dp.train(flagfile=_SMOKE,
                   rounds=3,
                   output_dir=str(tmp_path),
                   run_name='api')
  with open(tmp_path / 'api' / 'summary.json', encoding='utf-8') as f:
    summary = json.load(f)
  assert result.epsilons == summary['epsilon']
  assert result.epsilon == summary['guarantee_epsilon']
  assert result.history[-1]['eval/accuracy'] == pytest.approx(
      summary['accuracy'])
  model = result.keras_model()
  np.testing.assert_array_equal(model.get_weights()[0],
                                result.model_weights.trainable[0])
  # Resuming under changed settings: named as such (a ConfigError, as on
  # the command line), not as a checkpoint of another model.
  with pytest.raises(ConfigError,
                     match='cannot resume .*these flags differ from the '
                     'checkpoint being resumed: --model: checkpoint '
                     "'logistic_regression', now 'mlp'"):
    tff_dp.train(flagfile=_SMOKE,
                 rounds=3,
                 model='mlp',
                 output_dir=str(tmp_path),
                 run_name='api')
  # The same settings from Python and from flags: one set of refusals.
  with pytest.raises(ConfigError, match='noise_multiplier'):
    tff_dp.train(flagfile=_SMOKE,
                 noise_multiplier=0.0,
                 output_dir=str(tmp_path))


@pytest.mark.e2e
def test_the_example_trains_its_own_model_on_its_own_clients(tmp_path):
  result = subprocess.run([
      sys.executable, '-m', 'examples.train_from_python', '--rounds=3',
      f'--output_dir={tmp_path}'
  ],
                          capture_output=True,
                          text=True,
                          timeout=600,
                          cwd=helpers.REPO_ROOT,
                          check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'epsilon ' in result.stdout and 'after 3 rounds' in result.stdout
  assert 'trained model: 2410 parameters' in result.stdout
  (run_dir,) = os.listdir(tmp_path)
  with open(tmp_path / run_dir / 'privacy_statement.txt',
            encoding='utf-8') as f:
    assert 'declared public by the caller' in f.read()


def _fresh_python(*args, env, timeout):
  """Python with `args` in a new interpreter (TensorFlow not loaded)."""
  return subprocess.run([sys.executable, *args],
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        cwd=helpers.REPO_ROOT,
                        env=env,
                        check=False)


# A line of TensorFlow's C++ logging: '2026-12-05 12:35:04.768191: I tensorflow/...'.
_TF_CPP_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ',
                          re.MULTILINE)


@pytest.mark.e2e
@pytest.mark.slow  # Two runs of ~15 s each.
@pytest.mark.parametrize('level, printed', [(None, False), ('0', True)])
def test_train_quiets_tensorflows_cpp_log_unless_the_caller_set_it(
    tmp_path, level, printed):
  """A script that imports tff_dp and calls `train` (TensorFlow not yet
  loaded) prints no C++ log line; TF_CPP_MIN_LOG_LEVEL=0 in the caller's
  environment is kept, and shows that this TensorFlow does print them."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  if level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  result = _fresh_python('-m',
                         'examples.quickstart',
                         '--rounds=1',
                         f'--flagfile={_SMOKE}',
                         f'--output_dir={tmp_path}',
                         env=env,
                         timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'after 1 rounds' in result.stdout
  assert bool(_TF_CPP_LINE.search(
      result.stderr)) is printed, (result.stderr[-3000:])


# A fresh interpreter: in this one TensorFlow is loaded.
def test_a_refused_train_leaves_the_callers_environment_alone():
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  script = ('import os, sys, tff_dp\n'
            'try:\n'
            '  tff_dp.train(rounds=-1)\n'
            'except tff_dp.api.ConfigError:\n'
            '  pass\n'
            'print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"),'
            ' "tensorflow" in sys.modules)\n')
  result = _fresh_python('-c', script, env=env, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == 'None False\n', result.stderr[-2000:]


def test_a_client_data_path_is_the_client_data_setting(monkeypatch):
  # A path is the --client_data flag (an imported file), not a ClientData.
  seen = {}

  def prepared(config, client_data, test_data, data_options):
    del test_data, data_options
    seen.update(config=config, client_data=client_data)
    raise ConfigError('stop', 'here', 'enough')

  monkeypatch.setattr(api, '_prepared', prepared)
  with pytest.raises(ConfigError, match='--stop=here'):
    tff_dp.train(dataset='sqlite', client_data='/data/visits.sqlite')
  assert seen['client_data'] is None
  assert seen['config'].client_data == '/data/visits.sqlite'


def test_workers_are_keyword_settings_checked_as_on_the_command_line():
  from tff_dp import config_checks  # pylint: disable=g-import-not-at-top
  config = api.make_config(workers='127.0.0.1:7001,[::1]:7002',
                           worker_certs='certs',
                           clients_per_call=0)
  assert config.workers == '127.0.0.1:7001,[::1]:7002'
  config_checks.check_config(config)
  # With unsharded data, remote workers take TFF's one-client-per-call path.
  assert simulation_path.resolve_clients_per_call(config, in_memory=True) == 1
  with pytest.raises(ConfigError, match='--workers'):
    api.make_config(workers='127.0.0.1')
  with pytest.raises(ConfigError,
                     match='grouped path under --workers reads each worker'):
    config_checks.check_config(
        api.make_config(workers='h:1', worker_certs='c', clients_per_call=5))
  with pytest.raises(ConfigError, match='--workers=h:1: needs --worker_certs'):
    config_checks.check_config(api.make_config(workers='h:1'))
