"""One-shot empirical epsilon from the cosines of inserted canaries.

Implements Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar, "One-shot
Empirical Privacy Estimation for Federated Learning" (ICLR 2024,
arXiv:2302.03098). K canary clients each send a secret random unit direction
(scaled past the clip); the statistic of a canary is the cosine between its
direction and the released model delta: of the final model (final-model
threat model) or the maximum over rounds of the cosine with each round's
delta (all-iterates threat model), `canary_statistics`. The estimate is the
epsilon at which the null law of the statistic and N(mu, sigma^2), fitted to
the inserted canaries, are (epsilon, delta)-indistinguishable.

Matched to the reference code (google-research/federated,
one_shot_epe/empirical_privacy_estimation_lib.py):

* the null of a direction never inserted is N(0, 1/d) for d >= 1000 and the
  exact cosine law, density proportional to (1 - t^2)^((d - 3) / 2), below
  (their `ClosedFormNullCalculator` and its 1000 threshold);
* the fit is the sample mean and standard deviation (ddof=1 here);
* epsilon is the smallest one whose two-sided hockey-stick divergence is at
  most delta (`tff_dp.audit.divergence`), the quantity their
  `epsilon_two_gaussians` computes through the quadratic privacy loss; their
  test's value 2.317789 (d = 2000, mu = sigma = d^-1/2, delta = 1e-2) is
  reproduced, as is the Balle-Wang epsilon for equal variances. For d < 1000
  their `epsilon_closed_form_null_gaussian_alt` sweeps one-sided thresholds,
  which gives the same value where the likelihood ratio is monotone (their
  2.375326 at d = 200 is reproduced to 1e-6) and a lower one where a
  two-sided test separates better;
* with unseen canaries' statistics (K' directions never inserted), the null
  is a Gaussian fitted to them instead: the all-iterates statistic is a
  maximum over rounds, whose null is not N(0, 1/d), and the reference run
  records the unseen canaries' maxima for that purpose.

An estimate, not a bound: it assumes the statistic is Gaussian. For a
rigorous lower bound from the same canaries see `tff_dp.audit.lower_bound`.
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from tff_dp import checks
from tff_dp.audit import arrays
from tff_dp.audit import divergence

# Below this model dimension the null is the exact cosine law (reference).
EXACT_NULL_BELOW_DIM = 1000


@dataclasses.dataclass(frozen=True)
class OneShotEstimate:
  """An epsilon estimate and the two distributions it separates.

  Attributes:
    epsilon: The estimate (inf when the two are separated beyond
      `divergence.MAX_EPSILON`).
    delta: The delta it is computed at.
    mean: Fitted mean of the inserted canaries' statistic.
    std: Fitted standard deviation of it (ddof=1).
    null: How the null was taken: 'exact cosine', 'normal 1/d' or 'unseen
      canaries'.
    null_mean: Mean of the null (0 unless fitted to unseen canaries).
    null_std: Standard deviation of the null.
    canaries: Number of inserted canaries' statistics.
  """
  epsilon: float
  delta: float
  mean: float
  std: float
  null: str
  null_mean: float
  null_std: float
  canaries: int


def _fit(name: str, values) -> divergence.Gaussian:
  """A Gaussian fitted to `values` (>= 2 finite, not all equal)."""
  values = arrays.finite_vector(name, values, min_size=2)
  std = float(np.std(values, ddof=1))
  if not std > 0:
    raise ValueError(f'{name} must not all be equal (std 0), got '
                     f'{values.size} values equal to {values[0]}.')
  return divergence.Gaussian(float(np.mean(values)), std)


def estimate_epsilon(
    canary_statistics: Sequence[float],
    *,
    dim: int,
    delta: float,
    unseen_statistics: Optional[Sequence[float]] = None) -> OneShotEstimate:
  """The one-shot epsilon estimate at `delta` (see the module docstring).

  Args:
    canary_statistics: The statistic of each inserted canary (>= 2 values):
      its cosine with the final model delta, or its all-iterates maximum.
    dim: The model dimension d (>= 2): the number of trainable parameters.
    delta: The delta of the estimate, in (0, 1).
    unseen_statistics: The same statistic of canaries never inserted (>= 2
      values). Needed for the all-iterates statistic; when given, the null
      is a Gaussian fitted to them instead of the cosine law.

  Returns:
    The estimate, with the fitted distributions.

  Raises:
    ValueError: An argument is empty, non-finite, constant or out of range.
  """
  dim = checks.check_int('dim', dim, minimum=2)
  delta = arrays.probability('delta', delta)
  canary_statistics = arrays.finite_vector('canary_statistics',
                                           canary_statistics,
                                           min_size=2)
  alternative = _fit('canary_statistics', canary_statistics)
  if unseen_statistics is not None:
    null = _fit('unseen_statistics', unseen_statistics)
    kind, null_mean, null_std = 'unseen canaries', null.mean, null.std
  elif dim < EXACT_NULL_BELOW_DIM:
    null = divergence.CosineNull(dim)
    kind, null_mean, null_std = 'exact cosine', 0.0, dim**-0.5
  else:
    null = divergence.Gaussian(0.0, dim**-0.5)
    kind, null_mean, null_std = 'normal 1/d', 0.0, dim**-0.5
  epsilon = divergence.epsilon_for_delta(null, alternative, delta)
  return OneShotEstimate(epsilon=epsilon,
                         delta=delta,
                         mean=alternative.mean,
                         std=alternative.std,
                         null=kind,
                         null_mean=null_mean,
                         null_std=null_std,
                         canaries=canary_statistics.size)


@dataclasses.dataclass(frozen=True)
class CanaryStatistics:
  """Both threat models' statistics, one entry per canary direction.

  Attributes:
    final_model: Cosine of each direction with the sum of all round deltas
      (the final model minus the initial one).
    all_iterates: Maximum over rounds of the cosine of each direction with
      that round's delta.
  """
  final_model: np.ndarray
  all_iterates: np.ndarray


def _cosines(directions: np.ndarray, norms: np.ndarray,
             vector: np.ndarray) -> np.ndarray:
  """Cosine of each row with `vector`; 0 for a zero vector (as reference)."""
  length = float(np.linalg.norm(vector))
  if length == 0:
    return np.zeros(directions.shape[0])
  return (directions @ vector).astype(np.float64) / (norms * length)


def canary_statistics(directions, round_deltas) -> CanaryStatistics:
  """Final-model and all-iterates cosines of canary directions (numpy only).

  Args:
    directions: Array [K, d] of canary directions (any nonzero scale; the
      cosine does not depend on it), float32 or float64.
    round_deltas: The released model delta of each round, each a vector [d],
      oriented so that a canary's contribution moves it along +direction.
      (TFF's client deltas are initial minus trained weights, so a server
      step new = old - lr * delta moves along -direction: pass -delta.)

  Returns:
    The two statistics of each direction. A zero delta gives cosine 0, as
    the reference code does.

  Raises:
    ValueError: Wrong shapes, no rounds, non-finite values or a zero
      direction.
  """
  directions = np.asarray(directions)
  if directions.ndim != 2 or 0 in directions.shape:
    raise ValueError(f'directions must be a non-empty [K, d] array, got '
                     f'shape {directions.shape}.')
  if not np.isfinite(directions).all():
    raise ValueError('directions must be finite.')
  norms = np.linalg.norm(directions, axis=1).astype(np.float64)
  if not norms.all():
    raise ValueError(f'directions must be nonzero, row '
                     f'{int(np.argmin(norms))} is zero.')
  if len(round_deltas) == 0:
    raise ValueError('round_deltas must hold at least one round, got 0.')
  total = np.zeros(directions.shape[1], dtype=np.float64)
  best = np.full(directions.shape[0], -math.inf)
  for t, delta in enumerate(round_deltas):
    delta = np.asarray(delta)
    if delta.shape != directions.shape[1:] or not np.isfinite(delta).all():
      raise ValueError(f'round_deltas[{t}] must be a finite vector of shape '
                       f'({directions.shape[1]},), got shape {delta.shape}.')
    total += delta
    best = np.maximum(best, _cosines(directions, norms, delta))
  return CanaryStatistics(final_model=_cosines(directions, norms, total),
                          all_iterates=best)
