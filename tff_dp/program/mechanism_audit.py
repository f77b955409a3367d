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
from typing import Any, Callable, Optional

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
  outputs, seconds = _run_rounds(
      factory.create(tff.TensorType(np.float32, [dim])),
      config,
      sampler,
      values=lambda cohort: _round_values(
          cohort,
          canary_slot=canary_slot,
          inserted=inserted,
          directions=directions,
          scale=CANARY_SCALE_IN_CLIPS * max(config.clip, config.initial_clip),
          absent_if_not_inserted=relation.name == 'ADD_OR_REMOVE_ONE'),
      on_round=on_round)
  ledger = privacy_ledger.PrivacyLedger(relation)
  for round_num in range(1, config.rounds + 1):
    ledger.record(round_num, round_event(round_num))
  return _result(config, ledger, directions, inserted, outputs, beta, seconds)


def _run_rounds(process, config, sampler, *, values, on_round):
  """Runs the aggregation process; returns each round's output and the time."""
  import time  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  state = process.initialize()
  outputs = []
  for round_num in range(1, config.rounds + 1):
    output = process.next(state, values(sampler.sample(round_num)))
    state = output.state
    outputs.append(np.asarray(output.result, np.float64).ravel())
    if on_round is not None:
      on_round(round_num)
  return outputs, time.monotonic() - start


def _analytic(ledger, config) -> dict[str, float]:
  """Each accountant's epsilon; NaN where it cannot compose the events."""
  epsilons = {}
  for kind in config.accountants:
    try:
      epsilons[kind.value] = ledger.epsilon(delta=config.delta, accountant=kind)
    except accounting.UnsupportedAccountingError:
      epsilons[kind.value] = math.nan
  return epsilons


def _result(config, ledger, directions, inserted, outputs, beta,
            seconds) -> AuditResult:
  stats = one_shot.canary_statistics(directions, outputs)
  delta = config.delta
  return AuditResult(analytic=_analytic(ledger, config),
                     estimate_all_iterates=one_shot.estimate_epsilon(
                         stats.all_iterates[inserted],
                         dim=directions.shape[1],
                         delta=delta,
                         unseen_statistics=stats.all_iterates[~inserted]),
                     estimate_final=one_shot.estimate_epsilon(
                         stats.final_model[inserted],
                         dim=directions.shape[1],
                         delta=delta),
                     bound=lower_bound.one_run_lower_bound(stats.all_iterates,
                                                           inserted,
                                                           delta=delta,
                                                           beta=beta),
                     canaries=directions.shape[0],
                     inserted=int(inserted.sum()),
                     dim=directions.shape[1],
                     rounds=config.rounds,
                     seconds=seconds)
