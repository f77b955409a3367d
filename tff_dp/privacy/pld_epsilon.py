"""PLD epsilon of a composition: exact for unsampled Gaussians, else on a grid.

What the PLD accountant of `tff_dp.privacy.accounting` computes for the
groups of identical events it is given, [(key, event, count)]. Two paths:

* Only unsampled Gaussians: their composition is one Gaussian mechanism
  (inverse squared multipliers add; Dong, Roth, Su 2022, "Gaussian
  differential privacy", Corollary 2.5), whose delta(epsilon) is known exactly
  (Balle, Wang 2018, "Improving the Gaussian mechanism for differential
  privacy", Theorem 8). `composed_gaussian_epsilon` inverts it by bisection;
  no grid is built.
* Anything else: privacy loss distributions (Koskela, Jalko, Honkela 2020,
  "Computing tight differential privacy guarantees using FFT"; Doroshenko et
  al. 2022, "Connect the dots: tighter discrete approximations of privacy loss
  distributions"), built and composed exactly as dp-accounting's
  `PLDAccountant` does (pessimistic discretization), on a grid within the
  budgets below.

PLD cost is bounded. dp-accounting builds each mechanism's PLD on a grid of
the privacy loss spanning its support (~ 1 / (z**2 * interval) points for a
Gaussian of multiplier z), in Python (~8 us a point), and composes by FFT.
Left alone (Poisson, q = 0.1, interval 1e-3), z = 0.01 took 153 s and
1.17 GB for one round, z = 0.02 99 s and 1.09 GB for ten, and z = 0.001
asked for a 510-million-point grid (3.8 GB for one of its arrays; 12 GB seen
in a planner run). Here, before anything is built, each grid is counted from
the mechanism's privacy-loss bounds, and the interval is doubled until every
mechanism's grid has at most `Budgets.points` points (all of them together
`Budgets.build_points`) and every self-composition (counted with
dp-accounting's own Chernoff truncation bounds, before the FFT) and their
composition at most `Budgets.composed_points`. A coarser grid still gives a
valid upper bound (Doroshenko et al. 2022: the connect-the-dots distribution
dominates the mechanism's for any grid), only a looser one, by about one
interval per composed distribution; at the default interval the budgets
bind only where one round alone costs epsilon > ~20 (z < ~0.18, any q) or
the total is in the hundreds. Measured with the budgets (z in [0.001, 0.1],
1 to 1000 rounds, q = 0.1): at most 7.5 s on a loaded 2-core machine (2-5 s
otherwise) and 0.23 GB peak RSS per computation. Where the budgets cannot be
met after `_MAX_REGRIDS` tries, or dp-accounting's grid construction fails
numerically, `UnsupportedAccountingError` is raised (callers report n/a and
use RDP).

A single sampled leaf (the main job) composes its remove pmf first and its
add pmf only when a bound does not prove the add pmf's epsilon the smaller
(`pld_dominance`); the result is the same float either way.

The sizes of dp-accounting's pmfs are read through `dp_accounting_internals`.
"""

import dataclasses
import functools
import json
import math
from typing import Optional

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting.pld import privacy_loss_mechanism
from scipy import special

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import dp_event_json
from tff_dp.privacy import pld_compose
from tff_dp.privacy import pld_dominance
from tff_dp.privacy import pld_search
from tff_dp.privacy import pld_self_compose

# Budgets (module docstring), in grid points. Building costs ~8 us per point
# (Python in dp-accounting 0.4.3): at most ~0.5 s for one pmf (a sampled
# mechanism has two) and ~2 s for all of a computation's; an FFT composition
# over 2**21 points peaks at ~0.15 GB.
MAX_POINTS = 2**16
MAX_BUILD_POINTS = 2**18
MAX_COMPOSED_POINTS = 2**21
_MAX_REGRIDS = 8
# dp-accounting's defaults: tail mass dropped (pessimistically) by
# compositions, and log noise mass cut from a Gaussian's grid.
_TAIL_MASS_TRUNCATION = 1e-15
_GAUSSIAN_LOG_MASS_TRUNCATION = -50


class UnsupportedAccountingError(dp_accounting.UnsupportedEventError):
  """The accountant cannot compose this event under this relation."""


@dataclasses.dataclass(frozen=True)
class Budgets:
  """Grid points one PLD computation may use (module docstring).

  Attributes:
    points: Of one pmf.
    build_points: Of all the pmfs built, together.
    composed_points: Of all the self-compositions, together.
  """
  points: int = MAX_POINTS
  build_points: int = MAX_BUILD_POINTS
  composed_points: int = MAX_COMPOSED_POINTS


def epsilon(groups,
            delta: float,
            discretization: float,
            budgets: Budgets = Budgets()) -> float:
  """PLD epsilon of `groups` [(key, event, count)], within `budgets`."""
  gaussian = composed_gaussian_epsilon(groups, delta)
  if gaussian is not None:
    return gaussian
  leaf_counts, non_private = leaves(groups)
  if non_private:
    return math.inf
  if not leaf_counts:
    return 0.0
  interval, distributions = grid(leaf_counts, discretization, budgets)
  if len(distributions) == 1:
    # One sampled leaf (the main job's case): its second pmf is composed
    # only when its epsilon may be the larger (`pld_dominance`).
    single = pld_dominance.epsilon(*distributions[0], interval, delta)
    if single is not None:
      return float(single)
  total = None
  for distribution, count in distributions:
    # Exactly what PLDAccountant does (base.self_compose(count)), without
    # rebuilding the base distribution or its Chernoff moments every call.
    composed = pld_self_compose.self_compose(distribution, count)
    total = composed if total is None else total.compose(composed)
  # The accountant's own start: the identity, composed with what it was given.
  return float(
      epsilon_for_delta(pld_compose.compose_identity(total, interval), delta))


def epsilon_for_delta(distribution, delta: float) -> float:
  """`distribution.get_epsilon_for_delta(delta)`, the same float, faster.

  As `PrivacyLossDistribution.get_epsilon_for_delta`: the larger of its
  pmfs' epsilons; a dense pmf's through `pld_search` (its Python walk over
  the grid grew with the rounds composed), any other by dp-accounting.
  """
  epsilons = []
  for pmf in dp_accounting_internals.pmfs(distribution):
    grid_of_pmf = dp_accounting_internals.dense_grid(pmf)
    epsilons.append(
        pmf.get_epsilon_for_delta(delta) if grid_of_pmf is
        None else pld_search.epsilon_for_delta(*grid_of_pmf, delta))
  return max(epsilons)


# --- Unsampled Gaussians: exact. ---------------------------------------------


def composed_gaussian_epsilon(groups, delta: float) -> Optional[float]:
  """Exact PLD epsilon of a composition of unsampled Gaussian events, or None.

  Composing Gaussian mechanisms of noise multipliers z_i (sensitivity 1) gives
  the Gaussian mechanism with 1/sigma^2 = sum_i 1/z_i^2: their privacy loss
  random variables are normal and add (Dong, Roth, Su 2022, "Gaussian
  Differential Privacy", Corollary 2.5). So no discretized distribution is
  needed: dp-accounting's grid would hold ~1/(sigma^2 * interval) points, which
  for local DP's small multipliers (z = 0.05) is tens of millions and took
  ~30 s and 6 GB per round. The result is the exact epsilon (bisection to
  1e-12 relative, rounded up), which the discretized PLD bounds from above.

  Returns:
    None if any event is not an unsampled Gaussian with positive noise.
  """
  precision = 0.0
  for _, event, count in groups:
    if not isinstance(
        event, dp_event.GaussianDpEvent) or not (event.noise_multiplier > 0):
      return None
    precision += count / event.noise_multiplier**2
  sigma = precision**-0.5
  if gaussian_delta(0.0, sigma) <= delta:
    return 0.0
  low, high = 0.0, 1.0
  while gaussian_delta(high, sigma) > delta:
    low, high = high, 2.0 * high
  while high - low > 1e-12 * high:
    middle = 0.5 * (low + high)
    if gaussian_delta(middle, sigma) > delta:
      low = middle
    else:
      high = middle
  return high


def gaussian_delta(epsilon: float, sigma: float) -> float:
  """delta(epsilon) of the Gaussian mechanism with sensitivity 1 and std sigma.

  The exact hockey-stick divergence of Balle and Wang 2018 ("Improving the
  Gaussian Mechanism for Differential Privacy", ICML, Theorem 8):
  Phi(1/(2 sigma) - epsilon sigma) - e^epsilon Phi(-1/(2 sigma) - epsilon
  sigma), with the second term in log space so that a tiny sigma (epsilon in
  the thousands) neither overflows nor cancels to nan.
  """
  a = 0.5 / sigma - epsilon * sigma
  b = -0.5 / sigma - epsilon * sigma
  return float(special.ndtr(a) - math.exp(epsilon + special.log_ndtr(b)))


# --- Everything else: discretized, on a bounded grid. ------------------------


def leaves(groups) -> tuple[list[tuple[str, int]], bool]:
  """([(leaf key, count)], any non-private): what PLDAccountant composes.

  A leaf is a Gaussian or Laplace event, alone or under Poisson sampling: the
  events PLDAccountant builds a distribution for. Unsampled Gaussians are
  merged into one Gaussian (1/sigma^2 adds; exact, see
  `composed_gaussian_epsilon`), as PLDAccountant does for a self-composed
  one. Zero noise is non-private (as there); q = 0 releases nothing.
  """
  counts = {}
  precision = 0.0
  non_private = False
  for leaf, count in _flatten((event, count) for _, event, count in groups):
    if isinstance(leaf, dp_event.NoOpDpEvent):
      continue
    if isinstance(leaf, dp_event.NonPrivateDpEvent):
      non_private = True
      continue
    q, inner = _leaf_parts(leaf)
    if q == 0:
      continue
    if inner.noise_multiplier == 0:
      non_private = True
    elif leaf is inner and isinstance(inner, dp_event.GaussianDpEvent):
      precision += count / inner.noise_multiplier**2
    else:
      key = dp_event_json.event_key(leaf)
      counts[key] = counts.get(key, 0) + count
  if precision:
    counts[dp_event_json.event_key(dp_event.GaussianDpEvent(
        precision**-0.5))] = 1
  return list(counts.items()), non_private


def _leaf_parts(leaf: dp_event.DpEvent):
  """(sampling probability, Gaussian or Laplace event) of a PLD leaf."""
  q = 1.0
  inner = leaf
  if isinstance(leaf, dp_event.PoissonSampledDpEvent):
    q, inner = leaf.sampling_probability, leaf.event
  if not isinstance(inner, (dp_event.GaussianDpEvent, dp_event.LaplaceDpEvent)):
    raise UnsupportedAccountingError(
        f'The PLD accountant (dp-accounting) cannot compose {leaf}.')
  return q, inner


def _flatten(pairs):
  """Yields (event, count) with composed and self-composed events unwrapped."""
  for event, count in pairs:
    if isinstance(event, dp_event.SelfComposedDpEvent):
      yield from _flatten([(event.event, count * event.count)])
    elif isinstance(event, dp_event.ComposedDpEvent):
      yield from _flatten((e, count) for e in event.events)
    else:
      yield event, count


def grid(leaf_counts, discretization: float, budgets: Budgets = Budgets()):
  """(interval, [(distribution, count)]) within `budgets`.

  Doubles the interval (from `discretization`) until each distribution's
  grid, all of them together, and every self-composition and their
  composition fit; refuses after `_MAX_REGRIDS` tries.

  Args:
    leaf_counts: [(leaf key, count)], as `leaves` returns them.
    discretization: The finest interval to try.
    budgets: The grid points it may use.
  """
  interval = discretization
  for _ in range(_MAX_REGRIDS):
    sizes = [_leaf_points(key, interval) for key, _ in leaf_counts]
    excess = max(
        max(max(s) for s in sizes) / budgets.points,
        sum(sum(s) for s in sizes) / budgets.build_points)
    if excess > 1:
      interval *= 2.0**math.ceil(math.log2(excess))
      continue
    distributions = [
        (leaf_pld(key, interval), count) for key, count in leaf_counts
    ]
    composed = sum(self_composed_points(d, count) for d, count in distributions)
    if composed <= budgets.composed_points:
      return interval, distributions
    interval *= 2.0**math.ceil(math.log2(composed / budgets.composed_points))
  raise UnsupportedAccountingError(
      f'PLD accounting of {[key for key, _ in leaf_counts]} does not fit in '
      f'{budgets.composed_points} grid points even at interval {interval:g}; '
      'the RDP accountant applies.')


def _privacy_losses(event: dp_event.DpEvent):
  """dp-accounting's privacy-loss objects for the pmfs of a leaf's PLD."""
  q, inner = _leaf_parts(event)
  # As in PrivacyLossDistribution: one symmetric pmf without sampling.
  types = ([privacy_loss_mechanism.AdjacencyType.REMOVE]
           if q == 1 else list(privacy_loss_mechanism.AdjacencyType))
  if isinstance(inner, dp_event.GaussianDpEvent):
    return [
        privacy_loss_mechanism.GaussianPrivacyLoss(
            inner.noise_multiplier,
            sampling_prob=q,
            adjacency_type=t,
            log_mass_truncation_bound=_GAUSSIAN_LOG_MASS_TRUNCATION)
        for t in types
    ]
  return [
      privacy_loss_mechanism.LaplacePrivacyLoss(inner.noise_multiplier,
                                                sampling_prob=q,
                                                adjacency_type=t) for t in types
  ]


@functools.lru_cache(maxsize=256)
def _leaf_points(key: str, interval: float) -> tuple[int, ...]:
  """Grid points of each pmf dp-accounting would build, before building it.

  Its connect-the-dots grid spans [epsilon_lower, epsilon_upper] of the
  privacy loss in steps of `interval`. Cached: building the privacy-loss
  objects (scipy distributions) took ~3 ms of every epsilon of the main job.
  """
  points = []
  for loss in _privacy_losses(dp_event_json.event_from_json(json.loads(key))):
    bounds = loss.connect_dots_bounds()
    points.append(
        math.ceil(bounds.epsilon_upper / interval) -
        math.floor(bounds.epsilon_lower / interval) + 1)
  return tuple(points)


def self_composed_points(distribution, count: int) -> int:
  """Length of the largest array `distribution.self_compose(count)` makes.

  Uses the Chernoff bounds dp-accounting's self_convolve truncates to
  (tail mass 1e-15, its default), before any FFT is run.
  """
  points = 0
  for pmf in dp_accounting_internals.pmfs(distribution):
    if count == 1:
      points = max(points, pmf.size)
      continue
    probs = dp_accounting_internals.dense_probs(pmf)
    lower, upper = pld_self_compose.support_bounds(pmf, count,
                                                   _TAIL_MASS_TRUNCATION)
    points = max(points, upper - lower + 1, len(probs))
  return points


@functools.lru_cache(maxsize=32)
def leaf_pld(key: str, interval: float):
  """ONE round's PLD of a leaf event, built as PLDAccountant builds it.

  Cached: a run re-accounts the same event before and after every round. The
  grid budget bounds an entry at 2 * MAX_POINTS floats (1 MB), so the cache
  holds at most 32 MB (it held up to 64 unbounded ones before).
  """
  event = dp_event_json.event_from_json(json.loads(key))
  q, inner = _leaf_parts(event)
  build = (pld.privacy_loss_distribution.from_gaussian_mechanism if isinstance(
      inner, dp_event.GaussianDpEvent) else
           pld.privacy_loss_distribution.from_laplace_mechanism)
  try:
    return build(inner.noise_multiplier,
                 value_discretization_interval=interval,
                 sampling_prob=q)
  except ValueError as e:
    # dp-accounting 0.4.3 checks its grid's deltas for monotonicity without
    # tolerance; rounding noise trips it for some small multipliers (e.g. a
    # Gaussian with q = 0.1, z = 0.062 at interval 1e-3). Not a number.
    raise UnsupportedAccountingError(
        f'dp-accounting could not build the PLD of {event} at interval '
        f'{interval:g} ({e}); the RDP accountant applies.') from e
