"""Clients held out of training, for federated evaluation.

With `--evaluation=federated --eval_clients=K`, K of the data's clients are
held out before anything else sees the data: they never train, and the
training side gets a view of the other clients only, re-indexed 0..N-1. So
the population N that the sampler draws from, the delta check and the
accountant charge is the number of TRAINING clients, under the one name
`population`, with no special case downstream. This mirrors TFF's
`tff.simulation.datasets.ClientData.train_test_client_split`.

Which clients are held out depends only on `--data_seed` and the number of
clients, never on the clients' data: a data-dependent choice (say, the
largest clients) would itself reveal something about the data.

Pure numpy: the program splits the data before it imports TensorFlow.
"""

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import numpy as np

from tff_dp.data.federated_data import FederatedData
from tff_dp.data.federated_data import size_statistics

# Its own random stream, so the choice is not tied to the partition's draws
# from the same --data_seed.
_STREAM = 0x68656C64  # 'held'


@dataclasses.dataclass(frozen=True, eq=False)
class HeldOutClients:
  """The clients a federated evaluation runs over.

  Attributes:
    source: The loaded data with all of its clients.
    indices: Positions of the held-out clients in `source`'s client order,
      ascending.
    seed: The seed the choice was drawn with (`--data_seed`).
  """
  source: Any
  indices: tuple[int, ...]
  seed: int

  @property
  def num_clients(self) -> int:
    return len(self.indices)

  @property
  def client_ids(self) -> tuple[str, ...]:
    return tuple(self.source.client_ids[i] for i in self.indices)

  def client_sizes(self) -> np.ndarray:
    """Number of examples of each held-out client, in `indices` order."""
    return self.source.client_sizes()[list(self.indices)]

  def describe(self) -> str:
    """One line for the start-up banner."""
    return (f'  held out for federated evaluation: {self.num_clients} of '
            f'{self.source.population} clients '
            f'({int(self.client_sizes().sum())} examples), chosen by '
            f'--data_seed={self.seed}; they never train and are not in the '
            'population N')


class TrainingClients:
  """The training clients of a streamed source, re-indexed 0..N-1.

  Offers what training needs from a streamed source (`tff_dp.program.client_data`,
  `tff_dp.program.experiment`): `population`, `input_dim`, `num_classes`,
  `image_shape`, `vocab_size`, `label_kind`, `client_sizes()`,
  `client_dataset(i)`, `test_dataset()` and the banner. Nothing is delegated
  implicitly, so no attribute of the full population can leak into training
  by accident.
  """

  def __init__(self, source: Any, indices: Sequence[int]):
    self._source = source
    self._indices = np.asarray(indices, dtype=np.int64)
    self.name = source.name
    self.client_ids = [source.client_ids[i] for i in self._indices]
    self.input_dim = source.input_dim
    self.num_classes = source.num_classes
    self.image_shape = source.image_shape
    self.vocab_size = source.vocab_size
    self.label_kind = source.label_kind
    # The clients declared public (`public_clients`), named by the privacy
    # statement and checked against --init_from's; never trained here.
    self.public_client_ids = list(getattr(source, 'public_client_ids', ()))
    self.public_rule = getattr(source, 'public_rule', '')
    self._sizes = source.client_sizes()[self._indices]

  @property
  def population(self) -> int:
    """Number of training clients: the N used for privacy accounting."""
    return len(self.client_ids)

  def fingerprint(self) -> Optional[str]:
    """The source's fingerprint (`tff_dp.data.fingerprint`) with the choice
    of training clients, or None if the source has none."""
    own = getattr(self._source, 'fingerprint', None)
    if not callable(own):
      return None
    digest = hashlib.sha256(own().encode())
    digest.update(self._indices.tobytes())
    return 'sha256:' + digest.hexdigest()

  def client_sizes(self) -> np.ndarray:
    return self._sizes.copy()

  def client_dataset(self, index: int):
    """The examples of training client `index` (unbatched)."""
    return self._source.client_dataset(int(self._indices[int(index)]))

  def test_dataset(self):
    return self._source.test_dataset()

  def statistics(self) -> dict[str, Any]:
    return size_statistics(self.name, self._sizes)

  def describe(self) -> str:
    s = self.statistics()
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} training clients "
        f'(the population N for privacy accounting) of '
        f'{self._source.population}',
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: {self.input_dim}, classes: {self.num_classes}',
    ])


def hold_out_clients(data: Any, *, eval_clients: int,
                     seed: int) -> tuple[Any, HeldOutClients]:
  """Splits `data` into training clients and `eval_clients` held-out ones.

  Args:
    data: Loaded federated data (`FederatedData` or a streamed source).
    eval_clients: How many clients to hold out; at least 1, and fewer than
      `data.population`.
    seed: Seed of the choice (`--data_seed`).

  Returns:
    (the training clients, the held-out clients). For `FederatedData` the
    training side is again a `FederatedData` (so in-memory training stays
    in memory), otherwise a `TrainingClients` view.

  Raises:
    ValueError: If `eval_clients` is out of range.
  """
  population = data.population
  if not 0 < eval_clients < population:
    raise ValueError(f'cannot hold out {eval_clients} of {population} '
                     'clients: need at least 1, and 1 left for training')
  rng = np.random.default_rng([seed, _STREAM])
  held = np.sort(rng.permutation(population)[:eval_clients])
  train = np.setdiff1d(np.arange(population), held)
  held_out = HeldOutClients(source=data,
                            indices=tuple(int(i) for i in held),
                            seed=seed)
  if not isinstance(data, FederatedData):
    return TrainingClients(data, train), held_out
  note = (f'{eval_clients} of {population} clients held out for federated '
          f'evaluation (seed {seed})')
  # replace() keeps every other field (test set, classes, image shape) and
  # validates the result again.
  training = dataclasses.replace(
      data,
      client_ids=tuple(data.client_ids[i] for i in train),
      client_x=tuple(data.client_x[i] for i in train),
      client_y=tuple(data.client_y[i] for i in train),
      provenance=f'{data.provenance}; {note}' if data.provenance else note)
  return training, held_out
