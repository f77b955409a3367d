"""The round loop: sample, train, charge the ledger, evaluate, release.

Modelled on `tff.simulation.run_training_process` (TFF's ~200-line loop), with
what a DP run needs on top: every round is charged to the privacy ledger with
the event of the sampler and mechanism that actually ran, epsilon is computed
from that ledger, and a budget (`max_epsilon`) is checked BEFORE a round runs,
so no released round exceeds it.

The epsilons are computed in the loop's thread, after the round: computing
them beside the round (in a thread, or in a spawned process) cost the round
more than it saved after it on 2 cores (benchmarks/README.md, "Outside the
round").
"""

import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_tracking
from tff_dp.program import faults


@dataclasses.dataclass
class LoopResult:
  state: Any
  rounds_completed: int
  stop_reason: str
  last_values: dict[str, float]
  epsilons: dict[accounting.AccountantKind, float]


def _budget_exceeded(epsilons: Mapping[accounting.AccountantKind, float],
                     max_epsilon: Optional[float]) -> bool:
  """True if the guarantee we could state would exceed the budget."""
  if max_epsilon is None:
    return False
  tightest = accounting.tightest_epsilon(epsilons)
  return tightest is None or tightest[1] > max_epsilon


def run_training_loop(
    *,
    process,
    state: Any,
    sampler: sampling.ClientSampler,
    round_datasets: Callable[[int, Sequence[int]], list[Any]],
    rounds: int,
    privacy: privacy_tracking.PrivacyTracker,
    evaluate: Optional[Callable[[Any], dict[str, float]]],
    eval_every: int,
    eval_prefix: str = 'eval/',
    release: Callable[[int, dict[str, float]], None],
    round_values: Callable[[Any, Sequence[int], float], dict[str, float]],
    persist: Optional[Callable[[int, Any, dict[str, float]], None]] = None,
    report: Optional[Callable[[int, Any], Any]] = None,
    max_epsilon: Optional[float] = None,
    start_round: int = 1,
    last_values: Optional[dict[str, float]] = None,
    on_round: Optional[Callable[[int, dict[str, float]], None]] = None,
) -> LoopResult:
  """Runs rounds `start_round..rounds` of `process`.

  Args:
    process: A `tff.learning.templates.LearningProcess`.
    state: Its state before `start_round`.
    sampler: Draws each round's cohort (stateless in the round number).
    round_datasets: (round, client indices) -> the clients' datasets.
    rounds: Last round to run (1-based, inclusive).
    privacy: Ledger and per-round event; charged once per round that runs.
    evaluate: Model weights -> held-out metrics {'loss', 'accuracy', ...};
      None for a run that releases no evaluation.
    eval_every: Evaluate every this many rounds and after the last one.
    eval_prefix: Prefix of the evaluation's keys in the released values
      (`tff_dp.program.release.EVAL_PREFIX` or `FED_EVAL_PREFIX`).
    release: Receives (round, values); enforces the release allow-list.
    round_values: (process output, cohort, round seconds) -> the round's
      values other than evaluation and epsilon.
    persist: Called with (round, state, values) after the round is charged
      and before anything about it is released: a checkpoint of the state and
      the ledger, so that a released round is always charged on disk.
    report: (round, sampled cohort) -> the clients that report (simulated
      dropout); the round's event stays that of the sampler.
    max_epsilon: Optional budget: a round runs only if epsilon after it would
      stay within the budget.
    start_round: First round to run.
    last_values: The values released for `start_round - 1` (on resume).
    on_round: Called with (round, values) after each release (progress).

  Returns:
    The final state, how many rounds ran in total, and why the loop stopped.
  """
  stop_reason = f'completed {rounds} rounds'
  last_values = dict(last_values or {})
  round_num = start_round - 1
  for round_num in range(start_round, rounds + 1):
    if max_epsilon is not None and _budget_exceeded(
        privacy.epsilons(next_round=round_num), max_epsilon):
      stop_reason = (f'privacy budget: round {round_num} would exceed '
                     f'max_epsilon={max_epsilon:g}')
      round_num -= 1
      break
    cohort = sampler.sample(round_num)
    if report is not None:
      cohort = report(round_num, cohort)
    start = time.monotonic()
    output = process.next(state, round_datasets(round_num, cohort))
    seconds = time.monotonic() - start
    # The round ran: charge it before anything about it is released.
    privacy.charge(round_num, cohort)
    state = output.state

    values = round_values(output, cohort, seconds)
    if evaluate is not None and (round_num % eval_every == 0 or
                                 round_num == rounds):
      evaluation = evaluate(process.get_model_weights(state))
      values.update({f'{eval_prefix}{k}': v for k, v in evaluation.items()})
    values.update(privacy.released_values())
    if persist is not None:
      persist(round_num, state, values)
    release(round_num, values)
    faults.crash_point('between_rounds', round_num)
    last_values = values
    if on_round is not None:
      on_round(round_num, values)
  return LoopResult(state=state,
                    rounds_completed=round_num,
                    stop_reason=stop_reason,
                    last_values=last_values,
                    epsilons=privacy.epsilons())
