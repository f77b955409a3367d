"""Empirical privacy audit of a run's central mechanism, with canary clients.

Puts a measured lower bound and an estimate next to the analytic epsilon of
a configuration's central mechanism, as it is built and sampled in a run:
the mechanism's TFF aggregator (`tff_dp.mechanisms.registry`: its clipping,
its noise from secret keys, its fixed denominator), the run's sampler drawing
cohorts from an OS secret, and the ledger the run charges. M canary
directions are drawn from OS entropy; each is inserted with probability 1/2
(Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1) Training
Run") as a client of the population whose update is its direction scaled
far past the clip, so clipping always binds (Andrew, Kairouz, Oh, Oprea,
McMahan, Suriyakumar 2024, "One-shot Empirical Privacy Estimation for
Federated Learning"). The other clients send zero updates: the guarantee
holds whatever they send, and zeros leave the canaries only the noise to
hide behind, the most powerful audit. A canary that is not inserted is
absent from the data under add/remove-one adjacency and a zero-update
client under replace-one adjacency, the neighbour the accountant assumes.

What is released each round is the aggregator's output, the noised mean of
the clipped updates; the released models are functions of those outputs (the
server optimizer is post-processing), so an audit of the outputs bounds what
the models can leak. The statistics (`tff_dp.audit`) are each canary's
cosine with the sum of the outputs (final model) and its largest cosine with
one round's output (all iterates, the threat model of a run that releases
every round's model).

The audit sees no client data: the canaries are its own and their
directions never leave this process.
"""

import math
import secrets as os_secrets
import time
from typing import Any, Callable, Optional

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.audit import canary_plan
from tff_dp.config import TrainConfig
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import run_secrets
from tff_dp.program import canary_statistics
from tff_dp.program import run_privacy

CANARY_SCALE_IN_CLIPS = canary_plan.CANARY_SCALE_IN_CLIPS
AuditResult = canary_statistics.AuditResult


def _directions(rng: np.random.Generator, canaries: int,
                dim: int) -> np.ndarray:
  """`canaries` independent uniform unit vectors of length `dim`."""
  directions = rng.standard_normal((canaries, dim), dtype=np.float32)
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  return directions


def _round_values(cohort, *, canary_slot: np.ndarray, inserted: np.ndarray,
                  directions: np.ndarray, scale: float,
                  absent_if_not_inserted: bool) -> list[np.ndarray]:
  """The updates of a round's cohort (see the module docstring)."""
  zero = np.zeros(directions.shape[1], np.float32)
  values = []
  for client in cohort:
    canary = canary_slot[client]
    if canary < 0:
      values.append(zero)
    elif inserted[canary]:
      values.append(scale * directions[canary])
    elif not absent_if_not_inserted:
      values.append(zero)
  return values


def audit_mechanism(
    config: TrainConfig,
    *,
    population: int,
    dim: int,
    canaries: int,
    beta: float = 0.05,
    build_aggregator: Optional[Callable[..., Any]] = None,
    on_round: Optional[Callable[[int], None]] = None) -> AuditResult:
  """Audits `config`'s central mechanism over `config.rounds` rounds.

  Args:
    config: A checked configuration with a central mechanism.
    population: N, the run's number of training clients.
    dim: The model dimension d (trainable parameters).
    canaries: M <= N canary directions, each inserted with probability 1/2.
    beta: One minus the confidence of the lower bound.
    build_aggregator: Replaces the mechanism row's `build_aggregator` (tests:
      a deliberately broken mechanism the audit must catch).
    on_round: Progress callback, called with each round number.

  Returns:
    The `AuditResult`.

  Raises:
    ValueError: No central mechanism, or more canaries than clients.
  """
  if not config.uses_dp_aggregator:
    raise ValueError(f'--dp_mechanism={config.dp_mechanism.value} has no '
                     'central mechanism to audit')
  if not 2 <= canaries <= population:
    raise ValueError(f'--audit_canaries={canaries}: must be in [2, the '
                     f'population of {population} clients]')
  rng = np.random.default_rng(os_secrets.randbits(128))
  directions = _directions(rng, canaries, dim)
  inserted = rng.random(canaries) < 0.5
  # Canaries take random slots of the population; -1: an ordinary client.
  canary_slot = np.full(population, -1)
  canary_slot[rng.choice(population, size=canaries,
                         replace=False)] = (np.arange(canaries))
  sampler = run_privacy.build_sampler(config,
                                      population,
                                      secret=run_secrets.draw().sampling)
  relation, round_event = config.mechanism.ledger_events(
      sampler, config.dp_settings)
  spec = tf.TensorSpec([dim], tf.float32)
  factory = (build_aggregator or config.mechanism.build_aggregator)(
      config.dp_settings,
      rounds_per_epoch=getattr(sampler, 'rounds_per_epoch', None),
      record_specs=spec)
  run = _AuditRun(config, directions, inserted, beta,
                  privacy_ledger.PrivacyLedger(relation))
  start = time.monotonic()
  _run_rounds(
      factory.create(tff.TensorType(np.float32, [dim])),
      config,
      sampler,
      values=lambda cohort: _round_values(
          cohort,
          canary_slot=canary_slot,
          inserted=inserted,
          directions=directions,
          scale=CANARY_SCALE_IN_CLIPS * max(config.clip, config.initial_clip),
          absent_if_not_inserted=(relation is dp_accounting.NeighboringRelation.
                                  ADD_OR_REMOVE_ONE)),
      on_output=lambda round_num, output: run.add(round_num, output,
                                                  round_event(round_num)),
      on_round=on_round)
  return run.result(seconds=time.monotonic() - start)


def _run_rounds(process, config, sampler, *, values, on_output, on_round):
  """Runs the aggregation process, handing each round's output on."""
  state = process.initialize()
  for round_num in range(1, config.rounds + 1):
    output = process.next(state, values(sampler.sample(round_num)))
    state = output.state
    on_output(round_num, np.asarray(output.result, np.float64).ravel())
    if on_round is not None:
      on_round(round_num)


class _AuditRun:
  """The canaries' statistics and the ledger, updated round by round."""

  def __init__(self, config, directions, inserted, beta, ledger):
    self._config, self._ledger = config, ledger
    self._tracker = canary_statistics.CanaryTracker(directions,
                                                    inserted,
                                                    delta=config.delta,
                                                    beta=beta,
                                                    rounds=config.rounds)
    self.history: list[tuple[int, dict[str, float]]] = []

  def add(self, round_num: int, output: np.ndarray, event) -> None:
    """Adds round `round_num`'s released aggregate and its DP event."""
    self._ledger.record(round_num, event)
    values = self._tracker.add(round_num, output)
    if values is not None:
      for kind, epsilon in _analytic(self._ledger, self._config).items():
        values[f'privacy/epsilon_{kind}'] = epsilon
      self.history.append((round_num, values))

  def result(self, *, seconds: float) -> AuditResult:
    return self._tracker.result(analytic=_analytic(self._ledger, self._config),
                                rounds=self._config.rounds,
                                seconds=seconds,
                                history=self.history)


def _analytic(ledger, config) -> dict[str, float]:
  """Each accountant's epsilon; NaN where it cannot compose the events."""
  epsilons = {}
  for kind in config.accountants:
    try:
      epsilons[kind.value] = ledger.epsilon(delta=config.delta, accountant=kind)
    except accounting.UnsupportedAccountingError:
      epsilons[kind.value] = math.nan
  return epsilons


def write_tensorboard(result: AuditResult, logdir: str) -> None:
  """Writes the audit's scalars by round and the canaries' histograms.

  Scalars: `audit/epsilon_estimate_all_iterates`, `audit/epsilon_estimate_
  final`, `audit/epsilon_lower_bound` next to `privacy/epsilon_<accountant>`
  (finite values only). Histograms at the last round: each threat model's
  statistic of the inserted and of the unseen canaries (cosines; nothing of
  the directions).
  """
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for round_num, values in result.history:
      for key, value in values.items():
        if math.isfinite(value):
          tf.summary.scalar(key, value, step=round_num)
    for name in ('all_iterates', 'final_model'):
      values = getattr(result.statistics, name)
      for group, mask in (('inserted', result.inserted_mask),
                          ('unseen', ~result.inserted_mask)):
        tf.summary.histogram(f'audit/canary_{name}_{group}',
                             values[mask],
                             step=result.rounds)
  writer.close()
