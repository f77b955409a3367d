"""Builds the federated learning process: algorithm x model aggregator.

DP-FedAvg follows McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models" (ICLR): clients send model deltas, each delta is
clipped to L2 norm C, the clipped deltas are summed, Gaussian noise of standard
deviation z * C is added, and the sum is divided by the FIXED expected number
of clients per round. Adaptive clipping follows Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping" (NeurIPS). Both come
from TensorFlow Privacy through `tff.aggregators.DifferentiallyPrivateFactory`,
which is unweighted, with the noise drawn from secret keys
(`tff_dp.mechanisms.dp_queries`).

The algorithms are TFF's own: FedAvg and FedSGD (McMahan et al. 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data"),
FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"),
with server optimizers SGD(M), Adam and Yogi (Reddi et al. 2021, "Adaptive
Federated Optimization").

The model aggregator is composed inside out (as in google-research/federated
`distributed_dp/fl_utils.py::build_aggregator`):
  1. the central DP factory (or none), behind `tff_dp.mechanisms.sanitize`, which zeroes
     non-finite client updates and rescales absurd ones before clipping;
  2. the client weighting: uniform (the DP factory as is), capped weights
     (`tff_dp.mechanisms.weighting`), or |D_k| / |D| (non-private weighted mean).

A model with frozen (non-trainable) weights (`--trainable`) gets TFF's
processes with one change (`frozen_distributor`): each round broadcasts the
trainable tensors only, the frozen ones being constants of the client
computation (`tff_dp.algorithms.grouped_frozen`, as on the grouped path).
TFF's FedAvg never changes the server's non-trainable weights, so the rounds
compute the same model.
"""

import collections
from typing import Any, Callable, Optional, Sequence, Union

import tensorflow_federated as tff

from tff_dp.algorithms import grouped_frozen
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import ServerOptimizer
from tff_dp.mechanisms import registry
from tff_dp.mechanisms import sanitize
from tff_dp.mechanisms import weighting
from tff_dp.mechanisms.central import DpSettings

# Measured on W1 (benchmarks/where_time_goes.py): DATASET_ITERATOR runs a
# round in ~0.63 s where TFF's default DATASET_REDUCE takes ~1.6 s; the local
# computation is the same (the numpy-formula tests pass with it).
LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR

AnyFactory = Union[tff.aggregators.UnweightedAggregationFactory,
                   tff.aggregators.WeightedAggregationFactory]


def build_dp_aggregator(
    settings: DpSettings) -> tff.aggregators.UnweightedAggregationFactory:
  """Returns the TF Privacy DP aggregation factory of `settings.mechanism`.

  Built by the mechanism's row (`tff_dp.mechanisms.registry`), with the
  queries' noise drawn from secret keys (`tff_dp.mechanisms.dp_queries`).

  The factory divides the noised sum by `clients_per_round`, never by the
  number of clients that actually reported: that number depends on the data
  (under Poisson sampling, on who is in the population) and dividing by it
  would release it without noise.

  Args:
    settings: The mechanism and its parameters.

  Raises:
    ValueError: For `DpMechanism.NONE`, which has no DP aggregator.
  """
  return registry.mechanism(settings.mechanism).build_aggregator(settings)


def sanitizing_dp_aggregator(
    settings: DpSettings) -> tff.aggregators.UnweightedAggregationFactory:
  """The DP factory behind `tff_dp.mechanisms.sanitize` (non-finite/absurd updates)."""
  return sanitize.sanitizing_aggregator(build_dp_aggregator(settings))


def build_model_aggregator(
    *,
    dp: Optional[DpSettings],
    client_weighting: ClientWeighting,
    weight_cap: Optional[float] = None,
    unweighted: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> Optional[AnyFactory]:
  """Composes the model aggregator (see the module docstring).

  Args:
    dp: Central DP settings, or None.
    client_weighting: How updates are weighted.
    weight_cap: n_cap for `ClientWeighting.CAPPED`.
    unweighted: An unweighted factory to use instead of the central DP one
      (e.g. local DP wrapping central DP); None means "from `dp`".

  Returns:
    A weighted or unweighted factory, or None for TFF's default weighted
    mean (non-private |D_k| / |D| weighting).

  Raises:
    ValueError: For |D_k| / |D| weighting over a DP factory (unbounded
      sensitivity) or a capped weighting without a cap.
  """
  if unweighted is None and dp is not None:
    unweighted = sanitizing_dp_aggregator(dp)
  if client_weighting is ClientWeighting.NUM_EXAMPLES:
    if unweighted is not None:
      raise ValueError('num_examples weighting has unbounded sensitivity; '
                       'use capped weighting with a DP aggregator')
    return None
  if client_weighting is ClientWeighting.CAPPED:
    if weight_cap is None:
      raise ValueError('capped weighting needs weight_cap')
    return weighting.capped_weights_aggregator(
        unweighted or tff.aggregators.UnweightedMeanFactory(),
        weight_cap=weight_cap)
  return unweighted or tff.aggregators.UnweightedMeanFactory()


def no_client_metrics(metric_finalizers, local_unfinalized_metrics_type=None):
  """A TFF metrics aggregator that never aggregates the clients' metrics.

  For runs whose guarantee holds against the server (local DP, example-level
  DP-SGD): TFF's default (`tff.learning.metrics.sum_then_finalize`) sums
  each client's raw training loss, accuracy and example count at the server,
  i.e. sends un-noised functions of the client's data past its noise. Here
  the client-placed metrics are an unused argument, so no federated
  aggregation of them exists in the computation and the server-side
  `client_work` metrics are empty.

  Args:
    metric_finalizers: Ignored (TFF's `MetricsAggregatorType` signature).
    local_unfinalized_metrics_type: Ignored.

  Returns:
    A polymorphic federated computation: client metrics -> empty at SERVER.
  """
  del metric_finalizers, local_unfinalized_metrics_type

  @tff.federated_computation
  def aggregate(client_metrics):
    del client_metrics  # Never leaves the clients.
    return tff.federated_value(collections.OrderedDict(), tff.SERVER)

  return aggregate


def build_server_optimizer(
    kind: ServerOptimizer, *, learning_rate: float,
    momentum: float) -> tff.learning.optimizers.Optimizer:
  if kind is ServerOptimizer.SGD:
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate,
                                              momentum=momentum or None)
  if kind is ServerOptimizer.ADAM:
    return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
  if kind is ServerOptimizer.YOGI:
    return tff.learning.optimizers.build_yogi(learning_rate=learning_rate)
  raise ValueError(f'unknown server optimizer {kind!r}')


def frozen_distributor(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    frozen_weights: Optional[Sequence[Any]] = None) -> tuple[Any, Any]:
  """(TFF `model_distributor`, frozen constants) for `model_fn`'s model:
  (None, None), TFF's default broadcast, for a model without frozen weights.

  Args:
    model_fn: No-argument constructor of the TFF model.
    frozen_weights: The frozen weights' values if they are not the model's
      initial ones (`--init_from`: the pretrained checkpoint's).

  Raises:
    ValueError: If `frozen_weights` does not match the model's.
  """
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  if not weights_type.non_trainable:
    if frozen_weights:
      raise ValueError('frozen weights given for a model without any')
    return None, None
  frozen = grouped_frozen.variable_model_frozen(model_fn, frozen_weights)
  return grouped_frozen.build_frozen_distributor(weights_type, frozen), frozen


def with_frozen_constants(build: Callable[..., Any],
                          model_fn,
                          frozen_weights: Optional[Sequence[Any]] = None):
  """`build(model_distributor=...)`, a TFF process builder, with the frozen
  weights of `model_fn`'s model sent once (`frozen_distributor`)."""
  distributor, frozen = frozen_distributor(model_fn, frozen_weights)
  if distributor is None:
    return build(model_distributor=None)
  return grouped_frozen.pin_frozen(build(model_distributor=distributor), frozen)


def build_learning_process(
    *,
    model_fn: Callable[[], tff.learning.models.VariableModel],
    algorithm: Algorithm = Algorithm.FEDAVG,
    model_aggregator: Optional[AnyFactory],
    client_learning_rate: float,
    client_momentum: float,
    server_optimizer: tff.learning.optimizers.Optimizer,
    proximal_strength: float = 0.0,
    metrics_aggregator: Optional[Callable] = None,
    frozen_weights: Optional[Sequence[Any]] = None,
) -> tff.learning.templates.LearningProcess:
  """Returns the TFF learning process of `algorithm` with the aggregator.

  A model with frozen weights gets them as constants of the client
  computation (module docstring).

  Args:
    model_fn: No-argument constructor of the TFF model.
    algorithm: FedAvg, FedProx or FedSGD.
    model_aggregator: From `build_model_aggregator`; an unweighted factory
      selects TFF's unweighted builders, a weighted one (or None, TFF's
      weighted mean) the |D_k|-weighted ones.
    client_learning_rate: Learning rate of the clients' SGD (not FedSGD).
    client_momentum: Momentum of the clients' SGD (0 for plain SGD).
    server_optimizer: Optimizer the server applies to the averaged update.
    proximal_strength: FedProx's mu.
    metrics_aggregator: TFF's metrics aggregator; None for TFF's default (the
      clients' metrics summed un-noised at the server), `no_client_metrics`
      where the server is an adversary.
    frozen_weights: The frozen weights if not the model's initial ones
      (`--init_from`); `set_model_weights` refuses others.
  """
  return with_frozen_constants(
      lambda **distributor: _build_tff_process(
          model_fn=model_fn,
          algorithm=algorithm,
          model_aggregator=model_aggregator,
          client_learning_rate=client_learning_rate,
          client_momentum=client_momentum,
          server_optimizer=server_optimizer,
          proximal_strength=proximal_strength,
          metrics_aggregator=metrics_aggregator,
          **distributor), model_fn, frozen_weights)


def _build_tff_process(*, model_fn, algorithm, model_aggregator,
                       client_learning_rate, client_momentum, server_optimizer,
                       proximal_strength, metrics_aggregator,
                       model_distributor):
  """`build_learning_process` with TFF's builder's `model_distributor`."""
  unweighted = isinstance(model_aggregator,
                          tff.aggregators.UnweightedAggregationFactory)
  # TFF's builders' optional arguments: None is not their default for all.
  extra = dict(model_distributor=model_distributor)
  if metrics_aggregator is not None:
    extra['metrics_aggregator'] = metrics_aggregator
  if algorithm is Algorithm.FEDSGD:
    # FedSGD clients send their full-batch mean gradient with weight |D_k|;
    # TFF's builder takes a weighted factory, so an unweighted (DP) one is
    # wrapped to ignore the weights.
    if unweighted:
      model_aggregator = tff.aggregators.as_weighted_aggregator(
          model_aggregator)
    return tff.learning.algorithms.build_fed_sgd(
        model_fn,
        server_optimizer_fn=server_optimizer,
        model_aggregator=model_aggregator,
        loop_implementation=LOOP,
        **extra)
  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=client_learning_rate, momentum=client_momentum or None)
  common = dict(client_optimizer_fn=client_optimizer,
                server_optimizer_fn=server_optimizer,
                model_aggregator=model_aggregator,
                loop_implementation=LOOP,
                **extra)
  if algorithm is Algorithm.FEDAVG:
    if unweighted:
      return tff.learning.algorithms.build_unweighted_fed_avg(
          model_fn, **common)
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        **common)
  if algorithm is Algorithm.FEDPROX:
    if unweighted:
      return tff.learning.algorithms.build_unweighted_fed_prox(
          model_fn, proximal_strength=proximal_strength, **common)
    return tff.learning.algorithms.build_weighted_fed_prox(
        model_fn,
        proximal_strength=proximal_strength,
        client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        **common)
  raise ValueError(f'unknown algorithm {algorithm!r}')
