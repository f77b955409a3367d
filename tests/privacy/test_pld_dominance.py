"""The add pmf left uncomposed only where it provably loses: same epsilons."""

import math

from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest
from scipy import fft

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import pld_compose
from tff_dp.privacy import pld_dominance
from tff_dp.privacy import pld_epsilon
from tff_dp.privacy import pld_self_compose

_INTERVAL = 1e-3


def _base(q, z):
  return privacy_loss_distribution.from_gaussian_mechanism(
      z, value_discretization_interval=_INTERVAL, sampling_prob=q)


def _accountants(q, z, count, delta):
  accountant = pld.PLDAccountant(value_discretization_interval=_INTERVAL)
  accountant.compose(
      dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), count)
  return accountant.get_epsilon(delta)


def _composed_pmfs(q, z, count):
  return [
      pld_compose.compose_identity_pmf(
          pld_self_compose.self_compose_pmf(pmf, count), _INTERVAL)
      for pmf in dp_accounting_internals.pmfs(_base(q, z))
  ]


def _skips(q, z, count, delta):
  """Whether `epsilon` leaves the add pmf uncomposed here."""
  remove, add = dp_accounting_internals.pmfs(_base(q, z))
  first = pld_dominance._pmf_epsilon(remove, count, _INTERVAL, delta)  # pylint: disable=protected-access
  return pld_dominance.tail_mass_bound(add, count,
                                       first - 2 * _INTERVAL) < delta / 2


# The main job (q = 0.1, z = 1) skips from ~50 rounds on; the others are
# cases where the bound does not prove it (both pmfs composed).
@pytest.mark.parametrize('q,z,count,delta,skips', [
    (0.1, 1.0, 1500, 1e-5, True),
    (0.1, 1.0, 100, 1e-3, True),
    (0.1, 1.0, 10, 1e-5, False),
    (0.1, 1.0, 1500, 1e-8, False),
    (0.035, 1.2, 3, 1e-5, False),
    (0.01, 0.7, 1000, 1e-5, True),
])
def test_epsilon_is_the_accountants_to_the_bit(q, z, count, delta, skips):
  assert _skips(q, z, count, delta) is skips
  ours = pld_epsilon.epsilon(
      [('k', dp_event.PoissonSampledDpEvent(
          q, dp_event.GaussianDpEvent(z)), count)], delta, _INTERVAL)
  assert ours == _accountants(q, z, count, delta)


@pytest.mark.slow
def test_epsilon_is_the_accountants_to_the_bit_on_a_sweep():
  skipped = 0
  for q, z in [(0.1, 1.0), (0.035, 1.2), (0.5, 0.8), (0.01, 0.7), (0.2, 2.0)]:
    base = _base(q, z)
    for count in (1, 2, 3, 10, 50, 100, 300, 1000, 1500):
      for delta in (1e-3, 1e-5, 1e-8):
        skipped += _skips(q, z, count, delta)
        assert pld_dominance.epsilon(base, count,
                                     _INTERVAL, delta) == _accountants(
                                         q, z, count,
                                         delta), (q, z, count, delta)
  assert skipped >= 30  # 36 of 135 when written.


def test_the_add_pmf_is_not_composed_when_it_loses(monkeypatch):
  calls = []
  real = pld_dominance._pmf_epsilon  # pylint: disable=protected-access

  def counted(*args):
    calls.append(args[1])
    return real(*args)

  monkeypatch.setattr(pld_dominance, '_pmf_epsilon', counted)
  pld_dominance.epsilon(_base(0.1, 1.0), 1500, _INTERVAL, 1e-5)
  assert calls == [1500]
  calls.clear()
  pld_dominance.epsilon(_base(0.1, 1.0), 2, _INTERVAL, 1e-5)
  assert calls == [2, 2]


@pytest.mark.parametrize('count', [2, 30, 1500])
def test_the_bound_holds_for_the_composed_pmf(count):
  # The bound against the actual absolute mass of the add pmf, as composed,
  # above several losses (its infinity mass included).
  add_one_round = dp_accounting_internals.pmfs(_base(0.1, 1.0))[1]
  add = _composed_pmfs(0.1, 1.0, count)[1]
  fields = dp_accounting_internals.dense_fields(add)
  losses = (fields.lower_loss + np.arange(len(fields.probs))) * _INTERVAL
  for loss in np.quantile(losses, [0.0, 0.5, 0.9, 0.99, 1.0]):
    actual = fields.infinity_mass + float(
        np.sum(np.abs(fields.probs[losses > loss])))
    assert actual <= pld_dominance.tail_mass_bound(add_one_round, count, loss)


@pytest.mark.slow
def test_the_round_off_term_bounds_the_ffts_error():
  # The composed pmf in float64 (as dp-accounting computes it) against the
  # same FFTs in long double: the summed error is far below the term the
  # bound allows for it.
  pmf = dp_accounting_internals.pmfs(_base(0.1, 1.0))[1]
  probs = dp_accounting_internals.dense_probs(pmf)
  count = 1500
  lower, upper = pld_self_compose.support_bounds(pmf, count)
  n = fft.next_fast_len(max(upper - lower + 1, len(probs)))
  double = np.real(fft.ifft(fft.fft(probs, n)**count))
  wide = np.real(fft.ifft(fft.fft(probs.astype(np.longdouble), n)**count))
  error = float(np.sum(np.abs(double - wide)))
  gamma = pld_dominance.GAMMA_PER_LOG2 * math.log2(n)
  allowed = math.sqrt(n) * (count * np.linalg.norm(probs) + 1.01) * gamma
  assert error < allowed / 100, (error, allowed)


def test_no_bound_for_one_round_or_a_sparse_pmf():
  add = dp_accounting_internals.pmfs(_base(0.1, 1.0))[1]
  assert pld_dominance.tail_mass_bound(add, 1, 0.0) == math.inf
  sparse = privacy_loss_distribution.from_gaussian_mechanism(
      3.0, value_discretization_interval=0.1, sampling_prob=1.0)
  assert pld_dominance.epsilon(sparse, 10, 0.1, 1e-5) is None
