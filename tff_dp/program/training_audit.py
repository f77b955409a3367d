"""Audits a configuration's training: canaries, the power twin, membership.

`./run.sh audit` (`tff_dp.cli.audit`) trains the configuration three times,
each a complete run in its own directory under the audit's:

  canaries/    the audit run: M canary clients in the population
               (`tff_dp.program.canary_audit`), the run's own noise;
  noise_off/   its power twin: the same canaries with the noise off, which
               shows how much the audit can detect at all;
  production/  the run as configured, without canaries: its accuracy is the
               one a user deploys, and its final model is attacked by
               loss-threshold membership inference (Yeom et al. 2018;
               `tff_dp.program.membership_audit`) with training clients as
               members and held-out clients as non-members.

The membership attack reads client data without noise: its results are not
covered by the guarantee and are written only under nonprivate/. The canary
audits release only functions of the released models and of the auditor's
secrets.
"""

import dataclasses
import os
import secrets as os_secrets
from typing import Any, Callable, Optional

import numpy as np

from tff_dp.audit import lower_bound
from tff_dp.audit import membership
from tff_dp.config import Evaluation
from tff_dp.config import TrainConfig
from tff_dp.data import held_out as held_out_lib
from tff_dp.program import canary_statistics
from tff_dp.program import prepare
from tff_dp.program import run_summary

RUNS = ('canaries', 'noise_off', 'production')
# The most training clients the membership attack evaluates.
MAX_MEMBERS = 10_000


@dataclasses.dataclass(frozen=True)
class TrainingAudit:
  """What `audit_training` measured.

  Attributes:
    audited: The canary audit of the run with its own noise.
    power: The canary audit of the same run with the noise off.
    summaries: Each run's `Summary`, by name (`RUNS`).
    membership: Loss-threshold membership inference on the production
      model (NOT covered by the guarantee), or None without non-members.
    mia_clients: Clients held out as the attack's non-members (0: the
      configuration's own `--eval_clients`, or none).
  """
  audited: canary_statistics.AuditResult
  power: canary_statistics.AuditResult
  summaries: dict[str, run_summary.Summary]
  membership: Optional[membership.MembershipAudit]
  mia_clients: int


def run_configs(config: TrainConfig, canaries: int) -> dict[str, TrainConfig]:
  """The configurations of the three runs (`RUNS`)."""
  audited = dataclasses.replace(config, audit_canaries=canaries)
  return {
      'canaries':
          audited,
      'noise_off':
          dataclasses.replace(audited,
                              noise_multiplier=0.0,
                              allow_zero_noise=True,
                              target_epsilon=None,
                              max_epsilon=None),
      'production':
          dataclasses.replace(config, audit_canaries=0),
  }


def mia_clients_for(config: TrainConfig, population: int) -> int:
  """Clients to hold out as non-members: none if the configuration already
  holds some out (`--evaluation=federated`), else a tenth, 10 to 1000."""
  if config.evaluation is Evaluation.FEDERATED:
    return 0
  return min(max(population // 10, 10), 1000, population // 2)


def rebound(result: canary_statistics.AuditResult, *, delta: float,
            beta: float) -> canary_statistics.AuditResult:
  """`result` with its lower bound at confidence 1 - `beta`."""
  bound = lower_bound.one_run_lower_bound(result.statistics.all_iterates,
                                          result.inserted_mask,
                                          delta=delta,
                                          beta=beta)
  return dataclasses.replace(result, bound=bound)


def audit_training(
    config: TrainConfig,
    data: Any,
    run_dir: str,
    *,
    canaries: int,
    beta: float,
    run: Callable[..., run_summary.Summary],
    on_start: Optional[Callable[[str, TrainConfig],
                                None]] = None) -> TrainingAudit:
  """Trains the three runs of the audit and measures them.

  Args:
    config: The checked configuration as the user gave it.
    data: Its loaded data (all clients).
    run_dir: The audit's directory, created empty for it; each run gets a
      new subdirectory.
    canaries: M, the canary clients of the audit runs.
    beta: One minus the confidence of the lower bounds.
    run: (prepared run, run directory) -> its Summary
      (`tff_dp.program.experiment.run_experiment`, with the caller's
      progress output).
    on_start: Called with (run name, its configuration) before each run.

  Returns:
    The `TrainingAudit`.
  """
  mia_clients = mia_clients_for(config, data.population)
  non_members = None
  if mia_clients:
    data, non_members = held_out_lib.hold_out_clients(data,
                                                      eval_clients=mia_clients,
                                                      seed=config.data_seed)
  summaries, prepared_runs = {}, {}
  for name, run_config in run_configs(config, canaries).items():
    prepared = prepare.prepare_data(run_config, data)
    prepared_runs[name] = prepared
    directory = os.path.join(run_dir, name)
    # Fresh, as the audit's own directory (`run_dirs.open_locked_dir`): a
    # run never resumes or overwrites another's files.
    os.mkdir(directory)
    if on_start is not None:
      on_start(name, prepared.config)
    summaries[name] = run(prepared, directory)
  production = prepared_runs['production']
  return TrainingAudit(audited=rebound(summaries['canaries'].canary_audit,
                                       delta=config.delta,
                                       beta=beta),
                       power=rebound(summaries['noise_off'].canary_audit,
                                     delta=config.delta,
                                     beta=beta),
                       summaries=summaries,
                       membership=_membership(production,
                                              summaries['production'],
                                              non_members or
                                              production.held_out,
                                              beta=beta),
                       mia_clients=mia_clients)


def _membership(prepared, summary, non_members, *, beta: float):
  """The attack on the production model, or None without non-members."""
  if non_members is None:
    return None
  # pylint: disable-next=g-import-not-at-top
  from tff_dp.program import assembly
  from tff_dp.program import membership_audit
  config, data = prepared.config, prepared.data
  return membership_audit.membership_inference(
      summary.model_weights,
      keras_model_fn=assembly.build_keras_model_fn(config, data),
      members=membership_audit.member_examples(data),
      non_members=membership_audit.non_member_examples(non_members),
      label_kind=data.label_kind,
      delta=config.delta,
      beta=beta,
      # Every member makes the bound tightest; the cap bounds the time on
      # populations of hundreds of thousands.
      max_clients=MAX_MEMBERS,
      rng=np.random.default_rng(os_secrets.randbits(128)))
