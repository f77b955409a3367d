"""Canary clients in a training run (`--audit_canaries=M`): the audit in the loop.

Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar 2024, "One-shot Empirical
Privacy Estimation for Federated Learning", with each canary inserted with
probability 1/2 for Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One
(1) Training Run". M canary clients join the N real clients; the run's own
sampler draws cohorts from all N + M, and the ledger charges that sampler's
events (the epsilon printed is the epsilon of the run with its canaries). A
sampled inserted canary's update (its secret direction, far past the clip)
enters the mechanism's query next to the real clients' updates
(`tff_dp.mechanisms.canaries`); real clients train as usual.

After every round the released model's step, w_{t-1} - w_t (the sign of a
client update, which TFF computes as initial minus trained weights), goes to
the canaries' statistics (`tff_dp.program.canary_statistics`): every few
rounds the one-shot estimates and the lower bound are released next to the
analytic epsilon. They are functions of the released models and of the
auditor's secrets (directions, insertions), which are independent of the
clients' data: post-processing, covered by the guarantee.

An audit run is an audit, not the production run: the canaries cost real
clients their places in the cohorts and move an adaptive clip. It cannot be
resumed (its statistics are not checkpointed).
"""

import math
import time
from typing import Any, Callable, Optional, Sequence

import dp_accounting
import numpy as np

from tff_dp.audit import canary_plan
from tff_dp.config import TrainConfig
from tff_dp.privacy import run_secrets
from tff_dp.program import canary_statistics

# The confidence of the lower bound released during training: 1 - BETA.
BETA = 0.05


def flat_trainable(weights) -> np.ndarray:
  """A `tff.learning.models.ModelWeights`' trainable tensors, flattened in
  the order of the update records (`tf.nest.flatten` of the list)."""
  return np.concatenate(
      [np.ravel(np.asarray(w, np.float32)) for w in weights.trainable])


class CanaryRun:
  """The canaries of one training run, and their statistics."""

  def __init__(self,
               config: TrainConfig,
               *,
               population: int,
               sampler,
               report: Callable[[int, np.ndarray], np.ndarray],
               beta: float = BETA):
    """Draws the canaries and their schedule.

    Args:
      config: The checked configuration (`config.audit_canaries` = M > 0).
      population: N, the real clients.
      sampler: The run's sampler over N + M clients.
      report: (round, cohort) -> the reporting clients (simulated dropout).
      beta: One minus the confidence of the lower bound.
    """
    relation, _ = config.mechanism.ledger_events(sampler, config.dp_settings)
    self.plan = canary_plan.CanaryPlan.draw(
        population=population,
        canaries=config.audit_canaries,
        absent_if_not_inserted=(
            relation is dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE))
    self._key = run_secrets.new_noise_key()
    self._schedule = self.plan.schedule(
        report(r, sampler.sample(r)) for r in range(1, config.rounds + 1))
    self._norm = canary_plan.CANARY_SCALE_IN_CLIPS * max(
        config.clip, config.initial_clip)
    self._config, self._beta = config, beta
    self._tracker: Optional[canary_statistics.CanaryTracker] = None
    self._previous: Optional[np.ndarray] = None
    self._history: list[tuple[int, dict[str, float]]] = []
    self._rounds = 0
    self._start = time.monotonic()

  def wrap(self, factory):
    """The mechanism's DP factory with the canaries in its query."""
    from tff_dp.mechanisms import canaries  # pylint: disable=g-import-not-at-top
    return canaries.with_canaries(factory,
                                  key=self._key,
                                  schedule=self._schedule,
                                  norm=self._norm)

  def real_datasets(self, round_datasets):
    """`round_datasets` over the cohort's real clients only."""

    def datasets(round_num: int, cohort: Sequence[int]):
      return round_datasets(round_num, self.plan.real_clients(cohort))

    return datasets

  def start(self, initial_weights) -> None:
    """Regenerates the directions for the model's size, before round 1."""
    from tff_dp.mechanisms import canaries  # pylint: disable=g-import-not-at-top
    self._previous = flat_trainable(initial_weights)
    self._tracker = canary_statistics.CanaryTracker(canaries.directions(
        self._key, self.plan.canaries, self._previous.size),
                                                    self.plan.inserted,
                                                    delta=self._config.delta,
                                                    beta=self._beta,
                                                    rounds=self._config.rounds)
    self._start = time.monotonic()

  def observe(self, weights,
              analytic: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Adds the next round's released model; the audit values to release
    this round (empty on rounds without a report).

    Args:
      weights: The model after the round.
      analytic: () -> the analytic epsilons after the round, by accountant
        (kept with the audit values, for the audit's history).
    """
    self._rounds += 1
    round_num = self._rounds
    current = flat_trainable(weights)
    values = self._tracker.add(round_num, self._previous - current)
    self._previous = current
    if values is None:
      return {}
    self._history.append((round_num, {**values, **analytic()}))
    return values

  def result(self, *, analytic: dict[str, float],
             rounds: int) -> canary_statistics.AuditResult:
    """The audit of the rounds run so far."""
    return self._tracker.result(analytic=analytic,
                                rounds=rounds,
                                seconds=time.monotonic() - self._start,
                                history=self._history)


def describe(result: canary_statistics.AuditResult) -> str:
  """One line for the console and the privacy statement."""

  def show(value: float) -> str:
    return f'{value:.3g}' if math.isfinite(value) else 'n/a'

  return (f'canary audit: {result.canaries} canaries ({result.inserted} '
          f'inserted, d = {result.dim}): estimate '
          f'{show(result.estimate_all_iterates.epsilon)} (all iterates), '
          f'{show(result.estimate_final.epsilon)} (final model); lower bound '
          f'{show(result.bound.epsilon)} at {1 - result.bound.beta:.0%} '
          f'confidence; analytic {show(result.analytic_epsilon)}')


def analytic_epsilons(values: dict[str, Any]) -> dict[str, float]:
  """The analytic epsilons among released values, by accountant name."""
  prefix = 'privacy/epsilon_'
  return {
      key[len(prefix):]: float(value)
      for key, value in values.items()
      if key.startswith(prefix)
  }
