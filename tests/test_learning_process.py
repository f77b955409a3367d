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

from tff_dp import learning_process
from tff_dp import models
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer

pytestmark = pytest.mark.tff

_D, _C, _LR = 3, 3, 0.5


def _model_fn():
  return models.build_model_fn(ModelKind.LOGISTIC_REGRESSION, input_dim=_D,
                               num_classes=_C, hidden_units=1, seed=7)


def _dp(mechanism=DpMechanism.GAUSSIAN_FIXED, noise_multiplier=0.0,
        clients_per_round=3, clip=1e6):
  return learning_process.DpSettings(
      mechanism=mechanism, noise_multiplier=noise_multiplier,
      clients_per_round=clients_per_round, clip=clip, initial_clip=0.1,
      target_unclipped_quantile=0.5, clip_learning_rate=0.2)


def _process(dp):
  return learning_process.build_learning_process(
      model_fn=_model_fn(), dp=dp, client_learning_rate=_LR,
      client_momentum=0.0,
      server_optimizer=learning_process.build_server_optimizer(
          ServerOptimizer.SGD, learning_rate=1.0, momentum=0.0))


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


def _one_round(process, data):
  state = process.initialize()
  kernel, bias = [np.array(w) for w in
                  process.get_model_weights(state).trainable]
  datasets = [tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
              for x, y in data]
  state = process.next(state, datasets).state
  new_kernel, new_bias = [np.array(w) for w in
                          process.get_model_weights(state).trainable]
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
  np.testing.assert_allclose(
      new_kernel, kernel + (deltas[0][0] + deltas[1][0]) / 3, atol=1e-6)
  np.testing.assert_allclose(
      new_bias, bias + (deltas[0][1] + deltas[1][1]) / 3, atol=1e-6)


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
  (kernel, bias), (new_kernel, new_bias), deltas = _one_round(
      _process(None), data)
  sizes = [len(y) for _, y in data]
  weights = np.array(sizes, np.float64) / sum(sizes)
  np.testing.assert_allclose(
      new_kernel, kernel + sum(w * d[0] for w, d in zip(weights, deltas)),
      atol=1e-6)
  np.testing.assert_allclose(
      new_bias, bias + sum(w * d[1] for w, d in zip(weights, deltas)),
      atol=1e-6)


def test_adaptive_process_builds_and_releases_a_clip(tff_runtime):
  del tff_runtime
  process = _process(_dp(DpMechanism.GAUSSIAN_ADAPTIVE, noise_multiplier=0.5,
                         clients_per_round=10))
  datasets = [tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
              for x, y in _client_data()]
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
