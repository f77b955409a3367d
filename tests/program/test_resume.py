"""Kill -9 at the worst moments, resume, and check nothing lies.

Each crash is real: the process SIGKILLs itself at a named point
(`tff_dp.program.faults`), so no Python cleanup runs; the TFF worker must still die
(parent-death signal). The resumed run must end with a ledger and epsilon
equal to an uninterrupted run's, and every round exactly once in the CSV and
in TensorBoard.
"""

import collections
import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tests.helpers import workers
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger

pytestmark = pytest.mark.e2e

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_ROUNDS = 4


def _train(output_dir, *extra, crash_at=None, run_name='run'):
  # A crash point only where asked: never one the tests' environment holds.
  return programs.run_train(f'--flagfile={_SMOKE}',
                            f'--rounds={_ROUNDS}',
                            f'--output_dir={output_dir}',
                            f'--run_name={run_name}',
                            *extra,
                            env_extra={'TFF_DP_CRASH_AT': crash_at or None})


def _csv_rounds(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    return [int(row['round']) for row in csv.DictReader(f)]


def _csv_text(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return f.read()


def _tensorboard_steps(run_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps = collections.defaultdict(list)
  for path in glob.glob(os.path.join(run_dir, 'tensorboard', 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        steps[value.tag].append(event.step)
  return steps


def _expected_epsilon(rounds):
  flags = {}
  with open(_SMOKE) as f:
    for line in f:
      if line.startswith('--'):
        key, value = line.strip()[2:].split('=', 1)
        flags[key] = value
  event = accounting.gaussian_round_event(
      sampling=accounting.ClientSampling.POISSON,
      population=int(flags['num_clients']),
      clients_per_round=int(flags['clients_per_round']),
      noise_multiplier=float(flags['noise_multiplier']))
  return accounting.compute_epsilon([event] * rounds,
                                    delta=float(flags['delta']),
                                    accountant=accounting.AccountantKind.RDP,
                                    relation=accounting.neighboring_relation(
                                        accounting.ClientSampling.POISSON))


# One point in the default tier (the one inside the checkpoint write); every
# point, and random moments, in the slow tier and the fault campaign
# (tools/fault_campaign.py): ~32 s each.
@pytest.mark.parametrize(
    'point',
    [
        pytest.param('between_rounds', marks=pytest.mark.slow),
        'checkpoint_write',
        pytest.param('tensorboard_write', marks=pytest.mark.slow),
        # Half of round 2's metrics.csv line appended, then the kill.
        pytest.param('csv_write', marks=pytest.mark.slow)
    ])
def test_kill_9_then_resume_is_exact(tmp_path, point):
  crashed = _train(tmp_path, crash_at=f'{point}:2')
  assert crashed.returncode == -9, crashed.stderr
  run_dir = os.path.join(tmp_path, 'run')
  if point == 'csv_write':
    assert not _csv_text(run_dir).endswith('\n')  # The line is cut.
  pids = workers.worker_pids_from_log(os.path.join(run_dir, 'worker.log'))
  assert workers.wait_until_gone(pids) == []

  resumed = _train(tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  assert 'resuming after round' in resumed.stdout
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['rounds'] == _ROUNDS
  assert summary['epsilon']['rdp'] == pytest.approx(_expected_epsilon(_ROUNDS),
                                                    rel=1e-12)
  ledger = privacy_ledger.PrivacyLedger.load(
      os.path.join(run_dir, 'ledger.json'))
  assert ledger.rounds == _ROUNDS
  assert _csv_rounds(run_dir) == list(range(1, _ROUNDS + 1))
  for tag, steps in _tensorboard_steps(run_dir).items():
    if tag.startswith(('eval/', 'privacy/', 'time/', 'cohort/')):
      assert sorted(steps) == list(range(1, _ROUNDS + 1)), tag
  pids = workers.worker_pids_from_log(os.path.join(run_dir, 'worker.log'))
  assert workers.wait_until_gone(pids) == []


def _final_state(run_dir):
  path = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))[-1]
  with np.load(os.path.join(path, 'state.npz')) as arrays:
    return [
        arrays[name] for name in sorted(arrays.files, key=lambda n: int(n[4:]))
    ]


# 'rounds': one round per TFF call, killed after round 2 was released.
# 'block': all 4 rounds in one call (--rounds_per_call), killed after round 1
# was released: the checkpoint after round 4 holds rounds 2-4's rows, which
# the resumed run must release, without running a round again; the
# uninterrupted run it is compared with ran one round per call.
# 'block-csv': the same block, killed with half of round 3's metrics.csv
# line appended (slow tier).
@pytest.mark.parametrize('layout,crash_at', [
    ((), 'between_rounds:2'),
    (('--eval_every=4', '--rounds_per_call=4'), 'between_rounds:1'),
    pytest.param(('--eval_every=4', '--rounds_per_call=4'),
                 'csv_write:3',
                 marks=pytest.mark.slow),
],
                         ids=['rounds', 'block', 'block-csv'])
def test_zero_noise_resume_is_bitwise_equal_to_uninterrupted(
    tmp_path, layout, crash_at):
  # The same cohorts in both runs (their secrets would differ otherwise):
  # what must be equal is the state a resume restores and continues.
  zero_noise = ('--dp_mechanism=gaussian_fixed', '--noise_multiplier=0',
                '--allow_zero_noise', '--insecure_sampling_seed=5')
  straight = _train(tmp_path,
                    *zero_noise,
                    '--eval_every=1',
                    '--rounds_per_call=1',
                    run_name='straight')
  assert straight.returncode == 0, straight.stderr
  crashed = _train(tmp_path,
                   *zero_noise,
                   *layout,
                   run_name='resumed',
                   crash_at=crash_at)
  assert crashed.returncode == -9
  if crash_at.startswith('csv_write'):
    assert not _csv_text(os.path.join(tmp_path, 'resumed')).endswith('\n')
  resumed = _train(tmp_path, *zero_noise, *layout, run_name='resumed')
  assert resumed.returncode == 0, resumed.stderr
  assert _csv_rounds(os.path.join(tmp_path,
                                  'resumed')) == list(range(1, _ROUNDS + 1))
  a = _final_state(os.path.join(tmp_path, 'straight'))
  b = _final_state(os.path.join(tmp_path, 'resumed'))
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  with open(os.path.join(tmp_path, 'straight', 'metrics.csv')) as f:
    rows_a = list(csv.DictReader(f))
  with open(os.path.join(tmp_path, 'resumed', 'metrics.csv')) as f:
    rows_b = list(csv.DictReader(f))
  for row_a, row_b in zip(rows_a, rows_b):
    # Every released value but the evaluation of rounds a block skips and
    # the wall time.
    for key, value in row_b.items():
      if value != '' and key != 'nonprivate/round_seconds':
        assert row_a[key] == value, (row_a['round'], key)


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """One finished 2-round run; tests refuse to resume copies of it."""
  output_dir = tmp_path_factory.mktemp('finished')
  assert _train(output_dir, '--rounds=2').returncode == 0
  return os.path.join(output_dir, 'run')


def _copy_run(finished_run, tmp_path):
  shutil.copytree(finished_run, os.path.join(tmp_path, 'run'))
  return os.path.join(tmp_path, 'run')


def test_changing_a_privacy_flag_on_resume_is_refused(finished_run, tmp_path):
  run_dir = _copy_run(finished_run, tmp_path)
  with open(os.path.join(run_dir, 'config.json')) as f:
    config_before = f.read()
  refused = _train(tmp_path, '--noise_multiplier=0.7', '--clip=0.3')
  assert refused.returncode == 2
  assert '--noise_multiplier: checkpoint 0.5, now 0.7' in refused.stderr
  assert '--clip: checkpoint 0.5, now 0.3' in refused.stderr
  assert 'Traceback' not in refused.stderr
  with open(os.path.join(run_dir, 'config.json')) as f:
    assert f.read() == config_before  # Nothing overwritten.


def test_outputs_without_a_valid_checkpoint_are_refused(finished_run, tmp_path):
  run_dir = _copy_run(finished_run, tmp_path)
  for path in glob.glob(
      os.path.join(run_dir, 'checkpoints', 'round_*', 'state.npz')):
    with open(path, 'r+b') as f:
      f.truncate(10)
  refused = _train(tmp_path)
  assert refused.returncode == 2
  assert 'no valid checkpoint' in refused.stderr
  assert 'restart at round 0' in refused.stderr
  assert _csv_rounds(run_dir) == [1, 2]  # Nothing lost.


def test_corrupt_newest_checkpoint_after_its_release_is_refused(
    finished_run, tmp_path):
  run_dir = _copy_run(finished_run, tmp_path)
  newest = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))
  with open(os.path.join(newest[-1], 'state.npz'), 'r+b') as f:
    f.seek(100)
    f.write(b'\x00\xff\x00\xff')
  refused = _train(tmp_path)
  assert refused.returncode == 2
  assert 'rounds 2..2 were released' in refused.stderr
  assert 'checksum' in refused.stderr


@pytest.mark.slow
def test_a_resume_whose_budget_is_spent_stops_cleanly_before_its_next_round(
    finished_run, tmp_path):
  # The budget fits the first round (so the up-front check passes) and the
  # two charged ones, not a third: the loop stops before round 3, exit 0,
  # nothing re-run or lost.
  run_dir = _copy_run(finished_run, tmp_path)
  with open(os.path.join(run_dir, 'summary.json')) as f:
    spent = json.load(f)['guarantee_epsilon']
  budget = spent * (1 + 1e-9)
  resumed = _train(tmp_path, f'--max_epsilon={budget!r}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['rounds'] == 2
  assert summary['stop_reason'].startswith(
      'privacy budget: round 3 would exceed'), summary['stop_reason']
  assert summary['guarantee_epsilon'] == spent
  assert _csv_rounds(run_dir) == [1, 2]
  assert privacy_ledger.PrivacyLedger.load(os.path.join(
      run_dir, 'ledger.json')).rounds == 2
