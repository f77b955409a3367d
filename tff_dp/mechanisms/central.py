"""What the program must know of one central DP mechanism (`--dp_mechanism`).

A central mechanism noises the aggregate of the clipped client updates at the
server. Everything that depends on which one runs is a method of one
`CentralMechanism` subclass, in one module per mechanism, registered once in
`tff_dp.mechanisms.registry`: the configuration checks, the words of the
privacy statement, the per-round DP events its ledger charges, the values it
releases every round and the TFF aggregator that implements it. So the
mechanism that is described, accounted and released is the one that runs.

This module and the mechanism modules are pure Python when imported (the
configuration is checked before TensorFlow is paid for); `build_aggregator`
imports TensorFlow when it is called.
"""

import dataclasses
from typing import Any, Callable, Mapping

import dp_accounting

from tff_dp.privacy import accounting

# The released per-round values every noised mechanism has: public
# parameters, or (adaptive clipping) a value of the noised mechanism.
NOISE_KEY = 'privacy/noise_multiplier'
CLIP_KEY = 'privacy/clip'

RoundEvent = Callable[[int], dp_accounting.DpEvent]


@dataclasses.dataclass(frozen=True)
class DpSettings:
  """The parameters of the central mechanism, from the run's configuration.

  Attributes:
    mechanism: The `DpMechanism` member (`tff_dp.mechanisms.registry`).
    noise_multiplier: z, the noise std divided by the clip.
    clients_per_round: The fixed denominator of the noised mean.
    clip: The L2 clip of fixed clipping (and of the tree).
    initial_clip, target_unclipped_quantile, clip_learning_rate: Adaptive
      clipping's parameters.
  """
  mechanism: Any
  noise_multiplier: float
  clients_per_round: int
  clip: float
  initial_clip: float
  target_unclipped_quantile: float
  clip_learning_rate: float


class CentralMechanism:
  """One `--dp_mechanism` value. Subclasses set the attributes and methods.

  Attributes:
    name: The `--dp_mechanism` value.
    help: What it is, for `--dp_mechanism`'s help (a phrase).
    noised: Whether it clips and noises the updates (False only for none).
    algorithms: The `--algorithm` values it runs with.
    calibrates: Whether `--target_epsilon` can calibrate its noise (the
      calibration inverts sampled-Gaussian accounting).
    local_dp: Whether it combines with noise at the clients (`--local_dp`).
    grouped: Whether the grouped path (`--clients_per_call` > 1) runs it.
    released_keys: The keys `round_values` may return.
  """
  name: str = ''
  help: str = ''
  noised: bool = True
  algorithms: frozenset[str] = frozenset({'fedavg', 'fedprox', 'fedsgd'})
  calibrates: bool = True
  local_dp: bool = True
  grouped: bool = False
  released_keys: tuple[str, ...] = (NOISE_KEY, CLIP_KEY)

  def check(self, settings: DpSettings) -> None:
    """Raises `ConfigError` for parameters the mechanism cannot run with."""
    del settings

  def describe(self, settings: DpSettings) -> str:
    """The privacy statement's words for the mechanism and its parameters."""
    raise ValueError(f'--dp_mechanism={self.name} makes no central claim')

  def ledger_events(self, sampler: Any,
                    settings: DpSettings) -> tuple[Any, RoundEvent]:
    """(neighboring relation, round number -> the round's DP event).

    Args:
      sampler: The run's client sampler (`tff_dp.cohorts`).
      settings: The mechanism's parameters.
    """
    raise NotImplementedError(self.name)

  def round_values(self, settings: DpSettings,
                   output: Any) -> Mapping[str, float]:
    """The values released for a round (keys in `released_keys`).

    Args:
      settings: The mechanism's parameters.
      output: The learning process's output of the round (its metrics).
    """
    del output
    return {NOISE_KEY: settings.noise_multiplier, CLIP_KEY: settings.clip}

  def build_aggregator(self, settings: DpSettings, **context) -> Any:
    """The TFF aggregation factory that implements the mechanism.

    Args:
      settings: The mechanism's parameters.
      **context: What a mechanism needs of the run beyond its parameters
        (the tree: `rounds_per_epoch`, `record_specs`).
    """
    raise ValueError(f'no DP aggregator for mechanism {self.name!r}')


def sampled_gaussian_events(sampler: Any,
                            noise_multiplier: float) -> tuple[Any, RoundEvent]:
  """The ledger of a Gaussian mechanism on cohorts drawn by a `ClientSampler`.

  Every round charges the same event (`accounting.round_event_for`): it
  depends on the sampler's public parameters, never on the cohort drawn.
  """
  event = accounting.round_event_for(sampler, noise_multiplier=noise_multiplier)

  def round_event(round_num: int) -> dp_accounting.DpEvent:
    del round_num
    return event

  return accounting.neighboring_relation(sampler.sampling), round_event
