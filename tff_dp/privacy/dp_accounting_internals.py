"""The one place that reads dp-accounting's private fields (written for 0.4.3).

Bounding the PLD accountant's memory and time (`tff_dp.privacy.pld_epsilon`)
needs the size of each probability mass function before dp-accounting
composes it, which its public API does not expose. Every such read goes
through this module; `tests/privacy/test_dp_accounting_internals.py` checks
them on a real distribution and fails, naming the field, when an upgrade moves
one.
"""

from typing import Any

import numpy as np

# The version these reads were written and tested against (requirements.lock).
WRITTEN_FOR = '0.4.3'


def pmfs(distribution: Any) -> list[Any]:
  """The pmfs of a PrivacyLossDistribution: one if symmetric, else two."""
  # pylint: disable=protected-access
  found = [distribution._pmf_remove, distribution._pmf_add]
  return found[:1] if distribution._symmetric else found


def dense_probs(pmf: Any) -> np.ndarray:
  """The probabilities of a pmf on its dense grid."""
  return pmf.to_dense_pmf()._probs  # pylint: disable=protected-access
