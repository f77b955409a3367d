"""The round loop: sample, train, charge the ledger, evaluate, release.

Modelled on `tff.simulation.run_training_process` (TFF's ~200-line loop), with
what a DP run needs on top: every round is charged to the privacy ledger with
the event of the sampler and mechanism that actually ran, epsilon is computed
from that ledger, and a budget (`max_epsilon`) is checked BEFORE a round runs,
so no released round exceeds it.

Rounds run in blocks: with `run_block` (several rounds in one TFF call,
`tff_dp.algorithms.fused_rounds`; the idea of Keras' `steps_per_execution`)
a block of up to `rounds_per_call` rounds runs as one call, so the state
stays on the worker between them. A block never crosses an evaluation
round (the model is read only at the block's end), nor the budget: the
check before a block covers all of its rounds, and the round after it, so
that a block ends at the last round the budget allows, which is evaluated
like the last planned round (the run ends with its model). Each round of a
block is still charged, and released as its own row, with the epsilon after
that round; the block is persisted (checkpoint and ledgers) once, at its end,
after every round of it is charged and before any row of it is released.

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

# (round, released values) of each round of a block, in order.
Rows = list[tuple[int, dict[str, float]]]


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
    persist: Optional[Callable[[int, Any, Rows], None]] = None,
    report: Optional[Callable[[int, Any], Any]] = None,
    max_epsilon: Optional[float] = None,
    start_round: int = 1,
    last_values: Optional[dict[str, float]] = None,
    on_round: Optional[Callable[[int, dict[str, float]], None]] = None,
    run_block: Optional[Callable[[Any, list[Any]], tuple[Any,
                                                         list[Any]]]] = None,
    rounds_per_call: int = 1,
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
    eval_every: Evaluate every this many rounds and after the last one
      (the last planned, or the last the budget allows).
    eval_prefix: Prefix of the evaluation's keys in the released values
      (`tff_dp.program.release.EVAL_PREFIX` or `FED_EVAL_PREFIX`).
    release: Receives (round, values); enforces the release allow-list.
    round_values: (process output, cohort, round seconds) -> the round's
      values other than evaluation and epsilon.
    persist: Called with (last round, state, rows of the block) after the
      block's rounds are charged and before anything about them is
      released: a checkpoint of the state and the ledger, so that a released
      round is always charged on disk.
    report: (round, sampled cohort) -> the clients that report (simulated
      dropout); the round's event stays that of the sampler.
    max_epsilon: Optional budget: a round runs only if epsilon after it would
      stay within the budget.
    start_round: First round to run.
    last_values: The values released for `start_round - 1` (on resume).
    on_round: Called with (round, values) after each release (progress).
    run_block: (state, [round inputs]) -> (state, [output per round], each
      with the round's `metrics`): several rounds in one call. None: every
      round is one `process.next`.
    rounds_per_call: Most rounds per `run_block` call.

  Returns:
    The final state, how many rounds ran in total, and why the loop stopped.
  """
  stop_reason = f'completed {rounds} rounds'
  last_values = dict(last_values or {})
  round_num = start_round
  per_call = rounds_per_call if run_block is not None else 1
  while round_num <= rounds:
    length = _block_length(round_num,
                           rounds=rounds,
                           rounds_per_call=per_call,
                           eval_every=eval_every if evaluate else None)
    length, budget_ends = _within_budget(privacy,
                                         round_num,
                                         length,
                                         max_epsilon,
                                         rounds=rounds)
    if length == 0:
      stop_reason = (f'privacy budget: round {round_num} would exceed '
                     f'max_epsilon={max_epsilon:g}')
      break
    block = range(round_num, round_num + length)
    cohorts = [_cohort(sampler, report, r) for r in block]
    state, outputs, seconds = _run(
        process, run_block, state,
        [round_datasets(r, cohort) for r, cohort in zip(block, cohorts)])
    rows = []
    for r, cohort, output in zip(block, cohorts, outputs):
      # The round ran: charge it before anything about it is released.
      privacy.charge(r, cohort)
      values = round_values(output, cohort, seconds)
      # The last round that runs is evaluated, also when the budget stops
      # the run before `rounds`: its model is the one the run ends with.
      last_run = r == rounds or budget_ends
      if r == block[-1] and evaluate is not None and (r % eval_every == 0 or
                                                      last_run):
        evaluation = evaluate(process.get_model_weights(state))
        values.update({f'{eval_prefix}{k}': v for k, v in evaluation.items()})
      values.update(privacy.released_values())
      rows.append((r, values))
    if persist is not None:
      persist(block[-1], state, rows)
    for r, values in rows:
      release(r, values)
      faults.crash_point('between_rounds', r)
      last_values = values
      if on_round is not None:
        on_round(r, values)
    round_num += length
  return LoopResult(state=state,
                    rounds_completed=round_num - 1,
                    stop_reason=stop_reason,
                    last_values=last_values,
                    epsilons=privacy.epsilons())


def _block_length(round_num: int, *, rounds: int, rounds_per_call: int,
                  eval_every: Optional[int]) -> int:
  """Rounds of the block starting at `round_num`: at most `rounds_per_call`,
  ending at the last round and at the next evaluated round."""
  last = min(rounds, round_num + rounds_per_call - 1)
  if eval_every is not None:
    # The first multiple of eval_every at or after round_num.
    last = min(last, -(-round_num // eval_every) * eval_every)
  return last - round_num + 1


def calls_words(rounds_per_call: int, *, eval_every: int,
                evaluated: bool) -> str:
  """What the blocks of a run will be, in words for its start-up line.

  Args:
    rounds_per_call: Most rounds per TFF call (resolved --rounds_per_call).
    eval_every: Rounds between two evaluations (--eval_every).
    evaluated: Whether the run evaluates (a call ends at each evaluated
      round only then).
  """
  if rounds_per_call <= 1:
    return 'one round per call'
  if evaluated and eval_every == 1:
    return ('one round per call (every round is evaluated, and a call ends '
            f'at each evaluated round: --eval_every={rounds_per_call} lets '
            f'up to {rounds_per_call} rounds share a call)')
  if evaluated and eval_every < rounds_per_call:
    return (f'up to {eval_every} rounds per call (a call ends at each '
            f'evaluated round, every --eval_every={eval_every})')
  return f'up to {rounds_per_call} rounds per call'


def _within_budget(privacy: privacy_tracking.PrivacyTracker, round_num: int,
                   length: int, max_epsilon: Optional[float], *,
                   rounds: int) -> tuple[int, bool]:
  """(rounds of the block that fit the budget, whether the budget stops the
  run after them).

  The length is `length`, or 1 if only the next round fits, or 0 if none.
  Epsilon never decreases with more rounds, so checking a block's last
  round covers the block; near the budget the loop goes on round by round.
  The round after the block is checked too (before any round of it runs),
  so that the last round the budget allows is known to be the last: the
  loop evaluates it.
  """
  if max_epsilon is None:
    return length, False

  def fits(through_round: int) -> bool:
    return not _budget_exceeded(
        privacy.epsilons(next_round=round_num, through_round=through_round),
        max_epsilon)

  for candidate in ((length, 1) if length > 1 else (length,)):
    last = round_num + candidate - 1
    if last < rounds and fits(last + 1):
      return candidate, False
    if fits(last):
      return candidate, last < rounds
  return 0, False


def _cohort(sampler: sampling.ClientSampler, report, round_num: int):
  cohort = sampler.sample(round_num)
  return cohort if report is None else report(round_num, cohort)


def _run(process, run_block, state, inputs):
  """(state, outputs, seconds per round) of the rounds of `inputs`."""
  start = time.monotonic()
  if len(inputs) == 1:
    output = process.next(state, inputs[0])
    state, outputs = output.state, [output]
  else:
    state, outputs = run_block(state, inputs)
  return state, outputs, (time.monotonic() - start) / len(inputs)
