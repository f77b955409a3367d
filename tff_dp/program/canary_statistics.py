"""The canaries' statistics, round by round, and what an audit reports.

Each canary's statistics (Andrew et al. 2024, "One-shot Empirical Privacy
Estimation for Federated Learning") are its cosine with the sum of the
released deltas (final-model threat model) and its largest cosine with one
round's released delta (all iterates: tff-dp releases every round's model).
From them: the one-shot estimates (`tff_dp.audit.one_shot`) and Steinke,
Nasr, Jagielski's lower bound (`tff_dp.audit.lower_bound`). Shared by the
audit of a mechanism alone (`tff_dp.program.mechanism_audit`) and of a
training run with canary clients (`tff_dp.program.canary_audit`).

The tracker keeps O(M + d) numbers, never the rounds' deltas, so that long
runs of large models fit in memory. The directions are secrets of the
auditor: nothing here writes them.
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from tff_dp.audit import lower_bound
from tff_dp.audit import one_shot

# How many times a run's audit values are computed (plus the last round).
REPORTS = 20

# The released keys of an audit's values (`tff_dp.program.release`).
ESTIMATE_ALL_ITERATES = 'audit/epsilon_estimate_all_iterates'
ESTIMATE_FINAL = 'audit/epsilon_estimate_final'
LOWER_BOUND = 'audit/epsilon_lower_bound'
KEYS = (ESTIMATE_ALL_ITERATES, ESTIMATE_FINAL, LOWER_BOUND)


@dataclasses.dataclass(frozen=True)
class AuditResult:
  """One audit: of a central mechanism, or of a training run with canaries.

  Attributes:
    analytic: The run's epsilon by accountant name (what a run reports).
    estimate_all_iterates: One-shot estimate, every round's output released.
    estimate_final: One-shot estimate, only the last model released.
    bound: Steinke et al.'s lower bound (all-iterates scores).
    canaries: Canary directions drawn (M); `inserted` of them inserted.
    inserted: How many canaries were in the population.
    dim: The model dimension (length of an update).
    rounds: Rounds run.
    seconds: Wall time of the audit's rounds.
    history: (round, values) every few rounds: the estimates, the lower
      bound and the analytic epsilons so far (TensorBoard's scalars).
    statistics: Each canary's statistics at the end (no direction).
    inserted_mask: Which canaries were inserted.
  """
  analytic: dict[str, float]
  estimate_all_iterates: one_shot.OneShotEstimate
  estimate_final: one_shot.OneShotEstimate
  bound: lower_bound.OneRunBound
  canaries: int
  inserted: int
  dim: int
  rounds: int
  seconds: float
  history: tuple[tuple[int, dict[str, float]], ...]
  statistics: one_shot.CanaryStatistics
  inserted_mask: np.ndarray

  @property
  def analytic_epsilon(self) -> float:
    """The smallest analytic epsilon (each accountant's is an upper bound)."""
    finite = [e for e in self.analytic.values() if not math.isnan(e)]
    return min(finite) if finite else math.inf

  @property
  def unsound(self) -> bool:
    """Whether the lower bound exceeds the analytic epsilon (a defect)."""
    return self.bound.epsilon > self.analytic_epsilon


def estimate(statistics, **kwargs) -> one_shot.OneShotEstimate:
  """The one-shot estimate, or NaN while the statistics carry no signal.

  Before any canary has been sampled (or when one threat model's statistic
  is constant), there is no Gaussian to fit: the estimate is undefined, not
  zero.
  """
  try:
    return one_shot.estimate_epsilon(statistics, **kwargs)
  except ValueError:
    groups = [statistics, kwargs.get('unseen_statistics', statistics)]
    if all(np.size(g) >= 2 and np.ptp(g) > 0 for g in groups):
      raise
    return one_shot.OneShotEstimate(epsilon=math.nan,
                                    delta=kwargs['delta'],
                                    mean=math.nan,
                                    std=math.nan,
                                    null='none (constant statistic)',
                                    null_mean=math.nan,
                                    null_std=math.nan,
                                    canaries=int(np.size(statistics)))


class CanaryTracker:
  """The canaries' statistics, updated with each round's released delta."""

  def __init__(self, directions: np.ndarray, inserted: np.ndarray, *,
               delta: float, beta: float, rounds: int):
    """Starts a run's statistics.

    Args:
      directions: [M, d] unit directions (secret).
      inserted: [M] bool, which canaries are inserted.
      delta: The delta of the run's guarantee.
      beta: One minus the confidence of the lower bound.
      rounds: The run's planned rounds (when to report).
    """
    self._directions, self._inserted = directions, inserted
    self._delta, self._beta = delta, beta
    self._total = np.zeros(directions.shape[1], np.float64)
    self._best = np.full(directions.shape[0], -math.inf)
    self._every = max(1, rounds // REPORTS)
    self._rounds = rounds

  @property
  def dim(self) -> int:
    return int(self._directions.shape[1])

  def _cosines(self, vector: np.ndarray) -> np.ndarray:
    # The directions are unit vectors; a zero vector has cosine 0 (as in
    # `tff_dp.audit.one_shot`).
    length = float(np.linalg.norm(vector))
    if length == 0:
      return np.zeros(self._directions.shape[0])
    return (self._directions @ vector.astype(np.float32)).astype(
        np.float64) / length

  def add(self, round_num: int,
          delta: np.ndarray) -> Optional[dict[str, float]]:
    """Adds round `round_num`'s released delta (flat, length d).

    Returns:
      The audit's values (`KEYS`) every few rounds and at the last planned
      round, else None.
    """
    delta = np.asarray(delta, np.float64).ravel()
    self._total += delta
    self._best = np.maximum(self._best, self._cosines(delta))
    if round_num % self._every == 0 or round_num == self._rounds:
      return self.values()
    return None

  def statistics(self) -> one_shot.CanaryStatistics:
    return one_shot.CanaryStatistics(final_model=self._cosines(self._total),
                                     all_iterates=self._best.copy())

  def measure(self):
    """(all-iterates estimate, final-model estimate), lower bound."""
    stats, inserted = self.statistics(), self._inserted
    estimates = (estimate(stats.all_iterates[inserted],
                          dim=self.dim,
                          delta=self._delta,
                          unseen_statistics=stats.all_iterates[~inserted]),
                 estimate(stats.final_model[inserted],
                          dim=self.dim,
                          delta=self._delta))
    bound = lower_bound.one_run_lower_bound(stats.all_iterates,
                                            inserted,
                                            delta=self._delta,
                                            beta=self._beta)
    return estimates, bound

  def values(self) -> dict[str, float]:
    """The audit's released values now (`KEYS`)."""
    estimates, bound = self.measure()
    return {
        ESTIMATE_ALL_ITERATES: estimates[0].epsilon,
        ESTIMATE_FINAL: estimates[1].epsilon,
        LOWER_BOUND: bound.epsilon,
    }

  def result(self, *, analytic: dict[str, float], rounds: int, seconds: float,
             history) -> AuditResult:
    """The `AuditResult` of the rounds added so far."""
    (all_iterates, final), bound = self.measure()
    return AuditResult(analytic=analytic,
                       estimate_all_iterates=all_iterates,
                       estimate_final=final,
                       bound=bound,
                       canaries=self._directions.shape[0],
                       inserted=int(self._inserted.sum()),
                       dim=self.dim,
                       rounds=rounds,
                       seconds=seconds,
                       history=tuple(history),
                       statistics=self.statistics(),
                       inserted_mask=self._inserted.copy())
