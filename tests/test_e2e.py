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

from conftest import REPO_ROOT
import worker_utils

pytestmark = pytest.mark.e2e

_RUN_SH = os.path.join(REPO_ROOT, 'run.sh')
_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _run_sh(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(['bash', _RUN_SH, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _tensorboard_tags(event_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in glob.glob(os.path.join(event_dir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


def _smoke_flags():
  with open(_SMOKE) as f:
    return dict(line.strip()[2:].split('=', 1) for line in f
                if line.startswith('--'))


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('runs')
  result = _run_sh('train', f'--flagfile={_SMOKE}',
                   f'--output_dir={output_dir}', '--run_name=smoke')
  return result, os.path.join(output_dir, 'smoke')


def test_smoke_run_succeeds_and_prints_accuracy_and_epsilon(smoke_run):
  result, _ = smoke_run
  assert result.returncode == 0, result.stderr
  assert 'round 3/3' in result.stdout
  assert 'test accuracy:' in result.stdout
  assert 'epsilon: rdp' in result.stdout
  assert 'Privacy statement' in result.stdout


def test_smoke_run_writes_every_output(smoke_run):
  _, run_dir = smoke_run
  for name in ('flags.txt', 'config.json', 'metrics.csv', 'ledger.json',
               'privacy_statement.txt', 'summary.json', 'worker.log'):
    assert os.path.isfile(os.path.join(run_dir, name)), name
  tags = _tensorboard_tags(os.path.join(run_dir, 'tensorboard'))
  for tag in ('eval/accuracy', 'eval/loss', 'privacy/epsilon_rdp',
              'privacy/epsilon_pld', 'privacy/noise_multiplier',
              'privacy/clip', 'time/round_seconds', 'flags',
              'privacy_statement'):
    assert tag in tags, tag


def test_smoke_run_releases_only_allowed_keys(smoke_run):
  from tff_dp import release  # pylint: disable=g-import-not-at-top
  _, run_dir = smoke_run
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [int(row['round']) for row in rows] == [1, 2, 3]
  assert set(rows[0]) - {'round'} <= release.DP_SAFE_KEYS
  tags = _tensorboard_tags(os.path.join(run_dir, 'tensorboard'))
  scalar_tags = tags - {'flags', 'privacy_statement'}
  assert scalar_tags <= release.DP_SAFE_KEYS
  assert not any(tag.startswith('nonprivate/') for tag in tags)


def test_smoke_summary_epsilon_is_dp_accountings_for_what_ran(smoke_run):
  _, run_dir = smoke_run
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  flags = _smoke_flags()
  q = int(flags['clients_per_round']) / int(flags['num_clients'])
  accountant = rdp.RdpAccountant()
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(float(flags['noise_multiplier']))),
                     summary['rounds'])
  assert summary['rounds'] == 3
  assert summary['epsilon']['rdp'] == pytest.approx(
      accountant.get_epsilon(float(flags['delta'])), rel=1e-9)
  assert summary['epsilon']['pld'] <= summary['epsilon']['rdp'] * 1.001
  assert 0.0 <= summary['accuracy'] <= 1.0


def test_smoke_run_leaves_no_worker(smoke_run):
  _, run_dir = smoke_run
  pids = worker_utils.worker_pids_from_log(os.path.join(run_dir, 'worker.log'))
  assert len(pids) == 1
  assert worker_utils.wait_until_gone(pids) == []


def test_bad_flag_through_run_sh_fails_cleanly(tmp_path):
  result = _run_sh('train', f'--flagfile={_SMOKE}', '--noise_multiplier=nan',
                   f'--output_dir={tmp_path}', timeout=120)
  assert result.returncode != 0
  assert '--noise_multiplier=nan' in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(tmp_path) == []


def test_population_check_through_run_sh_fails_cleanly(tmp_path):
  result = _run_sh('train', f'--flagfile={_SMOKE}', '--delta=0.1',
                   f'--output_dir={tmp_path}', timeout=120)
  assert result.returncode == 2
  assert '--delta=0.1' in result.stderr
  assert '1/population' in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(tmp_path) == []
