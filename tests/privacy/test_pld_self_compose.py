"""The self-composition with kept Chernoff moments is dp-accounting's, to the bit."""

from dp_accounting.pld import common
from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import pld_self_compose


def _base(sampling_prob, z, interval=1e-3):
  return privacy_loss_distribution.from_gaussian_mechanism(
      z, value_discretization_interval=interval, sampling_prob=sampling_prob)


def _fields(pmf):
  # pylint: disable=protected-access
  dense = pmf.to_dense_pmf()
  return (dense._lower_loss, dense._infinity_mass, dense._discretization,
          dense._pessimistic_estimate)


@pytest.mark.parametrize('sampling_prob,z,interval', [(0.1, 1.0, 1e-3),
                                                      (0.035, 1.2, 1e-3),
                                                      (1.0, 0.8, 1e-3),
                                                      (0.5, 0.6, 1e-2),
                                                      (1.0, 3.0, 1e-1)])
def test_same_distribution_as_dp_accounting(sampling_prob, z, interval):
  base = _base(sampling_prob, z, interval)
  for count in (1, 2, 10, 700, 1500):
    ours = pld_self_compose.self_compose(base, count)
    theirs = base.self_compose(count)
    ours_pmfs = dp_accounting_internals.pmfs(ours)
    theirs_pmfs = dp_accounting_internals.pmfs(theirs)
    assert len(ours_pmfs) == len(theirs_pmfs)
    for mine, reference in zip(ours_pmfs, theirs_pmfs):
      assert type(mine) is type(reference)
      assert _fields(mine) == _fields(reference)
      np.testing.assert_array_equal(
          dp_accounting_internals.dense_probs(mine),
          dp_accounting_internals.dense_probs(reference))
    assert ours.get_epsilon_for_delta(1e-5) == theirs.get_epsilon_for_delta(
        1e-5)


def test_support_bounds_are_dp_accountings():
  for pmf in dp_accounting_internals.pmfs(_base(0.1, 1.0)):
    probs = dp_accounting_internals.dense_probs(pmf)
    for count in (1, 3, 100, 1500):
      for tail in (1e-15, 1e-10, 0):
        assert pld_self_compose.support_bounds(
            pmf, count,
            tail) == common.compute_self_convolve_bounds(probs, count, tail)


def test_count_must_be_positive():
  with pytest.raises(ValueError):
    pld_self_compose.self_compose(_base(0.1, 1.0), 0)


def _bits(array):
  return np.ascontiguousarray(array, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize('sampling_prob,z', [(0.1, 1.0), (0.035, 1.2),
                                             (1.0, 0.8)])
def test_same_bits_around_numpys_power_switch_and_later(sampling_prob, z):
  # numpy raises by repeated multiplication below 100 and by exp(n log z)
  # from 100 on, where `power` drops the underflowing elements; the zeros'
  # signs aside, every bit of the composed pmf must be dp-accounting's.
  base = _base(sampling_prob, z)
  for count in (99, 100, 101, 997, 1501, 1502, 3000):
    ours = pld_self_compose.self_compose(base, count)
    theirs = base.self_compose(count)
    for mine, reference in zip(dp_accounting_internals.pmfs(ours),
                               dp_accounting_internals.pmfs(theirs)):
      mine, reference = (dp_accounting_internals.dense_probs(mine),
                         dp_accounting_internals.dense_probs(reference))
      nonzero = reference != 0
      np.testing.assert_array_equal(mine == 0, ~nonzero)
      np.testing.assert_array_equal(_bits(mine[nonzero]),
                                    _bits(reference[nonzero]))


def test_power_drops_only_what_underflows():
  rng = np.random.default_rng(0)
  spectrum = (rng.uniform(0.0, 1.0, 1000) *
              np.exp(1j * rng.uniform(-np.pi, np.pi, 1000)))
  spectrum[:3] = [1.0, 0.0, 0.999]
  for count in (2, 99, 100, 1500):
    reference = spectrum**count
    ours = pld_self_compose.power(spectrum, count)
    np.testing.assert_array_equal(ours, reference)
    if count == 1500:
      # |z| < exp(-800 / 1500) = 0.59 underflows: most elements.
      assert np.count_nonzero(ours) < len(ours) // 2


def test_power_with_its_kept_log_moduli_is_the_same():
  rng = np.random.default_rng(1)
  spectrum = (rng.uniform(0.0, 1.0, 1000) *
              np.exp(1j * rng.uniform(-np.pi, np.pi, 1000)))
  spectrum[:4] = [1.0, 0.0, np.nan, 0.999]
  with np.errstate(divide='ignore', invalid='ignore'):
    log_abs = np.log(np.abs(spectrum))
  for count in (2, 100, 1500):
    np.testing.assert_array_equal(
        pld_self_compose.power(spectrum, count, log_abs),
        pld_self_compose.power(spectrum, count))


@pytest.mark.parametrize('shift,length', [(0, 10), (3, 7), (3, 9), (9, 10),
                                          (25, 4), (5, 12)])
def test_rolled_prefix_is_numpys_roll(shift, length):
  values = np.arange(10.0) - 4.5
  # pylint: disable=protected-access
  got = pld_self_compose._rolled_prefix(values, shift, length)
  np.testing.assert_array_equal(got, np.array(np.roll(values, -shift)[:length]))
  assert got.flags.c_contiguous and not np.shares_memory(got, values)
