"""The grouped path's functional model: frozen weights created frozen, any label kind.

The grouped path (`tff_dp.algorithms.grouped_fedavg`, DP-FedAvg of McMahan
et al. 2018, "Learning Differentially Private Recurrent Language Models",
ICLR) trains a TFF functional model: a pure function of (trainable,
non_trainable) weight tensors, with no variables. TFF's
`tff.learning.models.functional_model_from_keras` rebuilds the Keras model
in every call and hands each variable creation the next tensor of the
trainable list if the creation asks for `trainable=True`, else of the
non-trainable list. Trainability is therefore taken from variable CREATION;
`tff_dp.models.trainable.configure` freezes layers AFTER creation (Keras'
`layer.trainable = False`), and LoRA (`tff_dp.models.lora.add_adapters`)
clones the model, creating variables that the final model never uses. For
both, TFF's functional model would feed a frozen tensor where a trained one
belongs.

`functional_model` builds the functional model from a PLAN instead: the
Keras constructor runs once in a scratch graph, every variable creation is
recorded in order, and each is classified by the final model's own lists
(`model.trainable_variables`, `model.non_trainable_variables`, Keras' order,
which is the order TFF's Keras wrapper gives the reference process's
`ModelWeights`). In every later call, the k-th creation receives the tensor
the plan names: a trained one, a frozen one (created frozen: it is a
constant input of the computation, never differentiated), or, for a
variable the final model discards, zeros of its shape that nothing reads.
The split of `ModelWeights` into trainable and non-trainable is then the
reference's, so the client update, the clipping, the noise and the
aggregator see exactly the trained tensors, as on TFF's path.

The loss and the labels' spec follow the data's label kind (`tff_dp.algorithms.models.
loss_fn`, `input_spec`): next-token labels at every position with the loss
averaged over non-padding labels for the transformer. The accuracy is
counted by the group computation (`accuracy_terms`), as the reference's
Keras metric counts it.
"""

import collections
import contextlib
from typing import Any, Callable, Optional
import warnings

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import models
from tff_dp.data.labels import LabelKind

_TRAINED, _FROZEN = 'trained', 'frozen'
# The token vocabularies' layout (`tff_dp.algorithms.models`): 0 is padding,
# the last 3 ids are oov, bos and eos.
_PAD_ID = 0
_SPECIAL_LAST_IDS = 3

# Released name of the accuracy metric by label kind, as the reference's
# Keras metrics name it (`tff_dp.data.labels.METRICS`).
ACCURACY_NAME = {
    LabelKind.SINGLE: 'sparse_categorical_accuracy',
    LabelKind.NEXT_TOKENS: 'next_token_accuracy',
}


def _variable_plan(keras_model_fn: Callable[[], tf.keras.Model]):
  """(plan, initial weights) of the model (module docstring).

  Returns:
    plan: one entry per variable creation, in order: (_TRAINED, i),
      (_FROZEN, i) or None for a variable the final model does not hold;
    initial: (trainable values, frozen values), numpy, in Keras' order.

  Raises:
    ValueError: If a variable of the model was not created exactly once by
      its constructor (shared or injected variables).
  """
  created = []

  def record(next_creator, **kwargs):
    variable = next_creator(**kwargs)
    created.append(variable)
    return variable

  with tf.Graph().as_default() as graph:
    with tf.variable_creator_scope(record):
      model = keras_model_fn()
    trained = list(model.trainable_variables)
    frozen = list(model.non_trainable_variables)
    index = {v.ref(): (_TRAINED, i) for i, v in enumerate(trained)}
    index.update({v.ref(): (_FROZEN, i) for i, v in enumerate(frozen)})
    plan = [index.get(v.ref()) for v in created]
    if sorted(filter(None, plan)) != sorted(index.values()):
      raise ValueError('every variable of the model must be created by its '
                       'constructor, once')
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.initializers.variables(created))
      initial = session.run((trained, frozen))
  return plan, (list(initial[0]), list(initial[1]))


def _unused_tensor(kwargs) -> tf.Tensor:
  """Stands for a variable the final model discards (never read)."""
  shape, dtype = kwargs.get('shape'), kwargs.get('dtype')
  if shape is not None and tf.TensorShape(shape).is_fully_defined():
    return tf.zeros(shape, dtype or tf.float32)
  value = kwargs['initial_value']
  return tf.convert_to_tensor(value() if callable(value) else value)


@contextlib.contextmanager
def _inference_phase():
  """Keras' global learning phase 0 (inference) inside.

  Keras deprecated the scope in favour of `training=`, which is what the
  model's call uses; here it only steers what Keras builds while the
  model is constructed, so its deprecation warning is not for users.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='.*learning_phase_scope')
    with tf.compat.v1.keras.backend.learning_phase_scope(0):
      yield


def functional_model(
    keras_model_fn: Callable[[], tf.keras.Model], *, input_dim: int,
    num_classes: int,
    label_kind: LabelKind) -> tff.learning.models.FunctionalModel:
  """The Keras model as a functional model with the reference's weight split.

  Args:
    keras_model_fn: No-argument constructor of the uncompiled Keras model
      (logits out, seeded initializers), `--trainable` applied
      (`tff_dp.models.trainable.configure`).
    input_dim: Number of input features.
    num_classes: Number of classes (token ids for next-token labels).
    label_kind: The data's labels (SINGLE or NEXT_TOKENS).

  Raises:
    ValueError: For a model that does not fit the data, with regularization
      losses, or for multi-hot labels.
  """
  label_kind = LabelKind(label_kind)
  if label_kind not in ACCURACY_NAME:
    raise ValueError(f'the grouped path does not train {label_kind.value} '
                     'labels')
  _check_model(keras_model_fn, input_dim=input_dim, num_classes=num_classes)
  plan, initial = _variable_plan(keras_model_fn)

  @tf.function
  def predict_on_batch(model_weights, x, training=True):
    trained, frozen = (list(w) for w in model_weights)
    entries = iter(plan)

    def swap(next_creator, **kwargs):
      del next_creator  # No variable is created.
      entry = next(entries)
      if entry is None:
        return _unused_tensor(kwargs)
      kind, i = entry
      return trained[i] if kind == _TRAINED else frozen[i]

    # TFF traces in a graph, where Keras builds a model the legacy way: on
    # a placeholder input, with dropout under the learning phase (a
    # stateful tf.cond). Those dead ops stay in this function as control
    # outputs, and pfor (per-example gradients, `grouped_example_dp`)
    # converts them, so the converted graph needs the placeholder fed.
    # Built in inference phase they are stateless and unreachable; the
    # call below sets `training` itself.
    with tf.variable_creator_scope(swap), _inference_phase():
      model = keras_model_fn()
    return model(x, training=training)

  loss = models.loss_fn(label_kind=label_kind)

  def loss_fn(output: Any, label: Any, sample_weight: Optional[Any] = None):
    return loss(y_true=label, y_pred=output, sample_weight=sample_weight)

  return tff.learning.models.FunctionalModel(
      initial_weights=initial,
      predict_on_batch_fn=predict_on_batch,
      loss_fn=loss_fn,
      input_spec=models.input_spec(input_dim, label_kind=label_kind))


def _check_model(keras_model_fn, *, input_dim: int, num_classes: int) -> None:
  """The model's input and output sizes fit the data; no extra losses."""
  probe = keras_model_fn()
  if probe.output_shape[-1] != num_classes or probe.input_shape[-1] != (
      input_dim):
    raise ValueError(f'the model maps {probe.input_shape} to '
                     f'{probe.output_shape}; expected {input_dim} features '
                     f'and {num_classes} classes')
  if probe.losses:
    # TFF's Keras wrapper adds these to the training loss; the functional
    # model's loss would not.
    raise ValueError('models with regularization losses are not supported')


def accuracy_terms(logits: tf.Tensor, labels: tf.Tensor, *,
                   label_kind: LabelKind) -> tuple[tf.Tensor, tf.Tensor]:
  """(correct predictions, labels counted) of one batch, float32.

  SINGLE: every example counts, as Keras' SparseCategoricalAccuracy. NEXT_TOKENS:
  only labels that are real tokens (not padding, oov, bos or eos), as
  `tff_dp.algorithms.models.NextTokenAccuracy` and TFF's baselines'
  MaskedCategoricalAccuracy count them.
  """
  predicted = tf.cast(tf.argmax(logits, axis=-1), labels.dtype)
  correct = tf.cast(tf.equal(labels, predicted), tf.float32)
  if LabelKind(label_kind) is LabelKind.SINGLE:
    return tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)
  first_special = logits.shape[-1] - _SPECIAL_LAST_IDS
  real = tf.cast(
      tf.logical_and(tf.not_equal(labels, _PAD_ID),
                     tf.less(labels, first_special)), tf.float32)
  return tf.reduce_sum(correct * real), tf.reduce_sum(real)


def finalize_metrics(sums, *, label_kind: LabelKind) -> collections.OrderedDict:
  """The round's training metrics from their sums over all clients, in the
  reference's structure (Keras' total / count, 0 when nothing counted)."""
  examples = tf.cast(sums['num_examples'], tf.float32)
  counted = sums.get('counted', examples)
  return collections.OrderedDict([
      (ACCURACY_NAME[LabelKind(label_kind)],
       tf.math.divide_no_nan(sums['correct'], counted)),
      ('loss', tf.math.divide_no_nan(sums['loss_sum'], examples)),
      ('num_examples', sums['num_examples']),
      ('num_batches', sums['num_batches']),
  ])
