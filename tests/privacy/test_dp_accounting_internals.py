"""dp-accounting's private fields that tff-dp reads still exist and mean the same.

If an upgrade of dp-accounting renames or changes one, these fail and name it,
instead of the PLD budget silently misjudging a distribution's size.
"""

import importlib.metadata

from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest

from tff_dp.privacy import dp_accounting_internals


def test_installed_dp_accounting_is_the_one_the_reads_were_written_for():
  installed = importlib.metadata.version('dp-accounting')
  assert installed == dp_accounting_internals.WRITTEN_FOR, (
      f'dp-accounting {installed} is installed; tff_dp/privacy/'
      'dp_accounting_internals.py reads private fields of '
      f'{dp_accounting_internals.WRITTEN_FOR}: check them, then update '
      'WRITTEN_FOR')


@pytest.mark.parametrize('sampling_prob,count', [(1.0, 1), (0.1, 2)])
def test_pmfs_are_the_distribution_and_sum_to_one(sampling_prob, count):
  distribution = privacy_loss_distribution.from_gaussian_mechanism(
      1.0, value_discretization_interval=1e-2, sampling_prob=sampling_prob)
  pmfs = dp_accounting_internals.pmfs(distribution)
  # Unsampled Gaussian: one symmetric pmf; Poisson-sampled: remove and add.
  assert len(pmfs) == count
  for pmf in pmfs:
    probs = dp_accounting_internals.dense_probs(pmf)
    assert isinstance(probs, np.ndarray) and probs.ndim == 1
    assert len(probs) >= pmf.size
    # The dense grid holds the mass (all but the truncated tail).
    assert 0.999 < probs.sum() <= 1 + 1e-9


def test_dense_fields_are_the_pmfs():
  distribution = privacy_loss_distribution.from_gaussian_mechanism(
      1.0, value_discretization_interval=1e-3, sampling_prob=0.1)
  for pmf in dp_accounting_internals.pmfs(distribution):
    fields = dp_accounting_internals.dense_fields(pmf)
    assert fields.discretization == 1e-3 and fields.pessimistic_estimate
    np.testing.assert_array_equal(fields.probs,
                                  dp_accounting_internals.dense_probs(pmf))
    # Its losses: lower_loss, lower_loss + 1, ... times the interval.
    losses = (np.arange(len(fields.probs)) + fields.lower_loss) * 1e-3
    assert pmf.get_delta_for_epsilon(losses[-1]) == pytest.approx(
        fields.infinity_mass, abs=1e-15)
    upper = dp_accounting_internals.dense_grid(pmf)[1]
    assert upper == pytest.approx(losses[-1])
  sparse = privacy_loss_distribution.from_gaussian_mechanism(
      3.0, value_discretization_interval=0.1)
  assert dp_accounting_internals.dense_fields(
      dp_accounting_internals.pmfs(sparse)[0]) is None
