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
embedding size first). The transformer is the decoder-only language model
of `tff_dp.models.transformer` (GPT-style, Radford et al. 2019) over the
same windows, its context the data's window; it predicts the next token at
every position of a window (`LabelKind.NEXT_TOKENS`), as TFF's
sequence-to-sequence baselines do, so its accuracy is comparable with theirs.
All output logits.

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

from tff_dp import config as config_lib
from tff_dp.config import ModelKind
from tff_dp.data.labels import LabelKind
from tff_dp.models import transformer

# Multi-label recall counts the labels of this many most probable classes
# (TFF's tag prediction baseline: recall@5); the data need at least as many.
RECALL_TOP_K = 5
# The CNN's two valid 3x3 convolutions and 2x2 pooling need 6x6 pixels.
CNN_MIN_IMAGE_SIDE = 6
_CNN_DENSE_UNITS = 128
# The token vocabularies' layout (`tff_dp.data.token_sources.TokenVocabulary`):
# 0 is padding, the last 3 ids are oov, bos and eos.
_PAD_ID = 0
_SPECIAL_LAST_IDS = 3


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
  """Returns `vocab_size` if the rnn (or transformer) model can use it.

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


def _transformer_model(*, input_dim: int, vocab_size: int, seed: int,
                       **sizes: int) -> tf.keras.Model:
  """The transformer over float token ids [batch, input_dim] (the data's)."""
  lm = transformer.build_transformer(vocab_size=vocab_size,
                                     sequence_length=input_dim,
                                     num_layers=sizes['transformer_layers'],
                                     width=sizes['transformer_width'],
                                     num_heads=sizes['transformer_heads'],
                                     ff_width=sizes['transformer_ff_width'],
                                     seed=seed)
  features = tf.keras.Input(shape=(input_dim,), dtype=tf.float32)
  # Exact: token ids are integers below 2**24.
  ids = tf.keras.layers.Lambda(lambda x: tf.cast(x, tf.int32),
                               name='token_ids')(features)
  return tf.keras.Model(features, lm(ids), name='transformer_lm')


def build_keras_model(
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
    transformer_layers: int = config_lib.DEFAULT_TRANSFORMER_LAYERS,
    transformer_width: int = config_lib.DEFAULT_TRANSFORMER_WIDTH,
    transformer_heads: int = config_lib.DEFAULT_TRANSFORMER_HEADS,
    transformer_ff_width: int = config_lib.DEFAULT_TRANSFORMER_FF_WIDTH
) -> tf.keras.Model:
  """Returns an uncompiled Keras model producing logits.

  Every model takes flat float32 inputs [batch, input_dim]; the transformer's
  logits are [batch, input_dim, num_classes] (one set per position), the
  others' [batch, num_classes].

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
    transformer_layers, transformer_width, transformer_heads,
      transformer_ff_width: The transformer's blocks, width, attention heads
      and feed-forward width (its context is `input_dim`).

  Raises:
    ValueError: For the CNN without a usable `image_shape`, the rnn or the
      transformer without a usable `vocab_size`, a transformer whose heads do
      not divide its width.
  """
  if kind is ModelKind.TRANSFORMER:
    return _transformer_model(input_dim=input_dim,
                              vocab_size=check_vocab_size(
                                  vocab_size, num_classes=num_classes),
                              seed=seed,
                              transformer_layers=transformer_layers,
                              transformer_width=transformer_width,
                              transformer_heads=transformer_heads,
                              transformer_ff_width=transformer_ff_width)
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
  if LabelKind(label_kind) is LabelKind.NEXT_TOKENS:
    return NextTokenLoss()
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class NextTokenLoss(tf.keras.losses.Loss):
  """Cross-entropy of logits [batch, W, V] against ids [batch, W], averaged
  over the positions whose label is not padding.

  With reduction NONE (`tff_dp.program.membership_audit`): one loss per
  window, the mean over its non-padding positions.
  """

  def __init__(self, name='next_token_loss', **kwargs):
    super().__init__(name=name, **kwargs)

  def __call__(self, y_true, y_pred, sample_weight=None):
    del sample_weight  # Keras passes None; the mask is the weight.
    y_true = tf.cast(y_true, tf.int32)
    losses = tf.keras.losses.sparse_categorical_crossentropy(y_true,
                                                             y_pred,
                                                             from_logits=True)
    mask = tf.cast(tf.not_equal(y_true, _PAD_ID), losses.dtype)
    if self.reduction == tf.keras.losses.Reduction.NONE:
      return tf.reduce_sum(losses * mask, axis=-1) / tf.maximum(
          tf.reduce_sum(mask, axis=-1), 1.0)
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class NextTokenAccuracy(tf.keras.metrics.SparseCategoricalAccuracy):
  """Accuracy over the labels that are real tokens (see the module
  docstring): padding, oov, bos and eos labels are not counted."""

  def __init__(self, name='next_token_accuracy', **kwargs):
    super().__init__(name=name, **kwargs)

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    y_true = tf.cast(y_true, tf.int32)
    first_special = y_pred.shape[-1] - _SPECIAL_LAST_IDS
    real = tf.logical_and(tf.not_equal(y_true, _PAD_ID),
                          tf.less(y_true, first_special))
    # Nothing returned: in a tf.function Keras' returns an Operation.
    super().update_state(y_true, y_pred, tf.cast(real, tf.float32))


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
    label_kind: SINGLE: accuracy. NEXT_TOKENS: accuracy over the real
      tokens. MULTI_HOT: TFF's tag prediction metrics,
      `Precision()` (a label is predicted if its probability exceeds 0.5)
      and `Recall(top_k=5)` (the 5 most probable labels are predicted), on
      the sigmoid of the logits as on the baseline's sigmoid outputs.
  """
  if LabelKind(label_kind) is LabelKind.MULTI_HOT:
    return [
        _SigmoidRecall(top_k=RECALL_TOP_K, name=f'recall_at_{RECALL_TOP_K}'),
        _SigmoidPrecision(name='precision')
    ]
  if LabelKind(label_kind) is LabelKind.NEXT_TOKENS:
    return [NextTokenAccuracy()]
  return [tf.keras.metrics.SparseCategoricalAccuracy()]


def input_spec(
    input_dim: int,
    *,
    label_kind: LabelKind = LabelKind.SINGLE,
    num_classes: Optional[int] = None) -> tuple[tf.TensorSpec, tf.TensorSpec]:
  """Element spec of a batched client dataset: (features, labels).

  Args:
    input_dim: Number of features (float32).
    label_kind: SINGLE: int32 class ids [batch]; NEXT_TOKENS: int32 ids
      [batch, input_dim]; MULTI_HOT: float32 [batch, num_classes].
    num_classes: Required for MULTI_HOT.
  """
  features = tf.TensorSpec(shape=[None, input_dim], dtype=tf.float32)
  if LabelKind(label_kind) is LabelKind.NEXT_TOKENS:
    return features, tf.TensorSpec(shape=[None, input_dim], dtype=tf.int32)
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
    label_kind: LabelKind = LabelKind.SINGLE,
    **transformer_sizes: int
) -> Callable[[], tff.learning.models.VariableModel]:
  """Returns the no-argument model constructor TFF's learning algorithms take.

  The arguments are those of `build_keras_model` (`transformer_sizes`: its
  `transformer_*` arguments), and `label_kind`, the
  data's labels, which decides the loss, the metrics and the labels' spec
  (`loss_fn`, `metrics`, `input_spec`). TFF's Keras wrapper calls the model
  with training=True in local training (dropout on) and training=False in
  evaluation.
  """
  # Fail here, with the shape or vocabulary named, rather than inside TFF's
  # tracing.
  if kind is ModelKind.CNN:
    check_image_shape(image_shape, input_dim=input_dim)
  if kind in (ModelKind.RNN, ModelKind.TRANSFORMER):
    check_vocab_size(vocab_size, num_classes=num_classes)
  if (kind is ModelKind.TRANSFORMER) != (label_kind is LabelKind.NEXT_TOKENS):
    raise ValueError(f'the {kind.value} model cannot train on '
                     f'{label_kind.value} labels')
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
                                    embedding_dim=embedding_dim,
                                    **transformer_sizes)
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
