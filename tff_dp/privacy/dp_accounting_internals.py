"""The one place that reads dp-accounting's private fields (written for 0.4.3).

Bounding the PLD accountant's memory and time (`tff_dp.privacy.pld_epsilon`)
needs the size of each probability mass function before dp-accounting
composes it, and composing and searching a dense one in numpy to the bit
(`pld_self_compose`, `pld_search`) needs its fields, which its public API
does not expose. Every such read goes
through this module; `tests/privacy/test_dp_accounting_internals.py` checks
them on a real distribution and fails, naming the field, when an upgrade moves
one.
"""

from typing import Any, NamedTuple, Optional

from dp_accounting.pld import pld_pmf
import numpy as np

# The version these reads were written and tested against (requirements.lock).
WRITTEN_FOR = '0.4.3'


class DenseFields(NamedTuple):
  """What a `DensePLDPmf` holds: the grid's interval, the index of its
  smallest loss, the probabilities, the mass at infinite loss, and whether
  it rounds pessimistically."""
  discretization: float
  lower_loss: int
  probs: np.ndarray
  infinity_mass: float
  pessimistic_estimate: bool


def pmfs(distribution: Any) -> list[Any]:
  """The pmfs of a PrivacyLossDistribution: one if symmetric, else two."""
  # pylint: disable=protected-access
  found = [distribution._pmf_remove, distribution._pmf_add]
  return found[:1] if distribution._symmetric else found


def dense_probs(pmf: Any) -> np.ndarray:
  """The probabilities of a pmf on its dense grid."""
  return pmf.to_dense_pmf()._probs  # pylint: disable=protected-access


def dense_fields(pmf: Any) -> Optional[DenseFields]:
  """The fields of a `DensePLDPmf`, else None (a sparse pmf)."""
  if type(pmf) is not pld_pmf.DensePLDPmf:  # pylint: disable=unidiomatic-typecheck
    return None
  # pylint: disable=protected-access
  return DenseFields(discretization=pmf._discretization,
                     lower_loss=pmf._lower_loss,
                     probs=pmf._probs,
                     infinity_mass=pmf._infinity_mass,
                     pessimistic_estimate=pmf._pessimistic_estimate)


def dense_grid(pmf: Any) -> Optional[tuple[float, float, float, np.ndarray]]:
  """(infinity mass, largest loss, interval, probs) of a dense pmf, else None.

  The largest loss as `DensePLDPmf.get_epsilon_for_delta` computes it, for
  `tff_dp.privacy.pld_search` to give that method's result to the bit.
  """
  fields = dense_fields(pmf)
  if fields is None:
    return None
  upper_loss = (fields.lower_loss + len(fields.probs) -
                1) * fields.discretization
  return (fields.infinity_mass, upper_loss, fields.discretization, fields.probs)
