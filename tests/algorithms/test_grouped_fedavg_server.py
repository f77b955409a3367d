"""The grouped round's fused server side (`tff_dp.algorithms.grouped_server`).

tests/algorithms/test_grouped_*.py pin the round's model and metrics against
TFF's one-client-per-call reference, and test_grouped_fedavg.py's adaptive
clipping test the server side (`tests.helpers.grouped_server`). Here: the
same checks with fixed clipping (slow tier), the server optimizer step
against TFF's finalizer, with its rejection of non-finite updates, and the
noise key out of what remote workers run (`--workers`).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tests.helpers import grouped_server as server_checks
from tests.helpers import noise_keys
from tff_dp.algorithms import grouped_server
from tff_dp.algorithms import learning_process
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.privacy import run_secrets

pytestmark = pytest.mark.tff


@pytest.mark.slow  # ~8 s loaded; adaptive clipping's twin runs by default.
def test_fixed_clip_server_side_is_the_references(tff_runtime):
  del tff_runtime
  dp = central_dp.settings(DpMechanism.GAUSSIAN_FIXED,
                           clients_per_round=len(g.SIZES),
                           clip=0.05)
  reference = g.reference(
      learning_process.build_model_aggregator(
          dp=dp, client_weighting=ClientWeighting.UNIFORM))
  grouped = g.build_grouped(learning_process.build_dp_aggregator(dp))
  xs, ys = g.population()
  ref_state, ref_outputs = g.run(
      reference, lambda r, c: g.reference_datasets(xs, ys, r, c))
  state, outputs = g.run(grouped,
                         lambda r, c: g.groups(xs, ys, r, c, group_size=3))
  assert g.max_abs_diff(g.weights(grouped, state),
                        g.weights(reference, ref_state)) <= g.WEIGHTS_ATOL
  server_checks.assert_same_server_side(reference, grouped, ref_state, state,
                                        ref_outputs, outputs)


def test_apply_optimizer_is_tffs_finalizer_and_rejects_non_finite(tff_runtime):
  del tff_runtime
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.5,
                                                 momentum=0.9)
  weights_type = tff.to_type(
      tff.learning.models.ModelWeights(trainable=[
          tff.TensorType(np.float32, [3]),
          tff.TensorType(np.float32, [2, 2])
      ],
                                       non_trainable=[]))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      optimizer, weights_type)
  state_type = finalizer.initialize.type_signature.result.member

  @tff.tensorflow.computation(state_type, weights_type.trainable,
                              weights_type.trainable)
  def fused(state, trainable, update):
    return grouped_server.apply_optimizer(optimizer, state, list(trainable),
                                          list(update))

  weights = tff.learning.models.ModelWeights(
      trainable=[np.arange(3, dtype=np.float32),
                 np.ones((2, 2), np.float32)],
      non_trainable=[])
  state = finalizer.initialize()
  # Finite, NaN, infinite, finite: the momentum carries across the rejects.
  updates = [[np.full(3, 0.25, np.float32),
              np.full((2, 2), -1.0, np.float32)],
             [
                 np.array([1.0, np.nan, 0.0], np.float32),
                 np.zeros((2, 2), np.float32)
             ],
             [np.full(3, 0.5, np.float32),
              np.full((2, 2), np.inf, np.float32)],
             [np.full(3, -0.5, np.float32),
              np.full((2, 2), 2.0, np.float32)]]
  for update in updates:
    expected = finalizer.next(state, weights, update)
    new_state, trainable, measurements = fused(state, weights.trainable, update)
    finite = all(np.isfinite(u).all() for u in update)
    assert measurements == expected.measurements
    assert measurements['update_non_finite'] == (0 if finite else 1)
    for actual, wanted in zip(trainable, expected.result.trainable):
      np.testing.assert_array_equal(actual, wanted)
    for actual, wanted in zip(tf.nest.flatten(new_state),
                              tf.nest.flatten(expected.state)):
      np.testing.assert_array_equal(actual, wanted)
    if not finite:  # Rejected: the weights stay (and the momentum, above).
      for actual, before in zip(trainable, weights.trainable):
        np.testing.assert_array_equal(actual, before)
    else:
      assert g.max_abs_diff(trainable, weights.trainable) > 0
    weights, state = expected.result, expected.state


# Signed int64 values whose encodings occur nowhere else.
def test_split_rounds_workers_part_holds_no_noise_key(monkeypatch):
  # With --workers, `tff_dp.execution.split_rounds` sends `up_to_merge` to
  # the remote workers and runs `after_merge` on the driver. The fused
  # server step holds the noise key: it must stay after the merge, and the
  # broadcast values before it (`grouped_server.build_prepare`) must not
  # pull the key in. Adaptive clipping: two keys, and its sample params.
  # Nothing is executed (tests/execution/test_split_rounds_secrets.py does
  # the same for TFF's one-client-per-call process).
  monkeypatch.setattr(run_secrets, 'new_noise_key', lambda: noise_keys.KEY)
  grouped = g.build_grouped(
      learning_process.build_dp_aggregator(
          central_dp.settings(DpMechanism.GAUSSIAN_ADAPTIVE,
                              noise_multiplier=1.0,
                              clients_per_round=70,
                              clip=1.0)))
  form = mergeable_comp_compiler.compile_to_mergeable_comp_form(grouped.next)
  assert noise_keys.holds_key(form.after_merge)  # The control: on the driver.
  assert not noise_keys.holds_key(form.up_to_merge)
  assert not noise_keys.holds_key(form.merge)
