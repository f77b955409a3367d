"""End to end: the real program through run.sh on the smoke config.

Checks what a user gets: exit code, the run directory's files, the TensorBoard
tags, the CSV rows restricted to the release allow-list, the summary's epsilon
equal to dp-accounting's for the events that ran, and no TFF worker left.
"""

import csv
import glob
import json
import os
import subprocess

import dp_accounting
from dp_accounting import rdp
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import workers

pytestmark = pytest.mark.e2e

_RUN_SH = os.path.join(REPO_ROOT, 'run.sh')
_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _run_sh(*args, timeout=300, env=None):
  if env is None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(['bash', _RUN_SH, *args],
                        cwd=REPO_ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=timeout)


def _tensorboard_tags(event_dir, *, scalars=False):
  """Every tag of the event files (`scalars`: of the scalars only)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in glob.glob(os.path.join(event_dir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if not scalars or value.HasField('simple_value'):
          tags.add(value.tag)
  return tags


def _smoke_flags():
  with open(_SMOKE) as f:
    return dict(
        line.strip()[2:].split('=', 1) for line in f if line.startswith('--'))


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('runs')
  # A user's environment: what quiets TensorFlow is the program's own doing.
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in ('TF_CPP_MIN_LOG_LEVEL', 'PYTHONWARNINGS')
  }
  result = _run_sh('train',
                   f'--flagfile={_SMOKE}',
                   f'--output_dir={output_dir}',
                   '--run_name=smoke',
                   env=env)
  return result, os.path.join(output_dir, 'smoke')


def test_smoke_run_succeeds_and_prints_accuracy_and_epsilon(smoke_run):
  result, _ = smoke_run
  assert result.returncode == 0, result.stderr
  assert 'round 3/3' in result.stdout
  assert 'test accuracy:' in result.stdout
  assert 'epsilon (central): rdp' in result.stdout
  statement = os.path.join(smoke_run[1], 'privacy_statement.txt')
  assert (f'privacy statement (what the guarantee covers, releases and '
          f'assumes): {statement}') in result.stdout
  # Named, not printed: its 20 paragraphs pushed the rounds off the screen.
  assert 'Unit of privacy' not in result.stdout


def test_smoke_run_console_is_quiet_and_accounts_for_the_start_up(smoke_run):
  result, _ = smoke_run
  # No TensorFlow C++ log, no setuptools warning: nothing on stderr.
  assert result.stderr == ''
  lines = result.stdout.splitlines()
  phases = [line.split('] ', 1)[1] for line in lines if line.startswith('[')]
  # A DP run: the phases' seconds grow with the client data, so they are
  # not printed (`console.StartupPhases`).
  assert all(
      line.startswith('[start-up] ') for line in lines if line.startswith('['))
  assert phases == [
      'loading the data', 'importing TensorFlow and TFF',
      'building the learning process', 'starting the TFF worker',
      'running round 1 (slower than the next: it traces the computations '
      'first)'
  ]
  # The last phase line comes right before round 1's.
  first_round = next(
      i for i, line in enumerate(lines) if line.startswith('round 1/3 |'))
  assert 'running round 1' in lines[first_round - 1]


def test_smoke_run_writes_every_output(smoke_run):
  _, run_dir = smoke_run
  for name in ('flags.txt', 'config.json', 'metrics.csv', 'ledger.json',
               'privacy_statement.txt', 'summary.json', 'worker.log'):
    assert os.path.isfile(os.path.join(run_dir, name)), name
  tags = _tensorboard_tags(os.path.join(run_dir, 'tensorboard'))
  # The scalars, the run-level text, the hparams plugin's experiment and
  # session, the custom-scalars layout.
  for tag in ('eval/accuracy', 'eval/loss', 'privacy/epsilon_rdp',
              'privacy/epsilon_pld', 'privacy/noise_multiplier', 'privacy/clip',
              'flags', 'privacy_statement', '_hparams_/experiment',
              '_hparams_/session_start_info', 'custom_scalars__config__'):
    assert tag in tags, tag
  # Round times grow with the hidden cohorts: not released in a DP run.
  assert not [tag for tag in tags if 'seconds' in tag], tags


def test_smoke_run_releases_only_allowed_keys(smoke_run):
  from tff_dp.program import release  # pylint: disable=g-import-not-at-top
  _, run_dir = smoke_run
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [int(row['round']) for row in rows] == [1, 2, 3]
  assert set(rows[0]) - {'round'} <= release.DP_SAFE_KEYS
  tags = _tensorboard_tags(os.path.join(run_dir, 'tensorboard'))
  scalar_tags = _tensorboard_tags(os.path.join(run_dir, 'tensorboard'),
                                  scalars=True)
  assert scalar_tags <= release.DP_SAFE_KEYS
  assert not any(tag.startswith('nonprivate/') for tag in tags)


def test_smoke_summary_epsilon_is_dp_accountings_for_what_ran(smoke_run):
  _, run_dir = smoke_run
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  flags = _smoke_flags()
  q = int(flags['clients_per_round']) / int(flags['num_clients'])
  accountant = rdp.RdpAccountant()
  accountant.compose(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(float(flags['noise_multiplier']))),
      summary['rounds'])
  assert summary['rounds'] == 3
  assert summary['epsilon']['rdp'] == pytest.approx(accountant.get_epsilon(
      float(flags['delta'])),
                                                    rel=1e-9)
  assert summary['epsilon']['pld'] <= summary['epsilon']['rdp'] * 1.001
  assert 0.0 <= summary['accuracy'] <= 1.0


def test_smoke_run_leaves_no_worker(smoke_run):
  _, run_dir = smoke_run
  pids = workers.worker_pids_from_log(os.path.join(run_dir, 'worker.log'))
  assert len(pids) == 1
  assert workers.wait_until_gone(pids) == []


def test_bad_flag_through_run_sh_fails_cleanly(tmp_path):
  result = _run_sh('train',
                   f'--flagfile={_SMOKE}',
                   '--noise_multiplier=nan',
                   f'--output_dir={tmp_path}',
                   timeout=120)
  assert result.returncode != 0
  assert '--noise_multiplier=nan' in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(tmp_path) == []


def test_population_check_through_run_sh_fails_cleanly(tmp_path):
  result = _run_sh('train',
                   f'--flagfile={_SMOKE}',
                   '--delta=0.1',
                   f'--output_dir={tmp_path}',
                   timeout=120)
  assert result.returncode == 2
  assert '--delta=0.1' in result.stderr
  assert '1/population' in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(tmp_path) == []


def test_planning_mode_reports_the_smoke_runs_epsilon(smoke_run):
  _, run_dir = smoke_run
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  flags = _smoke_flags()
  result = _run_sh('epsilon',
                   f'--population={flags["num_clients"]}',
                   f'--clients_per_round={flags["clients_per_round"]}',
                   f'--noise_multiplier={flags["noise_multiplier"]}',
                   f'--rounds={flags["rounds"]}',
                   f'--delta={flags["delta"]}',
                   timeout=120)
  assert result.returncode == 0, result.stderr
  for name in ('rdp', 'pld'):
    printed = float(result.stdout.split(f'epsilon ({name}): ')[1].split()[0])
    assert printed == pytest.approx(summary['epsilon'][name], rel=1e-5)
  from_ledger = _run_sh('epsilon', f'--run_dir={run_dir}', timeout=120)
  assert from_ledger.returncode == 0, from_ledger.stderr
  assert from_ledger.stdout.split('\n', 1)[1] == result.stdout.split('\n', 2)[2]


def test_budget_just_below_round_2_releases_exactly_1_round(tmp_path):
  from tff_dp.privacy import accounting  # pylint: disable=g-import-not-at-top
  from tff_dp.privacy import privacy_ledger  # pylint: disable=g-import-not-at-top
  flags = _smoke_flags()
  event = accounting.gaussian_round_event(
      sampling=accounting.ClientSampling.POISSON,
      population=int(flags['num_clients']),
      clients_per_round=int(flags['clients_per_round']),
      noise_multiplier=float(flags['noise_multiplier']))
  # The guarantee is the tightest accountant's epsilon (PLD here).
  round_2 = accounting.compute_epsilon([event] * 2,
                                       delta=float(flags['delta']),
                                       accountant=accounting.AccountantKind.PLD,
                                       relation=accounting.neighboring_relation(
                                           accounting.ClientSampling.POISSON))
  budget = round_2 * (1 - 1e-6)
  result = _run_sh('train', f'--flagfile={_SMOKE}', f'--max_epsilon={budget}',
                   f'--output_dir={tmp_path}', '--run_name=budget')
  assert result.returncode == 0, result.stderr
  run_dir = tmp_path / 'budget'
  with open(run_dir / 'summary.json') as f:
    summary = json.load(f)
  assert summary['rounds'] == 1
  assert 'privacy budget' in summary['stop_reason']
  assert summary['guarantee_epsilon'] <= budget
  with open(run_dir / 'metrics.csv') as f:
    assert [row['round'] for row in csv.DictReader(f)] == ['1']
  assert privacy_ledger.PrivacyLedger.load(str(run_dir /
                                               'ledger.json')).rounds == 1


def test_target_epsilon_calibrates_noise_before_training(tmp_path):
  result = _run_sh('train', f'--flagfile={_SMOKE}', '--target_epsilon=4',
                   f'--output_dir={tmp_path}', '--run_name=target')
  assert result.returncode == 0, result.stderr
  assert 'calibrated --noise_multiplier=' in result.stdout
  with open(tmp_path / 'target' / 'summary.json') as f:
    summary = json.load(f)
  assert 3.9 < summary['guarantee_epsilon'] <= 4.0
  with open(tmp_path / 'target' / 'config.json') as f:
    config = json.load(f)
  assert config['noise_multiplier'] > float(_smoke_flags()['noise_multiplier'])


@pytest.mark.parametrize('sampling,clients_per_round,event_name', [
    ('fixed_size', 10, 'SampledWithoutReplacementDpEvent'),
    pytest.param('full', 40, 'GaussianDpEvent', marks=pytest.mark.slow),
])
def test_other_samplers_are_charged_as_what_ran(tmp_path, sampling,
                                                clients_per_round, event_name):
  result = _run_sh('train', f'--flagfile={_SMOKE}', '--rounds=2',
                   f'--client_sampling={sampling}',
                   f'--clients_per_round={clients_per_round}',
                   f'--output_dir={tmp_path}', '--run_name=run')
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'run' / 'ledger.json') as f:
    ledger = json.load(f)
  assert [r['event']['name'] for r in ledger['rounds']] == [event_name] * 2
  with open(tmp_path / 'run' / 'summary.json') as f:
    summary = json.load(f)
  assert summary['rounds'] == 2
  if sampling == 'fixed_size':
    assert ledger['neighboring_relation'] == 'REPLACE_ONE'
    # z/2: replacing one client moves a C-clipped sum by up to 2C.
    assert ledger['rounds'][0]['event']['event']['noise_multiplier'] == (
        float(_smoke_flags()['noise_multiplier']) / 2)
    # PLD cannot amplify without replacement: it gives the (exact)
    # unamplified bound, which the run reports where it is the smaller one.
    assert summary['accountants_not_applicable'] == []
    assert summary['epsilon']['pld'] > 0
  else:
    assert ledger['neighboring_relation'] == 'ADD_OR_REMOVE_ONE'
