"""Keras models and their TFF wrappers.

The MLP is the classic 784-128-10 network (one hidden ReLU layer),
with the input size taken from the data; logistic regression is the convex
baseline (multinomial on single-label data; one sigmoid per label on
multi-label data, the model of TFF's Stack Overflow tag prediction baseline,
`tff.simulation.baselines.stackoverflow.create_tag_prediction_task`). The CNN is the EMNIST CNN of TFF's baselines
(`tff.simulation.baselines.emnist.emnist_models.create_conv_dropout_model`,
the EMNIST model of Reddi et al. 2021, "Adaptive Federated Optimization",
ICLR): conv 32 3x3, conv 64 3x3, 2x2 max-pool, dropout 0.25, dense 128,
dropout 0.5, dense. It reshapes the flat input to the image shape the data
declares, so one definition serves EMNIST (28x28x1), CIFAR-100 (32x32x3; a
small stand-in for the ResNet-18 of Reddi et al.) and the 8x8 digits. The
rnn is the next-token model of TFF's text baselines (`tff.simulation.
baselines.shakespeare.char_prediction_models`, after McMahan et al. 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS; `...stackoverflow.word_prediction_models`, Reddi et al. 2021): a
token embedding (0, the padding, masked), LSTM layers and a dense layer of
logits over the vocabulary. It reads the window of token ids the data hold
as floats (`tff_dp.data.token_sources`) and predicts one next token, so its
last LSTM layer returns its final state only, and it has no projection
between the LSTM and the logits (TFF's Stack Overflow model projects to the
embedding size first). All output logits.

The loss, the metrics and the labels' spec follow the data's label kind
(`tff_dp.data.labels`): single-label data train on the softmax cross-entropy
and report accuracy; multi-hot data (Stack Overflow tags) train on the binary
cross-entropy of one sigmoid per label, averaged over the labels (Keras'),
and report TFF's baseline metrics, precision at probability 0.5 and recall
of the 5 most probable labels, computed on the sigmoid of the logits. The
baseline outputs the sigmoid itself and SUMS the loss over a batch; the loss
here is the batch mean, as for every other task, so the baseline's learning
rates carry over multiplied by the batch size.

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
from tff_dp.data.labels import LabelKind

# Multi-label recall counts the labels of this many most probable classes
# (TFF's tag prediction baseline: recall@5); the data need at least as many.
RECALL_TOP_K = 5
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


def check_vocab_size(vocab_size: Optional[int], *, num_classes: int) -> int:
  """Returns `vocab_size` if the rnn model can use it.

  Args:
    vocab_size: The data's vocabulary size, None for data that are not
      token ids.
    num_classes: Number of classes; the rnn's labels are token ids too.

  Raises:
    ValueError: Naming the vocabulary size and what is wrong with it.
  """
  if vocab_size is None:
    raise ValueError('the rnn model needs token data (a dataset with a '
                     'vocabulary: shakespeare, stackoverflow_nwp)')
  vocab_size = int(vocab_size)
  if vocab_size < 2:
    raise ValueError(f'vocabulary size {vocab_size}: the rnn model needs at '
                     'least 2 token ids')
  if num_classes != vocab_size:
    raise ValueError(f'vocabulary size {vocab_size}: the rnn model predicts '
                     f'token ids, but the data have {num_classes} classes')
  return vocab_size


def _rnn_layers(vocab_size: int, *, embedding_dim: int, hidden_units: int,
                hidden_layers: int, seed: int) -> list[tf.keras.layers.Layer]:
  """The rnn's layers between the flat input and the logits layer."""
  # Even offsets for the LSTM kernels like the MLP's hidden layers (1 is the
  # logits layer's); odd ones from 3 for the recurrent kernels, then the
  # embedding.
  layers = [
      # Keras' Embedding casts its float input to int32, exactly: token ids
      # are integers below 2**24. Masking 0 makes the LSTM skip the padding
      # that starts a client's last window.
      tf.keras.layers.Embedding(
          vocab_size,
          embedding_dim,
          mask_zero=True,
          embeddings_initializer=tf.keras.initializers.RandomUniform(
              -0.05, 0.05, seed=seed + 2 * hidden_layers + 3)),
  ]
  for i in range(hidden_layers):
    layers.append(
        tf.keras.layers.LSTM(
            hidden_units,
            return_sequences=i < hidden_layers - 1,
            kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed +
                                                                   2 * i),
            recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed +
                                                                   2 * i + 3)))
  return layers


def _cnn_layers(image_shape: tuple[int, int, int],
                seed: int) -> list[tf.keras.layers.Layer]:
  """The CNN's layers between the flat input and the logits layer."""

  def glorot(offset):
    # Offsets 0, 2, 4 like the MLP's hidden layers; 1 is the logits layer's.
    return tf.keras.initializers.GlorotUniform(seed=seed + offset)

  return [
      tf.keras.layers.Reshape(image_shape),
      tf.keras.layers.Conv2D(32,
                             3,
                             activation='relu',
                             kernel_initializer=glorot(0)),
      tf.keras.layers.Conv2D(64,
                             3,
                             activation='relu',
                             kernel_initializer=glorot(2)),
      tf.keras.layers.MaxPool2D(2),
      # Unseeded on purpose: see the module docstring.
      tf.keras.layers.Dropout(0.25),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(_CNN_DENSE_UNITS,
                            activation='relu',
                            kernel_initializer=glorot(4)),
      tf.keras.layers.Dropout(0.5),
  ]


def build_keras_model(kind: ModelKind,
                      *,
                      input_dim: int,
                      num_classes: int,
                      hidden_units: int,
                      seed: int,
                      hidden_layers: int = 1,
                      image_shape: Optional[Sequence[int]] = None,
                      vocab_size: Optional[int] = None,
                      embedding_dim: int = 8) -> tf.keras.Model:
  """Returns an uncompiled Keras model producing logits.

  Every model takes flat float32 inputs [batch, input_dim].

  Args:
    kind: Which architecture.
    input_dim: Number of input features.
    num_classes: Number of output classes.
    hidden_units: Width of each of the MLP's hidden layers and of the rnn's
      LSTM layers (ignored for logistic regression and the CNN, whose dense
      layer has 128 units).
    seed: Seed of the weight initializers, so that a run's initial model is
      reproducible (TFF runs the initializers inside its own computation).
    hidden_layers: Number of hidden layers of the MLP (the 784-128-10
      MLP has 1; TFF's DP tutorial uses 2 x 200), or of LSTM layers of the rnn.
    image_shape: (height, width, channels) of the data's images, in the order
      the flat features hold them (row-major, channels last); required by the
      CNN, ignored by the others.
    vocab_size: Number of token ids if the features are token ids (then
      also `num_classes`); required by the rnn, ignored by the others.
    embedding_dim: Size of the rnn's token embedding.

  Raises:
    ValueError: For the CNN without a usable `image_shape`, the rnn without
      a usable `vocab_size`.
  """
  layers = [tf.keras.layers.InputLayer(input_shape=(input_dim,))]
  if kind is ModelKind.CNN:
    layers += _cnn_layers(check_image_shape(image_shape, input_dim=input_dim),
                          seed)
  elif kind is ModelKind.RNN:
    layers += _rnn_layers(check_vocab_size(vocab_size, num_classes=num_classes),
                          embedding_dim=embedding_dim,
                          hidden_units=hidden_units,
                          hidden_layers=hidden_layers,
                          seed=seed)
  elif kind is ModelKind.MLP:
    for i in range(hidden_layers):
      layers.append(
          tf.keras.layers.Dense(
              hidden_units,
              activation='relu',
              kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed +
                                                                     2 * i)))
  elif kind is not ModelKind.LOGISTIC_REGRESSION:
    raise ValueError(f'unknown model kind {kind!r}')
  layers.append(
      tf.keras.layers.Dense(
          num_classes,
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed +
                                                                 1)))
  return tf.keras.Sequential(layers)


def loss_fn(*,
            label_kind: LabelKind = LabelKind.SINGLE) -> tf.keras.losses.Loss:
  """The training loss of models producing logits, for `label_kind` labels.

  Args:
    label_kind: SINGLE: softmax cross-entropy on int32 class ids; MULTI_HOT:
      binary cross-entropy of each label's sigmoid, averaged over the labels
      (per example, then over the batch).
  """
  if LabelKind(label_kind) is LabelKind.MULTI_HOT:
    return tf.keras.losses.BinaryCrossentropy(from_logits=True)
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _SigmoidPrecision(tf.keras.metrics.Precision):
  """Keras' Precision of the probabilities sigmoid(logits)."""

  def update_state(self, y_true, y_pred, sample_weight=None):
    # Nothing returned: in a tf.function Keras' returns an Operation.
    super().update_state(y_true, tf.sigmoid(y_pred), sample_weight)


class _SigmoidRecall(tf.keras.metrics.Recall):
  """Keras' Recall of the probabilities sigmoid(logits)."""

  def update_state(self, y_true, y_pred, sample_weight=None):
    # Nothing returned: in a tf.function Keras' returns an Operation.
    super().update_state(y_true, tf.sigmoid(y_pred), sample_weight)


def metrics(
    *,
    label_kind: LabelKind = LabelKind.SINGLE) -> list[tf.keras.metrics.Metric]:
  """New Keras metrics of a model producing logits, for `label_kind` labels.

  Their names are those `tff_dp.data.labels.METRICS` reports them by.

  Args:
    label_kind: SINGLE: accuracy. MULTI_HOT: TFF's tag prediction metrics,
      `Precision()` (a label is predicted if its probability exceeds 0.5)
      and `Recall(top_k=5)` (the 5 most probable labels are predicted), on
      the sigmoid of the logits as on the baseline's sigmoid outputs.
  """
  if LabelKind(label_kind) is LabelKind.MULTI_HOT:
    return [
        _SigmoidRecall(top_k=RECALL_TOP_K, name=f'recall_at_{RECALL_TOP_K}'),
        _SigmoidPrecision(name='precision')
    ]
  return [tf.keras.metrics.SparseCategoricalAccuracy()]


def input_spec(
    input_dim: int,
    *,
    label_kind: LabelKind = LabelKind.SINGLE,
    num_classes: Optional[int] = None) -> tuple[tf.TensorSpec, tf.TensorSpec]:
  """Element spec of a batched client dataset: (features, labels).

  Args:
    input_dim: Number of features (float32).
    label_kind: SINGLE: int32 class ids [batch]; MULTI_HOT: float32
      [batch, num_classes].
    num_classes: Required for MULTI_HOT.
  """
  features = tf.TensorSpec(shape=[None, input_dim], dtype=tf.float32)
  if LabelKind(label_kind) is LabelKind.MULTI_HOT:
    if num_classes is None:
      raise ValueError('multi-hot labels need num_classes')
    return features, tf.TensorSpec(shape=[None, num_classes], dtype=tf.float32)
  return features, tf.TensorSpec(shape=[None], dtype=tf.int32)


def build_model_fn(
    kind: ModelKind,
    *,
    input_dim: int,
    num_classes: int,
    hidden_units: int,
    seed: int,
    hidden_layers: int = 1,
    image_shape: Optional[Sequence[int]] = None,
    vocab_size: Optional[int] = None,
    embedding_dim: int = 8,
    label_kind: LabelKind = LabelKind.SINGLE
) -> Callable[[], tff.learning.models.VariableModel]:
  """Returns the no-argument model constructor TFF's learning algorithms take.

  The arguments are those of `build_keras_model`, and `label_kind`, the
  data's labels, which decides the loss, the metrics and the labels' spec
  (`loss_fn`, `metrics`, `input_spec`). TFF's Keras wrapper calls the model
  with training=True in local training (dropout on) and training=False in
  evaluation.
  """
  # Fail here, with the shape or vocabulary named, rather than inside TFF's
  # tracing.
  if kind is ModelKind.CNN:
    check_image_shape(image_shape, input_dim=input_dim)
  if kind is ModelKind.RNN:
    check_vocab_size(vocab_size, num_classes=num_classes)
  if label_kind is LabelKind.MULTI_HOT and num_classes < RECALL_TOP_K:
    raise ValueError(f'{num_classes} labels: multi-label recall@'
                     f'{RECALL_TOP_K} needs at least {RECALL_TOP_K}')

  def model_fn() -> tff.learning.models.VariableModel:
    keras_model = build_keras_model(kind,
                                    input_dim=input_dim,
                                    num_classes=num_classes,
                                    hidden_units=hidden_units,
                                    seed=seed,
                                    hidden_layers=hidden_layers,
                                    image_shape=image_shape,
                                    vocab_size=vocab_size,
                                    embedding_dim=embedding_dim)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=loss_fn(label_kind=label_kind),
        input_spec=input_spec(input_dim,
                              label_kind=label_kind,
                              num_classes=num_classes),
        metrics=metrics(label_kind=label_kind))

  return model_fn


def model_fn_from_keras(
    keras_model_fn: Callable[[], tf.keras.Model],
    *,
    input_dim: int,
    num_classes: int,
    label_kind: LabelKind = LabelKind.SINGLE
) -> Callable[[], tff.learning.models.VariableModel]:
  """`build_model_fn` for a user's own uncompiled Keras model (logits out,
  input [batch, input_dim] float32), with the loss and metrics of
  `label_kind`."""

  def model_fn() -> tff.learning.models.VariableModel:
    return tff.learning.models.from_keras_model(
        keras_model_fn(),
        loss=loss_fn(label_kind=label_kind),
        input_spec=input_spec(input_dim,
                              label_kind=label_kind,
                              num_classes=num_classes),
        metrics=metrics(label_kind=label_kind))

  return model_fn
