"""TFF 0.87's worker does not honour `tf.function(jit_compile=True)`.

benchmarks/README.md ("XLA") says that XLA cannot speed up tff-dp's group
step because every TFF computation runs on the worker binary, which runs a
must-compile function as ordinary graph ops. The probe is a function XLA
cannot compile (AsString has no XLA kernel): in this process TensorFlow
refuses it, on the worker it runs. If a TFF upgrade brings XLA to the worker,
the second test fails, and the README's conclusion (and a `jit_compile`
option for the group step) must be revisited.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff


@tf.function(jit_compile=True)
def _needs_xla(values):
  # AsString has no XLA kernel: a must-compile function containing it fails.
  return tf.strings.length(tf.strings.as_string(values))


def test_in_process_tensorflow_compiles_jit_functions_with_xla():
  with pytest.raises(tf.errors.InvalidArgumentError, match='XLA'):
    _needs_xla(tf.constant([1, 22, 333]))


@pytest.mark.tff
def test_the_worker_runs_a_jit_function_without_xla(tff_runtime):
  del tff_runtime  # Installs the worker's context.

  @tff.tensorflow.computation(tf.TensorSpec([3], tf.int32))
  def lengths(values):
    return _needs_xla(values)

  np.testing.assert_array_equal(lengths(np.array([1, 22, 333], np.int32)),
                                [1, 2, 3])
