"""The sampler and the privacy ledgers of a run, from ONE configuration.

Shared by the trainer (`tff_dp.program.assembly`, which adds the learning process)
and the planner (`tff_dp.cli.epsilon`), so that a plan charges exactly the events
a run with the same settings charges:

  algorithm   central mechanism      sampler           central event/round
  fedavg,     gaussian_fixed/        poisson,          Poisson/without-
  fedprox,    gaussian_adaptive      fixed_size, full  replacement/plain
  fedsgd      or none                                  Gaussian (or none)
  dp_ftrl     tree_aggregation       shuffled_epochs   tree epoch at its
                                                       first round

Local DP (noise at the clients) and example-level DP-SGD add their own
ledgers (`tff_dp.privacy.privacy_tracking`). Pure Python.
"""

from typing import Any, Union

from tff_dp.cohorts import epoch_sampling
from tff_dp.cohorts import sampling
from tff_dp.config import LocalDp
from tff_dp.config import TrainConfig
from tff_dp.privacy import example_accounting
from tff_dp.privacy import local_accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking

Sampler = Union[sampling.ClientSampler, epoch_sampling.EpochSampler]

_LOCAL_MECHANISMS = {
    LocalDp.LAPLACE: local_accounting.LocalMechanism.LAPLACE,
    LocalDp.GAUSSIAN: local_accounting.LocalMechanism.GAUSSIAN,
}


def build_sampler(config: TrainConfig, population: int, *,
                  secret: int) -> Sampler:
  """The sampler of `config`, drawing from `secret` (`tff_dp.privacy.run_secrets`),
  never from the public `config.seed`."""
  if config.client_sampling is sampling.ClientSampling.SHUFFLED_EPOCHS:
    return epoch_sampling.EpochSampler(
        population=population,
        clients_per_round=config.clients_per_round,
        seed=secret)
  return sampling.ClientSampler(sampling=config.client_sampling,
                                population=population,
                                clients_per_round=config.clients_per_round,
                                seed=secret)


def local_spec(config: TrainConfig) -> local_accounting.LocalMechanismSpec:
  return local_accounting.LocalMechanismSpec(
      mechanism=_LOCAL_MECHANISMS[config.local_dp],
      epsilon_local=config.local_epsilon,
      noise_multiplier=config.local_noise_multiplier)


def example_settings(
    config: TrainConfig) -> example_accounting.ExampleDpSettings:
  return example_accounting.ExampleDpSettings(
      noise_multiplier=config.example_noise_multiplier,
      expected_batch_size=config.client_batch_size,
      local_steps=config.local_steps)


def central_tracker(config: TrainConfig,
                    sampler: Sampler) -> privacy_tracking.PrivacyTracker:
  """The tracker of `config`'s central guarantee only (no local or
  record-level ledger): what `prepare.check_budget` needs of a run."""
  relation, round_event = config.mechanism.ledger_events(
      sampler, config.dp_settings)
  return privacy_tracking.PrivacyTracker(
      ledger=privacy_ledger.PrivacyLedger(relation),
      round_event=round_event,
      delta=config.delta,
      accountants=config.accountants,
      release_silo_epsilon_as_private=not config.central_private,
      release_nonprivate=config.release_nonprivate_metrics)


def build_privacy_tracker(config: TrainConfig, sampler: Sampler,
                          data: Any) -> privacy_tracking.PrivacyTracker:
  """Ledgers for the central, local and record-level guarantees of `config`.

  Args:
    config: The checked configuration.
    sampler: The run's sampler (`build_sampler`).
    data: The run's training clients: `population`, and `client_sizes()`
      for example-level DP-SGD.
  """
  tracker = central_tracker(config, sampler)
  if config.local_dp is not LocalDp.NONE:
    tracker.local = local_accounting.LocalPrivacyLedger(
        local_spec(config), population=data.population)
  if config.example_dp:
    tracker.silos = example_accounting.SiloLedger(
        settings=example_settings(config),
        num_examples=[int(n) for n in data.client_sizes()])
  return tracker


def planned_tracker(config: TrainConfig,
                    data: Any) -> privacy_tracking.PrivacyTracker:
  """The ledgers of `config.rounds` rounds, charged without training.

  The central events are those every run of `config` charges (they do not
  depend on the cohort). The local and record-level ledgers are charged as
  if every client took part in every round: the worst case, which a run
  reaches only if some client does (exactly, with full participation).

  Args:
    config: The checked configuration (its noise multiplier final).
    data: The training clients (`population`; `client_sizes()` with
      example-level DP-SGD).
  """
  sampler = build_sampler(config, data.population, secret=0)
  tracker = build_privacy_tracker(config, sampler, data)
  # Charging one client suffices for the local ledger (its worst client is
  # that one); the record-level ledger's worst client depends on the sizes.
  everyone = (range(data.population) if tracker.silos is not None else range(
      min(data.population, 1)))
  for round_num in range(1, config.rounds + 1):
    tracker.charge(round_num, everyone)
  return tracker
