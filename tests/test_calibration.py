"""Tests for tff_dp.calibration."""

import math

from dp_accounting.pld import privacy_loss_mechanism
import pytest

from tff_dp import accounting
from tff_dp import calibration
from tff_dp import sampling

AccountantKind = accounting.AccountantKind
ClientSampling = sampling.ClientSampling
RDP, PLD = AccountantKind.RDP, AccountantKind.PLD


def test_pld_calibrates_fixed_size_with_the_unamplified_bound():
  # Fixed-size rounds under PLD are R-fold Gaussians of multiplier z/2
  # (accounting module docstring, bound (b)): calibrating gives the z whose
  # exact Gaussian epsilon is the target.
  target, rounds = 20.0, 10
  z = calibration.calibrate_noise_multiplier(
      target_epsilon=target, delta=1e-5, rounds=rounds, accountant=PLD,
      sampling=ClientSampling.FIXED_SIZE, population=100,
      clients_per_round=10)

  def exact_delta(noise, epsilon=target):
    return privacy_loss_mechanism.GaussianPrivacyLoss(
        noise / 2 / math.sqrt(rounds)).get_delta_for_epsilon(epsilon)

  assert exact_delta(z) <= 1e-5 < exact_delta(z * (1 - 1e-4))
