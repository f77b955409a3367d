"""The composition with the identity is dp-accounting's, to the bit."""

from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import pld_compose
from tff_dp.privacy import pld_epsilon
from tff_dp.privacy import pld_self_compose


def _bits(array):
  return np.ascontiguousarray(array, dtype=np.float64).view(np.uint64)


def _composed(sampling_prob, z, count, interval=1e-3):
  base = privacy_loss_distribution.from_gaussian_mechanism(
      z, value_discretization_interval=interval, sampling_prob=sampling_prob)
  return pld_self_compose.self_compose(base, count)


def _assert_same_distribution(ours, theirs):
  ours_pmfs = dp_accounting_internals.pmfs(ours)
  theirs_pmfs = dp_accounting_internals.pmfs(theirs)
  assert len(ours_pmfs) == len(theirs_pmfs)
  for mine, reference in zip(ours_pmfs, theirs_pmfs):
    assert type(mine) is type(reference)
    # pylint: disable=protected-access
    mine_fields = (mine._discretization, mine._infinity_mass,
                   mine._pessimistic_estimate)
    reference_fields = (reference._discretization, reference._infinity_mass,
                        reference._pessimistic_estimate)
    assert mine_fields == reference_fields
    assert type(mine._infinity_mass) is type(reference._infinity_mass)
    if isinstance(reference, pld_pmf.DensePLDPmf):
      assert mine._lower_loss == reference._lower_loss
      np.testing.assert_array_equal(_bits(mine._probs), _bits(reference._probs))
    else:
      assert mine._loss_probs == reference._loss_probs
    # pylint: enable=protected-access


@pytest.mark.parametrize('sampling_prob,z,count',
                         [(0.1, 1.0, 1), (0.1, 1.0, 10), (0.1, 1.0, 1500),
                          (0.035, 1.2, 300), (1.0, 0.8, 20), (0.5, 0.6, 40)])
def test_same_distribution_as_dp_accountings_compose(sampling_prob, z, count):
  total = _composed(sampling_prob, z, count)
  identity = privacy_loss_distribution.identity(
      value_discretization_interval=1e-3)
  _assert_same_distribution(pld_compose.compose_identity(total, 1e-3),
                            identity.compose(total))


def test_sparse_and_other_intervals_are_left_to_dp_accounting():
  sparse = privacy_loss_distribution.from_gaussian_mechanism(
      3.0, value_discretization_interval=0.1)
  assert dp_accounting_internals.dense_fields(
      dp_accounting_internals.pmfs(sparse)[0]) is None
  identity = privacy_loss_distribution.identity(
      value_discretization_interval=0.1)
  _assert_same_distribution(pld_compose.compose_identity(sparse, 0.1),
                            identity.compose(sparse))
  # A different interval is refused as dp-accounting refuses it.
  with pytest.raises(ValueError, match='Discretization'):
    pld_compose.compose_identity(_composed(0.1, 1.0, 3), 1e-2)


def _loop_prefix(values, threshold):
  # pld_pmf._truncate_tails's inner loop, as written there.
  s = 0
  for i, val in enumerate(values):
    s += val
    if s > threshold:
      return i
  return len(values)


_ARRAYS = [
    np.full(5000, 1e-19),  # Never exceeds the threshold: len.
    np.concatenate([np.full(3000, 2e-19), [1.0]]),  # Past a block boundary.
    np.concatenate([np.full(2047, 1e-17), [-1e-16, 6e-16, 1.0]]),
    np.random.default_rng(0).normal(0.0, 1e-16, 9000),
    np.array([np.nan, 1.0]),
    np.array([]),
]


@pytest.mark.parametrize('values', _ARRAYS)
def test_prefix_is_the_loops(values):
  for threshold in (5e-16, 0.0, -1.0):
    assert pld_compose.prefix_to_truncate(values, threshold) == _loop_prefix(
        values, threshold)


@pytest.mark.parametrize('values', _ARRAYS[:4])
@pytest.mark.parametrize('tail', [1e-15, 0.0, 1e-12])
@pytest.mark.parametrize('pessimistic', [True, False])
def test_truncation_is_dp_accountings(values, tail, pessimistic):
  # pylint: disable=protected-access
  ours_input, theirs_input = values.copy(), values.copy()
  try:
    theirs = pld_pmf._truncate_tails(theirs_input, tail, pessimistic)
  except IndexError:
    # All of the mass within the tails: an empty slice, refused alike.
    with pytest.raises(IndexError):
      pld_compose.truncate_tails(ours_input, tail, pessimistic)
    return
  ours = pld_compose.truncate_tails(ours_input, tail, pessimistic)
  assert ours[0] == theirs[0] and ours[2] == theirs[2]
  np.testing.assert_array_equal(_bits(ours[1]), _bits(theirs[1]))
  # Both add the cut mass in place, to the array they were given.
  np.testing.assert_array_equal(_bits(ours_input), _bits(theirs_input))


def test_main_jobs_epsilon_at_round_1500_is_the_accountants():
  # The main job's ledger (Poisson q = 0.1, z = 1, delta 1e-5) after the
  # 1,500 rounds a preset runs: every step above, end to end.
  event = dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.0))
  reference = pld.PLDAccountant(value_discretization_interval=1e-3)
  reference.compose(event, 1500)
  assert pld_epsilon.epsilon([('e', event, 1500)], 1e-5,
                             1e-3) == reference.get_epsilon(1e-5)
