"""Frozen weights reach the clients once, not every round (both paths).

With `--trainable` (`tff_dp.models.trainable`; e.g. LoRA, Hu et al. 2022,
and FFA-LoRA, Sun et al. 2024, arXiv 2403.12313) most of a model is frozen:
DP-FedAvg (McMahan et al. 2018) never changes those weights, on TFF's path or
here. TFF 0.87's FedAvg nevertheless broadcasts the whole `ModelWeights` to
every client of every round. The grouped path (`tff_dp.algorithms.
grouped_fedavg`) instead broadcasts the TRAINABLE tensors only, and the frozen
ones are constants of the client computation: they are fixed when the
process is built (after `--init_from` is loaded), so they travel with the
client code, which a deployment ships to each device once, rather than with
each round's broadcast.

What that means in this simulation: TFF sends a computation to its worker
with every call (`process.next` included), so the frozen constants cross
the driver-to-worker connection once per round per worker (`--workers`:
every worker receives the computation), as the server state (the whole
model) already does in both directions. What no longer happens is a copy
per CLIENT: the round's `federated_broadcast` carries the trainable tensors
only. `tff_dp.program.model_size` reports both: the per-client, per-round
download and the one-time bytes.

The reference path (TFF's FedAvg, FedProx, FedSGD and DP-FTRL, one client
per TFF call: `tff_dp.algorithms.learning_process`, `dp_ftrl`) does the same
with TFF's own builders: its `model_distributor` (`build_frozen_distributor`)
broadcasts the trainable tensors and rebuilds each client's `ModelWeights`
at the clients with the frozen constants, so TFF's client work and
aggregator are unchanged; `pin_frozen` makes the process's initial state and
`set_model_weights` agree with the constants.

The server state keeps the whole `ModelWeights` (frozen part included), so
checkpoints, `get_model_weights` and evaluation are unchanged; setting
weights whose frozen part differs from the constants fails loudly rather
than letting the clients train against other frozen weights than the
released model holds.

Privacy: the constants are the model's initial (seeded) weights or those of
`--init_from`, a checkpoint pretrained on public data; nothing here reads
client data, and the server never changes them.
"""

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def frozen_values(model: tff.learning.models.FunctionalModel,
                  frozen_weights: Any = None) -> list[np.ndarray]:
  """The frozen weights the clients use: `frozen_weights` (e.g. those of
  `--init_from`) or the model's initial ones, checked against the model.

  Raises:
    ValueError: If `frozen_weights` does not match the model's frozen
      tensors in number, shape or dtype.
  """
  return checked_frozen(model.initial_weights[1], frozen_weights)


def checked_frozen(initial: Sequence[Any],
                   frozen_weights: Any = None) -> list[np.ndarray]:
  """`frozen_weights` if they match `initial` (a model's own frozen values)
  in number, shape and dtype, or `initial` if they are None.

  Raises:
    ValueError: If they do not match.
  """
  initial = [np.asarray(w) for w in initial]
  if frozen_weights is None:
    return initial
  values = [np.asarray(w) for w in frozen_weights]
  if [(v.shape, v.dtype) for v in values
     ] != [(w.shape, w.dtype) for w in initial]:
    raise ValueError(f'{len(values)} frozen weights do not match the '
                     f"model's {len(initial)} frozen tensors")
  return values


def variable_model_frozen(model_fn: Callable[[],
                                             tff.learning.models.VariableModel],
                          frozen_weights: Any = None) -> list[np.ndarray]:
  """`frozen_values` of TFF's model constructor (the reference path): the
  frozen weights of one model it builds (eagerly), or `frozen_weights`."""
  return checked_frozen([v.numpy() for v in model_fn().non_trainable_variables],
                        frozen_weights)


def build_initial_model_weights_fn(
    model: tff.learning.models.FunctionalModel,
    frozen: Sequence[np.ndarray]) -> tff.Computation:
  """The model's initial weights (frozen part: `frozen`), as constants."""
  trainable_init = model.initial_weights[0]

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights(
        trainable=[tf.constant(w) for w in trainable_init],
        non_trainable=[tf.constant(w) for w in frozen])

  return initial_model_weights_fn


def build_select_trainable(weights_type: tff.Type) -> tff.Computation:
  """`ModelWeights` -> its trainable tensors: what each round broadcasts."""

  @tff.tensorflow.computation(weights_type)
  def select_trainable(weights):
    return weights.trainable

  return select_trainable


def build_frozen_distributor(
    weights_type: tff.Type,
    frozen: Sequence[np.ndarray]) -> tff.learning.templates.DistributionProcess:
  """TFF's `model_distributor` for the reference path: broadcasts the
  trainable tensors of `weights_type` (a `ModelWeights`) and gives each
  client the whole `ModelWeights`, its frozen part the constants `frozen`.

  As `tff.learning.templates.build_broadcast_process`, stateless and with
  no measurements, so the process's state and metrics keep their types.
  """
  select_trainable = build_select_trainable(weights_type)

  @tff.tensorflow.computation(weights_type.trainable)
  def with_frozen(trainable):
    return tff.learning.models.ModelWeights(
        trainable=list(trainable),
        non_trainable=[tf.constant(w) for w in frozen])

  @tff.federated_computation()
  def initialize():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(initialize.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER))
  def next_fn(state, weights):
    trainable = tff.federated_broadcast(
        tff.federated_map(select_trainable, weights))
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_map(with_frozen, trainable),
        tff.federated_value((), tff.SERVER))

  return tff.learning.templates.DistributionProcess(initialize, next_fn)


def with_weights(state, weights):
  """A `LearningAlgorithmState` with its model weights replaced (in a TF
  computation)."""
  return tff.learning.templates.LearningAlgorithmState(
      global_model_weights=weights,
      distributor=state.distributor,
      client_work=state.client_work,
      aggregator=state.aggregator,
      finalizer=state.finalizer)


def pin_frozen(process: tff.learning.templates.LearningProcess,
               frozen: Sequence[np.ndarray]):
  """`process` (built with `build_frozen_distributor(..., frozen)`) whose
  initial state holds `frozen` as its frozen weights and whose
  `set_model_weights` refuses others (`checked_weights`).

  TFF's `initialize` builds a fresh model, whose frozen weights are the
  constants only if the model is seeded (a caller's own model may not be).
  """
  state_type = process.initialize.type_signature.result.member

  @tff.tensorflow.computation(state_type)
  def pin(state):
    weights = tff.learning.models.ModelWeights(
        trainable=state.global_model_weights.trainable,
        non_trainable=[tf.constant(w) for w in frozen])
    return with_weights(state, weights)

  @tff.federated_computation()
  def initialize():
    return tff.federated_map(pin, process.initialize())

  @tff.tensorflow.computation(state_type, state_type.global_model_weights)
  def set_model_weights(state, weights):
    return with_weights(state, checked_weights(weights, frozen))

  return tff.learning.templates.LearningProcess(
      initialize,
      process.next,
      process.get_model_weights,
      set_model_weights,
      get_hparams_fn=process.get_hparams,
      set_hparams_fn=process.set_hparams)


def build_group_update(group_fn: Callable[..., Any], hparams_type,
                       trainable_type, params_type, groups_type, *,
                       frozen: Sequence[np.ndarray]) -> tff.Computation:
  """`group_fn` (`tff_dp.algorithms.grouped_client_work.build_group_fn`) as
  the TFF computation of one group: broadcast trainable tensors in, the
  frozen ones constants of the computation."""

  @tff.tensorflow.computation(hparams_type, trainable_type, params_type,
                              groups_type)
  def group_update(hparams, trainable, params, group):
    weights = tff.learning.models.ModelWeights(
        trainable=list(trainable),
        non_trainable=[tf.constant(w) for w in frozen])
    return group_fn(hparams, weights, params, group)

  return group_update


def checked_weights(weights, frozen: Sequence[np.ndarray]):
  """`weights` (in a TF computation), failing if their frozen part is not
  `frozen` (the clients' constants)."""
  checks = [
      tf.debugging.assert_equal(
          w,
          tf.constant(v),
          message='the frozen weights differ from those the process was '
          'built with (build it with them: frozen_weights)')
      for w, v in zip(weights.non_trainable, frozen)
  ]
  with tf.control_dependencies(checks):
    return tf.nest.map_structure(tf.identity, weights)
