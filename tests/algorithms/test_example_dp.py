"""Example-level DP-SGD clients: exact checks against numpy, noise statistics.

Exact checks (zero noise) use multinomial logistic regression, whose
per-example gradients are closed-form: with p = softmax(x K + b) and e_y the
one-hot label, d loss / dK = outer(x, p - e_y) and d loss / db = p - e_y.

Statistical checks use 6 standard errors (two-sided flake rate ~2e-9 each,
< 1e-7 for the whole file). The sample std of d i.i.d. Gaussian draws has
relative SE 1/sqrt(2d); their mean has SE std/sqrt(d); the sample correlation
of two independent samples has SE 1/sqrt(d).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import example_dp
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.privacy import example_accounting

pytestmark = pytest.mark.tff

_D, _C, _LR = 3, 3, 0.5
_SIX_SE = 6.0
# The delta is a difference of float32 weights of size ~1: a few ulps.
_DELTA_ATOL = 1e-6


def _lr_model_fn():
  return models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                               input_dim=_D,
                               num_classes=_C,
                               hidden_units=1,
                               seed=7)


def _client_work(model_fn=None, **kwargs):
  params = dict(model_fn=model_fn or _lr_model_fn(),
                loss_fn=models.loss_fn,
                learning_rate=_LR,
                noise_multiplier=0.0,
                clip=1e6,
                expected_batch_size=4,
                local_steps=1)
  params.update(kwargs)
  return example_dp.build_example_dp_client_work(**params)


def _dataset(x, y):
  # Batched by 2 so that the client has to gather its batches back together.
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(2)


def _data(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n, _D)).astype(np.float32),
           rng.integers(0, _C, size=n).astype(np.int32)) for n in sizes]


def _weights(seed=1):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(_D, _C)).astype(np.float32),
          rng.normal(size=(_C,)).astype(np.float32))


def _run_clients(process, weights, data):
  model_weights = tff.learning.models.ModelWeights(list(weights), [])
  output = process.next(process.initialize(), [model_weights] * len(data),
                        [_dataset(x, y) for x, y in data])
  return output


def _per_example_grads(kernel, bias, x, y):
  logits = x.astype(np.float64) @ kernel + bias
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  p[np.arange(len(y)), y] -= 1.0
  return np.einsum('nd,nc->ndc', x, p), p


# --- Exact checks with zero noise. -------------------------------------------


def test_rate_one_and_no_clipping_is_plain_sgd_over_the_expected_batch(
    tff_runtime):
  del tff_runtime
  steps, batch = 2, 4
  # n = B: q = 1 and each step is full-batch GD on the mean loss. n = 3 < B:
  # q is capped at 1 and the sum is still divided by B = 4, not by 3. n = 0:
  # empty batches, a zero update.
  data = _data([batch, 3, 0])
  process = _client_work(local_steps=steps, expected_batch_size=batch)
  kernel, bias = _weights()
  results = _run_clients(process, (kernel, bias), data).result
  for (x, y), result in zip(data, results):
    k, b = kernel.astype(np.float64), bias.astype(np.float64)
    for _ in range(steps):
      gk, gb = _per_example_grads(k, b, x, y)
      k, b = k - _LR * gk.sum(0) / batch, b - _LR * gb.sum(0) / batch
    np.testing.assert_allclose(result.update[0], kernel - k, atol=_DELTA_ATOL)
    np.testing.assert_allclose(result.update[1], bias - b, atol=_DELTA_ATOL)
    assert result.update_weight == 1.0


def test_tiny_clip_sums_globally_clipped_gradients(tff_runtime):
  del tff_runtime
  clip, batch = 0.05, 5
  data = _data([batch])
  kernel, bias = _weights()
  (result,) = _run_clients(_client_work(clip=clip, expected_batch_size=batch),
                           (kernel, bias), data).result
  gk, gb = _per_example_grads(kernel, bias, *data[0])
  norms = np.sqrt((gk**2).sum(axis=(1, 2)) + (gb**2).sum(axis=1))
  assert np.all(norms > 2 * clip)  # Every example is clipped.
  scale = clip / norms
  expected_kernel = _LR * (gk * scale[:, None, None]).sum(0) / batch
  expected_bias = _LR * (gb * scale[:, None]).sum(0) / batch
  np.testing.assert_allclose(result.update[0],
                             expected_kernel,
                             atol=_DELTA_ATOL)
  np.testing.assert_allclose(result.update[1], expected_bias, atol=_DELTA_ATOL)
  # A per-layer clip (each tensor to C on its own) gives something else.
  per_layer = _LR * (gk * (clip / np.sqrt(
      (gk**2).sum(axis=(1, 2))))[:, None, None]).sum(0) / batch
  assert np.abs(result.update[0] - per_layer).max() > 100 * _DELTA_ATOL


def _fed_avg(**kwargs):
  params = dict(model_fn=_lr_model_fn(),
                loss_fn=models.loss_fn,
                client_learning_rate=_LR,
                server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
                noise_multiplier=0.0,
                clip=1e6,
                expected_batch_size=4,
                local_steps=1)
  params.update(kwargs)
  return example_dp.build_example_dp_fed_avg(**params)


@pytest.mark.parametrize('aggregator', ['default', 'user_level_dp'])
def test_round_divides_by_the_fixed_clients_per_round(tff_runtime, aggregator):
  del tff_runtime
  if aggregator == 'default':
    process = _fed_avg(clients_per_round=3)
  else:
    # User-level DP on top: TF Privacy's factory (zero noise, huge clip).
    process = _fed_avg(
        model_aggregator=tff.aggregators.DifferentiallyPrivateFactory.
        gaussian_fixed(noise_multiplier=0.0, clients_per_round=3, clip=1e6))
  data = _data([4, 4])
  state = process.initialize()
  kernel, bias = (
      np.array(w) for w in process.get_model_weights(state).trainable)
  state = process.next(state, [_dataset(x, y) for x, y in data]).state
  new_kernel, new_bias = process.get_model_weights(state).trainable
  step_kernel, step_bias = np.zeros_like(kernel), np.zeros_like(bias)
  for x, y in data:
    gk, gb = _per_example_grads(kernel, bias, x, y)
    step_kernel += _LR * gk.sum(0) / 4
    step_bias += _LR * gb.sum(0) / 4
  # Two clients reported; the denominator is the planned 3.
  np.testing.assert_allclose(new_kernel,
                             kernel - step_kernel / 3,
                             atol=_DELTA_ATOL)
  np.testing.assert_allclose(new_bias, bias - step_bias / 3, atol=_DELTA_ATOL)


def test_builder_argument_checks():
  with pytest.raises(ValueError, match='clients_per_round'):
    _fed_avg()
  with pytest.raises(ValueError, match='own denominator'):
    _fed_avg(clients_per_round=3,
             model_aggregator=tff.aggregators.UnweightedMeanFactory())
  for bad in (dict(clip=0.0), dict(noise_multiplier=float('nan')),
              dict(expected_batch_size=0), dict(local_steps=0)):
    with pytest.raises(ValueError):
      _fed_avg(clients_per_round=3, **bad)


# --- Building blocks, eagerly. -----------------------------------------------


def test_clipped_sum_zeroes_non_finite_examples_and_handles_empty_batches():
  kernel = tf.constant([[[3.0]], [[np.inf]], [[0.0]], [[np.nan]]])
  bias = tf.constant([[4.0], [1.0], [0.0], [1.0]])
  total_kernel, total_bias = example_dp.clipped_gradient_sum([kernel, bias],
                                                             clip=1.0)
  # Only the first example counts, scaled from norm 5 to 1; the zero gradient
  # stays zero (no 0/0).
  np.testing.assert_allclose(total_kernel, [[0.6]], rtol=1e-6)
  np.testing.assert_allclose(total_bias, [0.8], rtol=1e-6)
  empty = example_dp.clipped_gradient_sum(
      [tf.zeros([0, 2, 3]), tf.zeros([0, 3])], clip=1.0)
  assert [t.shape for t in empty] == [(2, 3), (3,)]
  assert all(np.all(t.numpy() == 0) for t in empty)


@pytest.mark.parametrize('n', [1, 3, 7, 10, 64, 1000, 6400, 60000])
def test_client_sampling_rate_is_the_accounted_one(n):
  client = float(example_dp.sampling_rate(n, 10).numpy())
  assert client == example_accounting.silo_sampling_rate(num_examples=n,
                                                         expected_batch_size=10)
  assert float(example_dp.sampling_rate(0, 10).numpy()) == 1.0


def test_poisson_sampler_sizes_and_inclusion_are_binomial():
  n, q, draws = 50, 0.2, 100_000

  @tf.function
  def sample_many():
    sizes = tf.TensorArray(tf.int32, size=draws)
    counts = tf.zeros([n], tf.int32)
    for i in tf.range(draws):
      indices = example_dp.poisson_sample_indices(
          num_examples=n,
          rate=tf.constant(q, tf.float64),
          seed=tf.stack([tf.constant(1234, tf.int64),
                         tf.cast(i, tf.int64)]))
      sizes = sizes.write(i, tf.size(indices))
      counts += tf.math.bincount(tf.cast(indices, tf.int32),
                                 minlength=n,
                                 maxlength=n)
    return sizes.stack(), counts

  sizes, counts = (t.numpy().astype(np.float64) for t in sample_many())
  mean, var = n * q, n * q * (1 - q)
  # Fourth central moment of Binomial(n, q), for the SE of the variance.
  mu4 = var * (1 + 3 * (n - 2) * q * (1 - q))
  assert abs(sizes.mean() - mean) <= _SIX_SE * np.sqrt(var / draws)
  # Fixed-size batches (variance 0) would fail here.
  assert abs(sizes.var(ddof=1) - var) <= _SIX_SE * np.sqrt(
      (mu4 - var**2) / draws)
  # Every example is included with probability q (50 checks at 6 SE).
  assert np.all(
      np.abs(counts - draws * q) <= _SIX_SE * np.sqrt(draws * q * (1 - q)))


# --- The process's randomness. -----------------------------------------------


def test_batch_sizes_in_the_process_average_the_expected_batch(tff_runtime):
  del tff_runtime
  steps, batch = 100, 10
  sizes = [20, 50, 200, 4]  # q_k = 0.5, 0.2, 0.05, and 1 (capped).
  process = _client_work(noise_multiplier=1.0,
                         clip=1.0,
                         local_steps=steps,
                         expected_batch_size=batch)
  train = _run_clients(process, _weights(), _data(sizes)).measurements['train']
  # num_examples sums the Poisson batch sizes of all clients and steps.
  mean = steps * sum(min(batch, n) for n in sizes)
  var = steps * sum(
      n * min(1, batch / n) * (1 - min(1, batch / n)) for n in sizes)
  assert abs(train['num_examples'] - mean) <= _SIX_SE * np.sqrt(var)


def _zero_gradient_model_fn(input_dim, num_classes):
  """Linear model without bias: on all-zero inputs every gradient is 0."""

  def model_fn():
    keras_model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(input_dim,)),
        tf.keras.layers.Dense(num_classes,
                              use_bias=False,
                              kernel_initializer='zeros')
    ])
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=models.loss_fn(),
        input_spec=models.input_spec(input_dim))

  return model_fn


def test_noise_std_and_freshness_across_clients_steps_and_rounds(tff_runtime):
  del tff_runtime
  input_dim, num_classes = 20_000, 10  # d = 2e5 noise draws per update.
  lr, sigma, clip, batch, steps = 0.5, 1.3, 0.7, 4, 4
  process = _client_work(model_fn=_zero_gradient_model_fn(
      input_dim, num_classes),
                         learning_rate=lr,
                         noise_multiplier=sigma,
                         clip=clip,
                         expected_batch_size=batch,
                         local_steps=steps)
  zeros = np.zeros((8, input_dim), np.float32)
  data = [(zeros, np.zeros(8, np.int32))] * 2  # Two identical clients.
  weights = (np.zeros((input_dim, num_classes), np.float32),)
  updates = []
  for _ in range(2):  # Two rounds.
    for result in _run_clients(process, weights, data).result:
      updates.append(np.asarray(result.update[0], np.float64).ravel())
  d = updates[0].size
  # Per step lr * sigma * C / B; independent steps add up in variance, so a
  # noise repeated across steps would give sqrt(steps) times this.
  expected_std = np.sqrt(steps) * lr * sigma * clip / batch
  for update in updates:
    assert abs(update.std(ddof=1) / expected_std -
               1) <= _SIX_SE / np.sqrt(2 * d)
    assert abs(update.mean()) <= _SIX_SE * expected_std / np.sqrt(d)
  # Client 1 vs 2 in a round, and each client across rounds: independent.
  for i in range(len(updates)):
    for j in range(i):
      corr = np.corrcoef(updates[i], updates[j])[0, 1]
      assert abs(corr) <= _SIX_SE / np.sqrt(d), (i, j, corr)
