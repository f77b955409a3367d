"""dp-accounting's composition of a PLD with the identity, to the bit, faster.

The PLD accountant of dp-accounting 0.4.3 starts from the identity
distribution and composes what it is given into it; `pld_epsilon` does the
same so that its epsilon is the accountant's float. For a dense pmf that
composition (`DensePLDPmf.compose`) is cheap but for its tail truncation
(`pld_pmf._truncate_tails`; Koskela, Jalko, Honkela 2020, "Computing tight
differential privacy guarantees using FFT", Sec. 6: mass below 1e-15 is cut
pessimistically), whose running sums walk each tail in Python, one iteration
per grid point. The composed grid grows linearly with the rounds composed,
and so did that walk: ~0.8 ms of the main job's epsilon at round 1,500
(benchmarks/README.md, "Outside the round").

`compose_identity` returns the very distribution, bit for bit: the identity's
only point is loss 0 with probability 1.0, so scipy's `fftconvolve` (which
drops an axis of length 1 and broadcasts) gives `1.0 * probs`, the infinity
mass is `0 + m - 0 * m`, and the tails are cut with the same running sums,
computed sequentially by `np.add.accumulate` (left to right, one addition
per element, as the loop adds; not the pairwise summation of `np.sum`).
Anything but a dense pmf is left to dp-accounting.
`tests/privacy/test_pld_compose.py` compares with dp-accounting bit by bit.
"""

from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution
import numpy as np

from tff_dp.privacy import dp_accounting_internals

# dp-accounting's default tail mass truncation of `PrivacyLossDistribution.compose`.
TAIL_MASS_TRUNCATION = 1e-15
# Elements per block of the running sums: the tails cut are a few thousand
# points; a block must not cost much beyond them.
_BLOCK = 2048


def prefix_to_truncate(values: np.ndarray, threshold: float) -> int:
  """`pld_pmf._truncate_tails`'s `_find_prefix_to_truncate`, vectorized.

  Returns:
    The first index at which the running sum of `values` exceeds
    `threshold`, or len(values): the loop's answer.
  """
  total = 0.0
  for start in range(0, len(values), _BLOCK):
    # The carried sum plus the block's elements, one at a time, in order.
    sums = np.add.accumulate(
        np.concatenate(([total], values[start:start + _BLOCK])))[1:]
    over = np.flatnonzero(sums > threshold)
    if over.size:
      return start + int(over[0])
    total = sums[-1]
  return len(values)


def truncate_tails(probs: np.ndarray, tail_mass_truncation: float,
                   pessimistic_estimate: bool):
  """`pld_pmf._truncate_tails`, the same operations but for the loops.

  Returns:
    (size of the truncated prefix, truncated array, mass that goes to
    infinity), as dp-accounting returns them.
  """
  if tail_mass_truncation == 0:
    return 0, probs, 0
  left_idx = prefix_to_truncate(probs, tail_mass_truncation / 2)
  right_idx = len(probs) - prefix_to_truncate(np.flip(probs),
                                              tail_mass_truncation / 2)
  right_idx = max(right_idx, left_idx + 1)
  left_mass = np.sum(probs[:left_idx])
  right_mass = np.sum(probs[right_idx:])
  truncated_probs = probs[left_idx:right_idx]
  if pessimistic_estimate:
    truncated_probs[0] += left_mass
    return left_idx, truncated_probs, right_mass
  truncated_probs[-1] += right_mass
  return left_idx, truncated_probs, 0


def _compose_identity_pmf(pmf, tail_mass_truncation: float):
  """`compose_pmfs(identity pmf, pmf, tail)` for a dense `pmf`."""
  fields = dp_accounting_internals.dense_fields(pmf)
  # The identity's dense pmf is loss 0, probs [1], infinity mass 0; and
  # fftconvolve([1], probs) takes no FFT over an axis of length 1: a product.
  probs = np.array([1]) * fields.probs
  infinity_mass = 0 + fields.infinity_mass - 0 * fields.infinity_mass
  offset, probs, right_tail = truncate_tails(probs, tail_mass_truncation,
                                             fields.pessimistic_estimate)
  return pld_pmf.DensePLDPmf(fields.discretization,
                             0 + fields.lower_loss + offset, probs,
                             infinity_mass + right_tail,
                             fields.pessimistic_estimate)


def compose_identity(distribution, interval: float):
  """`identity(interval).compose(distribution)`, the same distribution.

  Args:
    distribution: A `PrivacyLossDistribution` of discretization `interval`
      (pessimistic, as the accountant builds them).
    interval: The identity's discretization interval.
  """
  pmfs = dp_accounting_internals.pmfs(distribution)
  if not all(_composes_here(pmf, interval) for pmf in pmfs):
    identity = privacy_loss_distribution.identity(
        value_discretization_interval=interval)
    return identity.compose(distribution)
  composed = [_compose_identity_pmf(pmf, TAIL_MASS_TRUNCATION) for pmf in pmfs]
  return privacy_loss_distribution.PrivacyLossDistribution(*composed)


def _composes_here(pmf, interval: float) -> bool:
  """Whether `pmf` is dense and pessimistic on `interval` (else dp-accounting)."""
  fields = dp_accounting_internals.dense_fields(pmf)
  return (fields is not None and fields.discretization == interval and
          fields.pessimistic_estimate)


def compose_identity_pmf(pmf, interval: float):
  """The pmf `compose_identity` gives for `pmf` (dense, pessimistic).

  Raises:
    ValueError: If `pmf` is not dense and pessimistic on `interval`.
  """
  if not _composes_here(pmf, interval):
    raise ValueError(f'expected a dense pessimistic pmf on interval '
                     f'{interval:g}, got {pmf!r}')
  return _compose_identity_pmf(pmf, TAIL_MASS_TRUNCATION)
