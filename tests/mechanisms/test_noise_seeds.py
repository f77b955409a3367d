"""Every noise draw comes from a secret key, fresh per execution.

The property pinned here: with `tff_dp.mechanisms.noise_seeds.execution_seed` replaced by
a constant, every mechanism's output becomes a deterministic function of that
constant (the same seed gives the same noise, another seed other noise). So
no noise comes from anywhere else, in particular not from TF's process-wide
generator (32 bits of entropy) or the clock. Unpatched, the seeds differ on
every execution, and DP-FTRL's tree seed is not the clock. Tiny executions
on the session's TFF worker; the noise std and its freshness across clients
and rounds are tested per mechanism (tests/mechanisms/test_dp_aggregator.py,
test_local_dp.py, test_example_dp.py, test_dp_ftrl.py).
"""

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import central_dp
from tff_dp.algorithms import example_dp
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.mechanisms import dp_queries
from tff_dp.mechanisms import local_dp
from tff_dp.mechanisms import noise_seeds
from tff_dp.privacy import run_secrets

pytestmark = pytest.mark.tff

_DIM = 1000
_VECTOR = tff.TensorType(np.float32, [_DIM])


def _dp_aggregator(mechanism):
  return learning_process.build_dp_aggregator(
      central_dp.settings(mechanism,
                          noise_multiplier=1.0,
                          clients_per_round=20,
                          clip=1.0,
                          initial_clip=1.0))


def _local(mechanism, **noise):
  return local_dp.build_local_dp_factory(mechanism=mechanism,
                                         clip=1.0,
                                         clients_per_round=2,
                                         **noise)


def _tree():
  return dp_queries.build_tree_aggregator(noise_multiplier=1.0,
                                          clip=1.0,
                                          clients_per_round=2,
                                          rounds_per_epoch=4,
                                          record_specs=tf.TensorSpec(
                                              [_DIM], tf.float32))


def _aggregate(factory):
  """One round over two zero updates: (result, new state), flattened."""
  process = factory.create(_VECTOR)
  zeros = np.zeros(_DIM, np.float32)
  output = process.next(process.initialize(), [zeros, zeros])
  leaves = [
      np.asarray(x) for x in tf.nest.flatten((output.result, output.state))
  ]
  # The state also holds the DP event's description (strings).
  return np.concatenate([
      np.ravel(x).astype(np.float64)
      for x in leaves
      if np.issubdtype(x.dtype, np.number)
  ])


def _example_dp():
  """One client's model delta after 3 DP-SGD steps (noise and sampling)."""
  process = example_dp.build_example_dp_client_work(
      model_fn=models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                                     input_dim=3,
                                     num_classes=3,
                                     hidden_units=1,
                                     seed=7),
      loss_fn=models.loss_fn,
      learning_rate=0.5,
      noise_multiplier=1.0,
      clip=1.0,
      expected_batch_size=2,
      local_steps=3)
  weights = tff.learning.models.ModelWeights(
      [np.ones((3, 3), np.float32),
       np.zeros(3, np.float32)], [])
  x = np.arange(30, dtype=np.float32).reshape(10, 3) / 30
  data = tf.data.Dataset.from_tensor_slices(
      (x, np.arange(10, dtype=np.int32) % 3)).batch(5)
  output = process.next(process.initialize(), [weights], [data])
  update = output.result[0].update
  return np.concatenate([np.ravel(np.asarray(t)) for t in update])


_MECHANISMS = {
    'gaussian_fixed':
        lambda: _aggregate(_dp_aggregator(DpMechanism.GAUSSIAN_FIXED)),
    # Both queries: the value noise (result) and the count noise (new clip).
    'gaussian_adaptive':
        lambda: _aggregate(_dp_aggregator(DpMechanism.GAUSSIAN_ADAPTIVE)),
    'local_laplace':
        lambda: _aggregate(
            _local(local_dp.LocalMechanism.LAPLACE, epsilon_local=1.0)),
    'local_gaussian':
        lambda: _aggregate(
            _local(local_dp.LocalMechanism.GAUSSIAN, noise_multiplier=1.0)),
    'tree_aggregation':
        lambda: _aggregate(_tree()),
    'example_dp':
        _example_dp,
}


@pytest.mark.parametrize('name', sorted(_MECHANISMS))
def test_all_noise_is_a_function_of_the_secret_seed(name, tff_runtime,
                                                    monkeypatch):
  del tff_runtime

  def with_seed(seed):
    monkeypatch.setattr(noise_seeds, 'execution_seed',
                        lambda key: tf.constant(seed, tf.int64))
    return _MECHANISMS[name]()

  first = with_seed([11, 22])
  again = with_seed([11, 22])
  other = with_seed([33, 44])
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_execution_seed_keeps_the_key_and_changes_every_execution():
  key = run_secrets.new_noise_key()
  seeds = [noise_seeds.execution_seed(key).numpy() for _ in range(3)]
  assert all(int(s[0]) == key[0] for s in seeds)
  nonces = {int(s[1]) ^ key[1] for s in seeds}
  assert len(nonces) == 3


def test_noise_keys_are_128_bits_from_the_os():
  keys = {run_secrets.new_noise_key() for _ in range(64)}
  assert len(keys) == 64
  for key in keys:
    assert all(-2**63 <= half < 2**63 for half in key)
  # Both halves use their high bits: not a 32- or 64-bit seed padded out.
  assert max(abs(k[1]) for k in keys) > 2**60


def test_tree_noise_seed_is_not_the_clock(tff_runtime):
  del tff_runtime
  process = _tree().create(_VECTOR)
  now_us = time.time() * 1e6
  seeds = []
  for _ in range(2):  # Two trees started within the same second.
    state = process.initialize()
    # NormalizedQuery -> RestartQuery -> TreeResidualSumQuery's generator.
    tree = state.query_state.numerator_state.inner_query_state
    seeds.append(np.asarray(tree.tree_state.value_generator_state.seeds))
  assert not np.array_equal(seeds[0], seeds[1])
  # TF Privacy's default seed is [floor(time * 1e6), ...]; ours is random.
  assert all(abs(float(s[0]) - now_us) > 1e13 for s in seeds)
