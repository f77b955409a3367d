"""Builds the federated learning process: FedAvg with a DP model aggregator.

DP-FedAvg follows McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models" (ICLR): clients send model deltas, each delta is
clipped to L2 norm C, the clipped deltas are summed, Gaussian noise of standard
deviation z * C is added, and the sum is divided by the FIXED expected number
of clients per round. Adaptive clipping follows Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping" (NeurIPS). Both come
from TensorFlow Privacy through `tff.aggregators.DifferentiallyPrivateFactory`,
which is unweighted, hence `build_unweighted_fed_avg`.

The non-private twin is weighted FedAvg (McMahan et al. 2017, "Communication-
Efficient Learning of Deep Networks from Decentralized Data"): the server
averages deltas with weights |D_k| / sum of |D_j| over the round's cohort.
"""

import dataclasses
from typing import Any, Callable, Optional

import tensorflow_federated as tff

from tff_dp.config import DpMechanism
from tff_dp.config import ServerOptimizer


@dataclasses.dataclass(frozen=True)
class DpSettings:
  """Parameters of the DP model aggregator (see `tff_dp.cli_flags`)."""
  mechanism: DpMechanism
  noise_multiplier: float
  clients_per_round: int
  clip: float
  initial_clip: float
  target_unclipped_quantile: float
  clip_learning_rate: float


def build_dp_aggregator(
    settings: DpSettings) -> tff.aggregators.UnweightedAggregationFactory:
  """Returns TF Privacy's DP aggregation factory for `settings.mechanism`.

  The factory divides the noised sum by `clients_per_round`, never by the
  number of clients that actually reported: that number depends on the data
  (under Poisson sampling, on who is in the population) and dividing by it
  would release it without noise.

  Args:
    settings: The mechanism and its parameters.

  Raises:
    ValueError: For `DpMechanism.NONE`, which has no DP aggregator.
  """
  factory = tff.aggregators.DifferentiallyPrivateFactory
  if settings.mechanism is DpMechanism.GAUSSIAN_FIXED:
    return factory.gaussian_fixed(
        noise_multiplier=settings.noise_multiplier,
        clients_per_round=settings.clients_per_round,
        clip=settings.clip)
  if settings.mechanism is DpMechanism.GAUSSIAN_ADAPTIVE:
    return factory.gaussian_adaptive(
        noise_multiplier=settings.noise_multiplier,
        clients_per_round=settings.clients_per_round,
        initial_l2_norm_clip=settings.initial_clip,
        target_unclipped_quantile=settings.target_unclipped_quantile,
        learning_rate=settings.clip_learning_rate)
  raise ValueError(f'no DP aggregator for mechanism {settings.mechanism!r}')


def build_server_optimizer(kind: ServerOptimizer, *, learning_rate: float,
                           momentum: float) -> tff.learning.optimizers.Optimizer:
  if kind is ServerOptimizer.SGD:
    return tff.learning.optimizers.build_sgdm(
        learning_rate=learning_rate, momentum=momentum or None)
  if kind is ServerOptimizer.ADAM:
    return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
  raise ValueError(f'unknown server optimizer {kind!r}')


def build_learning_process(
    *,
    model_fn: Callable[[], tff.learning.models.VariableModel],
    dp: Optional[DpSettings],
    client_learning_rate: float,
    client_momentum: float,
    server_optimizer: tff.learning.optimizers.Optimizer,
) -> tff.learning.templates.LearningProcess:
  """Returns DP-FedAvg (`dp` given) or non-private weighted FedAvg (`dp=None`).

  Args:
    model_fn: No-argument constructor of the TFF model.
    dp: DP aggregator settings, or None for the non-private twin.
    client_learning_rate: Learning rate of the clients' SGD.
    client_momentum: Momentum of the clients' SGD (0 for plain SGD).
    server_optimizer: Optimizer the server applies to the averaged delta.
  """
  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=client_learning_rate, momentum=client_momentum or None)
  common: dict[str, Any] = dict(
      model_fn=model_fn,
      client_optimizer_fn=client_optimizer,
      server_optimizer_fn=server_optimizer,
  )
  if dp is None:
    return tff.learning.algorithms.build_weighted_fed_avg(
        client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES, **common)
  return tff.learning.algorithms.build_unweighted_fed_avg(
      model_aggregator=build_dp_aggregator(dp), **common)
