"""`run.sh epsilon`: planning, calibration and ledgers, through the program.

The program is pure Python (no TensorFlow), so each call takes about a second.
Expected values come from dp-accounting directly, not from tff_dp.
"""

import os
import re
import subprocess
import sys

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import ledgers
from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy import recommendation
from tff_dp.program import run_lock

# Every test runs the program (pytest.ini's e2e), if only for a second.
pytestmark = pytest.mark.e2e


def _epsilon_program(*args):
  return subprocess.run([sys.executable, '-m', 'tff_dp.cli.epsilon', *args],
                        cwd=REPO_ROOT,
                        capture_output=True,
                        text=True,
                        timeout=120)


def _printed(stdout, name):
  match = re.search(rf'^epsilon \({name}\): (\S+)$', stdout, re.MULTILINE)
  assert match, stdout
  return float(match.group(1))


def _poisson(q, z, rounds):
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
      rounds)


def test_planning_prints_dp_accountings_epsilon():
  result = _epsilon_program('--population=3383', '--clients_per_round=120',
                            '--noise_multiplier=1.2', '--rounds=100',
                            '--delta=1e-5')
  assert result.returncode == 0, result.stderr
  event = _poisson(120 / 3383, 1.2, 100)
  rdp_accountant = rdp.RdpAccountant()
  rdp_accountant.compose(event)
  pld_accountant = pld.PLDAccountant(
      value_discretization_interval=accounting.PLD_DISCRETIZATION)
  pld_accountant.compose(event)
  # Printed with 6 significant digits.
  assert _printed(result.stdout,
                  'rdp') == pytest.approx(rdp_accountant.get_epsilon(1e-5),
                                          rel=1e-5)
  assert _printed(result.stdout,
                  'pld') == pytest.approx(pld_accountant.get_epsilon(1e-5),
                                          rel=1e-5)
  assert 'guarantee: (1.70' in result.stdout


def test_calibrated_noise_meets_the_target():
  result = _epsilon_program('--population=700', '--clients_per_round=70',
                            '--rounds=100', '--target_epsilon=5')
  assert result.returncode == 0, result.stderr
  z = float(
      re.search(r'--noise_multiplier=(\S+) reaches', result.stdout).group(1))
  accountant = pld.PLDAccountant(
      value_discretization_interval=accounting.PLD_DISCRETIZATION)
  accountant.compose(_poisson(0.1, z, 100))
  # z is printed rounded to 6 digits, which can move epsilon by ~1e-5.
  assert accountant.get_epsilon(1e-5) <= 5.0 * (1 + 1e-4)
  assert accountant.get_epsilon(1e-5) > 4.9


def test_calibrated_rounds_are_the_most_that_fit():
  result = _epsilon_program('--population=700', '--clients_per_round=70',
                            '--noise_multiplier=1.0', '--target_epsilon=5',
                            '--calibrate=rounds')
  assert result.returncode == 0, result.stderr
  rounds = int(re.search(r'--rounds=(\d+):', result.stdout).group(1))

  def eps(k):
    accountant = pld.PLDAccountant(
        value_discretization_interval=accounting.PLD_DISCRETIZATION)
    accountant.compose(_poisson(0.1, 1.0, k))
    return accountant.get_epsilon(1e-5)

  assert eps(rounds) <= 5.0 < eps(rounds + 1)


def test_fixed_size_is_accounted_with_replace_one_and_the_smaller_bound():
  result = _epsilon_program('--population=700', '--clients_per_round=70',
                            '--client_sampling=fixed_size', '--rounds=10')
  assert result.returncode == 0, result.stderr
  relation = dp_accounting.NeighboringRelation.REPLACE_ONE
  amplified = rdp.RdpAccountant(neighboring_relation=relation)
  amplified.compose(
      dp_accounting.SelfComposedDpEvent(
          dp_accounting.SampledWithoutReplacementDpEvent(
              700, 70, dp_accounting.GaussianDpEvent(0.5)), 10))
  # Without amplification each round is a Gaussian of multiplier z/2 under
  # replace-one; both bounds are valid and the smaller one is reported.
  plain = rdp.RdpAccountant(neighboring_relation=relation)
  plain.compose(dp_accounting.GaussianDpEvent(0.5), 10)
  assert _printed(result.stdout,
                  'rdp') == pytest.approx(min(amplified.get_epsilon(1e-5),
                                              plain.get_epsilon(1e-5)),
                                          rel=1e-5)
  plain_pld = pld.PLDAccountant(neighboring_relation=relation,
                                value_discretization_interval=1e-4)
  plain_pld.compose(dp_accounting.GaussianDpEvent(0.5), 10)
  # PLD cannot amplify without replacement; it composes the Gaussians
  # exactly, which the discretized accountant bounds from above.
  assert _printed(result.stdout,
                  'pld') == pytest.approx(plain_pld.get_epsilon(1e-5), rel=1e-3)
  assert _printed(result.stdout, 'pld') <= plain_pld.get_epsilon(1e-5)


def test_ledger_of_a_run_directory(tmp_path):
  ledgers.poisson(7).save(str(tmp_path / 'ledger.json'))
  (tmp_path / 'config.json').write_text('{"delta": 0.001}')
  # A live run: its trainer's lock does not stop the report, which says so.
  with run_lock.RunLock(str(tmp_path)):
    result = _epsilon_program(f'--run_dir={tmp_path}', '--accountants=rdp')
  assert result.returncode == 0, result.stderr
  assert f'note: the run is live (training process pid {os.getpid()})' in (
      result.stdout)
  accountant = rdp.RdpAccountant()
  accountant.compose(_poisson(0.1, 1.1, 7))
  assert '7 rounds' in result.stdout
  assert _printed(result.stdout,
                  'rdp') == pytest.approx(accountant.get_epsilon(1e-3),
                                          rel=1e-5)


@pytest.mark.parametrize(
    'args,message',
    [
        (['--clients_per_round=70'], '--population is required'),
        (['--population=50', '--clients_per_round=70'
         ], '--clients_per_round=70'),
        ([
            '--population=50', '--clients_per_round=5', '--delta=0.1',
            '--dp_mechanism=gaussian_fixed'
        ], '--delta=0.1'),
        # The trainer's own checks: adaptive clipping needs more clients.
        (['--population=50', '--clients_per_round=5'], '--noise_multiplier=1.0'
        ),
        (['--population=50', '--clients_per_round=5', '--noise_multiplier=nan'
         ], '--noise_multiplier=nan'),
        (['--run_dir=/nonexistent/run'], '/nonexistent/run is not a directory'),
        ([
            '--population=700', '--target_epsilon=5', '--recommend',
            '--recommend_cohorts=0,abc'
        ], '--recommend_cohorts=0,abc'),
        (['--population=700', '--recommend_rounds=5'], '--recommend_rounds=5'),
        (['--population=700', '--recommend'], '--target_epsilon'),
        # As the trainer refuses it: a budget below the first round's cost.
        ([
            '--population=700', '--clients_per_round=70',
            '--noise_multiplier=1', '--max_epsilon=0.01'
        ], '--max_epsilon=0.01: the first round alone costs epsilon 1.685'),
    ])
def test_bad_input_is_one_line_naming_the_flag(args, message):
  result = _epsilon_program(*args)
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def test_corrupt_ledger_is_refused_naming_the_file(tmp_path):
  (tmp_path / 'ledger.json').write_text('{"format_version": 1, "rounds": [')
  result = _epsilon_program(f'--run_dir={tmp_path}')
  assert result.returncode == 2
  assert str(tmp_path / 'ledger.json') in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.path.getsize(tmp_path / 'ledger.json') > 0  # Left untouched.


def test_preset_flagfile_plans_the_dp_ftrl_tree():
  # configs/dp_ftrl.cfg holds training-only flags too: they are accepted.
  result = _epsilon_program(
      f'--flagfile={os.path.join(REPO_ROOT, "configs", "dp_ftrl.cfg")}',
      '--rounds=25')
  assert result.returncode == 0, result.stderr
  # 700 clients, 70 per round: 10 rounds per epoch, so epochs start at rounds
  # 1, 11 and 21, each charged one tree of 10 leaves (REPLACE_SPECIAL).
  accountant = rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
  accountant.compose(
      dp_accounting.SelfComposedDpEvent(
          dp_accounting.SingleEpochTreeAggregationDpEvent(1.0, 10), 3))
  assert _printed(result.stdout,
                  'rdp') == pytest.approx(accountant.get_epsilon(1e-5),
                                          rel=1e-5)
  assert 'epsilon (pld): n/a' in result.stdout


def test_planning_with_the_printed_calibrated_noise_stays_within_target():
  result = _epsilon_program('--population=700', '--clients_per_round=70',
                            '--rounds=100', '--target_epsilon=5',
                            '--dp_mechanism=gaussian_fixed')
  assert result.returncode == 0, result.stderr
  z = re.search(r'--noise_multiplier=(\S+) reaches', result.stdout).group(1)
  again = _epsilon_program('--population=700', '--clients_per_round=70',
                           '--rounds=100', f'--noise_multiplier={z}',
                           '--dp_mechanism=gaussian_fixed')
  assert re.search(r'guarantee: \((\S+),', again.stdout)
  assert float(re.search(r'guarantee: \((\S+),', again.stdout).group(1)) <= 5


def test_local_and_non_private_presets_say_what_they_guarantee():
  local = _epsilon_program(
      f'--flagfile={os.path.join(REPO_ROOT, "configs", "local_laplace.cfg")}',
      '--rounds=10')
  assert local.returncode == 0, local.stderr
  # Laplace with epsilon_local = 5 per participation, a client in all 10
  # rounds: at most the pure composition 10 * 5.
  line = re.search(r'^local epsilon .*: (\S+) at delta', local.stdout,
                   re.MULTILINE)
  assert line and 5 < float(line.group(1)) <= 50 + 1e-9, local.stdout
  assert 'epsilon (rdp)' not in local.stdout  # No central claim.
  plain = _epsilon_program(
      f'--flagfile={os.path.join(REPO_ROOT, "configs", "nonprivate.cfg")}')
  assert plain.returncode == 0, plain.stderr
  assert 'not private' in plain.stdout and 'inf' not in plain.stdout.replace(
      'infinite', '')


@pytest.mark.parametrize('make, message', [
    (lambda d: (d / 'ledger.json').mkdir(), 'ledger.json'),
    (lambda d: (d / 'config.json').write_text('{"delta": '), 'config.json'),
    (lambda d: (d / 'config.json').write_text('{"delta": 7}'), 'delta'),
    (lambda d: (d / 'ledger.json').write_bytes(b'\xff\xfe'), 'ledger.json'),
])
def test_unreadable_run_directories_are_one_line(tmp_path, make, message):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  if not (run_dir / 'ledger.json').exists():
    ledgers.poisson(2).save(str(run_dir / 'ledger.json'))
  try:
    make(run_dir)
  except FileExistsError:
    (run_dir / 'ledger.json').unlink()
    make(run_dir)
  result = _epsilon_program(f'--run_dir={run_dir}')
  assert result.returncode == 2, result.stdout
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  file_dir = _epsilon_program(f'--run_dir={run_dir / "config.json"}')
  assert file_dir.returncode == 2 and 'Traceback' not in file_dir.stderr


def test_an_edited_ledger_json_is_caught_by_the_checkpoint(tmp_path):
  from tff_dp.program import checkpoint  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  true_ledger = ledgers.poisson(6)
  checkpoint.CheckpointManager(str(run_dir)).save(6, [0.0], {
      'ledgers': {
          'central': true_ledger.to_json(),
          'local': None,
          'silos': None
      }
  })
  ledgers.poisson(2).save(str(run_dir / 'ledger.json'))  # Under-counts.
  # Its trainer ended: the lock file (with that pid) is left, unlocked.
  run_lock.RunLock(str(run_dir)).acquire().release()
  result = _epsilon_program(f'--run_dir={run_dir}', '--accountants=rdp',
                            '--delta=1e-5')
  assert result.returncode == 0, result.stderr
  assert 'the run is live' not in result.stdout
  assert 'disagrees with the verified checkpoint' in result.stdout
  assert '6 rounds' in result.stdout
  assert _printed(result.stdout, 'rdp') == pytest.approx(true_ledger.epsilon(
      delta=1e-5, accountant=accounting.AccountantKind.RDP),
                                                         rel=1e-5)


_TABLE_LINE = re.compile(
    r'^ *(\d+) +(\d+) +\S+ +(\S+) +(\S+) +(\S+) +(\d+)'
    r'(?:  (.*))?$', re.MULTILINE)


def test_recommendation_table_is_the_librarys_and_each_epsilon_the_planners():
  result = _epsilon_program('--population=700', '--target_epsilon=5',
                            '--recommend', '--recommend_cohorts=35,70',
                            '--recommend_rounds=25,50')
  assert result.returncode == 0, result.stderr
  printed = _TABLE_LINE.findall(result.stdout)
  # The program's defaults: adaptive clipping (C = --initial_clip = 0.1),
  # Poisson sampling, accountants rdp and pld.
  rows = recommendation.build_table(target_epsilon=5.0,
                                    delta=1e-5,
                                    population=700,
                                    sampling=sampling.ClientSampling.POISSON,
                                    accountants=[
                                        accounting.AccountantKind.RDP,
                                        accounting.AccountantKind.PLD
                                    ],
                                    clip=0.1,
                                    cohorts=[35, 70],
                                    rounds=[25, 50])
  marked = {
      (r.clients_per_round, r.rounds) for r in recommendation.least_noise(rows)
  }
  assert [(int(m), int(t), z, float(eps), float(std), int(work))
          for m, t, z, eps, std, work, _ in printed
         ] == [(r.clients_per_round, r.rounds,
                calibration.format_noise_multiplier(r.noise_multiplier),
                pytest.approx(r.epsilon,
                              rel=1e-5), pytest.approx(r.noise_std,
                                                       rel=1e-3), r.total_work)
               for r in rows]
  assert {
      (int(m), int(t)) for m, t, *_, mark in printed if 'least noise' in mark
  } == marked == {(70, 25)}
  for m, t, z, eps, *_ in printed:
    # The planner, given the row's z, states the row's epsilon.
    plan = _epsilon_program('--population=700', f'--clients_per_round={m}',
                            f'--rounds={t}', f'--noise_multiplier={z}')
    assert f'guarantee: ({eps}, 1e-05)' in plan.stdout, plan.stdout


def test_recommendation_marks_a_row_adaptive_clipping_refuses_as_refused():
  # At m = 5 the calibrated z (0.79) is not below 0.1 * m = 0.5.
  result = _epsilon_program('--population=700', '--target_epsilon=1',
                            '--recommend', '--recommend_cohorts=5,20',
                            '--recommend_rounds=50')
  assert result.returncode == 0, result.stderr
  marks = {
      int(m): mark for m, _, *_, mark in _TABLE_LINE.findall(result.stdout)
  }
  assert marks == {5: 'refused', 20: 'least noise'}
  assert 'note: m=5, T=50: training refuses this z' in result.stdout


def test_output_closed_by_its_reader_is_one_line_not_a_traceback():
  # `./run.sh epsilon ... | head -1`: the reader is gone before the plan.
  process = subprocess.Popen([
      sys.executable, '-m', 'tff_dp.cli.epsilon', '--population=700',
      '--clients_per_round=70', '--noise_multiplier=1'
  ],
                             cwd=REPO_ROOT,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             text=True)
  process.stdout.close()
  stderr = process.stderr.read()
  assert process.wait(timeout=120) == 1
  assert stderr == ('tff-dp-epsilon: standard output was closed (broken '
                    'pipe); stopped\n')
