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
