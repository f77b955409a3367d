"""Canary clients inside a DP query: the updates of an audit run's canaries.

An audit run (`--audit_canaries`) adds M canary clients to the population
(`tff_dp.audit.canary_plan`; Andrew et al. 2024, "One-shot Empirical Privacy
Estimation for Federated Learning"). A sampled inserted canary's update is
its secret unit direction times a norm far past the clip. Canaries hold no
data and train nothing, so instead of running client work for them, their
updates enter the TF Privacy query at the server, just before the noise:

  sample_state += preprocess_record(params, canary update)

for every canary slot of the round, with the query's own `preprocess_record`
and `accumulate_preprocessed_record` under the round's sample parameters.
For a `SumAggregationDPQuery` this is exactly what the query computes when
the canary is one more client of the sum: the same clip (the adaptive clip
of the round included), the same clipped-count record for the quantile
estimate, then one draw of the noise over real and canary clients together.
So the same wrapper serves TFF's reference process and the grouped path
(both take the query from the factory), and every central mechanism
(fixed and adaptive clipping, DP-FTRL's tree).

Which canaries report in which round is a table of codes computed before the
run from the run's sampler (`CanaryPlan.schedule`), a constant of the
computation like the noise keys, with a round counter in the query state.
The directions come from TF's stateless Philox generator under a 128-bit key
from the operating system: the program regenerates them in Python to
compute the audit's statistics and never writes them anywhere.
"""

from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

# `tff_dp.audit.canary_plan.PADDING` (the layers keep the two packages
# apart; tests/mechanisms/test_canaries.py checks they agree): a slot
# without a canary.
PADDING = -1


def _seed(key: Sequence[int], canary) -> tf.Tensor:
  key = tf.constant(list(key), dtype=tf.int64, shape=[2])
  return tf.stack(
      [key[0],
       tf.bitwise.bitwise_xor(key[1], tf.cast(canary, tf.int64))])


def _unit_direction(key: Sequence[int], canary, dim: int) -> tf.Tensor:
  """Canary `canary`'s direction: a uniform unit vector of length `dim`."""
  vector = tf.random.stateless_normal([dim],
                                      seed=_seed(key, canary),
                                      dtype=tf.float32)
  return vector / tf.norm(vector)


def directions(key: Sequence[int], canaries: int, dim: int) -> np.ndarray:
  """The [canaries, dim] unit directions, as the computation draws them."""
  return np.stack([
      _unit_direction(key, i, dim).numpy() for i in range(canaries)
  ]) if canaries else np.zeros((0, dim), np.float32)


class CanaryQuery(tfp.SumAggregationDPQuery):
  """A `SumAggregationDPQuery` whose rounds include the canaries' updates."""

  def __init__(self, inner: tfp.SumAggregationDPQuery, *, key: Sequence[int],
               schedule: np.ndarray, norm: float):
    """Wraps `inner`.

    Args:
      inner: The mechanism's query.
      key: Two int64, the directions' secret key.
      schedule: `CanaryPlan.schedule`'s table of each round's codes.
      norm: L2 norm of an inserted canary's update (far past the clip).
    """
    if not isinstance(inner, tfp.SumAggregationDPQuery):
      raise TypeError('canaries need a SumAggregationDPQuery, got '
                      f'{type(inner).__name__}')
    self._inner = inner
    self._key = tuple(int(k) for k in key)
    self._schedule = np.asarray(schedule, np.int32)
    self._norm = float(norm)
    self._template = None

  def initial_global_state(self):
    # (the inner query's state, rounds done: the schedule's row).
    return (self._inner.initial_global_state(), tf.constant(0, tf.int32))

  def derive_sample_params(self, global_state):
    return self._inner.derive_sample_params(global_state[0])

  def initial_sample_state(self, template):
    # The record structure the process uses (a list, a tuple...), for the
    # canaries' records.
    self._template = template
    return self._inner.initial_sample_state(template)

  def preprocess_record(self, params, record):
    return self._inner.preprocess_record(params, record)

  def accumulate_preprocessed_record(self, sample_state, preprocessed_record):
    return self._inner.accumulate_preprocessed_record(sample_state,
                                                      preprocessed_record)

  def merge_sample_states(self, sample_state_1, sample_state_2):
    return self._inner.merge_sample_states(sample_state_1, sample_state_2)

  def derive_metrics(self, global_state):
    return self._inner.derive_metrics(global_state[0])

  def _record(self, code) -> Any:
    """The update of a canary slot: its scaled direction, or zeros."""
    specs = tf.nest.flatten(self._template)
    sizes = [spec.shape.num_elements() for spec in specs]
    canary = tf.maximum(code, 0)
    flat = self._norm * _unit_direction(self._key, canary, sum(sizes))
    flat = tf.where(code >= 0, flat, tf.zeros_like(flat))
    parts = tf.split(flat, sizes)
    return tf.nest.pack_sequence_as(self._template, [
        tf.cast(tf.reshape(part, spec.shape), spec.dtype)
        for part, spec in zip(parts, specs)
    ])

  def get_noised_result(self, sample_state, global_state):
    if self._template is None:
      raise ValueError('initial_sample_state must be called before '
                       'get_noised_result (the record structure)')
    inner_state, rounds_done = global_state
    table = tf.constant(self._schedule)
    row = table[tf.minimum(rounds_done, table.shape[0] - 1)]
    params = self._inner.derive_sample_params(inner_state)

    def add(j, state):
      code = row[j]
      return j + 1, tf.cond(
          tf.equal(code, PADDING), lambda: state,
          lambda: self._inner.accumulate_preprocessed_record(
              state, self._inner.preprocess_record(params, self._record(code))))

    _, sample_state = tf.while_loop(lambda j, _: j < row.shape[0], add,
                                    (tf.constant(0), sample_state))
    result, new_inner, event = self._inner.get_noised_result(
        sample_state, inner_state)
    return result, (new_inner, rounds_done + 1), event


def with_canaries(factory: tff.aggregators.DifferentiallyPrivateFactory, *,
                  key: Sequence[int], schedule: np.ndarray,
                  norm: float) -> tff.aggregators.DifferentiallyPrivateFactory:
  """`factory` with its query wrapped in a `CanaryQuery`."""
  if not isinstance(factory, tff.aggregators.DifferentiallyPrivateFactory):
    raise TypeError('canaries need a DifferentiallyPrivateFactory, got '
                    f'{type(factory).__name__}')
  # pylint: disable=protected-access
  return tff.aggregators.DifferentiallyPrivateFactory(
      CanaryQuery(factory._query, key=key, schedule=schedule, norm=norm),
      factory._record_aggregation_factory)
