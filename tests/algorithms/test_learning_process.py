"""The learning process: construction, and one round against numpy.

With zero noise and a clip no update reaches, DP-FedAvg is plain unweighted
FedAvg divided by the FIXED clients_per_round; the non-private twin is FedAvg
weighted by |D_k|. Both are checked exactly against the formula computed in
numpy for multinomial logistic regression (one local SGD step per client).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import central_dp
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer

pytestmark = pytest.mark.tff

_D, _C, _LR = 3, 3, 0.5


def _model_fn():
  return models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                               input_dim=_D,
                               num_classes=_C,
                               hidden_units=1,
                               seed=7)


def _dp(mechanism=DpMechanism.GAUSSIAN_FIXED,
        noise_multiplier=0.0,
        clients_per_round=3,
        clip=1e6):
  return central_dp.settings(mechanism,
                             noise_multiplier=noise_multiplier,
                             clients_per_round=clients_per_round,
                             clip=clip)


def _process(dp,
             *,
             algorithm=Algorithm.FEDAVG,
             weighting=None,
             weight_cap=None,
             server_lr=1.0):
  if weighting is None:
    weighting = (ClientWeighting.NUM_EXAMPLES
                 if dp is None else ClientWeighting.UNIFORM)
  return learning_process.build_learning_process(
      model_fn=_model_fn(),
      algorithm=algorithm,
      model_aggregator=learning_process.build_model_aggregator(
          dp=dp, client_weighting=weighting, weight_cap=weight_cap),
      client_learning_rate=_LR,
      client_momentum=0.0,
      server_optimizer=learning_process.build_server_optimizer(
          ServerOptimizer.SGD, learning_rate=server_lr, momentum=0.0))


def _client_data():
  rng = np.random.default_rng(0)
  x1 = rng.normal(size=(2, _D)).astype(np.float32)
  y1 = np.array([0, 2], np.int32)
  x2 = rng.normal(size=(4, _D)).astype(np.float32)
  y2 = np.array([1, 1, 0, 2], np.int32)
  return [(x1, y1), (x2, y2)]


def _numpy_delta(kernel, bias, x, y):
  """One SGD step on the mean softmax cross-entropy of the whole batch."""
  logits = x @ kernel + bias
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  p[np.arange(len(y)), y] -= 1.0
  grad_kernel = x.T @ p / len(y)
  grad_bias = p.mean(axis=0)
  return -_LR * grad_kernel, -_LR * grad_bias


def _gradient(kernel, bias, x, y):
  kernel_delta, bias_delta = _numpy_delta(kernel, bias, x, y)
  return -kernel_delta / _LR, -bias_delta / _LR


def _one_round(process, data):
  state = process.initialize()
  kernel, bias = [
      np.array(w) for w in process.get_model_weights(state).trainable
  ]
  datasets = [
      tf.data.Dataset.from_tensor_slices((x, y)).batch(16) for x, y in data
  ]
  state = process.next(state, datasets).state
  new_kernel, new_bias = [
      np.array(w) for w in process.get_model_weights(state).trainable
  ]
  deltas = [_numpy_delta(kernel, bias, x, y) for x, y in data]
  return (kernel, bias), (new_kernel, new_bias), deltas


def test_dp_process_types_are_unweighted_fedavg(tff_runtime):
  del tff_runtime
  process = _process(_dp())
  assert isinstance(process, tff.learning.templates.LearningProcess)
  client_data_type = process.next.type_signature.parameter[1]
  assert client_data_type.placement == tff.CLIENTS
  state_type = process.next.type_signature.result.state
  assert 'query_state' in repr(state_type.member.aggregator)


def test_dp_round_with_zero_noise_divides_by_clients_per_round(tff_runtime):
  del tff_runtime
  data = _client_data()
  (kernel, bias), (new_kernel, new_bias), deltas = _one_round(
      _process(_dp(clients_per_round=3)), data)
  # Two clients reported, the denominator is the planned 3.
  np.testing.assert_allclose(new_kernel,
                             kernel + (deltas[0][0] + deltas[1][0]) / 3,
                             atol=1e-6)
  np.testing.assert_allclose(new_bias,
                             bias + (deltas[0][1] + deltas[1][1]) / 3,
                             atol=1e-6)


def test_dp_round_clips_each_update_to_the_global_norm(tff_runtime):
  del tff_runtime
  data = _client_data()
  clip = 1e-3
  (kernel, _), (new_kernel, _), deltas = _one_round(
      _process(_dp(clients_per_round=2, clip=clip)), data)
  expected = np.zeros_like(kernel)
  for delta_kernel, delta_bias in deltas:
    norm = np.sqrt(np.sum(delta_kernel**2) + np.sum(delta_bias**2))
    expected += delta_kernel * min(1.0, clip / norm)
  np.testing.assert_allclose(new_kernel, kernel + expected / 2, atol=1e-7)


def test_nonprivate_round_weights_clients_by_examples(tff_runtime):
  del tff_runtime
  data = _client_data()
  (kernel, bias), (new_kernel,
                   new_bias), deltas = _one_round(_process(None), data)
  sizes = [len(y) for _, y in data]
  weights = np.array(sizes, np.float64) / sum(sizes)
  np.testing.assert_allclose(new_kernel,
                             kernel +
                             sum(w * d[0] for w, d in zip(weights, deltas)),
                             atol=1e-6)
  np.testing.assert_allclose(new_bias,
                             bias +
                             sum(w * d[1] for w, d in zip(weights, deltas)),
                             atol=1e-6)


def test_adaptive_process_builds_and_releases_a_clip(tff_runtime):
  del tff_runtime
  process = _process(
      _dp(DpMechanism.GAUSSIAN_ADAPTIVE,
          noise_multiplier=0.5,
          clients_per_round=10))
  datasets = [
      tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
      for x, y in _client_data()
  ]
  output = process.next(process.initialize(), datasets)
  clip = float(output.metrics['aggregator']['dp_query_metrics']['clip'])
  assert np.isfinite(clip) and clip > 0


def test_empty_cohort_round_runs(tff_runtime):
  # Poisson sampling can draw nobody; the round must still run (the noise is
  # released and charged) rather than be skipped or crash.
  del tff_runtime
  process = _process(_dp(noise_multiplier=1.0, clip=1.0))
  state = process.initialize()
  before = np.array(process.get_model_weights(state).trainable[0])
  state = process.next(state, []).state
  after = np.array(process.get_model_weights(state).trainable[0])
  assert not np.array_equal(before, after)  # Noise moved the model.


def test_fedsgd_round_is_the_founding_documents_formula(tff_runtime):
  # w <- w - eta * sum_k |D_k| / |D| * grad L(w; D_k), one full-batch gradient
  # per client (batches of 2 here: TFF sums per-batch gradients per example).
  del tff_runtime
  data = _client_data()
  eta = 0.3
  process = _process(None, algorithm=Algorithm.FEDSGD, server_lr=eta)
  state = process.initialize()
  kernel, bias = [
      np.array(w) for w in process.get_model_weights(state).trainable
  ]
  datasets = [
      tf.data.Dataset.from_tensor_slices((x, y)).batch(2) for x, y in data
  ]
  state = process.next(state, datasets).state
  new_kernel, new_bias = [
      np.array(w) for w in process.get_model_weights(state).trainable
  ]
  total = sum(len(y) for _, y in data)
  grads = [_gradient(kernel, bias, x, y) for x, y in data]
  expected_kernel = kernel - eta * sum(
      len(y) / total * g[0] for (_, y), g in zip(data, grads))
  expected_bias = bias - eta * sum(
      len(y) / total * g[1] for (_, y), g in zip(data, grads))
  np.testing.assert_allclose(new_kernel, expected_kernel, atol=1e-6)
  np.testing.assert_allclose(new_bias, expected_bias, atol=1e-6)


def test_dp_fedsgd_is_unweighted_over_clients_per_round(tff_runtime):
  del tff_runtime
  data = _client_data()
  eta = 0.3
  process = _process(_dp(clients_per_round=4),
                     algorithm=Algorithm.FEDSGD,
                     server_lr=eta)
  state = process.initialize()
  kernel, _ = [np.array(w) for w in process.get_model_weights(state).trainable]
  datasets = [
      tf.data.Dataset.from_tensor_slices((x, y)).batch(16) for x, y in data
  ]
  state = process.next(state, datasets).state
  new_kernel = np.array(process.get_model_weights(state).trainable[0])
  grads = [
      _gradient(
          kernel,
          np.array(
              process.get_model_weights(process.initialize()).trainable[1]), x,
          y)[0] for x, y in data
  ]
  np.testing.assert_allclose(new_kernel,
                             kernel - eta * sum(grads) / 4,
                             atol=1e-6)


def test_capped_weights_scale_updates_by_min_n_over_cap(tff_runtime):
  # Client sizes 2 and 4 with n_cap = 3: weights 2/3 and 1; the sum is
  # divided by the fixed clients_per_round (McMahan et al. 2018).
  del tff_runtime
  data = _client_data()
  (kernel, bias), (new_kernel, new_bias), deltas = _one_round(
      _process(_dp(clients_per_round=2),
               weighting=ClientWeighting.CAPPED,
               weight_cap=3.0), data)
  weights = [2 / 3, 1.0]
  np.testing.assert_allclose(new_kernel,
                             kernel +
                             sum(w * d[0] for w, d in zip(weights, deltas)) / 2,
                             atol=1e-6)
  np.testing.assert_allclose(new_bias,
                             bias +
                             sum(w * d[1] for w, d in zip(weights, deltas)) / 2,
                             atol=1e-6)


@pytest.mark.slow  # ~28 s; the slow configs train FedProx, Adam and Yogi.
def test_fedprox_and_adaptive_server_optimizers_build(tff_runtime):
  del tff_runtime
  for kind in ServerOptimizer:
    process = learning_process.build_learning_process(
        model_fn=_model_fn(),
        algorithm=Algorithm.FEDPROX,
        model_aggregator=learning_process.build_model_aggregator(
            dp=_dp(), client_weighting=ClientWeighting.UNIFORM),
        proximal_strength=0.1,
        client_learning_rate=_LR,
        client_momentum=0.0,
        server_optimizer=learning_process.build_server_optimizer(
            kind, learning_rate=0.1, momentum=0.9))
    datasets = [
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        for x, y in _client_data()
    ]
    state = process.next(process.initialize(), datasets).state
    weights = process.get_model_weights(state).trainable
    assert all(np.all(np.isfinite(w)) for w in weights)
