"""Keras models and their TFF wrappers.

The MLP is the founding document's 784-128-10 network (one hidden ReLU layer),
with the input size taken from the data; multinomial logistic regression is the
convex baseline. The CNN is the EMNIST CNN of TFF's baselines
(`tff.simulation.baselines.emnist.emnist_models.create_conv_dropout_model`,
the EMNIST model of Reddi et al. 2021, "Adaptive Federated Optimization",
ICLR): conv 32 3x3, conv 64 3x3, 2x2 max-pool, dropout 0.25, dense 128,
dropout 0.5, dense. It reshapes the flat input to the image shape the data
declares, so one definition serves EMNIST (28x28x1), CIFAR-100 (32x32x3; a
small stand-in for the ResNet-18 of Reddi et al.) and the 8x8 digits. All
output logits.

Weight initializers are seeded, so a run's initial model is reproducible.
Dropout masks are not: TFF re-instantiates the computation every round, and a
seeded Keras dropout (an op-level seed of a stateful op) would then restart its
random stream each round and draw the same masks in every round, which is no
longer dropout. A CNN run is therefore not bit-reproducible from --seed (a DP
run never is: its noise is not seeded either).
"""

from typing import Callable, Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.config import ModelKind


# The CNN's two valid 3x3 convolutions and 2x2 pooling need 6x6 pixels.
CNN_MIN_IMAGE_SIDE = 6
_CNN_DENSE_UNITS = 128


def check_image_shape(image_shape: Optional[Sequence[int]], *,
                      input_dim: int) -> tuple[int, int, int]:
  """Returns `image_shape` as (height, width, channels) if the CNN can use it.

  Args:
    image_shape: The data's image shape, None for data that are not images.
    input_dim: Number of input features; must be the product of the shape.

  Raises:
    ValueError: Naming the shape and what is wrong with it.
  """
  if image_shape is None:
    raise ValueError('the cnn model needs image data (a dataset with an image '
                     'shape: digits, emnist_digits, emnist_full, cifar100)')
  shape = tuple(int(n) for n in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f'image shape {shape} is not (height, width, channels)')
  if shape[0] * shape[1] * shape[2] != input_dim:
    raise ValueError(f'image shape {shape} does not hold the data\'s '
                     f'{input_dim} features')
  if min(shape[:2]) < CNN_MIN_IMAGE_SIDE:
    raise ValueError(f'image shape {shape}: the cnn model needs at least '
                     f'{CNN_MIN_IMAGE_SIDE}x{CNN_MIN_IMAGE_SIDE} pixels')
  return shape


def _cnn_layers(image_shape: tuple[int, int, int],
                seed: int) -> list[tf.keras.layers.Layer]:
  """The CNN's layers between the flat input and the logits layer."""

  def glorot(offset):
    # Offsets 0, 2, 4 like the MLP's hidden layers; 1 is the logits layer's.
    return tf.keras.initializers.GlorotUniform(seed=seed + offset)

  return [
      tf.keras.layers.Reshape(image_shape),
      tf.keras.layers.Conv2D(32, 3, activation='relu',
                             kernel_initializer=glorot(0)),
      tf.keras.layers.Conv2D(64, 3, activation='relu',
                             kernel_initializer=glorot(2)),
      tf.keras.layers.MaxPool2D(2),
      # Unseeded on purpose: see the module docstring.
      tf.keras.layers.Dropout(0.25),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(_CNN_DENSE_UNITS, activation='relu',
                            kernel_initializer=glorot(4)),
      tf.keras.layers.Dropout(0.5),
  ]


def build_keras_model(kind: ModelKind, *, input_dim: int, num_classes: int,
                      hidden_units: int, seed: int,
                      hidden_layers: int = 1,
                      image_shape: Optional[Sequence[int]] = None
                      ) -> tf.keras.Model:
  """Returns an uncompiled Keras model producing logits.

  Every model takes flat float32 inputs [batch, input_dim].

  Args:
    kind: Which architecture.
    input_dim: Number of input features.
    num_classes: Number of output classes.
    hidden_units: Width of each of the MLP's hidden layers (ignored for
      logistic regression and the CNN, whose dense layer has 128 units).
    seed: Seed of the weight initializers, so that a run's initial model is
      reproducible (TFF runs the initializers inside its own computation).
    hidden_layers: Number of hidden layers of the MLP (the founding document's
      has 1; TFF's DP tutorial uses 2 x 200).
    image_shape: (height, width, channels) of the data's images, in the order
      the flat features hold them (row-major, channels last); required by the
      CNN, ignored by the others.

  Raises:
    ValueError: For the CNN without a usable `image_shape`.
  """
  layers = [tf.keras.layers.InputLayer(input_shape=(input_dim,))]
  if kind is ModelKind.CNN:
    layers += _cnn_layers(check_image_shape(image_shape, input_dim=input_dim),
                          seed)
  elif kind is ModelKind.MLP:
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
                   hidden_units: int, seed: int, hidden_layers: int = 1,
                   image_shape: Optional[Sequence[int]] = None
                   ) -> Callable[[], tff.learning.models.VariableModel]:
  """Returns the no-argument model constructor TFF's learning algorithms take.

  The arguments are those of `build_keras_model`. TFF's Keras wrapper calls
  the model with training=True in local training (dropout on) and
  training=False in evaluation.
  """
  if kind is ModelKind.CNN:
    # Fail here, with the shape named, rather than inside TFF's tracing.
    check_image_shape(image_shape, input_dim=input_dim)

  def model_fn() -> tff.learning.models.VariableModel:
    keras_model = build_keras_model(
        kind, input_dim=input_dim, num_classes=num_classes,
        hidden_units=hidden_units, seed=seed, hidden_layers=hidden_layers,
        image_shape=image_shape)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=loss_fn(),
        input_spec=input_spec(input_dim),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  return model_fn
