"""Client work of grouped DP-FedAvg: train and clip each client of a group.

The algorithm is DP-FedAvg (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models", ICLR); `tff_dp.algorithms.grouped_fedavg`
builds the process and explains how one TFF client value becomes a GROUP of
simulated clients, and why the privacy analysis is unchanged by it. This
module builds the client side of a round: the one TF computation that trains
every simulated client of a group, together (`grouped_vectorized`, where the
configuration and model allow it) or in a graph-mode loop (while-looped or
unrolled local steps, `unrolled_batches`; `grouped_local_steps`), then
sanitizes each update and clips it with the DP query's `preprocess_record`; the client work's state (the
local optimizer's hyperparameters); and the round's training metrics from
their sums.

The helpers are called from code inside the group's `tf.function`, never
handed to a TF op as bare callables: AutoGraph then converts them, which the
`tf.range` loop over a client's batches needs.
"""

from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import grouped_example_dp
from tff_dp.algorithms import grouped_examples
from tff_dp.algorithms import grouped_local_steps
from tff_dp.algorithms import grouped_mean
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import grouped_vectorized
from tff_dp.algorithms.grouped_client_options import ClientOptions
from tff_dp.algorithms.grouped_data import LENGTH
from tff_dp.algorithms.grouped_data import ORDER
from tff_dp.algorithms.grouped_data import VALID
from tff_dp.data.labels import LabelKind
from tff_dp.mechanisms import sanitize

# Unrolled steps cost graph building and optimization, paid before the first
# round. Process build plus first round, EMNIST CNN, batch 16: 6 s with the
# while loop; 8, 11, 25 and 37 s with 7, 16, 32 and 64 unrolled batches (MLP:
# 5 s; 6.5, 10 and 16 s with 16, 32 and 64). The CNN's rounds get ~15%
# faster (W2: 0.2 s a round), which repays 16 batches' extra seconds within
# tens of rounds; the MLP's do not change (W1, in-process), so for it the
# bound only keeps the one-off cost small. Above it, the while loop.
MAX_UNROLLED_BATCHES = 16


def unrolled_batches(max_client_size: Optional[int], *, epochs: int,
                     batch_size: int) -> Optional[int]:
  """How many local steps the group graph unrolls; None for a while loop.

  Args:
    max_client_size: The most examples a client holds, or None if unknown.
    epochs: Local epochs.
    batch_size: Local batch size.

  Returns:
    The most local batches of any client, if known and at most
    `MAX_UNROLLED_BATCHES`; else None.

  Raises:
    ValueError: If `max_client_size` is not a non-negative int or None.
  """
  if max_client_size is None:
    return None
  if isinstance(
      max_client_size,
      bool) or not isinstance(max_client_size, int) or max_client_size < 0:
    raise ValueError('max_client_size must be a non-negative int or None, '
                     f'got {max_client_size!r}')
  batches = -(-epochs * max_client_size // batch_size)
  return batches if batches <= MAX_UNROLLED_BATCHES else None


def build_client_work_init(client_optimizer: tff.learning.optimizers.Optimizer,
                           *,
                           stateless: bool = False) -> tff.Computation:
  """The client work's initial state, placed at the server.

  As TFF's model-delta client work: the optimizer's hparams; empty for a
  `stateless` one (TFF's FedProx and FedSGD client works).
  """
  initial_hparams = () if stateless else client_optimizer.get_hparams(
      client_optimizer.initialize(tf.TensorSpec([], tf.float32)))

  @tff.federated_computation
  def client_work_init():
    return tff.federated_value(initial_hparams, tff.SERVER)

  return client_work_init


def build_finalize_train_metrics(
    group_metrics_type,
    *,
    label_kind: LabelKind = LabelKind.SINGLE) -> tff.Computation:
  """The round's training metrics from the sums over all groups."""

  @tff.tensorflow.computation(group_metrics_type)
  def finalize_train_metrics(sums):
    return grouped_model.finalize_metrics(sums, label_kind=label_kind)

  return finalize_train_metrics


def build_group_fn(
    model: tff.learning.models.FunctionalModel,
    optimizer: tff.learning.optimizers.Optimizer,
    query: tfp.DPQuery,
    *,
    input_dim: int,
    batch_size: int,
    epochs: int,
    max_norm: float,
    client_files_dir: Optional[str],
    max_batches: Optional[int],
    options: ClientOptions = ClientOptions()
) -> Callable[..., Any]:
  """The per-group work as a tf.function (see the module docstring).

  `max_batches` None: each client's local batches are a graph-mode while
  loop; else they are unrolled into that many steps, each run only if the
  client has that many batches. `options`: the algorithm's and mechanisms'
  client-side variant (`grouped_client_options`).
  """

  vectorize = grouped_vectorized.supported(
      options, max_batches=max_batches) and grouped_vectorized.vectorizes(
          model,
          optimizer,
          input_dim=input_dim,
          batch_size=batch_size,
          max_batches=max_batches,
          options=options)

  def _train_vectorized(hparams, weights, group, first_row):
    x, y = grouped_examples.group_examples(group,
                                           input_dim=input_dim,
                                           client_files_dir=client_files_dir)
    rows, row_weights = grouped_vectorized.batch_rows(
        group[ORDER],
        group[LENGTH],
        first_row,
        epochs=epochs,
        batch_size=batch_size,
        max_batches=max_batches,
        padding_row=tf.shape(y)[0])
    return grouped_vectorized.train_clients(
        model,
        optimizer,
        hparams=hparams,
        weights=weights,
        x=tf.concat([x, tf.zeros([1, input_dim], x.dtype)], 0),
        y=tf.concat([y, tf.zeros([1], y.dtype)], 0),
        rows=rows,
        row_weights=row_weights,
        options=options)

  @tf.function
  def group_fn(hparams, weights, params, group):
    specs = tuple(tf.TensorSpec.from_tensor(t) for t in weights.trainable)
    valid = group[VALID]
    # Index of each slot's first example among the group's examples; its
    # order starts at epochs x that.
    first_row = tf.cumsum(group[LENGTH], exclusive=True)
    # For a SumAggregationDPQuery, zeros of the record structure; adding a
    # zero record is what an absent client contributes.
    zero_record = query.initial_sample_state(list(specs))

    def train_client(i):
      return _train_client(i,
                           hparams,
                           weights,
                           params,
                           group,
                           first_row,
                           model=model,
                           optimizer=optimizer,
                           query=query,
                           input_dim=input_dim,
                           batch_size=batch_size,
                           epochs=epochs,
                           max_norm=max_norm,
                           client_files_dir=client_files_dir,
                           max_batches=max_batches,
                           options=options)

    if vectorize:
      trained, slot_metrics = _train_vectorized(hparams, weights, group,
                                                first_row)
      updates = [w[tf.newaxis] - t for w, t in zip(weights.trainable, trained)]

      def train_client(i):  # pylint: disable=function-redefined
        return _finish_client([u[i] for u in updates],
                              tf.nest.map_structure(lambda m: m[i],
                                                    slot_metrics),
                              query=query,
                              params=params,
                              max_norm=max_norm,
                              options=options)

    records = zero_record
    totals = grouped_client_options.zero_metrics(options.label_kind)
    if not options.client_metrics:
      totals = grouped_client_options.no_metrics()
    for i in tf.range(tf.shape(valid)[0]):
      # A padding slot is skipped, so it adds nothing to the clipped sum and,
      # with adaptive clipping, nothing to the unclipped-count estimate
      # (preprocessing a zero update would count it as "unclipped").
      record, metrics = tf.cond(
          valid[i], lambda: train_client(i), lambda:
          (zero_record, tf.nest.map_structure(tf.zeros_like, totals)))
      records = query.accumulate_preprocessed_record(records, record)
      totals = tf.nest.map_structure(tf.add, totals, metrics)
    return records, totals

  return group_fn


def _train_client(i, hparams, weights, params, group, first_row, *, model,
                  optimizer, query, input_dim, batch_size, epochs, max_norm,
                  client_files_dir, max_batches, options):
  """Local SGD(M) (or FedSGD's gradient) of simulated client i, then its
  clipped record.

  Args:
    i: The client's slot in the group.
    hparams: The client optimizer's hyperparameters (the client work state).
    weights: The broadcast model weights.
    params: The DP query's sample params, derived by the server.
    group: The group (`tff_dp.algorithms.grouped_data.make_groups`).
    first_row: Index of each slot's first example among the group's.
    model: The functional model.
    optimizer: The client optimizer.
    query: The DP query that clips the update.
    input_dim: Number of input features.
    batch_size: Local batch size.
    epochs: Local epochs.
    max_norm: `sanitize.sanitize_update`'s bound.
    client_files_dir: Where the client files are, or None (dense groups).
    max_batches: Unrolled local steps, or None for a while loop.
    options: The client-side variant (`grouped_client_options`).

  Returns:
    (the query's preprocessed record, the client's training metric sums,
    or no metrics at all if `options.client_metrics` is False).
  """
  initial = tuple(weights.trainable)
  specs = tuple(tf.TensorSpec.from_tensor(t) for t in initial)
  length = group[LENGTH]
  steps = epochs * length[i]
  num_batches = (steps + batch_size - 1) // batch_size
  x, y, row_0 = grouped_examples.client_examples(
      group,
      first_row,
      i,
      input_dim=input_dim,
      label_shape=([input_dim]
                   if options.label_kind is LabelKind.NEXT_TOKENS else []),
      client_files_dir=client_files_dir)
  client_order = group[ORDER][epochs * first_row[i]:][:steps] + row_0
  if options.example_dp is not None:
    # The client's n_k distinct examples, in its first epoch's order.
    rows = client_order[:length[i]]
    update = grouped_example_dp.dp_sgd_update(model,
                                              options.example_dp,
                                              initial=initial,
                                              non_trainable=tuple(
                                                  weights.non_trainable),
                                              x=tf.gather(x, rows),
                                              y=tf.gather(y, rows))
    update, _ = _sanitize(update, max_norm=max_norm)
    return query.preprocess_record(
        params, update), (grouped_client_options.no_metrics())
  if options.full_gradient:
    step = grouped_client_options.build_gradient_step(
        model,
        non_trainable=tuple(weights.non_trainable),
        x=x,
        y=y,
        client_order=client_order,
        batch_size=batch_size,
        label_kind=options.label_kind)
    # The gradient sums ride in the optimizer state's place.
    step_state = tuple(tf.zeros_like(w) for w in initial)
  else:
    # A fresh optimizer state per simulated client, with the server's
    # hyperparameters, as TFF's client work does for each client.
    step_state = optimizer.initialize(specs)
    if not options.stateless_client_work:
      step_state = optimizer.set_hparams(step_state, hparams)
    step = grouped_local_steps.build_local_step(
        model,
        optimizer,
        non_trainable=tuple(weights.non_trainable),
        x=x,
        y=y,
        client_order=client_order,
        batch_size=batch_size,
        initial=initial,
        proximal_strength=options.proximal_strength,
        label_kind=options.label_kind)
  step_state, trainable, metrics = grouped_local_steps.train_locally(
      step,
      num_batches,
      max_batches=max_batches,
      opt_state=step_state,
      trainable=initial,
      metrics=grouped_client_options.zero_metrics(options.label_kind),
      independent_steps=options.full_gradient)
  if options.full_gradient:
    update = grouped_client_options.mean_gradient(step_state,
                                                  metrics['num_examples'])
  else:
    update = [a - b for a, b in zip(initial, trainable)]
  return _finish_client(update,
                        metrics,
                        query=query,
                        params=params,
                        max_norm=max_norm,
                        options=options)


def _finish_client(update, metrics, *, query, params, max_norm, options):
  """A trained client's record and released metrics from its update."""
  update = grouped_client_options.capped_weight_scale(update,
                                                      metrics['num_examples'],
                                                      options.weight_cap)
  if options.local_randomizer is not None:
    # Local DP: the client's own clip and noise, before any sum (and before
    # the central sanitizing and clipping, as in the reference's factory
    # chain). It zeroes a non-finite update itself.
    update = options.local_randomizer(update)
  # A non-finite update becomes zero and an absurd one is rescaled, as
  # tff_dp.mechanisms.sanitize does in the reference's aggregator; TFF's
  # client work also drops the metrics of a client whose update is not
  # finite.
  update, finite = _sanitize(update, max_norm=max_norm)
  # Non-private FedAvg's record carries the client's weight (grouped_mean).
  record = grouped_mean.preprocess_record(query,
                                          params,
                                          update,
                                          num_examples=metrics['num_examples'],
                                          finite=finite)
  if not options.client_metrics:
    return record, grouped_client_options.no_metrics()
  metrics = tf.nest.map_structure(
      lambda m: tf.where(finite, m, tf.zeros_like(m)), metrics)
  return record, metrics


def _sanitize(update: list[tf.Tensor], *, max_norm: float):
  """`sanitize.sanitize_update`, skipped where it is exactly the identity.

  Args:
    update: One simulated client's update.
    max_norm: As in `sanitize.sanitize_update`.

  Returns:
    (sanitized update, whether every entry of `update` was finite).
  """
  squared_norm = tf.add_n([tf.reduce_sum(tf.square(u)) for u in update])
  # A finite sum of squares rules out NaN, inf and overflow, and a norm at
  # most half of max_norm leaves sanitize_update's factor at exactly 1 (its
  # overflow-safe norm differs from this one by rounding only): the result
  # would be `update` itself. Skipping it saves ~5 passes over the update per
  # client, measured at ~15% of W1's group computation.
  is_identity = tf.logical_and(tf.math.is_finite(squared_norm),
                               tf.sqrt(squared_norm) <= 0.5 * max_norm)

  def identity():
    return list(update), tf.constant(True)

  def sanitized():
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(u)) for u in update])
    return sanitize.sanitize_update(list(update), max_norm=max_norm), finite

  return tf.cond(is_identity, identity, sanitized)
