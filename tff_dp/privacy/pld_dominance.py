"""One pmf of a sampled PLD left uncomposed when its epsilon provably loses.

A Poisson-sampled mechanism's privacy loss distribution has two pmfs (remove
and add adjacency); its epsilon is the larger of theirs, and dp-accounting
composes and walks both. On the main job (q = 0.1, z = 1, delta 1e-5) the
add pmf's epsilon is far below the remove pmf's (25.5 against 32.7 after
1,500 rounds), yet its inverse FFT and walk were ~40% of every epsilon's
cost, a part that grows with the rounds (benchmarks/README.md, "Outside the
round").

`epsilon` composes the pmfs one at a time, exactly as `pld_epsilon` does
(`pld_self_compose`, `pld_compose`, `pld_search`: dp-accounting's floats),
and skips a pmf only when a bound proves that dp-accounting's computed
epsilon of it is below the larger one x already computed, so that the
returned float is the one `max` of both would give. The bound is on the mass
the composed pmf, as dp-accounting computes it, puts above y = x - 2
intervals, infinity included (`tail_mass_bound`). If it is below delta / 2,
the hockey-stick divergence at every epsilon >= y, at most that mass (each
point's 1 - e^(eps - loss) is in [0, 1]), is below delta, so the walk finds
no epsilon >= y; the two intervals of margin (a factor e^0.002 on the ratio
the walk takes the log of) absorb its rounding (relative ~1e-12). The
mass bound adds:

* the exact composition's tail, by the Chernoff bound over the one-round
  pmf's grid index J: P[J_1 + ... + J_c >= k] <= e^(-tk) E[e^(tJ)]^c for any
  t > 0 (a few fixed t, the minimum taken; the moments are cached per pmf);
* the mass dp-accounting moves to infinity: the self-composition's
  (`1e-15 - expm1(c log1p(-m))`, the same float), the tail cut after the
  composition with the identity (< 1e-15) and the mass its cyclic FFT folds
  into the window from outside its Chernoff bounds (< 1e-15);
* the FFT's round-off, summed over the tail: at most sqrt(points) times its
  2-norm, which is at most (c ||p||_2 + 1.01) gamma + 1e-12 for a forward
  FFT, the power and an inverse FFT each with relative 2-norm error gamma:
  Higham 2002 ("Accuracy and stability of numerical algorithms", Theorem
  24.2) gives ~7 u log2(n) for radix 2 with accurate twiddles; `GAMMA_PER_LOG2`
  takes 1000 u log2(n) for pocketfft's mixed radices, and the power's
  rounding (~800 * 4u, numpy's exp(c log z)) is the 1e-12.

Where the bound fails (early rounds, or the add pmf's epsilon the larger),
both pmfs are composed as before. `tests/privacy/test_pld_dominance.py`
checks the result against dp-accounting bit by bit and the bound against the
composed pmf's actual tail. Pure numpy.
"""

import math
from typing import Any, Optional
import weakref

import numpy as np
from scipy import fft
from scipy import special

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import pld_compose
from tff_dp.privacy import pld_search
from tff_dp.privacy import pld_self_compose

# Relative 2-norm error of one FFT of length n, per log2(n) (module doc).
GAMMA_PER_LOG2 = 1000 * float(np.finfo(np.float64).eps) / 2
# Round-off of the power spectrum**count, relative (module doc).
_POWER_ERROR = 1e-12
# Mass the composition moves to infinity or folds in, each at most this.
_TRUNCATED_MASS = 1e-15
# Chernoff parameters, per unit of privacy loss (t per grid index is this
# times the interval).
_CHERNOFF_T = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
# pmf -> log E[e^(tJ)] at each of _CHERNOFF_T.
_LOG_MGFS: 'weakref.WeakKeyDictionary[Any, np.ndarray]' = (
    weakref.WeakKeyDictionary())


def _log_mgfs(pmf, fields) -> Optional[np.ndarray]:
  """log E[e^(tJ)] of the one-round pmf's grid index, or None if some
  probability is negative (the Chernoff bound needs a measure)."""
  if pmf not in _LOG_MGFS:
    probs = fields.probs
    if np.any(probs < 0):
      return None
    index = np.arange(len(probs), dtype=np.float64)
    _LOG_MGFS[pmf] = np.array([
        special.logsumexp(t * fields.discretization * index, b=probs)
        for t in _CHERNOFF_T
    ])
  return _LOG_MGFS[pmf]


def tail_mass_bound(pmf, count: int, loss: float) -> float:
  """Bound on the mass above `loss` of `pmf` composed `count` times.

  The pmf as dp-accounting computes it (self-composition, then the
  composition with the identity), its mass at infinity included, in
  absolute values (module docstring). math.inf where no bound is known.
  """
  fields = dp_accounting_internals.dense_fields(pmf)
  if fields is None or count < 2:
    return math.inf
  log_mgfs = _log_mgfs(pmf, fields)
  if log_mgfs is None:
    return math.inf
  # Composed grid indices whose loss may exceed `loss`: sum J >= first.
  first = math.floor(loss / fields.discretization) - count * fields.lower_loss
  t_index = np.array(_CHERNOFF_T) * fields.discretization
  chernoff = float(np.min(np.exp(count * log_mgfs - t_index * first)))
  infinity = (pld_self_compose.TAIL_MASS_TRUNCATION -
              math.expm1(count * math.log1p(-fields.infinity_mass)))
  lower, upper = pld_self_compose.support_bounds(pmf, count)
  points = upper - lower + 1
  n = fft.next_fast_len(max(points, len(fields.probs)))
  gamma = GAMMA_PER_LOG2 * math.log2(n)
  norm = float(np.linalg.norm(fields.probs))
  round_off = math.sqrt(points) * ((count * norm + 1.01) * gamma + _POWER_ERROR)
  return (1 + 1e-6) * chernoff + infinity + 3 * _TRUNCATED_MASS + round_off


def _pmf_epsilon(pmf, count: int, interval: float, delta: float) -> float:
  """The epsilon of one pmf composed `count` times, as `pld_epsilon` has it."""
  composed = pld_self_compose.self_compose_pmf(pmf, count)
  with_identity = pld_compose.compose_identity_pmf(composed, interval)
  return pld_search.epsilon_for_delta(
      *dp_accounting_internals.dense_grid(with_identity), delta)


def epsilon(distribution, count: int, interval: float,
            delta: float) -> Optional[float]:
  """`pld_epsilon`'s epsilon of `distribution` composed `count` times.

  The same float as composing both pmfs and taking the larger epsilon;
  None where this path does not apply (not two dense pessimistic pmfs on
  `interval`: the caller composes as before).
  """
  pmfs = dp_accounting_internals.pmfs(distribution)
  fields = [dp_accounting_internals.dense_fields(pmf) for pmf in pmfs]
  if len(pmfs) != 2 or any(
      f is None or f.discretization != interval or not f.pessimistic_estimate
      for f in fields):
    return None
  first = _pmf_epsilon(pmfs[0], count, interval, delta)
  if (math.isfinite(first) and
      tail_mass_bound(pmfs[1], count, first - 2 * interval) < delta / 2):
    return first
  return max(first, _pmf_epsilon(pmfs[1], count, interval, delta))
