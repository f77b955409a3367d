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
dense tensors (`tff_dp.algorithms.grouped_data`), and one
`tff.tensorflow.computation` (`tff_dp.algorithms.grouped_client_work`) runs
all of them in a graph-mode loop. Everything that is per client in the
privacy analysis stays per SIMULATED client:

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

The same layout runs the other mechanisms of the program, each against its
own one-client-per-call reference (tests/algorithms/test_grouped_*.py):
DP-FTRL (Kairouz et al. 2021; the tree query of `tff_dp.algorithms.dp_ftrl`
is a `SumAggregationDPQuery` too, so its noise is added once per round
here as there), and, per simulated client (`tff_dp.algorithms.
grouped_client_options`), FedProx's proximal term, FedSGD's single mean
gradient, capped weights, local DP's randomizer (`tff_dp.algorithms.
grouped_local_dp`) and example-level DP-SGD (`tff_dp.algorithms.
grouped_example_dp`). Where only the clients add noise (local or
example-level DP alone), the server sums the records and divides by the
fixed clients_per_round with no aggregator state, as the reference does;
without any noise (non-private FedAvg), the server divides by the clients'
weights (`tff_dp.algorithms.grouped_mean`), also with no aggregator state.

The process mirrors the reference (`tff_dp.algorithms.learning_process.
build_learning_process` with FedAvg and a uniform DP aggregator): the same
state structure (`tff.learning.templates.LearningAlgorithmState`, with the
DP factory's own aggregator state; TFF's broadcast distributor, optimizer
finalizer and DP factory build the initial state), the same metrics
structure. Its `next` takes a list of groups instead of a list of datasets.
A round is three TF computations (`tff_dp.algorithms.grouped_server`): the
server's broadcast values, the groups, and one server step for the noise,
the DP event, the metrics and the server optimizer, with one broadcast and
one sum: with few clients a round is latency-bound, and each TFF
computation or intrinsic is its own call in the worker. One difference: each round broadcasts
the trainable tensors only; frozen ones (`--trainable`) are constants of
the client computation (`tff_dp.algorithms.grouped_frozen`), and only
trainable variables train (`tff_dp.algorithms.grouped_model`, which also
gives the transformer its next-token labels).
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_dp.algorithms import example_dp
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import grouped_client_work
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_example_dp
from tff_dp.algorithms import grouped_frozen
from tff_dp.algorithms import grouped_local_dp
from tff_dp.algorithms import grouped_mean
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import grouped_server
from tff_dp.data.labels import LabelKind
from tff_dp.mechanisms import local_dp
from tff_dp.mechanisms import sanitize

# Defined with the group graph whose layout they choose; kept here too, as
# part of this module's interface (tests/algorithms/test_grouped_fedavg.py
# uses them).
MAX_UNROLLED_BATCHES = grouped_client_work.MAX_UNROLLED_BATCHES
unrolled_batches = grouped_client_work.unrolled_batches


def _dp_query(dp_factory) -> tfp.DPQuery:
  """The TF Privacy query inside TFF's DP factory, checked."""
  if not isinstance(dp_factory, tff.aggregators.DifferentiallyPrivateFactory):
    raise TypeError('dp_factory must be a tff.aggregators.'
                    'DifferentiallyPrivateFactory (e.g. from tff_dp.algorithms'
                    '.learning_process.build_dp_aggregator), got '
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


def build_grouped_dp_fedavg(
    *,
    keras_model_fn: Callable[[], tf.keras.Model],
    input_dim: int,
    num_classes: int,
    dp_factory: Optional[tff.aggregators.DifferentiallyPrivateFactory],
    client_learning_rate: float,
    client_momentum: float,
    server_optimizer: tff.learning.optimizers.Optimizer,
    batch_size: int,
    epochs: int,
    client_files_dir: Optional[str] = None,
    max_client_size: Optional[int] = None,
    max_norm: float = sanitize.DEFAULT_MAX_NORM,
    options: grouped_client_options.ClientOptions = (
        grouped_client_options.ClientOptions()),
    local_dp_factory: Optional[local_dp.LocalDpFactory] = None,
    example_dp_settings: Optional[example_dp.DpSgdSettings] = None,
    clients_per_round: Optional[int] = None,
    label_kind: LabelKind = LabelKind.SINGLE,
    frozen_weights: Optional[Any] = None,
    mean_query: Optional[grouped_mean.ClientMeanQuery] = None,
) -> tff.learning.templates.LearningProcess:
  """Returns DP-FedAvg whose TFF clients are groups of simulated clients.

  With `options`, the same for TFF's FedProx and FedSGD, capped client
  weights and local DP (`grouped_client_options`); DP-FTRL is this process
  with the tree's factory and heavy-ball SGD at the server, as
  `tff_dp.algorithms.dp_ftrl` builds it from TFF's FedAvg.

  Equivalent to `tff_dp.algorithms.learning_process.build_learning_process(algorithm=
  FEDAVG, model_aggregator=build_model_aggregator(dp=..., client_weighting=
  UNIFORM), ...)` (see the module docstring), with `next(state, groups)`
  taking `grouped_data.make_groups`' output. The group size is the caller's choice per
  round: the group and example axes of the client type are dynamic.

  Args:
    keras_model_fn: No-argument constructor of the uncompiled Keras model
      (logits out), with seeded initializers so that its initial weights are
      reproducible, `--trainable` applied; converted with `tff_dp.algorithms.
      grouped_model.functional_model` (only its trainable variables train)
      and trained with `tff_dp.algorithms.models.loss_fn`.
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
      the graph, which is faster (see `grouped_client_work`); a client with
      more batches then fails the round loudly. None: a while loop, any size.
    max_norm: `tff_dp.mechanisms.sanitize`'s bound on an update's norm before clipping.
    options: The client-side variant (algorithm, weighting).
    local_dp_factory: Local DP (`tff_dp.algorithms.grouped_local_dp`): each
      simulated client's update is clipped and noised by this factory's
      randomizer. `dp_factory` is then its central factory (unwrapped), or
      None for local DP alone.
    example_dp_settings: Example-level DP-SGD in every simulated client
      (`tff_dp.algorithms.grouped_example_dp`) instead of local SGD(M).
    clients_per_round: The fixed denominator when there is no `dp_factory`
      (example-level DP alone; local DP takes its factory's).
    label_kind: The data's labels: SINGLE (a class id per example) or
      NEXT_TOKENS (the transformer's id per position of a window).
    frozen_weights: The values of the model's non-trainable tensors (e.g.
      from `--init_from`); None: their initial values. They are constants
      of the client computation and each round broadcasts the trainable
      tensors only (`tff_dp.algorithms.grouped_frozen`); the process's
      `set_model_weights` refuses other frozen values.
    mean_query: Non-private FedAvg (`tff_dp.algorithms.grouped_mean`): the
      clients' weighted or uniform mean, with no DP factory.

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
  if local_dp_factory is not None:
    options = grouped_local_dp.client_options(options, local_dp_factory)
    clients_per_round = local_dp_factory.clients_per_round
  if example_dp_settings is not None:
    options = grouped_example_dp.client_options(options, example_dp_settings)
  if mean_query is not None:
    query = grouped_mean.sole_query(mean_query,
                                    dp_factory=dp_factory,
                                    local_dp_factory=local_dp_factory,
                                    example_dp_settings=example_dp_settings)
  elif dp_factory is None:
    # Only noise inside the clients (local or example-level DP) may run
    # without a central DP query.
    if clients_per_round is None or (local_dp_factory is None and
                                     example_dp_settings is None):
      raise TypeError('dp_factory is required without local or example-level '
                      'DP (and clients_per_round with example-level DP)')
    query = grouped_local_dp.fixed_count_query(clients_per_round)
  else:
    query = _dp_query(dp_factory)
  label_kind = LabelKind(label_kind)
  options = dataclasses.replace(options, label_kind=label_kind)
  model = grouped_model.functional_model(keras_model_fn,
                                         input_dim=input_dim,
                                         num_classes=num_classes,
                                         label_kind=label_kind)
  frozen = grouped_frozen.frozen_values(model, frozen_weights)
  initial_model_weights_fn = grouped_frozen.build_initial_model_weights_fn(
      model, frozen)
  weights_type = initial_model_weights_fn.type_signature.result
  # Each round broadcasts the trainable tensors only.
  distributor = tff.learning.templates.build_broadcast_process(
      weights_type.trainable)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer, weights_type)
  # The DP factory's own process provides the initial aggregator state
  # (query state, initial DP event), so the state matches the reference's.
  aggregator = (None if dp_factory is None else dp_factory.create(
      weights_type.trainable))
  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=client_learning_rate, momentum=client_momentum or None)
  group_fn = grouped_client_work.build_group_fn(
      model,
      client_optimizer,
      query,
      input_dim=input_dim,
      batch_size=batch_size,
      epochs=epochs,
      max_norm=max_norm,
      max_batches=grouped_client_work.unrolled_batches(max_client_size,
                                                       epochs=epochs,
                                                       batch_size=batch_size),
      client_files_dir=(None if client_files_dir is None else
                        os.path.abspath(client_files_dir)),
      options=options)
  return _build_process(
      query,
      grouped_client_work.build_client_work_init(
          client_optimizer, stateless=options.stateless_client_work),
      group_fn,
      grouped_data.group_type(
          input_dim,
          with_examples=client_files_dir is None,
          label_shape=((input_dim,) if label_kind is LabelKind.NEXT_TOKENS else
                       ())),
      initial_model_weights_fn=initial_model_weights_fn,
      distributor=distributor,
      finalizer=finalizer,
      server_optimizer=server_optimizer,
      aggregator=aggregator,
      label_kind=label_kind,
      frozen=frozen)


def _build_process(
    query: tfp.DPQuery,
    client_work_init: tff.Computation,
    group_fn: Callable[..., Any],
    groups_type: tff.Type,
    *,
    initial_model_weights_fn: tff.Computation,
    distributor: tff.templates.MeasuredProcess,
    finalizer: tff.templates.MeasuredProcess,
    server_optimizer: tff.learning.optimizers.Optimizer,
    aggregator: Optional[tff.templates.AggregationProcess],
    label_kind: LabelKind = LabelKind.SINGLE,
    frozen: Sequence[Any] = (),
) -> tff.learning.templates.LearningProcess:
  """The process from its parts (see `build_grouped_dp_fedavg`).

  `distributor`, `finalizer` and `aggregator` give the initial state (the
  reference's structure); a round runs their work fused into
  `grouped_server`'s computations. `aggregator` None: the query's state is
  a constant rebuilt each round and the process keeps no aggregator state
  (local DP alone).
  """
  init_fn = _build_init_fn(initial_model_weights_fn, distributor,
                           client_work_init, aggregator, finalizer)
  state_type = init_fn.type_signature.result
  _check_fusable(distributor, finalizer, state_type)
  aggregated = aggregator is not None
  prepare = grouped_server.build_prepare(query,
                                         state_type.member,
                                         aggregated=aggregated)
  group_step = grouped_server.build_group_step(group_fn,
                                               prepare.type_signature.result,
                                               groups_type,
                                               frozen=frozen)
  group_metrics_type = group_step.type_signature.result[1]
  server_step = grouped_server.build_server_step(
      query,
      server_optimizer,
      state_type.member,
      group_step.type_signature.result,
      aggregated=aggregated,
      finalize_train_metrics=(functools.partial(grouped_model.finalize_metrics,
                                                label_kind=label_kind)
                              if group_metrics_type else None))
  next_fn = _build_next_fn(state_type,
                           groups_type,
                           prepare=prepare,
                           group_step=group_step,
                           server_step=server_step)
  get_model_weights, set_model_weights = _build_model_weights_fns(
      state_type, frozen)
  return tff.learning.templates.LearningProcess(init_fn, next_fn,
                                                get_model_weights,
                                                set_model_weights)


def _check_fusable(distributor: tff.templates.MeasuredProcess,
                   finalizer: tff.templates.MeasuredProcess,
                   state_type: tff.FederatedType) -> None:
  """The fused round replaces TFF's broadcast distributor (no state, no
  measurements) and optimizer finalizer (the optimizer's state, whose
  `next` it re-expresses); anything else would silently change."""
  empty = tff.StructType([])
  next_type = distributor.next.type_signature
  if (not state_type.member.distributor.is_equivalent_to(empty) or
      not next_type.result.measurements.member.is_equivalent_to(empty)):
    raise TypeError('the fused round needs TFF\'s broadcast distributor, got '
                    f'{next_type}')
  if not isinstance(finalizer, tff.learning.templates.FinalizerProcess):
    raise TypeError('the fused round needs TFF\'s optimizer finalizer, got '
                    f'{type(finalizer).__name__}')


def _build_init_fn(initial_model_weights_fn: tff.Computation,
                   distributor: tff.templates.MeasuredProcess,
                   client_work_init: tff.Computation,
                   aggregator: Optional[tff.templates.AggregationProcess],
                   finalizer: tff.templates.MeasuredProcess) -> tff.Computation:
  """The process's `initialize`: the reference's state structure."""

  @tff.federated_computation
  def init_fn():
    return tff.federated_zip(
        tff.learning.templates.LearningAlgorithmState(
            global_model_weights=tff.federated_eval(initial_model_weights_fn,
                                                    tff.SERVER),
            distributor=distributor.initialize(),
            client_work=client_work_init(),
            aggregator=(tff.federated_value((), tff.SERVER)
                        if aggregator is None else aggregator.initialize()),
            finalizer=finalizer.initialize()))

  return init_fn


def _build_next_fn(state_type: tff.FederatedType, groups_type: tff.Type, *,
                   prepare: tff.Computation, group_step: tff.Computation,
                   server_step: tff.Computation) -> tff.Computation:
  """The process's `next(state, groups)`: one round of DP-FedAvg, as one
  server TF call, one broadcast, the groups, one sum and one server TF call
  (`grouped_server`)."""

  @tff.federated_computation(state_type,
                             tff.FederatedType(groups_type, tff.CLIENTS))
  def next_fn(state, groups):
    server_values = tff.federated_broadcast(tff.federated_map(prepare, state))
    # Sum of all simulated clients' preprocessed records = the sample state;
    # the training metrics' sums travel with it.
    sums = tff.federated_sum(
        tff.federated_map(group_step, (server_values, groups)))
    new_state, metrics = tff.federated_map(server_step, (state, sums))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  return next_fn


def _build_model_weights_fns(
    state_type: tff.FederatedType,
    frozen: Sequence[Any]) -> tuple[tff.Computation, tff.Computation]:
  """The process's `get_model_weights` and `set_model_weights` (which
  refuses frozen weights other than the clients' constants, `frozen`)."""

  @tff.tensorflow.computation(state_type.member)
  def get_model_weights(state):
    return state.global_model_weights

  @tff.tensorflow.computation(state_type.member,
                              state_type.member.global_model_weights)
  def set_model_weights(state, weights):
    return grouped_frozen.with_weights(
        state, grouped_frozen.checked_weights(weights, frozen))

  return get_model_weights, set_model_weights
