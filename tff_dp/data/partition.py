"""Splits a centralized dataset into simulated clients.

Every partitioner returns one index array per client. The arrays are
disjoint, together cover every example exactly once, and none is empty:
an empty client cannot train and would silently change the population N
used for privacy accounting. Randomness comes only from the `rng` (or
`seed`) argument, so a partition is reproducible.

Partitions:

* IID: a random permutation cut into near-equal parts.
* DIRICHLET: label skew of Hsu, Qi and Brown (2019), "Measuring the Effects
  of Non-Identical Data Distribution for Federated Visual Classification"
  (arXiv:1909.06335). Each client's class proportions are q_k ~ Dir(alpha *
  p), where p is the label distribution of the data; clients have
  near-equal sizes, so only the labels are skewed.
* QUANTITY_SKEW: i.i.d. labels but power-law (Pareto) client sizes.
* NATURAL: the data already says which client owns each example (a client
  id column, or a generator that produces data per client).
"""

import enum
from typing import Any, Sequence

import numpy as np


class Partition(enum.Enum):
  """How examples are assigned to clients."""
  IID = 'iid'
  DIRICHLET = 'dirichlet'
  QUANTITY_SKEW = 'quantity_skew'
  NATURAL = 'natural'


def _check_counts(*, num_examples: int, num_clients: int) -> None:
  if isinstance(num_clients, bool) or not isinstance(num_clients,
                                                     (int, np.integer)):
    raise TypeError(f'num_clients must be an int, got {num_clients!r}')
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}')
  if num_clients > num_examples:
    raise ValueError(
        f'Cannot give each of num_clients={num_clients} clients at least one '
        f'example: there are only num_examples={num_examples} examples.')


def _split_by_sizes(order: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
  return np.split(order, np.cumsum(sizes)[:-1])


def _near_equal_sizes(num_examples: int, num_clients: int,
                      rng: np.random.Generator) -> np.ndarray:
  sizes = np.full(num_clients, num_examples // num_clients, dtype=np.int64)
  # Which clients get the leftover examples is random so that a client's
  # index does not predict its size.
  sizes[rng.permutation(num_clients)[:num_examples % num_clients]] += 1
  return sizes


def partition_iid(*, num_examples: int, num_clients: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
  """Splits examples uniformly at random into near-equal clients.

  Args:
    num_examples: Number of examples to split.
    num_clients: Number of clients; at most `num_examples`.
    rng: Source of randomness.

  Returns:
    `num_clients` index arrays whose sizes differ by at most one.

  Raises:
    ValueError: If `num_clients` is not in [1, num_examples].
  """
  _check_counts(num_examples=num_examples, num_clients=num_clients)
  sizes = _near_equal_sizes(num_examples, num_clients, rng)
  return _split_by_sizes(rng.permutation(num_examples), sizes)


def _draw_classes(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Draws one class per row of non-negative `weights` (rows sum > 0)."""
  cum = np.cumsum(weights, axis=1)
  total = cum[:, -1]
  # Clamped below the total so a zero-weight trailing class is never chosen
  # through floating-point rounding of u * total.
  u = np.minimum(rng.random(len(weights)) * total, np.nextafter(total, 0))
  return np.argmax(cum > u[:, None], axis=1)


def partition_dirichlet(*, labels: Sequence[Any], num_clients: int,
                        alpha: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
  """Label-skewed split of Hsu, Qi and Brown (2019).

  Client k draws class proportions q_k ~ Dir(alpha * p), p being the
  label distribution of `labels`; `alpha` is therefore Hsu et al.'s total
  concentration (with 10 balanced classes, alpha=1 gives each class the
  Dirichlet parameter 0.1). alpha -> inf approaches IID; alpha -> 0 gives
  every client a single class (as long as that class lasts).

  Clients get near-equal sizes (as in Hsu et al.) and fill them by drawing
  classes from q_k without replacement from the class pools. The draws
  run in rounds: in round r every client that still needs an r-th example
  draws one. So every client receives its first example, drawn from its own
  q_k, before anyone gets a second: no client can end up empty, and no
  "resample until every client is non-empty" loop is needed, which matters
  at ~2 examples per client where such loops rarely succeed. Running in
  rounds also spreads the effect of exhausted classes evenly over clients
  instead of penalizing whichever client happens to come last. When a
  class runs out, clients that wanted it redraw from q_k restricted to the
  classes left (and, if q_k has no mass left there, from the remaining
  examples' label distribution). Cost: ceil(n / num_clients) vectorized
  rounds.

  Args:
    labels: One label per example (any sortable values).
    num_clients: Number of clients; at most `len(labels)`.
    alpha: Dirichlet concentration, > 0; smaller is more skewed.
    rng: Source of randomness.

  Returns:
    `num_clients` index arrays into `labels`.

  Raises:
    ValueError: If `num_clients` is not in [1, len(labels)] or `alpha` is
      not a positive finite number.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be 1-D, got shape {labels.shape}')
  num_examples = labels.size
  _check_counts(num_examples=num_examples, num_clients=num_clients)
  if not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f'alpha must be a positive finite number, got {alpha}')
  _, y = np.unique(labels, return_inverse=True)
  y = y.reshape(-1)
  counts = np.bincount(y)
  num_classes = counts.size
  q = rng.dirichlet(alpha * counts / num_examples, size=num_clients)
  # Tiny concentrations can underflow every gamma draw of a row; such a row
  # falls back to the remaining-label distribution below.
  q = np.nan_to_num(q, nan=0.0)
  sizes = _near_equal_sizes(num_examples, num_clients, rng)

  remaining = counts.copy()
  slot_client, slot_class = [], []
  for r in range(int(sizes.max())):
    pending = np.flatnonzero(sizes > r)
    # Each pass either serves every pending client or exhausts at least one
    # class, so this loop runs at most num_classes + 1 times.
    while pending.size:
      weights = q[pending] * (remaining > 0)
      no_mass = ~(weights.sum(axis=1) > 0)
      weights[no_mass] = remaining
      choice = _draw_classes(weights, rng)
      accept = np.ones(pending.size, dtype=bool)
      demand = np.bincount(choice, minlength=num_classes)
      for c in np.flatnonzero(demand > remaining):
        wanting = np.flatnonzero(choice == c)
        accept[rng.choice(wanting, size=demand[c] - remaining[c],
                          replace=False)] = False
      slot_client.append(pending[accept])
      slot_class.append(choice[accept])
      remaining -= np.bincount(choice[accept], minlength=num_classes)
      pending = pending[~accept]

  slot_client = np.concatenate(slot_client)
  slot_class = np.concatenate(slot_class)
  # Every class pool is used up exactly, so each class has as many slots as
  # examples; a permutation of the class's examples fills its slots.
  example_of_slot = np.empty(num_examples, dtype=np.int64)
  for c in range(num_classes):
    example_of_slot[slot_class == c] = rng.permutation(np.flatnonzero(y == c))
  by_client = np.argsort(slot_client, kind='stable')
  return _split_by_sizes(example_of_slot[by_client], sizes)


def partition_quantity_skew(*, num_examples: int, num_clients: int,
                            power: float,
                            rng: np.random.Generator) -> list[np.ndarray]:
  """Splits i.i.d. examples into clients with power-law sizes.

  Client weights are Pareto distributed, P(w > t) = t**-power for t >= 1:
  smaller `power` gives a heavier tail (power <= 1 has no finite mean, so a
  few clients hold most of the data; power=1.5 puts about 0.1**(1/3), i.e.
  ~46%, of the examples in the largest 10% of clients). Every client first
  gets one example so none is empty; the other num_examples - num_clients
  are apportioned in proportion to the weights (largest remainder), so the
  sizes follow the weights exactly rather than with extra multinomial noise.

  Args:
    num_examples: Number of examples to split.
    num_clients: Number of clients; at most `num_examples`.
    power: Pareto tail index, > 0.
    rng: Source of randomness.

  Returns:
    `num_clients` index arrays.

  Raises:
    ValueError: If `num_clients` is not in [1, num_examples] or `power` is
      not a positive finite number.
  """
  _check_counts(num_examples=num_examples, num_clients=num_clients)
  if not (np.isfinite(power) and power > 0):
    raise ValueError(f'power must be a positive finite number, got {power}')
  # Pareto(power) is exp(E / power) with E ~ Exp(1); working with the log
  # avoids overflow to inf for small powers.
  log_w = rng.standard_exponential(num_clients) / power
  w = np.exp(log_w - log_w.max())
  extra = num_examples - num_clients
  quota = extra * w / w.sum()
  sizes = np.floor(quota).astype(np.int64)
  short = extra - int(sizes.sum())
  sizes[np.argsort(-(quota - sizes), kind='stable')[:short]] += 1
  return _split_by_sizes(rng.permutation(num_examples), sizes + 1)


def _is_missing(value: Any) -> bool:
  if value is None:
    return True
  try:
    return bool(np.isnan(value))
  except TypeError:
    return False


def partition_natural(
    *, groups: Sequence[Any]) -> tuple[list[str], list[np.ndarray]]:
  """Groups examples by the client id each example carries.

  Ids are compared as strings (so 7 and '7' are the same client) and
  returned sorted as strings; the partition needs no randomness.

  Args:
    groups: The client id of every example, e.g. a user-id column.

  Returns:
    (client_ids, indices): sorted distinct ids and, for each, the indices
    of its examples in increasing order.

  Raises:
    ValueError: If `groups` is empty, not 1-D, or contains a missing id
      (None or NaN).
  """
  groups = np.asarray(groups)
  if groups.ndim != 1:
    raise ValueError(f'groups must be 1-D, got shape {groups.shape}')
  if groups.size == 0:
    raise ValueError('groups is empty: there are no examples to partition')
  if groups.dtype.kind in 'fcO':
    missing = [i for i, g in enumerate(groups.tolist()) if _is_missing(g)]
    if missing:
      raise ValueError(
          f'{len(missing)} examples have a missing client id (None or NaN), '
          f'first at position {missing[0]}')
  keys = np.array([str(g) for g in groups.tolist()])
  ids, inverse = np.unique(keys, return_inverse=True)
  inverse = inverse.reshape(-1)
  order = np.argsort(inverse, kind='stable')
  return ([str(i) for i in ids],
          _split_by_sizes(order, np.bincount(inverse, minlength=ids.size)))


def make_partition(kind: Partition,
                   *,
                   labels: Sequence[Any],
                   num_clients: int,
                   seed: int | np.random.SeedSequence,
                   dirichlet_alpha: float = 0.5,
                   power: float = 1.5) -> list[np.ndarray]:
  """Partitions examples with the given labels into `num_clients` clients.

  Args:
    kind: Which partition; NATURAL needs client ids, not labels, and is
      refused here (use `partition_natural`).
    labels: One label per example (only DIRICHLET looks at the values).
    num_clients: Number of clients; at most `len(labels)`.
    seed: Seed of the partition (an int or a `np.random.SeedSequence`).
    dirichlet_alpha: Concentration for DIRICHLET.
    power: Pareto tail index for QUANTITY_SKEW.

  Returns:
    `num_clients` disjoint, covering, non-empty index arrays.

  Raises:
    ValueError: For NATURAL, a missing seed, or invalid counts/parameters.
  """
  kind = Partition(kind)
  if seed is None:
    raise ValueError('seed is required: partitions must be reproducible')
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  if kind is Partition.IID:
    return partition_iid(num_examples=labels.shape[0],
                         num_clients=num_clients,
                         rng=rng)
  if kind is Partition.DIRICHLET:
    return partition_dirichlet(labels=labels,
                               num_clients=num_clients,
                               alpha=dirichlet_alpha,
                               rng=rng)
  if kind is Partition.QUANTITY_SKEW:
    return partition_quantity_skew(num_examples=labels.shape[0],
                                   num_clients=num_clients,
                                   power=power,
                                   rng=rng)
  raise ValueError(
      f'partition {kind.value!r} cannot be made from labels: it needs the '
      'client id of every example (use partition_natural(groups=...)) or '
      'data generated per client')
