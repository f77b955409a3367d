"""What a run reports at the end: `Summary`, written as summary.json.

Released values and public facts only: the central epsilon only in runs with
a central claim, the wall time only where values outside the guarantee are
released (it grows with the cohorts' sizes).
"""

import dataclasses
import math
from typing import Any, Optional

from tff_dp.config import TrainConfig
from tff_dp.data import labels
from tff_dp.privacy import accounting
from tff_dp.privacy import run_secrets


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a run reports at the end (also written as summary.json)."""
  run_dir: str
  private: bool
  # The guarantees the run claims: 'central', 'local', 'record-level' (empty
  # for a run that is not private).
  guarantees: list[str]
  accuracy: Optional[float]
  loss: Optional[float]
  # Which evaluation produced accuracy and loss (`--evaluation`), and the
  # released key of that accuracy: 'eval/accuracy' (server-side test set) or
  # 'nonprivate/fed_eval/accuracy' (held-out clients, NOT covered by the DP
  # guarantee).
  evaluation: str
  accuracy_key: Optional[str]
  # The headline metric the program prints (`tff_dp.data.labels.
  # headline_metric`: accuracy, or recall_at_5 for multi-label data, which
  # have no accuracy): its released key (as `accuracy_key`) and value.
  headline_key: Optional[str]
  headline_value: Optional[float]
  # Every value of the last evaluation (loss and metrics), by released key.
  eval_metrics: dict[str, float]
  # Central epsilon by accountant (null: infinite), only in runs with a
  # central claim; accountants that cannot compose this run's events are
  # listed in `accountants_not_applicable` instead.
  epsilon: dict[str, Optional[float]]
  accountants_not_applicable: list[str]
  # The stated guarantee: the smallest epsilon among the accountants (each is
  # a valid upper bound), and which accountant gave it.
  guarantee_epsilon: Optional[float]
  guarantee_accountant: Optional[str]
  # True in a run whose central epsilon relies on amplification by sampling
  # (Poisson or fixed-size cohorts) and whose cohorts came from
  # --insecure_sampling_seed (a value in the released flags): the central
  # guarantee does not hold against anyone who knows it. Full participation,
  # shuffled epochs, local and record-level guarantees do not depend on the
  # cohorts being secret (`run_secrets.relies_on_hidden_cohorts`).
  guarantee_insecure: bool
  # Local DP: the worst-case client's cumulative local epsilon; example-level
  # DP-SGD: the worst client's record-level epsilon (when released).
  local_epsilon: Optional[float]
  record_level_epsilon: Optional[float]
  delta: Optional[float]
  rounds: int
  rounds_planned: int
  population: int
  stop_reason: str
  resumed_from: Optional[int]
  # None in a DP run without --release_nonprivate_metrics (a timing side
  # channel of the cohorts).
  wall_seconds: Optional[float]
  # The fields above computed from client data without noise in a DP run
  # (released on request, NOT covered by the guarantee): 'wall_seconds',
  # and 'audit.seconds' in an audit run; [] where none is released.
  nonprivate_fields: list[str]
  # An audit run's canary audit (`--audit_canaries`); summary.json holds its
  # numbers (`audit_json`), never the canaries' statistics.
  canary_audit: Optional[Any] = dataclasses.field(default=None, repr=False)
  # The final model (`tff.learning.models.ModelWeights`), for callers in
  # Python; never written to summary.json.
  model_weights: Optional[Any] = dataclasses.field(default=None, repr=False)
  # What was trained, noised and sent (`tff_dp.program.model_size`):
  # summary.json's 'model'.
  model_size: Optional[Any] = dataclasses.field(default=None, repr=False)

  def to_json(self) -> dict:
    values = dataclasses.asdict(
        dataclasses.replace(self,
                            canary_audit=None,
                            model_weights=None,
                            model_size=None))
    del values['canary_audit'], values['model_weights'], values['model_size']
    if self.model_size is not None:
      values['model'] = self.model_size.to_json()
    if self.canary_audit is not None:
      # Like the run's wall time, the audit's grows with the cohorts.
      values['audit'] = audit_json(self.canary_audit,
                                   seconds=self.wall_seconds is not None)
    return values


def audit_json(result: Any, *, seconds: bool = True) -> dict:
  """The numbers of a `tff_dp.program.canary_statistics.AuditResult`
  (without its wall time unless `seconds`)."""
  values = {
      'analytic_epsilon': {
          k: json_number(v) for k, v in result.analytic.items()
      },
      'estimate_all_iterates':
          json_number(result.estimate_all_iterates.epsilon),
      'estimate_final_model':
          json_number(result.estimate_final.epsilon),
      'lower_bound':
          json_number(result.bound.epsilon),
      'lower_bound_confidence':
          1 - result.bound.beta,
      'canaries':
          result.canaries,
      'inserted':
          result.inserted,
      'dim':
          result.dim,
      'rounds':
          result.rounds,
  }
  if seconds:
    values['seconds'] = result.seconds
  return values


def _json_number(value: float) -> Optional[float]:
  # JSON has no inf/nan; summary.json documents null as "infinite/unknown".
  return value if math.isfinite(value) else None


def json_number(value: float) -> Optional[float]:
  """`value`, or None for inf/nan (JSON has neither; summary.json documents
  null as "infinite/unknown")."""
  return value if math.isfinite(value) else None


def _nonprivate_fields(config: TrainConfig, audit: Any) -> list[str]:
  """summary.json's fields outside a DP run's guarantee (see `Summary`)."""
  if not (config.private and config.release_nonprivate_metrics):
    return []
  return ['wall_seconds'] + (['audit.seconds'] if audit is not None else [])


def summarize(config: TrainConfig,
              data: Any,
              run_dir: str,
              result: Any,
              privacy: Any,
              *,
              eval_prefix: str,
              resumed_from: Optional[int],
              wall_seconds: float,
              canary_audit: Any = None,
              model_weights: Any = None,
              model_size: Any = None) -> Summary:
  """The run's `Summary`: released values and public facts only."""
  central = privacy.central_claim
  epsilons = result.epsilons if central else {}
  guarantee = accounting.tightest_epsilon(epsilons)
  prefix = eval_prefix
  accuracy_key = prefix + 'accuracy'
  headline_key = prefix + labels.headline_metric(data.label_kind)
  values = result.last_values
  return Summary(
      run_dir=run_dir,
      private=config.private,
      guarantees=privacy.guarantees(),
      accuracy=values.get(accuracy_key),
      loss=values.get(prefix + 'loss'),
      evaluation=config.evaluation.value,
      accuracy_key=accuracy_key if accuracy_key in values else None,
      headline_key=headline_key if headline_key in values else None,
      headline_value=values.get(headline_key),
      eval_metrics={
          key: value for key, value in values.items() if key.startswith(prefix)
      },
      epsilon={
          kind.value: json_number(eps)
          for kind, eps in epsilons.items()
          if not math.isnan(eps)
      },
      accountants_not_applicable=[
          kind.value for kind, eps in epsilons.items() if math.isnan(eps)
      ],
      guarantee_epsilon=None if guarantee is None else guarantee[1],
      guarantee_accountant=None if guarantee is None else guarantee[0].value,
      guarantee_insecure=central and run_secrets.seed_voids_epsilon(
          config, None if guarantee is None else guarantee[0].value),
      local_epsilon=json_number(values.get('privacy/local_epsilon', math.nan)),
      record_level_epsilon=json_number(
          values.get('privacy/example_epsilon', math.nan)),
      delta=config.delta if config.private else None,
      rounds=result.rounds_completed,
      rounds_planned=config.rounds,
      population=data.population,
      stop_reason=result.stop_reason,
      resumed_from=resumed_from,
      # The run's duration grows with the cohorts' sizes: released only
      # with the other values outside the guarantee.
      wall_seconds=(wall_seconds if
                    (not config.private or
                     config.release_nonprivate_metrics) else None),
      nonprivate_fields=_nonprivate_fields(config, canary_audit),
      canary_audit=canary_audit,
      model_weights=model_weights,
      model_size=model_size)
