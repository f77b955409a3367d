"""The (epsilon, delta) distance of a null and a Gaussian, against exact cases.

References: the Balle-Wang epsilon of the Gaussian mechanism (dp_accounting's
PLD), the values google-research/federated's one_shot_epe tests pin, and
direct quadrature of the hockey-stick integrals.
"""

import math

from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from tff_dp.audit import divergence


@pytest.mark.parametrize('sigma,delta', [(0.5, 1e-5), (1.0, 1e-5), (2.0, 1e-3),
                                         (1.0, 1e-2)])
def test_equal_variances_give_the_gaussian_mechanism_epsilon(sigma, delta):
  # A 1e-3 grid: pessimistic by < 1e-6 relative here, and fast.
  pld = privacy_loss_distribution.from_gaussian_mechanism(
      sigma, value_discretization_interval=1e-3)
  # Scale-free: N(0, s^2) vs N(s / sigma, s^2) for a cosine-sized s.
  s = 1e-3
  got = divergence.epsilon_for_delta(divergence.Gaussian(0.0, s),
                                     divergence.Gaussian(s / sigma, s), delta)
  assert got == pytest.approx(pld.get_epsilon_for_delta(delta), rel=1e-6)


def test_reproduces_the_reference_implementations_values():
  # one_shot_epe/empirical_privacy_estimation_test.py: mu = std = d^-1/2,
  # delta = 1e-2; d = 2000 takes the normal null, d = 200 the exact one.
  s = 2000**-0.5
  assert divergence.epsilon_for_delta(divergence.Gaussian(0.0, s),
                                      divergence.Gaussian(s, s),
                                      1e-2) == pytest.approx(2.317789, abs=1e-6)
  s = 200**-0.5
  assert divergence.epsilon_for_delta(divergence.CosineNull(200),
                                      divergence.Gaussian(s, s),
                                      1e-2) == pytest.approx(2.375326, abs=1e-6)


def _quadrature_delta(null, alternative, epsilon):
  """Both hockey-stick integrals by adaptive quadrature, for comparison.

  The cosine null is integrated in theta with t = sin(theta), smooth up to
  the edges, with break points approaching them (a thin region there is
  easy to step over).
  """
  p = lambda x: math.exp(float(null.logpdf(x)))
  q = lambda x: math.exp(alternative.logpdf(x))
  if isinstance(null, divergence.CosineNull):
    lo, hi, t, dt = -math.pi / 2, math.pi / 2, math.sin, math.cos
    near = [math.pi / 2 - 10.0**-k for k in range(1, 9)]
    points = sorted(near + [-x for x in near])
  else:
    lo, hi, t, dt, points = -60.0, 60.0, (lambda x: x), (lambda x: 1.0), None

  def integral(f):
    return integrate.quad(lambda u: f(t(u)) * dt(u),
                          lo,
                          hi,
                          points=points,
                          limit=2000,
                          epsabs=1e-14,
                          epsrel=1e-12)[0]

  forward = integral(lambda x: max(0.0, p(x) - math.exp(epsilon) * q(x)))
  backward = integral(lambda x: max(0.0, q(x) - math.exp(epsilon) * p(x)))
  if isinstance(null, divergence.CosineNull):  # Outside [-1, 1]: only q.
    backward += (stats.norm.cdf(-1, alternative.mean, alternative.std) +
                 stats.norm.sf(1, alternative.mean, alternative.std))
  return max(forward, backward)


@pytest.mark.parametrize('null,alternative', [
    (divergence.Gaussian(0.0, 1.0), divergence.Gaussian(1.5, 0.7)),
    (divergence.Gaussian(0.0, 1.0), divergence.Gaussian(-0.5, 1.6)),
    (divergence.CosineNull(50), divergence.Gaussian(0.3, 0.1)),
    (divergence.CosineNull(5), divergence.Gaussian(0.5, 0.6)),
    (divergence.CosineNull(3), divergence.Gaussian(0.2, 0.3)),
],
                         ids=['narrower', 'wider', 'cos50', 'cos5', 'cos3'])
@pytest.mark.parametrize('epsilon', [0.0, 0.5, 2.0, 4.0, 8.0])
def test_delta_matches_quadrature(null, alternative, epsilon):
  got = divergence.delta_for_epsilon(null, alternative, epsilon)
  assert got == pytest.approx(_quadrature_delta(null, alternative, epsilon),
                              abs=1e-10)


def test_epsilon_for_delta_inverts_delta_for_epsilon():
  null, alternative = divergence.CosineNull(300), divergence.Gaussian(0.2, 0.06)
  epsilon = divergence.epsilon_for_delta(null, alternative, 1e-6)
  assert divergence.delta_for_epsilon(null, alternative,
                                      epsilon) == pytest.approx(1e-6, rel=1e-6)
  assert divergence.delta_for_epsilon(null, alternative, epsilon - 1e-3) > 1e-6


def test_cosine_null_is_the_law_of_a_random_unit_vectors_cosine():
  for dim in (2, 3, 10, 999):
    null = divergence.CosineNull(dim)
    assert divergence.log_mass(null, -1.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    variance = integrate.quad(lambda t: t * t * math.exp(null.logpdf(t)), -1,
                              1)[0]
    assert variance == pytest.approx(1 / dim, rel=1e-6)
  rng = np.random.default_rng(0)
  v = rng.standard_normal((20000, 7))
  cosines = v[:, 0] / np.linalg.norm(v, axis=1)
  cdf = lambda t: np.exp(divergence.CosineNull(7).log_cdf(t))
  assert stats.kstest(cosines, cdf).pvalue > 0.01


def test_far_tails_stay_accurate_in_log_space():
  g = divergence.Gaussian(0.0, 1.0)
  assert divergence.log_mass(g, 30.0,
                             math.inf) == pytest.approx(stats.norm.logsf(30.0),
                                                        rel=1e-12)
  assert divergence.log_mass(g, -math.inf,
                             -40.0) == pytest.approx(stats.norm.logcdf(-40.0),
                                                     rel=1e-12)


def test_identical_is_zero_and_far_apart_is_inf():
  g = divergence.Gaussian(0.0, 1.0)
  assert divergence.epsilon_for_delta(g, g, 1e-5) == 0.0
  assert divergence.epsilon_for_delta(g, divergence.Gaussian(150.0, 1.0),
                                      1e-5) == math.inf


def test_bad_distributions_and_delta_are_refused():
  with pytest.raises(ValueError, match='std=0'):
    divergence.Gaussian(0.0, 0.0)
  with pytest.raises(ValueError, match='dim >= 2, got 1'):
    divergence.CosineNull(1)
  with pytest.raises(ValueError, match='delta must be in .0, 1., got 0'):
    divergence.epsilon_for_delta(divergence.CosineNull(5),
                                 divergence.Gaussian(0.0, 1.0), 0)
