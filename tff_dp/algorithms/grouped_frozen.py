"""Frozen weights reach the grouped path's clients once, not every round.

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

The server state keeps the whole `ModelWeights` (frozen part included), so
checkpoints, `get_model_weights` and evaluation are unchanged; setting
weights whose frozen part differs from the constants fails loudly rather
than letting the clients train against other frozen weights than the
released model holds.
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
  initial = [np.asarray(w) for w in model.initial_weights[1]]
  if frozen_weights is None:
    return initial
  values = [np.asarray(w) for w in frozen_weights]
  if [(v.shape, v.dtype) for v in values
     ] != [(w.shape, w.dtype) for w in initial]:
    raise ValueError(f'{len(values)} frozen weights do not match the '
                     f"model's {len(initial)} frozen tensors")
  return values


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
