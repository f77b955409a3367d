"""The epsilon at which a null and a Gaussian are (epsilon, delta)-close.

Two distributions P and Q are (epsilon, delta)-indistinguishable when the
hockey-stick divergence H_e(P || Q) = integral of max(0, p - e^epsilon q) is
at most delta in both directions; for the Gaussian mechanism this is the
exact delta(epsilon) of Balle and Wang 2018, "Improving the Gaussian
Mechanism for Differential Privacy: Analytical Calibration and Optimal
Denoising" (ICML, Theorem 8). The one-shot estimate (`one_shot`) needs it for
a null P that is a Gaussian or the exact law of a random unit vector's cosine
(`CosineNull`), against a Gaussian Q fitted to the inserted canaries.

How: {x : log p(x) - log q(x) > epsilon} is a union of intervals (at most
two for two Gaussians, at most four for the cosine null). Their ends are
bracketed by the sign changes of the log ratio on a grid covering both
distributions (40 standard deviations each side; for the cosine null also
points approaching +-1 geometrically) and refined by Brent's method; the
divergence is then the sum over those intervals of P(I) - e^epsilon Q(I),
from the CDFs in log space, so that e^epsilon times a tiny mass neither
overflows nor underflows. Two roots closer than a grid step are missed only
where p and e^epsilon q nearly agree, so the error is far below any delta of
interest: the tests agree with direct quadrature to 1e-10 (for dim = 2, whose
density is infinite at +-1, the last 1e-15 before the edges is not resolved:
about 1e-8).
"""

import dataclasses
import math
from typing import Callable, Union

import numpy as np
from scipy import optimize
from scipy import special

# Larger estimates are reported as inf: both distributions' masses on the
# separating set are then below double precision's range.
MAX_EPSILON = 4096.0
_SPAN = 40.0  # Standard deviations the grid covers on each side.
_GRID_POINTS = 2001


@dataclasses.dataclass(frozen=True)
class Gaussian:
  """N(mean, std^2)."""
  mean: float
  std: float

  def __post_init__(self):
    if not (math.isfinite(self.mean) and math.isfinite(self.std) and
            self.std > 0):
      raise ValueError(f'Gaussian needs a finite mean and a finite std > 0, '
                       f'got mean={self.mean}, std={self.std}.')

  support = (-math.inf, math.inf)

  def logpdf(self, x):
    z = (x - self.mean) / self.std
    return -0.5 * z * z - math.log(self.std) - 0.5 * math.log(2 * math.pi)

  def log_cdf(self, x):
    return special.log_ndtr((x - self.mean) / self.std)

  def log_sf(self, x):
    return special.log_ndtr((self.mean - x) / self.std)

  def median(self) -> float:
    return self.mean

  def grid(self) -> np.ndarray:
    return self.mean + self.std * np.linspace(-_SPAN, _SPAN, _GRID_POINTS)


@dataclasses.dataclass(frozen=True)
class CosineNull:
  """Cosine between a fixed direction and a uniform random unit vector in R^dim.

  Its density is proportional to (1 - t^2)^((dim - 3) / 2) on [-1, 1]:
  (1 + t) / 2 is Beta((dim - 1) / 2, (dim - 1) / 2), with mean 0 and variance
  1 / dim, so for large dim it is N(0, 1 / dim).
  """
  dim: int

  def __post_init__(self):
    if self.dim < 2:
      raise ValueError(f'CosineNull needs dim >= 2, got {self.dim}.')

  support = (-1.0, 1.0)

  def logpdf(self, x):
    x = np.asarray(x, dtype=np.float64)
    half = (self.dim - 1) / 2
    log_norm = (special.gammaln(self.dim / 2) - special.gammaln(half) -
                0.5 * math.log(math.pi))
    inside = np.abs(x) < 1
    safe = np.where(inside, x, 0.0)
    value = log_norm + (self.dim - 3) / 2 * np.log1p(-safe * safe)
    return np.where(inside, value, -np.inf)

  def log_cdf(self, x):
    return self._log_beta_cdf((1 + np.asarray(x, dtype=np.float64)) / 2)

  def log_sf(self, x):
    return self._log_beta_cdf((1 - np.asarray(x, dtype=np.float64)) / 2)

  def _log_beta_cdf(self, u):
    half = (self.dim - 1) / 2
    with np.errstate(divide='ignore'):
      return np.log(special.betainc(half, half, np.clip(u, 0.0, 1.0)))

  def median(self) -> float:
    return 0.0

  def grid(self) -> np.ndarray:
    near_edges = 1 - np.logspace(-15, -1, 141)
    core = self.dim**-0.5 * np.linspace(-_SPAN, _SPAN, _GRID_POINTS)
    uniform = np.linspace(-1, 1, _GRID_POINTS)
    points = np.concatenate([near_edges, -near_edges, core, uniform])
    return points[np.abs(points) < 1]


Null = Union[Gaussian, CosineNull]


def log_mass(dist: Null, lo: float, hi: float) -> float:
  """log P([lo, hi]) for `dist`, accurate in both tails."""
  if hi <= dist.median():
    upper, lower = float(dist.log_cdf(hi)), float(dist.log_cdf(lo))
  elif lo >= dist.median():
    upper, lower = float(dist.log_sf(lo)), float(dist.log_sf(hi))
  else:
    outside = math.exp(dist.log_cdf(lo)) + math.exp(dist.log_sf(hi))
    return math.log1p(-outside) if outside < 1 else -math.inf
  if upper == -math.inf or lower >= upper:
    return -math.inf
  return upper + math.log1p(-math.exp(lower - upper))


def _intervals_above(log_ratio: Callable, level: float, grid: np.ndarray,
                     lo: float, hi: float) -> list[tuple[float, float]]:
  """Maximal intervals of [lo, hi] where log_ratio > level (see module doc)."""
  above = np.asarray(log_ratio(grid)) > level
  edges = [lo]
  for i in np.flatnonzero(above[1:] != above[:-1]):
    edges.append(
        optimize.brentq(lambda x: float(log_ratio(x)) - level,
                        grid[i],
                        grid[i + 1],
                        xtol=1e-15))
  edges.append(hi)
  first = 0 if above[0] else 1
  return [(edges[j], edges[j + 1]) for j in range(first, len(edges) - 1, 2)]


def _one_direction(top, bottom, epsilon: float, intervals) -> float:
  """Sum over `intervals` of top(I) - e^epsilon bottom(I), each >= 0."""
  total = 0.0
  for lo, hi in intervals:
    part = math.exp(log_mass(top, lo, hi))
    part -= math.exp(min(epsilon + log_mass(bottom, lo, hi), 700.0))
    total += max(part, 0.0)
  return total


def delta_for_epsilon(null: Null, alternative: Gaussian,
                      epsilon: float) -> float:
  """max(H_e(null || alternative), H_e(alternative || null)) at `epsilon`."""
  lo, hi = null.support
  grid = np.concatenate([null.grid(), alternative.grid()])
  grid = np.unique(grid[(grid > lo) & (grid < hi)])
  ratio = lambda x: null.logpdf(x) - alternative.logpdf(x)
  forward = _one_direction(null, alternative, epsilon,
                           _intervals_above(ratio, epsilon, grid, lo, hi))
  backward = _one_direction(
      alternative, null, epsilon,
      _intervals_above(lambda x: -ratio(x), epsilon, grid, lo, hi))
  # Outside the null's support only the alternative has mass.
  if lo > -math.inf:
    backward += math.exp(alternative.log_cdf(lo))
  if hi < math.inf:
    backward += math.exp(alternative.log_sf(hi))
  return max(forward, backward)


def epsilon_for_delta(null: Null, alternative: Gaussian, delta: float) -> float:
  """Smallest epsilon >= 0 with delta_for_epsilon <= delta (inf if > MAX).

  delta_for_epsilon is continuous and non-increasing in epsilon: doubling
  brackets the crossing, Brent's method finds it to 1e-9 relative.
  """
  if not 0 < delta < 1:
    raise ValueError(f'delta must be in (0, 1), got {delta}.')
  excess = lambda eps: delta_for_epsilon(null, alternative, eps) - delta
  if excess(0.0) <= 0:
    return 0.0
  lower, upper = 0.0, 1.0
  while excess(upper) > 0:
    if upper >= MAX_EPSILON:
      return math.inf
    lower, upper = upper, 2 * upper
  return optimize.brentq(excess, lower, upper, xtol=1e-12, rtol=1e-9)
