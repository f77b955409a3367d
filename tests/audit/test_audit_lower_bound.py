"""Steinke et al.'s one-run lower bound and the split Clopper-Pearson bound.

Validity is tested where it is tight: randomized response that is exactly
epsilon-DP towards each canary (the theorem's worst case), and on the
simulated Gaussian mechanism of tests/helpers/gaussian_canaries.py. Seeds are
fixed, so the fractions below are deterministic; they are what the
guarantee (failure probability <= beta = 5%) predicts, not tuned.
"""

import math

import numpy as np
import pytest
from scipy import stats

from tests.helpers import gaussian_canaries
from tff_dp.audit import lower_bound

_DIM = 10**5
_DELTA = 1e-5


def _p_value_by_the_papers_loop(m, r, v, eps, delta):
  """The p-value as the paper's published snippet computes it, pmf by pmf."""
  q = 1 / (1 + math.exp(-eps))
  beta = stats.binom.sf(v - 1, r, q)
  alpha, total = 0.0, 0.0
  for i in range(1, v + 1):
    total += stats.binom.pmf(v - i, r, q)
    alpha = max(alpha, total / i)
  return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize('m,r,v,eps,delta', [(1000, 100, 90, 1.0, 1e-5),
                                             (1000, 500, 400, 1.2, 1e-3),
                                             (200, 50, 50, 3.0, 1e-2),
                                             (1000, 20, 3, 0.5, 1e-5),
                                             (100, 10, 10, 2.0, 0.0)])
def test_p_value_matches_the_papers_formula(m, r, v, eps, delta):
  got = lower_bound.one_run_p_value(canaries=m,
                                    guesses=r,
                                    correct=v,
                                    epsilon=eps,
                                    delta=delta)
  assert got == pytest.approx(_p_value_by_the_papers_loop(m, r, v, eps, delta),
                              rel=1e-9,
                              abs=1e-15)


def test_epsilon_is_where_the_p_value_reaches_beta():
  eps = lower_bound.one_run_epsilon(canaries=1000,
                                    guesses=200,
                                    correct=190,
                                    delta=1e-5,
                                    beta=0.05)
  p = lambda e: lower_bound.one_run_p_value(
      canaries=1000, guesses=200, correct=190, epsilon=e, delta=1e-5)
  assert p(eps) == pytest.approx(0.05, rel=1e-4)
  assert p(eps + 0.01) > 0.05 > p(eps - 0.01)
  search = lambda start: lower_bound.one_run_epsilon(canaries=1000,
                                                     guesses=200,
                                                     correct=190,
                                                     delta=1e-5,
                                                     beta=0.05,
                                                     start=start)
  assert search(eps / 2) == pytest.approx(eps, abs=1e-5)
  assert search(eps + 1) == eps + 1  # Nothing above start is refuted.
  # Half right is what epsilon 0 predicts: nothing is refuted.
  assert lower_bound.one_run_epsilon(canaries=1000,
                                     guesses=200,
                                     correct=100,
                                     delta=1e-5,
                                     beta=0.05) == 0.0


def test_randomized_response_is_rarely_overstated():
  """Exactly 2-DP towards each canary; the bound exceeded 2 in 3.0% of runs."""
  eps = 2.0
  above = 0
  for seed in range(200):
    rng = np.random.default_rng(seed)
    inserted = rng.random(1000) < 0.5
    truthful = rng.random(1000) < 1 / (1 + math.exp(-eps))
    released = np.where(truthful, inserted, ~inserted)
    bound = lower_bound.one_run_lower_bound(released + rng.random(1000),
                                            inserted,
                                            delta=_DELTA,
                                            beta=0.05)
    above += bound.epsilon > eps
  assert above / 200 <= 0.05


def test_gaussian_mechanism_bound_is_below_the_analytic_epsilon():
  """500 canaries, noise 1 (epsilon 4.38): all 200 bounds below (max 1.92)."""
  analytic = gaussian_canaries.analytic_epsilon(1.0, _DELTA)
  bounds = []
  for seed in range(200):
    cosines, inserted = gaussian_canaries.one_release(seed,
                                                      canaries=500,
                                                      dim=_DIM,
                                                      noise_std=1.0,
                                                      insert_probability=0.5)
    bounds.append(
        lower_bound.one_run_lower_bound(cosines, inserted,
                                        delta=_DELTA).epsilon)
  assert np.mean(np.array(bounds) < analytic) >= 0.95
  assert np.mean(bounds) > 0.5  # Not vacuous: it measures something.


def test_noise_off_gives_a_bound_of_at_least_3():
  cosines, inserted = gaussian_canaries.one_release(3,
                                                    canaries=1000,
                                                    dim=_DIM,
                                                    noise_std=1e-9,
                                                    insert_probability=0.5)
  bound = lower_bound.one_run_lower_bound(cosines, inserted, delta=_DELTA)
  assert bound.epsilon >= 3
  assert bound.correct == bound.k_plus + bound.k_minus  # All right.
  assert bound.choices == len(lower_bound.default_guesses(1000)) == 5
  split = lower_bound.split_threshold_lower_bound(cosines,
                                                  inserted,
                                                  delta=_DELTA,
                                                  seed=0)
  assert split >= 3


def test_split_bound_is_below_the_analytic_epsilon():
  analytic = gaussian_canaries.analytic_epsilon(1.0, _DELTA)
  for seed in range(5):
    cosines, inserted = gaussian_canaries.one_release(seed,
                                                      canaries=1000,
                                                      dim=_DIM,
                                                      noise_std=1.0,
                                                      insert_probability=0.5)
    split = lower_bound.split_threshold_lower_bound(cosines,
                                                    inserted,
                                                    delta=_DELTA,
                                                    seed=seed)
    assert 0 <= split < analytic


def test_clopper_pearson_bounds():
  # Exact values: k = 0 of n gives 1 - alpha^(1/n) above; k = n, 1 and 0.
  assert lower_bound.clopper_pearson_upper(0, 10,
                                           0.05) == pytest.approx(1 - 0.05**0.1)
  assert lower_bound.clopper_pearson_upper(10, 10, 0.05) == 1.0
  assert lower_bound.clopper_pearson_lower(0, 10, 0.05) == 0.0
  assert lower_bound.clopper_pearson_lower(10, 10,
                                           0.05) == pytest.approx(0.05**0.1)
  assert lower_bound.clopper_pearson_lower(
      30, 100, 0.05) < 0.3 < lower_bound.clopper_pearson_upper(30, 100, 0.05)


@pytest.mark.parametrize('kwargs,message', [
    (dict(scores=[], inserted=[]), 'scores must hold at least 2'),
    (dict(scores=[[1.0, 2.0]], inserted=[True]), 'scores must be '
     r'one-dimensional, got shape \(1, 2\)'),
    (dict(inserted=[True, False]), r'inserted must have shape \(4,\), got '
     r'\(2,\)'),
    (dict(inserted=[0, 1, 2, 0]), 'inserted must be booleans'),
    (dict(beta=0.0), 'beta must be finite, > 0 and < 1, got 0.0'),
    (dict(beta=1.0), 'beta must be finite, > 0 and < 1, got 1.0'),
    (dict(beta=-0.5), 'beta must be finite, > 0 and < 1, got -0.5'),
    (dict(delta=2.0), 'delta must be finite, > 0 and < 1, got 2.0'),
    (dict(guesses=[]), 'guesses must hold at least one'),
    (dict(guesses=[(3, 2)]), r'0 < k_plus \+ k_minus <= 4, got \(3, 2\)'),
    (dict(guesses=[(-1, 2)]), 'k_plus must be >= 0, got -1'),
])
def test_bad_one_run_input_is_refused(kwargs, message):
  arguments = dict(scores=[0.1, 0.4, 0.2, 0.3],
                   inserted=[True, False, True, False],
                   delta=1e-5)
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=message):
    lower_bound.one_run_lower_bound(**arguments)


def test_bad_split_input_is_refused():
  scores = np.arange(10.0)
  with pytest.raises(ValueError, match='each split part needs inserted'):
    lower_bound.split_threshold_lower_bound(scores, scores < 1, delta=1e-5)
  with pytest.raises(ValueError, match='select_fraction must be finite'):
    lower_bound.split_threshold_lower_bound(scores,
                                            scores % 2 == 0,
                                            delta=1e-5,
                                            select_fraction=1.0)
  with pytest.raises(ValueError, match='scores must hold at least 4'):
    lower_bound.split_threshold_lower_bound([1.0, 2.0], [True, False],
                                            delta=1e-5)


@pytest.mark.parametrize('kwargs,message', [
    (dict(correct=11), 'need correct <= guesses <= canaries, got correct=11'),
    (dict(guesses=101), 'got correct=5, guesses=101, canaries=100'),
    (dict(beta=1.0), 'beta must be finite, > 0 and < 1, got 1.0'),
    (dict(delta=1.5), r'delta must be in \[0, 1\], got 1.5'),
])
def test_bad_counts_are_refused(kwargs, message):
  arguments = dict(canaries=100, guesses=10, correct=5, delta=1e-5, beta=0.05)
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=message):
    lower_bound.one_run_epsilon(**arguments)
