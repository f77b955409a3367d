"""One simulated client's local steps, unrolled or in a while loop.

Part of grouped DP-FedAvg's client work (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models", ICLR;
`tff_dp.algorithms.grouped_client_work`, which trains a group's clients one
after another with these steps where `tff_dp.algorithms.grouped_vectorized`
does not train them together): local SGD(M) or FedProx steps on a client's
batches, or FedSGD's batch gradients summed.
"""

import functools

import tensorflow as tf

from tff_dp.algorithms import grouped_client_options


def build_local_step(model, optimizer, *, non_trainable, x, y, client_order,
                     batch_size, initial, proximal_strength, label_kind):
  """`local_step(j, opt_state, trainable, metrics)` of one client's data."""

  def local_step(j, opt_state, trainable, metrics):
    """Batch j of the client's local training."""
    rows = client_order[j * batch_size:(j + 1) * batch_size]
    logits, loss, batch_y, grads = grouped_client_options.batch_gradients(
        model, trainable, non_trainable, tf.gather(x, rows), tf.gather(y, rows))
    # FedProx only (TFF's proximal client work).
    grads = grouped_client_options.proximal_gradients(
        grads, trainable, initial, strength=proximal_strength)
    opt_state, trainable = optimizer.next(opt_state, trainable, grads)
    # Metrics as TFF's Keras wrapper tracks them: on the batch's
    # predictions before its step, the loss weighted by the batch size.
    metrics = grouped_client_options.batch_metrics(metrics,
                                                   loss,
                                                   logits,
                                                   batch_y,
                                                   label_kind=label_kind)
    return opt_state, tuple(trainable), metrics

  return local_step


def train_locally(local_step,
                  num_batches,
                  *,
                  max_batches,
                  opt_state,
                  trainable,
                  metrics,
                  independent_steps=False):
  """Runs `num_batches` local steps; returns their final
  (opt_state, trainable, metrics).

  Args:
    local_step: `build_local_step`'s function.
    num_batches: The client's number of local batches (a scalar tensor).
    max_batches: None for a while loop; else the steps to unroll.
    opt_state: The client optimizer's initial state.
    trainable: The initial trainable weights (a tuple).
    metrics: The initial metric sums (`grouped_client_options.zero_metrics`).
    independent_steps: FedSGD: a step only adds its batch's terms to
      `opt_state` (zeros) and `metrics` and leaves `trainable` unchanged, so
      unrolled steps are run each from the zeros and their terms summed in
      batch order (the same floats).
  """
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
        num_batches,
        max_batches,
        message='a client has more local batches than the process was '
        'built for (max_client_size)')
    with tf.control_dependencies([check]):
      num_batches = tf.identity(num_batches)
    if independent_steps:
      return _independent_steps(local_step, num_batches, max_batches, opt_state,
                                trainable, metrics)
    for j in range(max_batches):
      opt_state, trainable, metrics = tf.cond(
          j < num_batches,
          functools.partial(local_step, j, opt_state, trainable, metrics),
          lambda args=(opt_state, trainable, metrics): args)
  return opt_state, trainable, metrics


def _independent_steps(local_step, num_batches, max_batches, zeros, trainable,
                       zero_metrics):
  """FedSGD's unrolled batches, none waiting for another's sums.

  Chained through the running sums, the batch gradients ran one after the
  other; from the zeros, the executor can run them in parallel (as the
  floor's are). Adding each batch's terms to the sums in batch order gives
  the same floats as the chain (0 + x = x).
  """
  sums, totals = zeros, zero_metrics
  for j in range(max_batches):
    terms, _, batch = tf.cond(
        j < num_batches,
        functools.partial(local_step, j, zeros, trainable, zero_metrics),
        lambda: (zeros, trainable, zero_metrics))
    sums = tuple(a + b for a, b in zip(sums, terms))
    totals = tf.nest.map_structure(tf.add, totals, batch)
  return sums, trainable, totals
