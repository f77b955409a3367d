"""Neutralizes non-finite and absurd client updates before DP clipping.

Two float32 failure modes would otherwise reach the model:
* an update with NaN or +-inf entries: clipping multiplies it by a finite
  factor and the NaN survives into the sum;
* an update with huge finite entries (say 1e20): its squared norm overflows
  to inf, and `tf.clip_by_global_norm` (used by TF Privacy's queries) then
  returns all-NaN.
This factory runs at the clients, before the wrapped DP factory: a client
update with any non-finite entry becomes zero, and one whose norm exceeds
`max_norm` is scaled down to `max_norm` using a norm computed without
overflow. Both are per-client functions of the client's own update applied
before clipping, so the DP analysis is unchanged: the query still clips each
(sanitized) update to C <= max_norm, and a zero update is a valid input.
What was neutralized is not released (an exact count would be a non-private
function of client data).
"""

import tensorflow as tf
import tensorflow_federated as tff

# Squares of norms up to 1e15 stay far below float32's max (3.4e38), so the
# query's own norm computation cannot overflow after this step; 1e15 is far
# above any clip the flags accept (<= 1e9), so this never changes the result
# of clipping.
DEFAULT_MAX_NORM = 1e15


def _robust_global_norm(tensors):
  """L2 norm over all tensors, computed without overflow (scaled by max)."""
  scale = tf.reduce_max([tf.reduce_max(tf.abs(t)) for t in tensors])
  safe = tf.where(scale > 0, scale, tf.ones_like(scale))
  total = tf.add_n([tf.reduce_sum(tf.square(t / safe)) for t in tensors])
  return safe * tf.sqrt(total)


def sanitize_update(value, *, max_norm: float = DEFAULT_MAX_NORM):
  """Zero if any entry is non-finite; else scaled to L2 norm <= max_norm."""
  tensors = [tf.cast(t, tf.float32) for t in tf.nest.flatten(value)]
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])
  zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in tensors]
  norm = _robust_global_norm(zeroed)
  factor = tf.where(norm > max_norm, max_norm / norm, tf.ones_like(norm))
  scaled = [t * factor for t in zeroed]
  original = tf.nest.flatten(value)
  return tf.nest.pack_sequence_as(
      value, [tf.cast(s, o.dtype) for s, o in zip(scaled, original)])


def sanitizing_aggregator(
    inner: tff.aggregators.UnweightedAggregationFactory,
    *,
    max_norm: float = DEFAULT_MAX_NORM,
) -> tff.aggregators.UnweightedAggregationFactory:
  """Wraps `inner` so that each client's value is sanitized first."""
  return _SanitizingFactory(inner, max_norm)


class _SanitizingFactory(tff.aggregators.UnweightedAggregationFactory):
  """See `sanitizing_aggregator`."""

  def __init__(self, inner, max_norm: float):
    self._inner = inner
    self._max_norm = max_norm

  def create(self, value_type):
    inner = self._inner.create(value_type)
    max_norm = self._max_norm

    @tff.tensorflow.computation(value_type)
    def sanitize(value):
      return sanitize_update(value, max_norm=max_norm)

    @tff.federated_computation(inner.state_type,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      return inner.next(state, tff.federated_map(sanitize, value))

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
