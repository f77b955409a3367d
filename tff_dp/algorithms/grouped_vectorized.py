"""Local training of all clients of a group at once, by `tf.vectorized_map`.

The algorithm is DP-FedAvg's client work (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models", ICLR), as
`tff_dp.algorithms.grouped_client_work` runs it one simulated client after
another. Here the clients of a group take their local steps together: each
client's unrolled batches are gathered into one [clients, steps, batch, ...]
tensor and one client's local SGD(M) is vectorized over the clients (TF's
pfor, Agarwal 2019, "Static Automatic Batching In TensorFlow", ICML), as the
compute floor's `vectorized` implementation does (`benchmarks/floor.py`).

Clients of a group differ in size, so every client runs the same number of
steps of the same batch size and masks what it does not have:

- A row past the client's examples points at a zero row appended to the
  group's examples and has weight 0 in the loss; the batch's mean loss is
  the weighted sum over the rows present divided by their count (for a
  full batch exactly Keras' mean: every weight is 1.0).
- A step past the client's own batches is computed and discarded: the
  optimizer state, the weights and the metric sums keep their old values
  (`tf.where`), so momentum is not advanced by an empty step.

Which path runs is decided by the process's configuration only
(`supported`), never by the round's data: the clients' sizes must not change
what the computation does observably (timing included, beyond the shapes
that the group already sends). The per-client clipping, sanitizing and
record stay in `grouped_client_work`, one client after another.

Where it stands: a study kept for reference; the program and the
benchmarks never run it. It needs unrolled steps, which the program gives
only models other than the MLP and logistic regression
(`tff_dp.program.assembly._unroll_bound`); the CNN fails the pfor probe
(`vectorizes`), the transformer's next-token labels are not supported, and
the rnn's token data are streamed, which keeps it off the grouped path. Forced on
the MLP (benchmarks/README.md, "The group's clients vectorized") it bought
4-9% per round on W1-c10 and 3-12% on W1-c50, and in the fused rounds'
breakdown its group block took 0.0077 s against the loop's 0.0075 s. Tests
that build MLP groups with `max_client_size` run it (its own are in the
slow tier).
"""

import collections
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms.grouped_client_options import ClientOptions
from tff_dp.data.labels import LabelKind


def supported(options: ClientOptions, *, max_batches) -> bool:
  """Whether the group's clients train vectorized (module docstring).

  Only plain local SGD(M) (FedAvg's and FedProx's local steps, any central
  or local mechanism after them) with class-id labels and unrolled steps:
  FedSGD's gradient sums, example-level DP-SGD (data-dependent batch sizes)
  and next-token labels (the loss has its own mask) keep the loop.
  """
  return (max_batches is not None and not options.full_gradient and
          options.example_dp is None and
          LabelKind(options.label_kind) is LabelKind.SINGLE)


def vectorizes(model: tff.learning.models.FunctionalModel,
               optimizer: tff.learning.optimizers.Optimizer, *, input_dim: int,
               batch_size: int, max_batches: int,
               options: ClientOptions) -> bool:
  """Whether pfor converts every op of the model's local step.

  Traced once in a scratch graph at build time (the model and optimizer
  decide, never the data). A convolution, for one, needs loop-invariant
  filters, which a client's trained weights are not: the CNN keeps the loop.
  One step from per-client weights (and selects) shows every op kind of
  every step: after the first, a client's weights are its own. pfor's
  conversion time grows with the steps traced (MLP 784-128-10: 0.25 s for 1
  step, 1.7-2.9 s for 4 in a first version of this probe).

  Any exception from the conversion means the loop: pfor reports what it
  cannot convert as ValueError or NotImplementedError, but also as other
  errors (a TypeError, `dtype variant is not compatible with 0 of dtype
  int64`, for a recurrent model). The probe sees zeros only, so nothing
  about client data could be in the error; it is not logged.
  """
  del max_batches  # Every step has the same ops (below).
  logger = tf.get_logger()
  level = logger.level
  # pfor logs each op it cannot convert, with its traceback, before raising.
  logger.setLevel('CRITICAL')
  try:
    with tf.Graph().as_default():
      trainable, frozen = model.initial_weights
      specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in trainable)
      opt_state = optimizer.initialize(specs)
      non_trainable = tuple(tf.zeros(t.shape, t.dtype) for t in frozen)

      def one_step(elems):
        client_weights, batch_x, batch_y, batch_w = elems
        return _masked_step(
            model,
            optimizer,
            (opt_state, tuple(client_weights),
             grouped_client_options.zero_metrics(options.label_kind)),
            batch_x,
            batch_y,
            batch_w,
            non_trainable=non_trainable,
            initial=tuple(client_weights),
            options=options,
            keeps_weights=True)

      tf.vectorized_map(
          one_step,
          ([tf.zeros((2,) + t.shape, t.dtype) for t in trainable
           ], tf.zeros([2, batch_size, input_dim]),
           tf.zeros([2, batch_size], tf.int32), tf.zeros([2, batch_size])),
          fallback_to_while_loop=False)
  except Exception:  # pylint: disable=broad-except
    # Whatever pfor raised, the loop trains the model (docstring).
    return False
  finally:
    logger.setLevel(level)
  return True


def batch_rows(order, length, first_row, *, epochs: int, batch_size: int,
               max_batches: int, padding_row):
  """Rows of every client's batches among the group's examples.

  Args:
    order: The group's example orders (`grouped_data.make_groups`' ORDER).
    length: Examples of each slot (LENGTH).
    first_row: Index of each slot's first example among the group's.
    epochs: Local epochs.
    batch_size: Local batch size.
    max_batches: Steps every client runs (unrolled).
    padding_row: The row that stands for a missing example (a zero row).

  Returns:
    (rows int32 [slots, max_batches, batch_size], weights float32 of the
    same shape: 1.0 for an example the client has, 0.0 for padding).
  """
  position = tf.range(max_batches * batch_size)
  steps = epochs * length
  check = tf.debugging.assert_less_equal(
      steps,
      max_batches * batch_size,
      message='a client has more local batches than the process was '
      'built for (max_client_size)')
  with tf.control_dependencies([check]):
    steps = tf.identity(steps)
  present = position[tf.newaxis, :] < steps[:, tf.newaxis]
  start = epochs * first_row
  index = tf.where(present, start[:, tf.newaxis] + position[tf.newaxis, :], 0)
  # An empty group has an empty order: gather from it only where present.
  own = tf.gather(tf.concat([order, [0]], 0), index)
  rows = tf.where(present, own + first_row[:, tf.newaxis], padding_row)
  shape = [-1, max_batches, batch_size]
  return (tf.reshape(rows,
                     shape), tf.reshape(tf.cast(present, tf.float32), shape))


def train_clients(model: tff.learning.models.FunctionalModel,
                  optimizer: tff.learning.optimizers.Optimizer, *, hparams,
                  weights, x, y, rows, row_weights,
                  options: ClientOptions) -> tuple[list[Any], Any]:
  """Every slot's local training, vectorized over the slots.

  Args:
    model: The functional model.
    optimizer: The client optimizer.
    hparams: Its hyperparameters (the client work state).
    weights: The broadcast model weights.
    x: The group's examples with one zero row appended, float32 [N + 1, d].
    y: Their labels, int32 [N + 1].
    rows: `batch_rows`' rows.
    row_weights: `batch_rows`' weights.
    options: The client-side variant (`grouped_client_options`).

  Returns:
    (the trained weights, each stacked over the slots; the slots' training
    metric sums, stacked).
  """
  initial = tuple(weights.trainable)
  non_trainable = tuple(weights.non_trainable)
  specs = tuple(tf.TensorSpec.from_tensor(t) for t in initial)
  # A fresh optimizer state per simulated client, with the server's
  # hyperparameters, as TFF's client work does for each client.
  opt_state = optimizer.initialize(specs)
  if not options.stateless_client_work:
    opt_state = optimizer.set_hparams(opt_state, hparams)

  # Where the optimizer keeps nothing but its hyperparameters and no
  # proximal term pulls, an empty step is already exactly a no-op (zero
  # gradients: w - lr * 0 = w), so the weights need no per-step select,
  # which costs a pass over every client's weights (W1-c10's vectorized
  # training alone, in process: 4.6 ms without, 5.4 ms with; medians of
  # three runs, load ~4.5).
  keeps_weights = bool(options.proximal_strength) or bool(
      set(opt_state) - set(optimizer.get_hparams(opt_state)))

  def one_client(client):
    batch_x, batch_y, batch_w = client
    state, trainable = opt_state, initial
    metrics = grouped_client_options.zero_metrics(options.label_kind)
    for j in range(batch_w.shape[0]):
      state, trainable, metrics = _masked_step(model,
                                               optimizer,
                                               (state, trainable, metrics),
                                               batch_x[j],
                                               batch_y[j],
                                               batch_w[j],
                                               non_trainable=non_trainable,
                                               initial=initial,
                                               options=options,
                                               keeps_weights=keeps_weights)
    return list(trainable), metrics

  elems = (tf.gather(x, rows), tf.gather(y, rows), row_weights)
  # No fallback: an op pfor cannot vectorize fails the build instead of
  # silently running a slower loop.
  return tf.vectorized_map(one_client, elems, fallback_to_while_loop=False)


def _masked_step(model, optimizer, carry, batch_x, batch_y, batch_w, *,
                 non_trainable, initial, options, keeps_weights):
  """One local step of one client; a no-op if its batch is empty.

  `keeps_weights` False: the step's own update is the identity on an empty
  batch (see `train_clients`), so its weights and optimizer state are taken
  as they come.
  """
  state, trainable, metrics = carry
  count = tf.reduce_sum(batch_w)
  active = count > 0
  with tf.GradientTape() as tape:
    tape.watch(trainable)
    logits = model.predict_on_batch((trainable, non_trainable),
                                    batch_x,
                                    training=True)
    # Keras' mean over the batch (sum over batch size) with weights 0 for
    # the padding rows, rescaled to the rows present; x 1.0 when full.
    size = tf.cast(tf.size(batch_w), tf.float32)
    loss = model.loss(output=logits, label=batch_y, sample_weight=batch_w)
    loss = loss * (size / tf.maximum(count, 1.0))
  grads = tape.gradient(loss, trainable)
  grads = grouped_client_options.proximal_gradients(
      grads, trainable, initial, strength=options.proximal_strength)
  new_state, new_trainable = optimizer.next(state, trainable, grads)
  predicted = tf.cast(tf.argmax(logits, axis=-1), batch_y.dtype)
  correct = tf.reduce_sum(
      tf.cast(tf.equal(batch_y, predicted), tf.float32) * batch_w)
  new_metrics = collections.OrderedDict(
      loss_sum=metrics['loss_sum'] + loss * count,
      correct=metrics['correct'] + correct,
      num_examples=metrics['num_examples'] + tf.cast(count, tf.int64),
      num_batches=metrics['num_batches'] + 1)

  def keep(new, old):
    return tf.where(active, new, old)

  if keeps_weights:
    new_state = tf.nest.map_structure(keep, new_state, state)
    new_trainable = [keep(a, b) for a, b in zip(new_trainable, trainable)]
  return (new_state, tuple(new_trainable),
          tf.nest.map_structure(keep, new_metrics, metrics))
