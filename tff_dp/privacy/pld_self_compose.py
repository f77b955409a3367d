"""dp-accounting's self-composition of a PLD, its Chernoff moments kept.

`DensePLDPmf.self_compose(count)` (dp-accounting 0.4.3, `common.self_convolve`)
first bounds the support of the count-fold composition by Chernoff bounds:
40 moment generating functions of the one-round pmf, each a `logsumexp` over
its grid, then scaled by the count (Koskela, Jalko, Honkela 2020, "Computing
tight differential privacy guarantees using FFT", supplementary material,
Eq. (5)). The moments do not depend on the count, yet they were computed
twice per epsilon (once for the grid budget of `pld_epsilon.grid`, once
inside `self_compose`): about 12 ms of a round's 15-35 ms of accounting on
the main job, at every round.

Here they are computed once per one-round pmf (kept while that pmf lives:
`pld_epsilon.leaf_pld` caches the pmfs), and `self_compose` does what
dp-accounting's does with them, the same operations in the same order, so
that the composed distribution, hence epsilon, is the same to the bit
(`tests/privacy/test_pld_self_compose.py`). Sparse pmfs (small grids) are
left to dp-accounting.

Two more savings keep the same floats. The spectrum of the one-round pmf,
`fft(probs, fast_len)`, depends on the count only through `fast_len`
(`next_fast_len` of the composed support, which moves every few rounds), so
the last one is kept per pmf. And raising it to the count is most of a
self-composition's time after many rounds (~20 ms of ~30 ms at count 1,500
on the main job): for count >= 100 numpy computes each element's power as
exp(count * log(z)) (`npy_cpow`, C's `cpow`), so wherever count * log|z| is
far below the exponent at which exp underflows (-745.1), that power is an
exactly zero complex number, and after 1,500 rounds this holds for all but
~400 of ~85,000 elements. Only the others are raised; a zero (whatever its
sign) then adds nothing to the inverse FFT's sums of non-zero values, and
the tests compare the result bit by bit with dp-accounting's. The log
moduli that pick them depend on the spectrum only and are kept with it
(~0.3 ms per self-composition at round 1,500), and the inverse FFT works
in the power's own new array and its output is copied once (dp-accounting's
`np.roll` and `np.array` copied it twice): the same plan, the same values.
"""

import math
from typing import Any, Optional
import weakref

from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution
import numpy as np
from scipy import fft
from scipy import special

from tff_dp.privacy import dp_accounting_internals

# dp-accounting's default tail mass truncation of a self-composition.
TAIL_MASS_TRUNCATION = 1e-15

# pmf -> (orders, log moment generating functions): common.py's Chernoff
# inputs, which depend on the pmf only.
_MOMENTS: 'weakref.WeakKeyDictionary[Any, tuple]' = weakref.WeakKeyDictionary()
# pmf -> (fast_len, fft(probs, fast_len)): the last spectrum of each pmf.
_SPECTRA: 'weakref.WeakKeyDictionary[Any, tuple]' = weakref.WeakKeyDictionary()
# Below this count numpy raises complex numbers by repeated multiplication,
# from this one on by exp(count * log(z)) (numpy 1.25 `npy_cpow`).
_EXP_LOG_POWER_FROM = 100
# count * log|z| below which exp(...) is exactly 0: exp underflows below
# -745.13; the margin covers any difference between log|z| here and C's clog.
_UNDERFLOW_LOG = -800.0


def _moments(pmf, probs: np.ndarray) -> tuple:
  if pmf not in _MOMENTS:
    # As `common.compute_self_convolve_bounds` computes them.
    orders = (np.concatenate(
        (np.arange(-20, 0), np.arange(1, 21))) / len(probs))
    log_mgfs = [
        special.logsumexp(np.arange(len(probs)) * order, b=probs)
        for order in orders
    ]
    _MOMENTS[pmf] = (orders, log_mgfs)
  return _MOMENTS[pmf]


def support_bounds(pmf,
                   count: int,
                   tail_mass_truncation: float = TAIL_MASS_TRUNCATION):
  """`common.compute_self_convolve_bounds(probs, count, tail)` of a pmf.

  Returns:
    (lower, upper) grid offsets, as dp-accounting computes them.
  """
  probs = dp_accounting_internals.dense_probs(pmf)
  upper_bound = (len(probs) - 1) * count
  lower_bound = 0
  if tail_mass_truncation == 0:
    return lower_bound, upper_bound
  orders, log_mgfs = _moments(pmf, probs)
  for order, log_mgf_value in zip(orders, log_mgfs):
    bound = (count * log_mgf_value + math.log(2 / tail_mass_truncation)) / order
    if order > 0:
      upper_bound = min(upper_bound, math.ceil(bound))
    if order < 0:
      lower_bound = max(lower_bound, math.floor(bound))
  return lower_bound, upper_bound


def _spectrum(pmf, probs: np.ndarray, fast_len: int) -> tuple:
  """(`fft.fft(probs, fast_len)`, log of its moduli), kept for the last length."""
  kept = _SPECTRA.get(pmf)
  if kept is None or kept[0] != fast_len:
    spectrum = fft.fft(probs, fast_len)
    with np.errstate(divide='ignore', invalid='ignore'):
      log_abs = np.log(np.abs(spectrum))
    for array in (spectrum, log_abs):
      array.setflags(write=False)
    kept = (fast_len, spectrum, log_abs)
    _SPECTRA[pmf] = kept
  return kept[1], kept[2]


def power(spectrum: np.ndarray,
          count: int,
          log_abs: Optional[np.ndarray] = None) -> np.ndarray:
  """`spectrum**count`, with the elements that underflow to 0 set to 0.

  Equal to `spectrum**count` element by element, but for the sign of the
  zeros (module docstring).

  Args:
    spectrum: Complex numbers.
    count: The power, >= 1.
    log_abs: `np.log(np.abs(spectrum))` if already computed (it depends on
      the spectrum only, and took ~0.3 ms per self-composition at round
      1,500 of the main job).
  """
  if count < _EXP_LOG_POWER_FROM:
    return spectrum**count
  if log_abs is None:
    with np.errstate(divide='ignore', invalid='ignore'):
      log_abs = np.log(np.abs(spectrum))
  # Written so that a NaN is raised as numpy would, not dropped.
  survive = np.flatnonzero(~(count * log_abs < _UNDERFLOW_LOG))
  result = np.zeros_like(spectrum)
  result[survive] = spectrum[survive]**count
  return result


def _rolled_prefix(values: np.ndarray, shift: int, length: int) -> np.ndarray:
  """`np.array(np.roll(values, -shift)[:length])`: the same elements."""
  length = min(length, len(values))
  start = shift % len(values)
  head = values[start:start + length]
  if len(head) == length:
    return np.array(head)
  return np.concatenate((head, values[:length - len(head)]))


def _dense_self_compose(pmf, count: int, tail_mass_truncation: float):
  """`DensePLDPmf.self_compose(count, tail)`, the moments kept."""
  fields = dp_accounting_internals.dense_fields(pmf)
  probs = fields.probs
  lower_loss = fields.lower_loss * count
  # common.self_convolve:
  truncation_lower_bound, truncation_upper_bound = support_bounds(
      pmf, count, tail_mass_truncation)
  output_len = truncation_upper_bound - truncation_lower_bound + 1
  fast_len = fft.next_fast_len(max(output_len, len(probs)))
  # The power is a new array, so the inverse FFT may work in it (pocketfft
  # runs the same plan either way).
  spectrum, log_abs = _spectrum(pmf, probs, fast_len)
  convolution = np.real(
      fft.ifft(power(spectrum, count, log_abs), overwrite_x=True))
  # np.roll(convolution, -truncation_lower_bound)[:output_len], copied once.
  output = _rolled_prefix(convolution, truncation_lower_bound, output_len)
  # DensePLDPmf.self_compose again:
  lower_loss += truncation_lower_bound
  inf_prob = (tail_mass_truncation -
              math.expm1(count * math.log1p(-fields.infinity_mass)))
  return pld_pmf.DensePLDPmf(fields.discretization, lower_loss, output,
                             inf_prob, fields.pessimistic_estimate)


def self_compose(distribution, count: int):
  """`distribution.self_compose(count)`, the same distribution, to the bit."""
  if count <= 0:
    raise ValueError(f'count should be >= 1, count={count}')
  composed = [
      self_compose_pmf(pmf, count)
      for pmf in dp_accounting_internals.pmfs(distribution)
  ]
  return privacy_loss_distribution.PrivacyLossDistribution(*composed)


def self_compose_pmf(pmf, count: int):
  """`pmf.self_compose(count)` with dp-accounting's default truncation."""
  if dp_accounting_internals.dense_fields(pmf) is None:
    return pmf.self_compose(count, TAIL_MASS_TRUNCATION)
  return _dense_self_compose(pmf, count, TAIL_MASS_TRUNCATION)
