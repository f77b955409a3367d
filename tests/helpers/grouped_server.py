"""Checks of the grouped round's fused server side against TFF's reference.

`tff_dp.algorithms.grouped_server` re-expresses, in one TF computation, what
TFF's DP factory, optimizer finalizer and broadcast distributor did in
separate ones. tests/helpers/grouped.py's `assert_equivalent` compares the
model, the metrics and the state's leaves; `assert_same_server_side` adds
what the fusion must keep beyond those: the state's type and containers
(checkpoints stay interchangeable with the reference's, whose structure the
grouped path always had), the aggregator state after rounds (the DP event
and query state TFF's factory keeps), the finalizer's state and metrics,
and the round's shape (one broadcast, one sum, three TF calls), which is
what made it faster.
"""

import collections

import numpy as np
import tensorflow as tf
from tensorflow_federated.python.core.impl.computation import computation_impl

from tff_dp.program import type_containers

# Absolute tolerance on the optimizer's accumulator, as on the weights
# (float32 round-off from summing the records in another order).
_ATOL = 1e-6


def intrinsics_and_tf_calls(computation) -> collections.Counter:
  """Counts of each intrinsic and of TF computations in `computation`."""
  counts = collections.Counter()

  def visit(message):
    if message.DESCRIPTOR.name == 'Computation':
      kind = message.WhichOneof('computation')
      counts[message.intrinsic.uri if kind == 'intrinsic' else kind] += 1
    for field, value in message.ListFields():
      if field.message_type is None:
        continue
      for item in (value if field.label == field.LABEL_REPEATED else [value]):
        visit(item)

  visit(computation_impl.ConcreteComputation.get_proto(computation))
  return counts


def _flat(state) -> np.ndarray:
  return np.concatenate([np.ravel(v) for v in tf.nest.flatten(state)])


def assert_same_server_side(reference, grouped, ref_state, state, ref_outputs,
                            outputs) -> None:
  """The fused server side kept the reference's types and server state.

  Args:
    reference: TFF's one-client-per-call process.
    grouped: The grouped process.
    ref_state, state: Their states after the same rounds at zero noise.
    ref_outputs, outputs: Their outputs of those rounds.
  """
  for name in ('initialize', 'next'):
    expected = getattr(reference, name).type_signature.result
    actual = getattr(grouped, name).type_signature.result
    assert actual.is_equivalent_to(expected), name
    assert (type_containers.containers(actual) == type_containers.containers(
        expected)), name
  # The DP event TFF's factory keeps, value for value (names and noise).
  assert (tf.nest.flatten(state.aggregator.dp_event) == tf.nest.flatten(
      ref_state.aggregator.dp_event))
  assert not state.aggregator.is_init_state
  np.testing.assert_allclose(tf.nest.flatten(state.aggregator.query_state),
                             tf.nest.flatten(ref_state.aggregator.query_state),
                             rtol=1e-6)
  # The server optimizer's state (learning rate, momentum, accumulator).
  np.testing.assert_allclose(_flat(state.finalizer),
                             _flat(ref_state.finalizer),
                             atol=_ATOL)
  for ref_output, output in zip(ref_outputs, outputs):
    assert output.metrics['finalizer'] == ref_output.metrics['finalizer']
  # What makes a round with few clients fast (benchmarks/README.md, "W1 with
  # 10 clients"): each TF computation and intrinsic is its own call in the
  # worker. Before the fusion: 3 broadcasts, 2 sums, 8 TF computations.
  counts = intrinsics_and_tf_calls(grouped.next)
  assert counts['federated_broadcast'] == 1
  assert counts['federated_sum'] == 1
  assert counts['tensorflow'] == 3
  assert counts['federated_map'] == 1  # The groups.
