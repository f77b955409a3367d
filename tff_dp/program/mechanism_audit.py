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

import dataclasses
import math
import secrets as os_secrets
import time
from typing import Any, Callable, Optional

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.audit import lower_bound
from tff_dp.audit import one_shot
from tff_dp.config import TrainConfig
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import run_secrets
from tff_dp.program import run_privacy

# A canary's update is its unit direction times this many clips: far past
# any clip the mechanism can reach, so clipping always binds.
CANARY_SCALE_IN_CLIPS = 1e3
# How many times a run's audit values are computed (plus the last round).
REPORTS = 20


@dataclasses.dataclass(frozen=True)
class AuditResult:
  """One audit of a configuration's central mechanism.

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
  """The canaries' statistics and the ledger, updated round by round.

  Keeps O(M + d) numbers, never the rounds' outputs, so that long runs of
  large models fit in memory. Reports the audit's values every `_every`
  rounds and at the last (`history`), for TensorBoard.
  """

  def __init__(self, config, directions, inserted, beta, ledger):
    self._config, self._beta, self._ledger = config, beta, ledger
    self._directions, self._inserted = directions, inserted
    self._total = np.zeros(directions.shape[1], np.float64)
    self._best = np.full(directions.shape[0], -math.inf)
    self._every = max(1, config.rounds // REPORTS)
    self.history: list[tuple[int, dict[str, float]]] = []

  def _cosines(self, vector: np.ndarray) -> np.ndarray:
    # The directions are unit vectors; a zero vector has cosine 0 (as in
    # `tff_dp.audit.one_shot`).
    length = float(np.linalg.norm(vector))
    if length == 0:
      return np.zeros(self._directions.shape[0])
    return (self._directions @ vector).astype(np.float64) / length

  def add(self, round_num: int, output: np.ndarray, event) -> None:
    """Adds round `round_num`'s released aggregate and its DP event."""
    self._ledger.record(round_num, event)
    self._total += output
    self._best = np.maximum(self._best, self._cosines(output))
    if round_num % self._every == 0 or round_num == self._config.rounds:
      self.history.append((round_num, self._values()))

  def statistics(self) -> one_shot.CanaryStatistics:
    return one_shot.CanaryStatistics(final_model=self._cosines(self._total),
                                     all_iterates=self._best.copy())

  def _values(self) -> dict[str, float]:
    estimates, bound = self._measure()
    values = {
        'audit/epsilon_estimate_all_iterates': estimates[0].epsilon,
        'audit/epsilon_estimate_final': estimates[1].epsilon,
        'audit/epsilon_lower_bound': bound.epsilon,
    }
    for kind, epsilon in _analytic(self._ledger, self._config).items():
      values[f'privacy/epsilon_{kind}'] = epsilon
    return values

  def _measure(self):
    stats, inserted = self.statistics(), self._inserted
    delta, dim = self._config.delta, self._directions.shape[1]
    estimates = (_estimate(stats.all_iterates[inserted],
                           dim=dim,
                           delta=delta,
                           unseen_statistics=stats.all_iterates[~inserted]),
                 _estimate(stats.final_model[inserted], dim=dim, delta=delta))
    bound = lower_bound.one_run_lower_bound(stats.all_iterates,
                                            inserted,
                                            delta=delta,
                                            beta=self._beta)
    return estimates, bound

  def result(self, *, seconds: float) -> AuditResult:
    (all_iterates, final), bound = self._measure()
    return AuditResult(analytic=_analytic(self._ledger, self._config),
                       estimate_all_iterates=all_iterates,
                       estimate_final=final,
                       bound=bound,
                       canaries=self._directions.shape[0],
                       inserted=int(self._inserted.sum()),
                       dim=self._directions.shape[1],
                       rounds=self._config.rounds,
                       seconds=seconds,
                       history=tuple(self.history),
                       statistics=self.statistics(),
                       inserted_mask=self._inserted.copy())


def _estimate(statistics, **kwargs) -> one_shot.OneShotEstimate:
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
