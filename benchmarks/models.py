"""Keras models of the workloads, for the engines that run TFF.

Both take flat 784-feature inputs, so that every engine feeds the same arrays
(tff_dp.program.client_data builds datasets from 2-D arrays); the CNN reshapes to
28 x 28 x 1 as its first layer, which is what TFF's EMNIST preprocessing does
in the dataset instead. Both output logits (tff-dp's convention; TFF's baseline
CNN ends in a softmax and uses a probability loss: the same compute).

This module does not import tff_dp, so that the plain-TFF engine measures TFF
alone.
"""

import tensorflow as tf

from benchmarks import workloads as workloads_lib

MLP_HIDDEN_UNITS = 128


def build_keras_model(model: workloads_lib.ModelName, *,
                      seed: int) -> tf.keras.Model:
  """Returns the uncompiled Keras model of `model`, producing logits."""
  if model is workloads_lib.ModelName.MLP:
    # As tff_dp.algorithms.models.build_keras_model(ModelKind.MLP, ...).
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(workloads_lib.INPUT_DIM,)),
        tf.keras.layers.Dense(
            MLP_HIDDEN_UNITS,
            activation='relu',
            kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed)),
        tf.keras.layers.Dense(
            workloads_lib.NUM_CLASSES,
            kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed +
                                                                   1)),
    ])
  if model is workloads_lib.ModelName.CNN:
    # google-research/federated utils/models/emnist_models.py,
    # create_conv_dropout_model(only_digits=True), with logits.
    init = tf.keras.initializers.GlorotNormal(seed=seed)
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(workloads_lib.INPUT_DIM,)),
        tf.keras.layers.Reshape(workloads_lib.IMAGE_SHAPE),
        tf.keras.layers.Conv2D(32,
                               kernel_size=(3, 3),
                               activation='relu',
                               kernel_initializer=init),
        tf.keras.layers.Conv2D(64,
                               kernel_size=(3, 3),
                               activation='relu',
                               kernel_initializer=init),
        tf.keras.layers.MaxPool2D(pool_size=(2, 2)),
        tf.keras.layers.Dropout(0.25, seed=seed),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation='relu', kernel_initializer=init),
        tf.keras.layers.Dropout(0.5, seed=seed),
        tf.keras.layers.Dense(workloads_lib.NUM_CLASSES,
                              kernel_initializer=init),
    ])
  raise ValueError(f'unknown model {model!r}')


def count_parameters(model: workloads_lib.ModelName) -> int:
  return int(build_keras_model(model, seed=0).count_params())
