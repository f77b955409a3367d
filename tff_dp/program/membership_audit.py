"""User-level membership inference on a run's final model, from client losses.

The loss-threshold attack of Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk
in Machine Learning: Analyzing the Connection to Overfitting" (IEEE CSF 2018),
against users. Threat model: the adversary holds the final model (the weights
a run releases last) and the data of a target user, and guesses that the user
was a training client iff the model's mean loss on the user's examples is at most a
threshold. Members are the training clients (the population N the
accountant charges, whether or not a cohort ever drew them: user-level DP
protects the presence of a user's data, not its use), non-members the
clients `tff_dp.data.held_out.hold_out_clients` kept out of training. That
choice depends on the seed only, so membership is independent of the data,
as the attack's statistics assume. The attack is given every threshold
(the best advantage is a maximum over them); the statistics of
`tff_dp.audit.membership` correct the epsilon lower bound for that choice.
If the run is (epsilon, delta)-DP towards users, the bound exceeds epsilon
with probability at most beta (clients' losses assumed independent given
membership). The attack sees the final model only, not the iterates of
every round, and a model that did not overfit its users' data may leak in
ways this attack misses: a bound of 0 shows nothing.

This module computes each client's loss under a model with its Keras twin,
as `tff_dp.program.evaluation.ServerEvaluator` does; no TFF computation runs.

PRIVACY: the inputs are private client data (the training clients' and the
held-out clients'), and the results are computed from them without noise:
they are NOT covered by the run's DP guarantee, and a caller releases them
only under the `nonprivate/` prefix (`tff_dp.program.release`).
"""

import collections.abc
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp import checks
from tff_dp.algorithms import models
from tff_dp.audit import arrays
from tff_dp.audit import membership
from tff_dp.data.held_out import HeldOutClients
from tff_dp.data.labels import LabelKind
from tff_dp.program import client_data
from tff_dp.program import evaluation


class ClientExamples(collections.abc.Sequence):
  """Some clients' examples (`client_data.Examples`), read when indexed.

  Lazy, so that subsampling members reads only the clients it keeps.
  """

  def __init__(self, data: Any, indices: Sequence[int]):
    self._data = data
    self._indices = tuple(int(i) for i in indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, k):
    if isinstance(k, slice):
      return ClientExamples(self._data, self._indices[k])
    return client_data.client_examples(self._data, self._indices[k])


def member_examples(data: Any) -> ClientExamples:
  """Every training client's examples (`PreparedRun.data`: the members)."""
  return ClientExamples(data, range(data.population))


def non_member_examples(held_out: HeldOutClients) -> ClientExamples:
  """The held-out clients' examples (`PreparedRun.held_out`: non-members)."""
  return ClientExamples(held_out.source, held_out.indices)


def _batches(examples: client_data.Examples,
             batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One client's examples as (x, y) arrays of at most `batch_size` rows."""
  if not isinstance(examples, tf.data.Dataset):
    x, y = (np.asarray(a) for a in examples)
    for start in range(0, len(x), batch_size):
      yield x[start:start + batch_size], y[start:start + batch_size]
    return
  size = int(examples.cardinality())
  if size == tf.data.INFINITE_CARDINALITY:
    raise ValueError('datasets: a client dataset is infinite (repeated).')
  batched = examples.batch(batch_size)
  if 0 < size <= batch_size:
    # One op instead of an iterator: about 5x faster for a tiny client.
    yield tuple(t.numpy() for t in batched.get_single_element())
  elif size != 0:
    yield from batched.as_numpy_iterator()


def _buffered(datasets: Sequence[client_data.Examples], batch_size: int):
  """Yields (client of each example, x, y), tiny clients pooled.

  Each holds at least `batch_size` examples (but the last) and fewer than
  twice as many.
  """
  owners, xs, ys, held = [], [], [], 0
  for client, examples in enumerate(datasets):
    for x, y in _batches(examples, batch_size):
      owners.append(np.full(len(x), client))
      xs.append(x)
      ys.append(y)
      held += len(x)
      if held >= batch_size:
        yield np.concatenate(owners), np.concatenate(xs), np.concatenate(ys)
        owners, xs, ys, held = [], [], [], 0
  if held:
    yield np.concatenate(owners), np.concatenate(xs), np.concatenate(ys)


def client_losses(weights: tff.learning.models.ModelWeights,
                  *,
                  keras_model_fn: Callable[[], tf.keras.Model],
                  datasets: Sequence[client_data.Examples],
                  label_kind: LabelKind,
                  batch_size: int = evaluation.EVAL_BATCH_SIZE) -> np.ndarray:
  """Each client's mean loss (over its examples) under the model `weights`.

  Args:
    weights: The model, as `process.get_model_weights(state)` returns it.
    keras_model_fn: No-argument constructor of the uncompiled Keras twin of
      the TFF model (`models.build_keras_model` with the run's arguments).
    datasets: Each client's examples: an unbatched `tf.data.Dataset` of
      (x, y), or (x, y) arrays (`client_data.client_examples`).
    label_kind: The data's labels, hence the loss (`models.loss_fn`).
    batch_size: Examples per model call; bounds memory (at most twice this
      many are held), not the result. Tiny clients share a call.

  Returns:
    float64 [len(datasets)]: client k's loss averaged over its examples,
    what Keras' `evaluate` on client k alone reports.

  Raises:
    ValueError: No client, a client without examples or an infinite one.
  """
  checks.check_int('batch_size', batch_size, minimum=1)
  if not len(datasets):
    raise ValueError('datasets must hold at least one client, got 0.')
  model = keras_model_fn()
  weights.assign_weights_to(model)
  loss = models.loss_fn(label_kind=label_kind)
  loss.reduction = tf.keras.losses.Reduction.NONE  # One loss per example.
  sums = np.zeros(len(datasets))
  counts = np.zeros(len(datasets), dtype=np.int64)
  for owners, x, y in _buffered(datasets, batch_size):
    losses = loss(y, model(x, training=False)).numpy()
    sums += np.bincount(owners, weights=losses, minlength=len(datasets))
    counts += np.bincount(owners, minlength=len(datasets))
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(f'datasets: client {empty[0]} has no examples, so no '
                     'mean loss.')
  return sums / counts


def _subsample(size: int, max_clients: Optional[int],
               rng: Optional[np.random.Generator]) -> np.ndarray:
  """Ascending indices of at most `max_clients` of `size`, uniformly."""
  if max_clients is None or size <= max_clients:
    return np.arange(size)
  rng = np.random.default_rng() if rng is None else rng
  return np.sort(rng.choice(size, size=max_clients, replace=False))


def membership_inference(
    weights: tff.learning.models.ModelWeights,
    *,
    keras_model_fn: Callable[[], tf.keras.Model],
    members: Sequence[client_data.Examples],
    non_members: Sequence[client_data.Examples],
    label_kind: LabelKind,
    delta: float,
    beta: float = 0.05,
    max_clients: Optional[int] = None,
    rng: Optional[np.random.Generator] = None) -> membership.MembershipAudit:
  """The loss-threshold attack on the model `weights` (see the module).

  Args:
    weights: The final model (`process.get_model_weights(state)`).
    keras_model_fn: Its Keras twin's constructor (as `client_losses`).
    members: The training clients' examples (`member_examples`).
    non_members: The held-out clients' examples (`non_member_examples`).
    label_kind: The data's labels, hence the loss.
    delta: The delta of the DP claim the bound is against, in (0, 1).
    beta: One minus the confidence of the bound, in (0, 1).
    max_clients: Evaluate at most this many members, drawn uniformly without
      replacement (the others are never read); None: all of them. This only
      saves time: the bound does not peak at balanced sets. On Gaussian
      losses against 100 non-members, 2000 members gave about twice the
      bound of 100 (means of 20 draws, separations of 1 to 10 standard
      deviations): the members' rates get narrower intervals, which
      outweighs the larger Bonferroni correction.
    rng: Draws the subsample; None: a generator seeded from the OS.

  Returns:
    `membership.loss_threshold_audit` of the members' and non-members'
    losses.

  Raises:
    ValueError: No members or no non-members (naming which), a client
      without examples, or delta, beta or max_clients out of range.
  """
  for name, clients in (('members', members), ('non_members', non_members)):
    if not len(clients):
      raise ValueError(f'{name} must hold at least one client, got 0.')
  # Checked before the evaluation, which may take minutes.
  arrays.probability('delta', delta)
  arrays.probability('beta', beta)
  if max_clients is not None:
    checks.check_int('max_clients', max_clients, minimum=1)
  chosen = [members[i] for i in _subsample(len(members), max_clients, rng)]
  # One pass over both sets: one model, tiny clients pooled across them.
  losses = client_losses(weights,
                         keras_model_fn=keras_model_fn,
                         datasets=chosen + list(non_members),
                         label_kind=label_kind)
  return membership.loss_threshold_audit(losses[:len(chosen)],
                                         losses[len(chosen):],
                                         delta=delta,
                                         beta=beta)


def describe(audit: membership.MembershipAudit) -> str:
  """One console line, labelled NON-PRIVATE (client data, no noise)."""
  return (f'NON-PRIVATE membership inference (loss threshold, from client '
          f'data without noise): AUC {audit.auc:.3f}, advantage '
          f'{audit.advantage:.3f}, epsilon >= '
          f'{audit.epsilon_lower_bound:.3g} with {1 - audit.beta:.0%} '
          f'confidence at delta={audit.delta:g}; {audit.members} members, '
          f'{audit.non_members} held-out clients')
