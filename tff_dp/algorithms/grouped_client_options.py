"""What a simulated client of the grouped path does beyond DP-FedAvg's SGD.

`tff_dp.algorithms.grouped_client_work` trains every simulated client of a
group as TFF's `build_unweighted_fed_avg` would; the variants here reproduce
TFF's other learning algorithms and tff-dp's other client-side mechanisms,
per SIMULATED client, exactly as the one-client-per-call reference computes
them (`tff_dp.algorithms.learning_process`), so that the privacy analysis is
unchanged:

* FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous
  Networks"): TFF's proximal client work adds `mu * (w_0 - w)` to each
  batch gradient (`proximal_client_work`, TFF 0.87; see `proximal_gradients`
  for its sign), and its client work has no state;
* FedSGD (McMahan et al. 2017, "Communication-Efficient Learning of Deep
  Networks from Decentralized Data"): no local step; the update is the mean
  gradient over all the client's examples at the broadcast weights, summed
  batch by batch weighted by the batch size as TFF's `build_fed_sgd` does;
* capped client weights (McMahan et al. 2018, "Learning Differentially
  Private Recurrent Language Models", `tff_dp.mechanisms.weighting`): the
  update is scaled by min(n_k / n_cap, 1), n_k being the examples the client
  processed (TFF's NUM_EXAMPLES weight), before it is sanitized and clipped;
* local DP (`tff_dp.mechanisms.local_dp`): the client's own clip and noise,
  with a fresh secret seed per simulated client, before anything is summed;
* example-level DP-SGD (`tff_dp.algorithms.grouped_example_dp`).
"""

import collections
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

from tff_dp.algorithms import grouped_model
from tff_dp.data.labels import LabelKind


@dataclasses.dataclass(frozen=True)
class ClientOptions:
  """The client-side variant of a grouped process (defaults: DP-FedAvg).

  Attributes:
    full_gradient: FedSGD: one mean gradient, no local steps.
    proximal_strength: FedProx's mu (0: FedAvg's plain local loss).
    stateless_client_work: The client work carries no optimizer hparams in
      the process state (TFF's FedProx and FedSGD), so each client's
      optimizer starts from its own built-in hparams.
    weight_cap: n_cap of capped weighting, or None for uniform weights.
    local_randomizer: Local DP: update (list of tensors) -> clipped and
      noised update, run once per simulated client; None for none.
    client_metrics: Whether the clients' training metric sums leave the
      group at all (False where the server is the adversary: local DP,
      example-level DP).
    example_dp: Example-level DP-SGD instead of plain local SGD
      (`tff_dp.algorithms.grouped_example_dp.ExampleDp`), or None.
    label_kind: The data's labels, which decide how accuracy is counted
      (`tff_dp.algorithms.grouped_model.accuracy_terms`).
  """
  full_gradient: bool = False
  proximal_strength: float = 0.0
  stateless_client_work: bool = False
  weight_cap: Optional[float] = None
  local_randomizer: Optional[Callable[[list], list]] = None
  client_metrics: bool = True
  example_dp: Optional[Any] = None
  label_kind: LabelKind = LabelKind.SINGLE


def proximal_gradients(grads, trainable, initial, *, strength: float):
  """Batch gradients plus TFF 0.87's proximal term.

  TFF's `proximal_client_work` adds `strength * (w_0 - w)`; the gradient of
  Li et al.'s mu/2 ||w - w_0||^2 is `mu * (w - w_0)`, so TFF's local steps
  move AWAY from the broadcast weights. The grouped path reproduces the
  reference as it runs (its tests compare the two); the sign is TFF's.
  """
  if strength <= 0.0:
    return grads
  return tuple(
      g + strength * (w0 - w) for g, w, w0 in zip(grads, trainable, initial))


def batch_gradients(model, trainable, non_trainable, batch_x, batch_y,
                    **gradient_options):
  """(logits, mean loss, batch_y, gradients at `trainable`) of one batch.

  The local steps and FedSGD's batches both differentiate the batch's mean
  loss (Keras' default reduction) at `trainable`; `gradient_options` go to
  `tape.gradient` (e.g. `unconnected_gradients`).
  """
  with tf.GradientTape() as tape:
    tape.watch(trainable)
    logits = model.predict_on_batch((trainable, non_trainable),
                                    batch_x,
                                    training=True)
    loss = model.loss(output=logits, label=batch_y)
  return logits, loss, batch_y, tape.gradient(loss, trainable,
                                              **gradient_options)


def build_gradient_step(model,
                        *,
                        non_trainable,
                        x,
                        y,
                        client_order,
                        batch_size,
                        label_kind=LabelKind.SINGLE):
  """`step(j, grad_sums, trainable, metrics)`: FedSGD's batch j.

  As TFF's `build_fed_sgd` client: the batch's mean-loss gradient at the
  (unchanged) broadcast weights, times the batch size, added to the sums;
  metrics on the batch's predictions, as the local steps track them.
  """

  def step(j, grad_sums, trainable, metrics):
    rows = client_order[j * batch_size:(j + 1) * batch_size]
    logits, loss, batch_y, grads = batch_gradients(
        model,
        trainable,
        non_trainable,
        tf.gather(x, rows),
        tf.gather(y, rows),
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    count = tf.shape(batch_y)[0]
    weight = tf.cast(count, tf.float32)
    grad_sums = tuple(a + weight * g for a, g in zip(grad_sums, grads))
    return grad_sums, trainable, batch_metrics(metrics,
                                               loss,
                                               logits,
                                               batch_y,
                                               label_kind=label_kind)

  return step


def zero_metrics(label_kind=LabelKind.SINGLE):
  """The metric sums of no batch (`batch_metrics`)."""
  metrics = collections.OrderedDict(loss_sum=tf.constant(0.0),
                                    correct=tf.constant(0.0))
  if LabelKind(label_kind) is not LabelKind.SINGLE:
    # The accuracy's denominator: the labels counted (not padding, ...).
    metrics['counted'] = tf.constant(0.0)
  metrics['num_examples'] = tf.constant(0, tf.int64)
  metrics['num_batches'] = tf.constant(0, tf.int64)
  return metrics


def batch_metrics(metrics,
                  loss,
                  logits,
                  labels,
                  *,
                  label_kind=LabelKind.SINGLE):
  """The metric sums after one batch, as TFF's Keras wrapper tracks them:
  on the batch's predictions, the loss weighted by the batch size (windows,
  for next-token labels), the accuracy over the labels it counts."""
  count = tf.shape(labels)[0]
  correct, counted = grouped_model.accuracy_terms(logits,
                                                  labels,
                                                  label_kind=label_kind)
  new = collections.OrderedDict(loss_sum=metrics['loss_sum'] +
                                loss * tf.cast(count, tf.float32),
                                correct=metrics['correct'] + correct)
  if 'counted' in metrics:
    new['counted'] = metrics['counted'] + counted
  new['num_examples'] = metrics['num_examples'] + tf.cast(count, tf.int64)
  new['num_batches'] = metrics['num_batches'] + 1
  return new


def mean_gradient(grad_sums, num_examples) -> list[tf.Tensor]:
  """FedSGD's update: the summed gradients over the examples processed
  (NaN for a client without examples, which sanitizing then zeroes, as TFF
  zeroes a non-finite update)."""
  total = tf.cast(num_examples, tf.float32)
  return [g / total for g in grad_sums]


def capped_weight_scale(update: list[tf.Tensor], num_examples,
                        weight_cap: Optional[float]) -> list[tf.Tensor]:
  """The update times min(n_k / n_cap, 1) (`tff_dp.mechanisms.weighting`).

  n_k is TFF's NUM_EXAMPLES weight: the examples the client processed over
  all local epochs, cast to float32 as TFF casts it. A non-finite update
  stays non-finite here and is zeroed by sanitizing, as TFF zeroes both it
  and its weight.
  """
  if weight_cap is None:
    return update
  w = tf.clip_by_value(tf.cast(num_examples, tf.float32) / weight_cap, 0.0, 1.0)
  return [u * tf.cast(w, u.dtype) for u in update]


def no_metrics() -> Any:
  """The (empty) metrics of a group whose clients release none."""
  return collections.OrderedDict()
