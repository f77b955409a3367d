"""Example-level DP-SGD on the grouped path against `example_dp`'s process.

Each simulated client runs the reference's Poisson-sampled DP-SGD
(`tff_dp.algorithms.grouped_example_dp`). The sampling is secret, so the
zero-noise equivalence uses an expected batch size above every client's
size (q = 1: every example in every step), one local epoch of data (the
reference's dataset; the grouped client uses its distinct examples), with
the per-example clip reached, alone and under central DP. Noise: one
DP-SGD step at q = 1 is (lr / B) (clipped sum + noise), so the noised step
minus the zero-noise step on the same clients is the clients' summed noise:
std (lr / B) sigma C sqrt(3) / n for 3 clients, two of them in one group
(a shared seed would show as sqrt(5/3) too large). Flake rate ~2e-9 per
check (`tests.helpers.grouped.assert_std`).
"""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import example_dp
from tff_dp.algorithms import grouped_example_dp
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.data.labels import LabelKind

pytestmark = pytest.mark.tff

# Above every client's size (at most 7): q = 1.
_BATCH = 8


def _settings(*, noise_multiplier=0.0, clip=0.1, local_steps=3, lr=g.CLIENT_LR):
  return example_dp.DpSgdSettings(learning_rate=lr,
                                  noise_multiplier=noise_multiplier,
                                  clip=clip,
                                  expected_batch_size=_BATCH,
                                  local_steps=local_steps)


def _reference(settings, central=None):
  return example_dp.build_example_dp_fed_avg(
      model_fn=g.model_fn(),
      loss_fn=models.loss_fn,
      client_learning_rate=settings.learning_rate,
      server_optimizer=g.server_optimizer(),
      noise_multiplier=settings.noise_multiplier,
      clip=settings.clip,
      expected_batch_size=settings.expected_batch_size,
      local_steps=settings.local_steps,
      model_aggregator=central,
      clients_per_round=None if central else 7,
      metrics_aggregator=learning_process.no_client_metrics)


# ~11 s each; the central factory under client noise is also in
# test_grouped_local_dp.py's default tier.
@pytest.mark.parametrize(
    'central_clip', [None, pytest.param(0.05, marks=pytest.mark.slow)],
    ids=['example_dp_alone', 'with_central_dp'])
def test_zero_noise_grouped_example_dp_equals_reference(tff_runtime,
                                                        central_clip):
  del tff_runtime
  xs, ys = g.population()
  settings = _settings()
  dp = (None if central_clip is None else central_dp.settings(
      clients_per_round=7, clip=central_clip))
  reference = _reference(
      settings,
      None if dp is None else learning_process.sanitizing_dp_aggregator(dp))
  grouped = g.build_grouped(
      None if dp is None else learning_process.build_dp_aggregator(dp),
      example_dp_settings=settings,
      clients_per_round=None if dp else 7)
  _, outputs = g.assert_equivalent(reference,
                                   grouped,
                                   xs,
                                   ys,
                                   reference_epochs=1)
  assert not outputs[0].metrics['client_work']['train']


@functools.lru_cache(maxsize=None)
def _one_step_process(noise_multiplier, n):
  settings = _settings(noise_multiplier=noise_multiplier,
                       clip=0.5,
                       local_steps=1,
                       lr=1.0)
  return g.build_grouped(None,
                         input_dim=784,
                         hidden=128,
                         server_momentum=0.0,
                         example_dp_settings=settings,
                         clients_per_round=n)


def test_grouped_example_dp_noise_is_independent_per_client(tff_runtime):
  del tff_runtime
  sigma, n = 1.0, 40
  noised = g.zero_update_steps(_one_step_process(sigma, n),
                               input_dim=784,
                               rounds=1)[0]
  exact = g.zero_update_steps(_one_step_process(0.0, n),
                              input_dim=784,
                              rounds=1)[0]
  g.assert_std(noised - exact, (1.0 / _BATCH) * sigma * 0.5 * math.sqrt(3) / n)


# --- tff_dp's CNN (convolutions, reshapes, dropout). -------------------------

_IMAGE = (6, 6, 1)  # The smallest image tff_dp's CNN takes.
_PIXELS = 36


def _cnn_fn(*, dropout=False):
  """tff_dp's CNN on 6x6 images, or the same network without its dropout.

  Without dropout the full model is built first and its dropout layers
  dropped: under TFF's graph tracing the first build leaves Keras' legacy
  graph network (with dropout) in the traced function, as the real model
  does, which is what broke pfor on the worker.
  """

  def keras_model_fn():
    model = models.build_keras_model(ModelKind.CNN,
                                     input_dim=_PIXELS,
                                     num_classes=g.C,
                                     hidden_units=g.HIDDEN,
                                     seed=g.SEED,
                                     image_shape=_IMAGE)
    if dropout:
      return model
    return tf.keras.Sequential([tf.keras.Input((_PIXELS,))] + [
        layer for layer in model.layers
        if not isinstance(layer, tf.keras.layers.Dropout)
    ])

  return keras_model_fn


def _grouped_cnn(settings, *, dropout=False):
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=_cnn_fn(dropout=dropout),
      input_dim=_PIXELS,
      num_classes=g.C,
      dp_factory=None,
      client_learning_rate=settings.learning_rate,
      client_momentum=g.CLIENT_MOMENTUM,
      server_optimizer=g.server_optimizer(),
      batch_size=g.BATCH_SIZE,
      # As g.build_grouped and g.groups: the DP-SGD reads the first epoch.
      epochs=g.EPOCHS,
      max_client_size=g.MAX_SIZE,
      example_dp_settings=settings,
      clients_per_round=7)


def _cnn_model_fn():
  return tff.learning.models.from_keras_model(
      _cnn_fn()(),
      loss=models.loss_fn(),
      input_spec=models.input_spec(_PIXELS),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])


def test_zero_noise_grouped_example_dp_cnn_equals_reference(tff_runtime):
  """The CNN's per-example gradients run on the worker and are exact.

  Until 2026-12-05 this round failed on the worker ("You must feed a value
  for placeholder tensor ... input_1/pfor/Placeholder").
  """
  del tff_runtime
  xs, ys = g.population(input_dim=_PIXELS)
  settings = _settings(local_steps=2)
  reference = example_dp.build_example_dp_fed_avg(
      model_fn=_cnn_model_fn,
      loss_fn=models.loss_fn,
      client_learning_rate=settings.learning_rate,
      server_optimizer=g.server_optimizer(),
      noise_multiplier=0.0,
      clip=settings.clip,
      expected_batch_size=settings.expected_batch_size,
      local_steps=settings.local_steps,
      clients_per_round=7,
      metrics_aggregator=learning_process.no_client_metrics)
  g.assert_equivalent(reference,
                      _grouped_cnn(settings),
                      xs,
                      ys,
                      cohorts=g.COHORTS[:1],
                      reference_epochs=1)


def _functional_cnn(**kwargs):
  return grouped_model.functional_model(_cnn_fn(**kwargs),
                                        input_dim=_PIXELS,
                                        num_classes=g.C,
                                        label_kind=LabelKind.SINGLE)


@pytest.mark.parametrize('dropout', [False, True])
def test_cnn_per_example_gradients_vectorize(dropout):
  """pfor converts the CNN's per-example gradients into functions that run
  no placeholder (the legacy graph network left one; it now falls back)."""
  assert grouped_example_dp.vectorizes(_functional_cnn(dropout=dropout))


def test_a_model_whose_gradients_run_a_placeholder_is_looped():
  mlp = grouped_model.functional_model(g.keras_model_fn(),
                                       input_dim=g.D,
                                       num_classes=g.C,
                                       label_kind=LabelKind.SINGLE)
  assert grouped_example_dp.vectorizes(mlp)

  @tf.function
  def predict_needing_a_feed(weights, x, training=True):
    # An input no caller feeds, run through a control dependency.
    unfed = tf.compat.v1.placeholder(tf.float32, [])
    with tf.control_dependencies([unfed]):
      return tf.identity(mlp.predict_on_batch(weights, x, training=training))

  broken = tff.learning.models.FunctionalModel(
      initial_weights=mlp.initial_weights,
      predict_on_batch_fn=predict_needing_a_feed,
      loss_fn=mlp.loss,
      input_spec=mlp.input_spec)
  assert not grouped_example_dp.vectorizes(broken)


def test_looped_per_example_gradients_equal_vectorized():
  """The loop (fallback) and pfor give the same gradients, example by
  example (the CNN without dropout: both deterministic)."""
  model = _functional_cnn()
  trainable, frozen = (
      tuple(tf.constant(t) for t in w) for w in model.initial_weights)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(4, _PIXELS)).astype(np.float32))
  y = tf.constant([0, 2, 1, 2], tf.int32)
  grads = [
      tf.function(grouped_example_dp._per_example_gradients,
                  autograph=False)(model,
                                   trainable,
                                   frozen,
                                   x,
                                   y,
                                   vectorized=vectorized)
      for vectorized in (True, False)
  ]
  for looped, vectorized in zip(grads[1], grads[0]):
    assert looped.shape[0] == 4
    np.testing.assert_allclose(looped, vectorized, rtol=1e-5, atol=1e-7)
