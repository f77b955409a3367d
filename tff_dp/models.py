"""Keras models and their TFF wrappers.

The MLP is the founding document's 784-128-10 network (one hidden ReLU layer),
with the input size taken from the data; multinomial logistic regression is the
convex baseline. Both output logits.
"""

from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.config import ModelKind


def build_keras_model(kind: ModelKind, *, input_dim: int, num_classes: int,
                      hidden_units: int, seed: int,
                      hidden_layers: int = 1) -> tf.keras.Model:
  """Returns an uncompiled Keras model producing logits.

  Args:
    kind: Which architecture.
    input_dim: Number of input features.
    num_classes: Number of output classes.
    hidden_units: Width of each of the MLP's hidden layers (ignored for
      logistic regression).
    seed: Seed of the weight initializers, so that a run's initial model is
      reproducible (TFF runs the initializers inside its own computation).
    hidden_layers: Number of hidden layers of the MLP (the founding document's
      has 1; TFF's DP tutorial uses 2 x 200).
  """
  layers = [tf.keras.layers.InputLayer(input_shape=(input_dim,))]
  if kind is ModelKind.MLP:
    for i in range(hidden_layers):
      layers.append(
          tf.keras.layers.Dense(
              hidden_units,
              activation='relu',
              kernel_initializer=tf.keras.initializers.GlorotUniform(
                  seed=seed + 2 * i)))
  elif kind is not ModelKind.LOGISTIC_REGRESSION:
    raise ValueError(f'unknown model kind {kind!r}')
  layers.append(
      tf.keras.layers.Dense(
          num_classes,
          kernel_initializer=tf.keras.initializers.GlorotUniform(
              seed=seed + 1)))
  return tf.keras.Sequential(layers)


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def input_spec(input_dim: int) -> tuple[tf.TensorSpec, tf.TensorSpec]:
  """Element spec of a batched client dataset: (features, labels)."""
  return (tf.TensorSpec(shape=[None, input_dim], dtype=tf.float32),
          tf.TensorSpec(shape=[None], dtype=tf.int32))


def build_model_fn(kind: ModelKind, *, input_dim: int, num_classes: int,
                   hidden_units: int, seed: int, hidden_layers: int = 1
                   ) -> Callable[[], tff.learning.models.VariableModel]:
  """Returns the no-argument model constructor TFF's learning algorithms take."""

  def model_fn() -> tff.learning.models.VariableModel:
    keras_model = build_keras_model(
        kind, input_dim=input_dim, num_classes=num_classes,
        hidden_units=hidden_units, seed=seed, hidden_layers=hidden_layers)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=loss_fn(),
        input_spec=input_spec(input_dim),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  return model_fn
