"""Tests for tff_dp.privacy.calibration: calibrated values printed safely.

A calibrated noise multiplier is printed for the user to pass back as
--noise_multiplier; the printed value must still reach the target epsilon.
"""

import decimal
import math

from dp_accounting import dp_event
from dp_accounting.pld import privacy_loss_mechanism
import numpy as np
import pytest

from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration

AccountantKind = accounting.AccountantKind
ClientSampling = sampling.ClientSampling
RDP, PLD = AccountantKind.RDP, AccountantKind.PLD


def _tightest_epsilon(z, *, delta, rounds, accountants, **cohort):
  """The guarantee a run (or the planner) states for z: the smallest epsilon."""
  event = dp_event.SelfComposedDpEvent(
      accounting.gaussian_round_event(noise_multiplier=z, **cohort), rounds)
  relation = accounting.neighboring_relation(cohort['sampling'])
  return accounting.tightest_epsilon({
      kind:
          accounting.compute_epsilon([event],
                                     delta=delta,
                                     accountant=kind,
                                     relation=relation) for kind in accountants
  })[1]


@pytest.mark.parametrize(
    'z, printed',
    [
        (1.2105022530718403, '1.21051'),  # The issue's z: '.6g' printed 1.2105.
        (1.2105, '1.2105'),  # Already 6 digits (its double is just below).
        (0.5, '0.5'),
        (0.0, '0'),
        (2.0**20, '1.04858e+06'),
        (0.1234564, '0.123457'),
        (9.9999991, '10'),
        (3e-7, '3e-07'),
    ])
def test_format_noise_multiplier_rounds_up(z, printed):
  assert calibration.format_noise_multiplier(z) == printed


def test_format_noise_multiplier_never_below_and_at_most_six_digits():
  rng = np.random.default_rng(0)
  values = np.concatenate(
      [rng.uniform(0.1, 10, 2000), 10.0**rng.uniform(-8, 6, 2000)])
  for z in values:
    text = calibration.format_noise_multiplier(float(z))
    assert float(text) >= z, (z, text)
    assert float(text) <= z * (1 + 1e-5), (z, text)
    digits = decimal.Decimal(text).normalize().as_tuple().digits
    assert len(digits) <= 6, (z, text)
  for bad in (-1.0, math.nan, math.inf):
    with pytest.raises(ValueError, match='noise_multiplier'):
      calibration.format_noise_multiplier(bad)


def test_issue_example_printed_noise_reaches_the_target():
  # Issue 13: --target_epsilon=5 for the default cohort printed z = 1.2105,
  # which gives epsilon 5.00002 > 5.
  cohort = dict(sampling=ClientSampling.POISSON,
                population=700,
                clients_per_round=70)
  kwargs = dict(delta=1e-5, rounds=100, accountants=[RDP, PLD])
  z, kind = calibration.calibrate_noise_for_accountants(target_epsilon=5.0,
                                                        **kwargs,
                                                        **cohort)
  assert kind is PLD
  for printed in (f'{z:.6g}', calibration.format_noise_multiplier(z)):
    assert _tightest_epsilon(float(printed), **kwargs,
                             **cohort) <= 5.0, (printed)
  # And it is the smallest such value, to the printed precision.
  assert _tightest_epsilon(z * (1 - 1e-4), **kwargs, **cohort) > 5.0


@pytest.mark.parametrize(
    'target, delta, rounds, cohort, accountants',
    [
        (2.0, 1e-5, 100,
         dict(sampling=ClientSampling.POISSON,
              population=3383,
              clients_per_round=120), [RDP, PLD]),
        # PLD only: RDP's fixed-size curve costs ~0.4 s per probe.
        (10.0, 1e-5, 10,
         dict(sampling=ClientSampling.FIXED_SIZE,
              population=700,
              clients_per_round=70), [PLD]),
        (1.0, 1e-3, 5,
         dict(sampling=ClientSampling.FULL, population=10,
              clients_per_round=10), [RDP, PLD]),
    ],
    ids=['poisson', 'fixed_size', 'full'])
def test_printed_noise_reaches_the_target(target, delta, rounds, cohort,
                                          accountants):
  kwargs = dict(delta=delta, rounds=rounds, accountants=accountants)
  z, _ = calibration.calibrate_noise_for_accountants(target_epsilon=target,
                                                     **kwargs,
                                                     **cohort)
  printed = calibration.format_noise_multiplier(z)
  # The calibrated z has at most 6 significant digits: printed exactly.
  assert float(printed) == z
  assert _tightest_epsilon(float(printed), **kwargs, **cohort) <= target
  assert _tightest_epsilon(z * (1 - 1e-4), **kwargs, **cohort) > target


def test_pld_calibrates_fixed_size_with_the_unamplified_bound():
  # Fixed-size rounds under PLD are R-fold Gaussians of multiplier z/2
  # (accounting module docstring, bound (b)): calibrating gives the z whose
  # exact Gaussian epsilon is the target.
  target, rounds = 20.0, 10
  z = calibration.calibrate_noise_multiplier(target_epsilon=target,
                                             delta=1e-5,
                                             rounds=rounds,
                                             accountant=PLD,
                                             sampling=ClientSampling.FIXED_SIZE,
                                             population=100,
                                             clients_per_round=10)

  def exact_delta(noise, epsilon=target):
    return privacy_loss_mechanism.GaussianPrivacyLoss(
        noise / 2 / math.sqrt(rounds)).get_delta_for_epsilon(epsilon)

  assert exact_delta(z) <= 1e-5 < exact_delta(z * (1 - 1e-4))


@pytest.mark.parametrize('target, rounds', [(1e-6, 10_000), (1e3, 1)])
def test_an_unreachable_target_raises_its_own_error(target, rounds):
  # 1e-6 over 10,000 rounds needs z > 2**20 (even epsilon 0, which RDP
  # certifies once the divergence is below delta**2, needs z ~ 1e7); 1e3 is
  # met in one round with z < 0.1. Both are ValueErrors too, which callers
  # already report.
  with pytest.raises(calibration.UnreachableBudgetError):
    calibration.calibrate_noise_multiplier(target_epsilon=target,
                                           delta=1e-5,
                                           rounds=rounds,
                                           accountant=RDP,
                                           sampling=ClientSampling.FULL,
                                           population=10,
                                           clients_per_round=10)
  assert issubclass(calibration.UnreachableBudgetError, ValueError)


def test_invalid_cohorts_are_not_unreachable_budgets():
  with pytest.raises(ValueError) as error:
    calibration.calibrate_noise_multiplier(target_epsilon=5,
                                           delta=1e-5,
                                           rounds=5,
                                           accountant=RDP,
                                           sampling=ClientSampling.POISSON,
                                           population=10,
                                           clients_per_round=11)
  assert not isinstance(error.value, calibration.UnreachableBudgetError)
  assert 'clients_per_round' in str(error.value)
