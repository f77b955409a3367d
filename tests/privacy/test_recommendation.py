"""Tests for tff_dp.privacy.recommendation: the rows and their marks.

Each row's z must be what training calibrates and its epsilon what a fresh
accounting of (q, z, T) gives; the marked rows must be the least noisy,
which the tests compute here independently of the module's own selection.
"""

import dataclasses
import math

from dp_accounting import dp_event
import pytest

from tests.helpers import fresh_imports
from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy import recommendation

AccountantKind = accounting.AccountantKind
ClientSampling = sampling.ClientSampling
RDP, PLD = AccountantKind.RDP, AccountantKind.PLD
Row = recommendation.Row

# A small table (two cohorts, two round counts) in ~3 s, with both
# accountants as a default run has them.
_SETTINGS = dict(target_epsilon=5.0,
                 delta=1e-5,
                 population=700,
                 sampling=ClientSampling.POISSON,
                 accountants=[RDP, PLD],
                 clip=0.5)


@pytest.fixture(name='rows', scope='module')
def fixture_rows():
  return recommendation.build_table(cohorts=[35, 70, 1000],
                                    rounds=[25, 50],
                                    **_SETTINGS)


def _fresh_epsilon(q, z, rounds, accountants, delta):
  """The stated guarantee of T Poisson rounds, accounted from scratch."""
  event = dp_event.SelfComposedDpEvent(
      dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds)
  relation = accounting.neighboring_relation(ClientSampling.POISSON)
  return min(
      accounting.compute_epsilon(
          [event], delta=delta, accountant=kind, relation=relation)
      for kind in accountants)


def test_module_does_not_import_tensorflow():
  assert fresh_imports.heavy_imports('tff_dp.privacy.recommendation') == []


def test_rows_cover_every_candidate_in_order(rows):
  assert [(r.clients_per_round, r.rounds) for r in rows] == [(35, 25), (35, 50),
                                                             (70, 25), (70, 50),
                                                             (1000, 25),
                                                             (1000, 50)]
  for row in rows:
    assert row.sampling_rate == row.clients_per_round / 700
    assert row.total_work == row.clients_per_round * row.rounds


def test_each_rows_epsilon_is_a_fresh_accounting_within_the_target(rows):
  for row in rows:
    if not row.meets_budget:
      continue
    fresh = _fresh_epsilon(row.sampling_rate, row.noise_multiplier, row.rounds,
                           [RDP, PLD], 1e-5)
    assert row.epsilon == fresh, row
    assert row.epsilon <= 5.0
    assert row.noise_std == row.noise_multiplier * 0.5 / row.clients_per_round


def test_each_rows_z_is_what_training_calibrates(rows):
  # prepare.calibrate (the trainer's --target_epsilon) calls this function
  # with the run's cohort, rounds and accountants.
  row = next(r for r in rows if (r.clients_per_round, r.rounds) == (70, 50))
  z, kind = calibration.calibrate_noise_for_accountants(
      target_epsilon=5.0,
      delta=1e-5,
      rounds=50,
      sampling=ClientSampling.POISSON,
      population=700,
      clients_per_round=70,
      accountants=[RDP, PLD])
  assert (row.noise_multiplier, row.accountant) == (z, kind)
  # The smallest 6-digit z: a little less noise overshoots the target.
  assert _fresh_epsilon(0.1, z * (1 - 1e-4), 50, [RDP, PLD], 1e-5) > 5.0


def test_a_cohort_above_the_population_is_an_unreachable_row(rows):
  above = [r for r in rows if r.clients_per_round == 1000]
  assert above and all(not r.meets_budget for r in above)
  assert all('population' in r.unreachable for r in above)
  assert all(r.noise_multiplier is None and r.noise_std is None for r in above)


def test_marked_rows_have_the_least_noise_among_rows_meeting_the_budget(rows):
  meeting = [r for r in rows if r.epsilon is not None and r.epsilon <= 5.0]
  least = min(r.noise_std for r in meeting)
  assert recommendation.least_noise(rows) == [
      r for r in meeting if r.noise_std == least
  ]
  # The amplified regime: the larger cohort with fewer rounds wins.
  assert [
      (r.clients_per_round, r.rounds) for r in recommendation.least_noise(rows)
  ] == [(70, 25)]
  # 35 * 50 == 70 * 25: one work level with two rows.
  per_work = recommendation.least_noise_per_work(rows)
  assert list(per_work) == [1750]
  level = [r for r in meeting if r.total_work == 1750]
  assert per_work[1750] == [min(level, key=lambda r: r.noise_std)]


def _row(m, t, std, unreachable=None):
  reachable = unreachable is None
  return Row(clients_per_round=m,
             rounds=t,
             sampling_rate=m / 100,
             noise_multiplier=1.0 if reachable else None,
             epsilon=1.0 if reachable else None,
             accountant=RDP if reachable else None,
             noise_std=std if reachable else None,
             total_work=m * t,
             unreachable=unreachable)


def test_marks_on_made_up_rows_ties_singletons_and_unreachable():
  rows = [
      _row(10, 20, 0.3),
      _row(20, 10, 0.2),  # Work 200, with the row above.
      _row(40, 5, None, unreachable='needs z > 2**20'),  # Work 200 too.
      _row(10, 40, 0.1),  # Work 400, alone: no per-work mark.
      _row(40, 10, 0.1),  # Tied least overall, work 400 with the one above.
      _row(50, 50, None, unreachable='more clients than the population'),
  ]
  assert recommendation.least_noise(rows) == [rows[3], rows[4]]
  assert recommendation.least_noise_per_work(rows) == {
      200: [rows[1]],
      400: [rows[3], rows[4]]
  }
  nothing = [rows[2], rows[5]]
  assert recommendation.least_noise(nothing) == []
  assert recommendation.least_noise_per_work(nothing) == {}


@pytest.mark.parametrize('target, rounds, words', [
    (0.1, 1000, 'No noise multiplier <= 4'),
    (1e3, 1, 'weak guarantee'),
])
def test_unreachable_budgets_are_rows_not_errors(monkeypatch, target, rounds,
                                                 words):
  # Calibration's ceiling lowered from 2**20 to 4: the probes up to 2**20 are
  # slow, and at z ~ 1e6 dp-accounting's sampled-Gaussian RDP is numerically
  # negative and raises.
  monkeypatch.setattr(calibration, '_MAX_CALIBRATED_NOISE', 4.0)
  settings = dict(_SETTINGS, accountants=[RDP], target_epsilon=target)
  rows = recommendation.build_table(cohorts=[7, 70],
                                    rounds=[rounds],
                                    **settings)
  assert [r.meets_budget for r in rows] == [False, False]
  assert all(words in r.unreachable for r in rows), rows
  assert recommendation.least_noise(rows) == []
  assert recommendation.least_noise_per_work(rows) == {}


@pytest.mark.parametrize('change, error', [
    (dict(cohorts=[]), ValueError),
    (dict(cohorts=[0]), ValueError),
    (dict(cohorts=[2.5]), TypeError),
    (dict(rounds=[]), ValueError),
    (dict(rounds=[-1]), ValueError),
    (dict(sampling=ClientSampling.FULL), ValueError),
    (dict(sampling='poisson'), ValueError),
    (dict(clip=0.0), ValueError),
    (dict(clip=math.nan), ValueError),
    (dict(target_epsilon=-1.0), ValueError),
    (dict(delta=1.0), ValueError),
    (dict(accountants=[]), ValueError),
    (dict(population=0), ValueError),
])
def test_invalid_inputs_raise(change, error):
  arguments = {**_SETTINGS, 'cohorts': [7], 'rounds': [1], **change}
  with pytest.raises(error):
    recommendation.build_table(**arguments)


def test_default_candidates_double_around_the_configured_run():
  assert recommendation.candidate_cohorts(
      population=700, clients_per_round=70) == [18, 35, 70, 140, 280]
  # Never above N, never below 1.
  assert recommendation.candidate_cohorts(population=100,
                                          clients_per_round=70) == [18, 35, 70]
  assert recommendation.candidate_cohorts(population=5,
                                          clients_per_round=1) == [1, 2, 4]
  assert recommendation.candidate_rounds(rounds=100) == [50, 100, 200]
  assert recommendation.candidate_rounds(rounds=1) == [1, 2]
  with pytest.raises(ValueError):
    recommendation.candidate_rounds(rounds=0)


def test_rows_are_frozen(rows):
  with pytest.raises(dataclasses.FrozenInstanceError):
    rows[0].rounds = 1  # type: ignore[misc]


def test_marks_skip_rows_training_would_refuse():
  rows = [
      _row(10, 20, 0.1),  # Least noise, but refused below.
      _row(20, 10, 0.2),  # Work 200, with the row above.
      _row(40, 5, 0.3),  # Work 200 too.
  ]

  def runnable(row):
    return row.clients_per_round != 10

  assert recommendation.least_noise(rows) == [rows[0]]
  assert recommendation.least_noise(rows, runnable) == [rows[1]]
  assert recommendation.least_noise_per_work(rows, runnable) == {200: [rows[1]]}
  # A level left with one runnable row has no per-work mark.
  assert recommendation.least_noise_per_work(
      rows, lambda row: row.clients_per_round == 40) == {}
