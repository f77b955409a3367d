"""Weighted DP-FedAvg with bounded client weights.

McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private
Recurrent Language Models" (ICLR), Section 2: client k's update is weighted by
w_k = min(n_k / n_cap, 1), so no client contributes more than a weight of 1;
with updates clipped to C, the weighted sum then has sensitivity C and the
Gaussian mechanism of the unweighted case applies unchanged. This restores the
data-size weighting of FedAvg (|D_k| / |D|, McMahan et al. 2017) in a DP run,
which weighting by raw n_k cannot do (its sensitivity is unbounded).

The paper's fixed-denominator estimator divides by q * W with W = sum of all
clients' weights. W depends on every client's data size, so using it without
noise would release it; we keep the DP factory's fixed denominator
clients_per_round = q * N >= q * W instead, which only scales the averaged
update by W / N <= 1 (a smaller effective server learning rate).
"""

import tensorflow as tf
import tensorflow_federated as tff


def capped_weights_aggregator(
    unweighted: tff.aggregators.UnweightedAggregationFactory, *,
    weight_cap: float) -> tff.aggregators.WeightedAggregationFactory:
  """Weights each client's value by min(weight / weight_cap, 1), then
  aggregates the weighted values with `unweighted` (e.g. a DP factory).

  Args:
    unweighted: Aggregates the weighted values; for DP, TF Privacy's
      `DifferentiallyPrivateFactory`, which clips each value to C.
    weight_cap: n_cap > 0: clients with at least this many examples get
      weight 1.

  Raises:
    ValueError: If `weight_cap` is not a finite positive number.
  """
  if not (isinstance(weight_cap,
                     (int, float)) and 0 < weight_cap < float('inf')):
    raise ValueError(
        f'weight_cap must be a finite number > 0, got {weight_cap!r}')
  return _CappedWeightsFactory(unweighted, float(weight_cap))


class _CappedWeightsFactory(tff.aggregators.WeightedAggregationFactory):
  """See `capped_weights_aggregator`."""

  def __init__(self, unweighted, weight_cap: float):
    self._unweighted = unweighted
    self._weight_cap = weight_cap

  def create(self, value_type, weight_type):
    inner = self._unweighted.create(value_type)
    weight_cap = self._weight_cap

    @tff.tensorflow.computation(value_type, weight_type)
    def scale(value, weight):
      # Clamped at 0 too, so a malformed negative weight cannot flip a
      # client's update (its norm bound still holds either way).
      w = tf.clip_by_value(tf.cast(weight, tf.float32) / weight_cap, 0.0, 1.0)
      return tf.nest.map_structure(lambda t: t * tf.cast(w, t.dtype), value)

    @tff.federated_computation(inner.state_type,
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      scaled = tff.federated_map(scale, (value, weight))
      return inner.next(state, scaled)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
