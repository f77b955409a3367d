"""benchmarks.fused_breakdown: its arguments, its stand-ins, and that each
variant computes what benchmarks/README.md reads it as (else the
differences between variants would not be the parts of the round)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import fused_breakdown
from benchmarks import workloads as workloads_lib


@pytest.mark.parametrize('argv, named', [
    (['--workload=W9'], "'W9'"),
    (['--k=0'], '0'),
    (['--timed=0'], '0'),
    (['--variants=full,bogus'], "'bogus'"),
    (['--worker_ways=worker:'], "'worker:'"),
])
def test_bad_arguments_stop_with_one_line(argv, named, capsys):
  assert fused_breakdown.main(['fused_breakdown', *argv]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and named in err, err


def test_zeros_keep_the_types_structure_names_and_dtypes():
  type_spec = tff.StructType([
      ('a', tff.TensorType(np.float32, [2, 3])),
      ('b',
       tff.StructType([(None, tff.TensorType(np.int64)),
                       (None, tff.TensorType(np.float64, [4]))])),
  ])
  zeros = fused_breakdown.zeros_of(type_spec)
  assert list(zeros) == ['a', 'b']
  assert zeros['a'].shape == (2, 3) and zeros['a'].dtype == tf.float32
  assert zeros['b'][0].dtype == tf.int64 and zeros['b'][1].shape == (4,)
  assert all(not np.any(t.numpy()) for t in tf.nest.flatten(zeros))


@pytest.mark.slow
@pytest.mark.tff
def test_variants_compute_the_parts_of_the_round(tff_runtime):
  del tff_runtime  # Installs the worker's context.
  workload = {
      w.name: w for w in workloads_lib.timing_workloads(False)
  }['W1-c10']
  # Zero noise: each call draws fresh noise, so only then are two
  # executions of the same rounds comparable.
  prepared, parts = fused_breakdown.capture_round_parts(
      workload,
      dataclasses.replace(workloads_lib.HYPERPARAMETERS, noise_multiplier=0.0))
  try:
    process = prepared.process
    state_type, groups_type = process.next.type_signature.parameter
    stand_in = fused_breakdown.stand_ins(parts, state_type, groups_type.member)
    inputs = [
        prepared.round_inputs(r, np.arange(workload.clients)) for r in range(2)
    ]
    state = process.initialize()

    def weights(value):
      return [np.asarray(w) for w in value.global_model_weights.trainable]

    def fused(name):
      return fused_breakdown.fused_variant(name, 2, parts, stand_in, state_type,
                                           groups_type.member)

    # `full` and `merged`: two rounds of `next`, the state staying on the
    # worker.
    sequential = process.next(process.next(state, inputs[0]).state,
                              inputs[1]).state
    for name in ('full', 'merged'):
      fused_state, metrics = fused(name)(state, inputs)
      assert len(metrics) == 2
      for a, b in zip(weights(fused_state), weights(sequential)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights(fused_state)[0], weights(state)[0])
    # Without the server step the state is untouched.
    for name in ('no_server', 'skeleton', 'one_call', 'empty'):
      for a, b in zip(weights(fused(name)(state, inputs)), weights(state)):
        np.testing.assert_array_equal(a, b)
    # The in-process block computes what the worker computes.
    server_values = parts['prepare'](state)
    on_worker = parts['group_step'](server_values, inputs[0][0])
    call, session = fused_breakdown.session_runner(
        parts['group_step'], [server_values, inputs[0][0]])
    with session:
      in_process = call()
    flat = fused_breakdown.flat_values(on_worker)
    assert len(flat) == len(in_process)
    for a, b in zip(in_process, flat):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.any(flat[0])  # The group trained.
  finally:
    prepared.close()
