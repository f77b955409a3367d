"""The grouped DP-FedAvg round in three TF computations: prepare, group, step.

The algorithm is the server side of DP-FedAvg (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models", ICLR) with TF
Privacy's query (fixed clipping, or the adaptive clip of Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping", NeurIPS), exactly
as `tff_dp.algorithms.grouped_fedavg` composed it from separate TFF
computations: derive the sample params from the query state, broadcast them
with the trainable weights and the client optimizer's hyperparameters, run
the groups, sum, take the query's noised result, new state and DP event,
derive its metrics, finalize the training metrics, and apply the server
optimizer as TFF's `build_apply_optimizer_finalizer` does.

Why fused: with few clients a round is latency-bound (benchmarks/README.md,
"W1 with 10 clients"). Each server-side TF computation was its own TF call
in the worker and its own round trip of values between TFF's executors;
the floor's whole round is one `tf.function` call. Here the server runs two
TF calls per round (before the broadcast and after the sum), the clients
one per group, with one broadcast and one sum.

What stays identical (tests/algorithms/test_grouped_*.py pin it against
TFF's one-client-per-call reference):

* the state: `LearningAlgorithmState` with the DP factory's own
  `DPAggregatorState` (query state, inner sum state, the DP event as TFF's
  factory converts it, `is_init` False) and the finalizer's optimizer state;
* the query's calls and their order (`derive_sample_params` on the round's
  query state, `get_noised_result` on the sum of the records, then
  `derive_metrics` on the new state): the same noise, from the same secret
  key constant (the query's `noise_key`), and the same DP event;
* the server optimizer step: `optimizer.next` on the trainable weights, the
  update rejected (weights and optimizer state kept) when it is not finite,
  by TFF's own `reject_non_finite_update`, whose measurement is the
  finalizer's metric;
* the metrics' structure and names.
"""

import collections
from typing import Any, Callable, NamedTuple, Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

# DPAggregatorState is not exported by tff.aggregators; reject_non_finite_update
# is the finalizer's own rejection rule (not exported either).
from tensorflow_federated.python.aggregators import differential_privacy
from tensorflow_federated.python.learning.templates import apply_optimizer_finalizer
import tensorflow_privacy as tfp


class ServerValues(NamedTuple):
  """What the round's single broadcast sends to every group."""
  hparams: Any  # The client optimizer's hyperparameters (state.client_work).
  trainable: Any  # The global model's trainable tensors.
  params: Any  # The query's sample params for this round.


def _query_state(query: tfp.DPQuery, state, aggregated: bool):
  """The round's query state: the aggregator's, or the constant initial
  state of a query without aggregator state (local DP alone)."""
  if aggregated:
    return state.aggregator.query_state
  return query.initial_global_state()


def build_prepare(query: tfp.DPQuery, state_type: tff.Type, *,
                  aggregated: bool) -> tff.Computation:
  """state -> `ServerValues`: the round's broadcast, in one TF call."""

  @tff.tensorflow.computation(state_type)
  def prepare(state):
    params = query.derive_sample_params(_query_state(query, state, aggregated))
    return ServerValues(hparams=state.client_work,
                        trainable=state.global_model_weights.trainable,
                        params=params)

  return prepare


def build_group_step(group_fn: Callable[..., Any], server_values_type: tff.Type,
                     groups_type: tff.Type, *,
                     frozen: Sequence[Any]) -> tff.Computation:
  """(`ServerValues`, group) -> (records, metrics sums) of one group; the
  frozen tensors are constants, as in `grouped_frozen.build_group_update`."""

  @tff.tensorflow.computation(server_values_type, groups_type)
  def group_step(server, group):
    weights = tff.learning.models.ModelWeights(
        trainable=list(server.trainable),
        non_trainable=[tf.constant(w) for w in frozen])
    return group_fn(server.hparams, weights, server.params, group)

  return group_step


def apply_optimizer(optimizer: tff.learning.optimizers.Optimizer,
                    optimizer_state, trainable, update):
  """TFF's `build_apply_optimizer_finalizer` step (its `next_fn`)."""
  new_state, new_weights = optimizer.next(optimizer_state, trainable, update)
  should_reject, measurements = (
      apply_optimizer_finalizer.reject_non_finite_update(new_state, update))
  # The finalizer keeps the previous state and weights when it rejects.
  new_state, new_weights = tf.cond(
      should_reject,
      lambda: tf.nest.map_structure(tf.identity, (optimizer_state, trainable)),
      lambda: (new_state, new_weights))
  return new_state, new_weights, measurements


def build_server_step(
    query: tfp.DPQuery,
    optimizer: tff.learning.optimizers.Optimizer,
    state_type: tff.Type,
    sums_type: tff.Type,
    *,
    aggregated: bool,
    finalize_train_metrics: Optional[Callable[[Any], Any]],
) -> tff.Computation:
  """(state, (records sum, metrics sums)) -> (new state, metrics).

  Args:
    query: The round's DP query (a `SumAggregationDPQuery`).
    optimizer: The server optimizer (the finalizer's).
    state_type: The process state's (unplaced) type.
    sums_type: The type of the sum over the groups of `build_group_step`'s
      results.
    aggregated: Whether the state holds the DP factory's aggregator state;
      False: the query's state is its constant initial state and the
      aggregator keeps no state and reports no metrics (local DP alone).
    finalize_train_metrics: The training metrics from their sums, in TF;
      None: no client metric leaves the groups, the metrics are empty.
  """

  @tff.tensorflow.computation(state_type, sums_type)
  def server_step(state, sums):
    records, metric_sums = sums
    query_state = _query_state(query, state, aggregated)
    result, new_query_state, event = query.get_noised_result(
        records, query_state)
    if aggregated:
      aggregator_state = differential_privacy.DPAggregatorState(
          new_query_state, state.aggregator.agg_state, event.to_named_tuple(),
          tf.constant(False))
      aggregator_metrics = collections.OrderedDict(
          dp_query_metrics=query.derive_metrics(new_query_state),
          # SumFactory's (empty) measurements, as in the reference.
          dp=())
    else:
      # As the reference's sum over the fixed count: no state, no metrics.
      aggregator_state, aggregator_metrics = (), ()
    weights = state.global_model_weights
    optimizer_state, trainable, finalizer_metrics = apply_optimizer(
        optimizer, state.finalizer, list(weights.trainable), result)
    new_state = tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.learning.models.ModelWeights(
            trainable=trainable, non_trainable=list(weights.non_trainable)),
        distributor=state.distributor,
        client_work=state.client_work,
        aggregator=aggregator_state,
        finalizer=optimizer_state)
    metrics = collections.OrderedDict(
        distributor=(),
        client_work=collections.OrderedDict(
            train=(collections.OrderedDict() if finalize_train_metrics is
                   None else finalize_train_metrics(metric_sums))),
        aggregator=aggregator_metrics,
        finalizer=finalizer_metrics)
    return new_state, metrics

  return server_step
