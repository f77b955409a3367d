"""DP-FedAvg with many simulated clients per TFF client invocation.

The algorithm is DP-FedAvg (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models", ICLR): every client of the round trains
locally from the broadcast model, its update is clipped to L2 norm C, the
clipped updates are summed, Gaussian noise of standard deviation z * C is
added, and the sum is divided by the FIXED clients_per_round; with adaptive
clipping the clip follows a privately estimated quantile of the update norms
(Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping", NeurIPS). Clipping, noise and clip estimation are TF Privacy's
DPQuery, the very query object `tff.aggregators.DifferentiallyPrivateFactory`
built.

What changes is only how the simulation is laid out. TFF's learning
algorithms run one TFF client invocation (one TF graph execution in the
worker, with its graph set-up, protobuf and allocation costs) per simulated
client; on small models that overhead dominates a round (~25 ms per client
on W1 against ~1 ms of compute; design notes, section 4). Here ONE TFF
client value is a GROUP of up to `group_size` simulated clients, passed as
dense tensors (`tff_dp.algorithms.grouped_data`), and one `tff.tensorflow.computation` runs all
of them in a graph-mode loop. Everything that is per client in the privacy
analysis stays per SIMULATED client:

* each simulated client trains from the broadcast weights with its own SGD(M)
  optimizer state, on its own examples in the order `tff_dp.program.client_data`
  would use (same seeds), batch by batch on the mean batch loss, exactly as
  TFF's `build_unweighted_fed_avg` with `LoopImplementation.DATASET_ITERATOR`;
* its update (initial minus trained weights, TFF's convention) is zeroed if
  non-finite (as TFF's client work does) and rescaled if absurd
  (`tff_dp.mechanisms.sanitize.sanitize_update`, as `tff_dp.mechanisms.sanitize.
  sanitizing_aggregator` does), then clipped by the query's
  `preprocess_record` with the sample params the server derived and
  broadcast;
* padding slots of a group (`valid` False) contribute nothing, not even to
  the adaptive-clipping quantile count.

A group returns the sum of its clients' preprocessed records; the server sums
the groups (`tff.federated_sum`, as TFF's `SumFactory` sums clients), and that
sum is the query's sample state (for a `SumAggregationDPQuery` the sample
state IS the sum of preprocessed records; TFF's factory passes its sum to
`get_noised_result` the same way). Noise, normalization by clients_per_round,
the new clip and the DP event come from `query.get_noised_result`, once per
round, whatever the number of groups (zero groups included). Grouping is
therefore invisible to the mechanism: the sensitivity is that of one
simulated client, and the ledger's events are unchanged.

Two ways to get the examples to the TFF worker, with identical results:

* dense: a group carries its clients' examples (`tff_dp.algorithms.grouped_data.
  make_groups`). Simple, but TFF serializes every byte through Python and gRPC each round:
  ~65-90 ms for W1's 10 MB (50 clients x 64 x 784 float32) on 2 cores, more
  than the whole round's compute;
* client files (what the program uses, via `tff_dp.algorithms.grouped_data.
  GroupedRounds`): the examples are written once per run as raw files, a
  group carries only client ids and orders, and the group computation reads
  each client's file in the worker (`tf.io.read_file`, from the page cache).
  The worker must see the same file system (true of `tff_dp.execution.runtime`'s local
  worker).

The process mirrors the reference (`tff_dp.algorithms.learning_process.
build_learning_process` with FedAvg and a uniform DP aggregator): the same
state structure (`tff.learning.templates.LearningAlgorithmState`, with the
DP factory's own aggregator state), the same metrics structure, TFF's own
broadcast distributor and optimizer finalizer. Its `next` takes a list of
groups instead of a list of datasets.
"""

import collections
import functools
import os
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp
# DPAggregatorState is not exported by tff.aggregators; the state must have
# exactly the reference's container so that checkpoints and
# `extract_dp_event_from_state` see the same structure.
from tensorflow_federated.python.aggregators import differential_privacy

from tff_dp.algorithms import grouped_data
from tff_dp.algorithms.grouped_data import CLIENT
from tff_dp.algorithms.grouped_data import LENGTH
from tff_dp.algorithms.grouped_data import ORDER
from tff_dp.algorithms.grouped_data import VALID
from tff_dp.algorithms.grouped_data import X
from tff_dp.algorithms.grouped_data import Y
from tff_dp.algorithms import models
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
  if isinstance(max_client_size, bool) or not isinstance(
      max_client_size, int) or max_client_size < 0:
    raise ValueError('max_client_size must be a non-negative int or None, '
                     f'got {max_client_size!r}')
  batches = -(-epochs * max_client_size // batch_size)
  return batches if batches <= MAX_UNROLLED_BATCHES else None


def _dp_query(dp_factory) -> tfp.DPQuery:
  """The TF Privacy query inside TFF's DP factory, checked."""
  if not isinstance(dp_factory, tff.aggregators.DifferentiallyPrivateFactory):
    raise TypeError('dp_factory must be a tff.aggregators.'
                    'DifferentiallyPrivateFactory (e.g. from tff_dp.'
                    'learning_process.build_dp_aggregator), got '
                    f'{type(dp_factory).__name__}')
  # The factory keeps its query in a private attribute and offers no getter.
  # We use that object rather than building our own query from the settings:
  # it guarantees the identical mechanism (query classes, clip, noise std,
  # TFF's split of z between the value and the clipped-count noise for
  # adaptive clipping, the denominator) and hence the identical DP event.
  query = dp_factory._query  # pylint: disable=protected-access
  assert isinstance(query, tfp.DPQuery), type(query)
  if not isinstance(query, tfp.SumAggregationDPQuery):
    raise TypeError(f'the factory query must be a SumAggregationDPQuery, got '
                    f'{type(query).__name__}')
  # pylint: disable-next=protected-access
  record_aggregation = dp_factory._record_aggregation_factory
  # Summing groups equals summing clients only for a plain sum; compression
  # or secure aggregation factories (or subclasses) could change the records.
  # pylint: disable-next=unidiomatic-typecheck
  if type(record_aggregation) is not tff.aggregators.SumFactory:
    raise TypeError('only the default record aggregation (SumFactory) is '
                    f'supported, got {type(record_aggregation).__name__}')
  return query


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
  is_identity = tf.logical_and(
      tf.math.is_finite(squared_norm),
      tf.sqrt(squared_norm) <= 0.5 * max_norm)

  def identity():
    return list(update), tf.constant(True)

  def sanitized():
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(u))
                            for u in update])
    return sanitize.sanitize_update(list(update), max_norm=max_norm), finite

  return tf.cond(is_identity, identity, sanitized)


def _build_group_fn(model: tff.learning.models.FunctionalModel,
                    optimizer: tff.learning.optimizers.Optimizer,
                    query: tfp.DPQuery, *, input_dim: int, batch_size: int,
                    epochs: int, max_norm: float,
                    client_files_dir: Optional[str],
                    max_batches: Optional[int]) -> Callable[..., Any]:
  """The per-group work as a tf.function (see the module docstring).

  `max_batches` None: each client's local batches are a graph-mode while
  loop; else they are unrolled into that many steps, each run only if the
  client has that many batches.
  """

  def read_client_file(kind, client, dtype):
    name = tf.strings.join([os.path.join(client_files_dir, kind),
                            tf.strings.as_string(client), '.bin'])
    return tf.io.decode_raw(tf.io.read_file(name), dtype)

  @tf.function
  def group_fn(hparams, weights, params, group):
    initial = tuple(weights.trainable)
    non_trainable = tuple(weights.non_trainable)
    specs = tuple(tf.TensorSpec.from_tensor(t) for t in initial)
    order, length, valid = group[ORDER], group[LENGTH], group[VALID]
    # Index of each slot's first example among the group's examples; its
    # order starts at epochs x that.
    first_row = tf.cumsum(length, exclusive=True)

    def client_examples(i):
      """(x, y, row of client i's example 0 in them)."""
      if client_files_dir is None:
        return group[X], group[Y], first_row[i]
      client_x = tf.reshape(
          read_client_file('x', group[CLIENT][i], tf.float32),
          [-1, input_dim])
      client_y = read_client_file('y', group[CLIENT][i], tf.int32)
      # Files of another data set (or a truncated file) must fail loudly.
      checks = [
          tf.debugging.assert_equal(
              tf.shape(client_y)[0], length[i],
              message='client file does not match the client size'),
          tf.debugging.assert_equal(
              tf.shape(client_x)[0], length[i],
              message='client file does not match the client size')]
      with tf.control_dependencies(checks):
        return tf.identity(client_x), tf.identity(client_y), 0

    def zero_metrics():
      return collections.OrderedDict(
          loss_sum=tf.constant(0.0), correct=tf.constant(0.0),
          num_examples=tf.constant(0, tf.int64),
          num_batches=tf.constant(0, tf.int64))

    # For a SumAggregationDPQuery, zeros of the record structure; adding a
    # zero record is what an absent client contributes.
    zero_record = query.initial_sample_state(list(specs))

    def train_client(i):
      """Local SGD(M) of simulated client i, then its clipped record."""
      steps = epochs * length[i]
      num_batches = (steps + batch_size - 1) // batch_size
      x, y, row_0 = client_examples(i)
      client_order = order[epochs * first_row[i]:][:steps] + row_0
      # A fresh optimizer state per simulated client, with the server's
      # hyperparameters, as TFF's client work does for each client.
      opt_state = optimizer.set_hparams(optimizer.initialize(specs), hparams)
      trainable = initial
      metrics = zero_metrics()

      def local_step(j, opt_state, trainable, metrics):
        """Batch j of the client's local training."""
        rows = client_order[j * batch_size:(j + 1) * batch_size]
        batch_x = tf.gather(x, rows)
        batch_y = tf.gather(y, rows)
        with tf.GradientTape() as tape:
          tape.watch(trainable)
          logits = model.predict_on_batch((trainable, non_trainable), batch_x,
                                          training=True)
          # The mean loss of the batch (Keras' default reduction).
          loss = model.loss(output=logits, label=batch_y)
        grads = tape.gradient(loss, trainable)
        opt_state, trainable = optimizer.next(opt_state, trainable, grads)
        # Metrics as TFF's Keras wrapper tracks them: on the batch's
        # predictions before its step, the loss weighted by the batch size.
        count = tf.shape(batch_y)[0]
        correct = tf.equal(batch_y, tf.cast(tf.argmax(logits, axis=-1),
                                            batch_y.dtype))
        metrics = collections.OrderedDict(
            loss_sum=metrics['loss_sum'] + loss * tf.cast(count, tf.float32),
            correct=metrics['correct'] + tf.reduce_sum(
                tf.cast(correct, tf.float32)),
            num_examples=metrics['num_examples'] + tf.cast(count, tf.int64),
            num_batches=metrics['num_batches'] + 1)
        return opt_state, tuple(trainable), metrics

      if max_batches is None:
        for j in tf.range(num_batches):
          opt_state, trainable, metrics = local_step(j, opt_state, trainable,
                                                     metrics)
      else:
        # Unrolled, because a while loop over the batches nested in the loop
        # over clients kept 2 cores ~1.3 busy on W2 where unrolled steps kept
        # them ~1.9 busy, for the same op time (in-process step traces; W2
        # group computation 1.44 -> 1.22 s). Steps past the client's own
        # count are skipped by tf.cond.
        check = tf.debugging.assert_less_equal(
            num_batches, max_batches,
            message='a client has more local batches than the process was '
            'built for (max_client_size)')
        with tf.control_dependencies([check]):
          num_batches = tf.identity(num_batches)
        for j in range(max_batches):
          opt_state, trainable, metrics = tf.cond(
              j < num_batches,
              functools.partial(local_step, j, opt_state, trainable, metrics),
              lambda args=(opt_state, trainable, metrics): args)
      update = [a - b for a, b in zip(initial, trainable)]
      # A non-finite update becomes zero and an absurd one is rescaled, as
      # tff_dp.mechanisms.sanitize does in the reference's aggregator; TFF's client work
      # also drops the metrics of a client whose update is not finite.
      update, finite = _sanitize(update, max_norm=max_norm)
      metrics = tf.nest.map_structure(
          lambda m: tf.where(finite, m, tf.zeros_like(m)), metrics)
      return query.preprocess_record(params, update), metrics

    def skip_client(i):
      del i
      return zero_record, zero_metrics()

    records = zero_record
    totals = zero_metrics()
    for i in tf.range(tf.shape(valid)[0]):
      # A padding slot is skipped, so it adds nothing to the clipped sum and,
      # with adaptive clipping, nothing to the unclipped-count estimate
      # (preprocessing a zero update would count it as "unclipped").
      record, metrics = tf.cond(valid[i], lambda: train_client(i),
                                lambda: skip_client(i))
      records = query.accumulate_preprocessed_record(records, record)
      totals = tf.nest.map_structure(tf.add, totals, metrics)
    return records, totals

  return group_fn


def build_grouped_dp_fedavg(
    *,
    keras_model_fn: Callable[[], tf.keras.Model],
    input_dim: int,
    num_classes: int,
    dp_factory: tff.aggregators.DifferentiallyPrivateFactory,
    client_learning_rate: float,
    client_momentum: float,
    server_optimizer: tff.learning.optimizers.Optimizer,
    batch_size: int,
    epochs: int,
    client_files_dir: Optional[str] = None,
    max_client_size: Optional[int] = None,
    max_norm: float = sanitize.DEFAULT_MAX_NORM,
) -> tff.learning.templates.LearningProcess:
  """Returns DP-FedAvg whose TFF clients are groups of simulated clients.

  Equivalent to `tff_dp.algorithms.learning_process.build_learning_process(algorithm=
  FEDAVG, model_aggregator=build_model_aggregator(dp=..., client_weighting=
  UNIFORM), ...)` (see the module docstring), with `next(state, groups)`
  taking `grouped_data.make_groups`' output. The group size is the caller's choice per
  round: the group and example axes of the client type are dynamic.

  Args:
    keras_model_fn: No-argument constructor of the uncompiled Keras model
      (logits out), with seeded initializers so that its initial weights are
      reproducible; converted with `tff.learning.models.
      functional_model_from_keras` and trained with `tff_dp.algorithms.models.loss_fn`.
    input_dim: Number of input features.
    num_classes: Number of classes (checked against the model's output).
    dp_factory: The unwrapped `tff.aggregators.DifferentiallyPrivateFactory`
      (`tff_dp.algorithms.learning_process.build_dp_aggregator`); its own TF Privacy
      query is used. Sanitizing is built in.
    client_learning_rate: Learning rate of the clients' SGD.
    client_momentum: Momentum of the clients' SGD (0 for plain SGD).
    server_optimizer: Optimizer the server applies to the noised average.
    batch_size: Local batch size (the last batch of a client may be smaller).
    epochs: Local epochs (the groups' `order` must hold that many passes).
    client_files_dir: None: groups carry their examples (`grouped_data.make_groups`).
      Else the directory `write_client_files` filled: groups carry only
      client ids (`make_groups(..., with_examples=False)`) and the worker
      reads the examples from there.
    max_client_size: The most examples any client of the population holds,
      if known. When its local batches (epochs x size / batch_size, rounded
      up) are at most `MAX_UNROLLED_BATCHES`, the local steps are unrolled in
      the graph, which is faster (see `_build_group_fn`); a client with more
      batches then fails the round loudly. None: a while loop, any size.
    max_norm: `tff_dp.mechanisms.sanitize`'s bound on an update's norm before clipping.

  Returns:
    A `tff.learning.templates.LearningProcess` with the reference's state and
    metrics structure.

  Raises:
    TypeError: For an unsupported factory or query.
    ValueError: For bad sizes, or a model that does not fit the data.
  """
  for name, value in (('input_dim', input_dim), ('num_classes', num_classes),
                      ('batch_size', batch_size), ('epochs', epochs)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{name} must be a positive int, got {value!r}')
  query = _dp_query(dp_factory)

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
  del probe
  model = tff.learning.models.functional_model_from_keras(
      keras_model_fn, loss_fn=models.loss_fn(),
      input_spec=models.input_spec(input_dim))
  trainable_init, non_trainable_init = model.initial_weights

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights(
        trainable=[tf.constant(w) for w in trainable_init],
        non_trainable=[tf.constant(w) for w in non_trainable_init])

  weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer, weights_type)
  # The DP factory's own process provides the initial aggregator state
  # (query state, initial DP event), so the state matches the reference's.
  aggregator = dp_factory.create(weights_type.trainable)
  query_state_type = (
      aggregator.initialize.type_signature.result.member.query_state)

  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=client_learning_rate, momentum=client_momentum or None)
  # As TFF's model-delta client work: its state is the optimizer's hparams.
  initial_hparams = client_optimizer.get_hparams(
      client_optimizer.initialize(tf.TensorSpec([], tf.float32)))

  @tff.federated_computation
  def client_work_init():
    return tff.federated_value(initial_hparams, tff.SERVER)

  hparams_type = client_work_init.type_signature.result.member

  derive_sample_params = tff.tensorflow.computation(
      query.derive_sample_params, query_state_type)
  params_type = derive_sample_params.type_signature.result
  group_fn = _build_group_fn(
      model, client_optimizer, query, input_dim=input_dim,
      batch_size=batch_size, epochs=epochs, max_norm=max_norm,
      max_batches=unrolled_batches(max_client_size, epochs=epochs,
                                   batch_size=batch_size),
      client_files_dir=(None if client_files_dir is None else
                        os.path.abspath(client_files_dir)))
  groups_type = grouped_data.group_type(input_dim,
                           with_examples=client_files_dir is None)

  @tff.tensorflow.computation(hparams_type, weights_type, params_type,
                              groups_type)
  def group_update(hparams, weights, params, group):
    return group_fn(hparams, weights, params, group)

  records_type, group_metrics_type = group_update.type_signature.result

  @tff.tensorflow.computation(records_type, query_state_type)
  def get_noised_result(sample_state, global_state):
    result, new_global_state, event = query.get_noised_result(
        sample_state, global_state)
    return result, new_global_state, event

  dp_event_type = get_noised_result.type_signature.result[2]
  convert_dp_event = tff.tensorflow.computation(
      lambda event: event.to_named_tuple(), dp_event_type)
  derive_metrics = tff.tensorflow.computation(query.derive_metrics,
                                              query_state_type)

  @tff.tensorflow.computation(group_metrics_type)
  def finalize_train_metrics(sums):
    examples = tf.cast(sums['num_examples'], tf.float32)
    # Keras' Mean and accuracy metrics: total / count, 0 when no example.
    return collections.OrderedDict(
        sparse_categorical_accuracy=tf.math.divide_no_nan(sums['correct'],
                                                          examples),
        loss=tf.math.divide_no_nan(sums['loss_sum'], examples),
        num_examples=sums['num_examples'],
        num_batches=sums['num_batches'])

  @tff.federated_computation
  def init_fn():
    return tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.federated_eval(initial_model_weights_fn,
                                                tff.SERVER),
        distributor=distributor.initialize(),
        client_work=client_work_init(),
        aggregator=aggregator.initialize(),
        finalizer=finalizer.initialize()))

  state_type = init_fn.type_signature.result

  @tff.federated_computation(state_type,
                             tff.FederatedType(groups_type, tff.CLIENTS))
  def next_fn(state, groups):
    distributed = distributor.next(state.distributor,
                                   state.global_model_weights)
    aggregator_state = state.aggregator
    query_state = aggregator_state.query_state
    params = tff.federated_broadcast(
        tff.federated_map(derive_sample_params, query_state))
    hparams = tff.federated_broadcast(state.client_work)
    records, group_metrics = tff.federated_map(
        group_update, (hparams, distributed.result, params, groups))
    # Sum of all simulated clients' preprocessed records = the sample state.
    sample_state = tff.federated_sum(records)
    train_metrics = tff.federated_map(finalize_train_metrics,
                                      tff.federated_sum(group_metrics))
    result, new_query_state, dp_event = tff.federated_map(
        get_noised_result, (sample_state, query_state))
    dp_event = tff.federated_map(convert_dp_event, dp_event)
    new_aggregator_state = tff.federated_zip(
        differential_privacy.DPAggregatorState(
            new_query_state, aggregator_state.agg_state, dp_event,
            tff.federated_value(False, tff.SERVER)))
    finalized = finalizer.next(state.finalizer, state.global_model_weights,
                               result)
    new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        global_model_weights=finalized.result,
        distributor=distributed.state,
        client_work=state.client_work,
        aggregator=new_aggregator_state,
        finalizer=finalized.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=distributed.measurements,
        client_work=collections.OrderedDict(train=train_metrics),
        aggregator=collections.OrderedDict(
            dp_query_metrics=tff.federated_map(derive_metrics,
                                               new_query_state),
            # SumFactory's (empty) measurements, as in the reference.
            dp=tff.federated_value((), tff.SERVER)),
        finalizer=finalized.measurements))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  @tff.tensorflow.computation(state_type.member)
  def get_model_weights(state):
    return state.global_model_weights

  @tff.tensorflow.computation(state_type.member,
                              state_type.member.global_model_weights)
  def set_model_weights(state, weights):
    return tff.learning.templates.LearningAlgorithmState(
        global_model_weights=weights,
        distributor=state.distributor,
        client_work=state.client_work,
        aggregator=state.aggregator,
        finalizer=state.finalizer)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)
