"""The loss-threshold membership attack against cases with known answers.

Members' losses N(-mu, 1) against non-members' N(0, 1): the AUC is
Phi(mu / sqrt 2), the best advantage 2 Phi(mu / 2) - 1, and the pair is the
Gaussian mechanism with noise multiplier 1 / mu, whose epsilon the bound
must not exceed.
"""

import math

import numpy as np
import pytest
from scipy import stats

from tests.helpers import gaussian_canaries
from tff_dp.audit import membership


def _losses(seed, mu, n=2000):
  rng = np.random.default_rng(seed)
  return rng.normal(-mu, 1.0, n), rng.normal(0.0, 1.0, n)


@pytest.mark.parametrize('mu', [0.5, 1.0, 2.0])
def test_auc_and_advantage_match_the_gaussian_case(mu):
  audit = membership.loss_threshold_audit(*_losses(0, mu), delta=1e-5)
  assert audit.auc == pytest.approx(stats.norm.cdf(mu / math.sqrt(2)), abs=0.02)
  assert audit.advantage == pytest.approx(2 * stats.norm.cdf(mu / 2) - 1,
                                          abs=0.04)
  # The best threshold is near the densities' crossing, -mu / 2.
  assert audit.advantage_threshold == pytest.approx(-mu / 2, abs=0.4)
  assert audit.members == audit.non_members == 2000
  assert audit.thresholds == 4001  # Each distinct loss, and "nobody".


def test_bound_is_below_the_analytic_epsilon():
  """Mu = 1, 2, 4: epsilon 4.38, 10.0, 24.4; bound 1.29, 2.83, 4.84 (seed 1)."""
  for mu in (1.0, 2.0, 4.0):
    audit = membership.loss_threshold_audit(*_losses(1, mu), delta=1e-5)
    analytic = gaussian_canaries.analytic_epsilon(1 / mu, 1e-5)
    assert 0.5 < audit.epsilon_lower_bound < analytic


def test_no_signal_gives_chance_and_no_bound():
  members, others = _losses(2, 0.0)
  audit = membership.loss_threshold_audit(members, others, delta=1e-5)
  assert audit.auc == pytest.approx(0.5, abs=0.03)
  assert audit.advantage < 0.06
  assert audit.epsilon_lower_bound == 0.0


def test_more_thresholds_cost_confidence():
  # Same losses, rounded to 20 distinct values: fewer thresholds, a
  # smaller Bonferroni correction, a bound at least as high.
  members, others = _losses(3, 2.0)
  fine = membership.loss_threshold_audit(members, others, delta=1e-5)
  coarse = membership.loss_threshold_audit(np.round(members * 3) / 3,
                                           np.round(others * 3) / 3,
                                           delta=1e-5)
  assert coarse.thresholds < 40 < fine.thresholds
  assert coarse.epsilon_lower_bound > fine.epsilon_lower_bound - 0.2


def test_result_is_frozen():
  audit = membership.loss_threshold_audit([0.1, 0.2], [0.3, 0.4], delta=1e-5)
  with pytest.raises(AttributeError):
    audit.auc = 1.0  # type: ignore[misc]
  assert audit.auc == 1.0 and audit.advantage == 1.0


@pytest.mark.parametrize('kwargs,message', [
    (dict(member_losses=[]), 'member_losses must hold at least 1'),
    (dict(non_member_losses=[]), 'non_member_losses must hold at least 1'),
    (dict(member_losses=[0.1, math.inf]), 'member_losses must be finite, got '
     'inf at index 1'),
    (dict(beta=1.5), 'beta must be finite, > 0 and < 1, got 1.5'),
    (dict(beta=0), 'beta must be finite, > 0 and < 1, got 0'),
    (dict(delta=-1e-5), 'delta must be finite, > 0 and < 1, got -1e-05'),
])
def test_bad_input_is_refused(kwargs, message):
  arguments = dict(member_losses=[0.1, 0.2],
                   non_member_losses=[0.3, 0.4],
                   delta=1e-5)
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=message):
    membership.loss_threshold_audit(**arguments)
