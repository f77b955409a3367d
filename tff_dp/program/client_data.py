"""Builds the tf.data datasets of a round's clients, and the server's test set.

In-memory data (`FederatedData`) is shuffled in numpy from a seed derived from
(seed, round, client), so a round's local data order is reproducible (and
identical after a resume). Streamed sources (SQLite, EMNIST) are shuffled by
tf.data with a seed derived the same way. `client_examples` and
`client_dataset_for` read any one client's examples, for the evaluations
over clients (`tff_dp.program.federated_evaluation`,
`tff_dp.program.membership_audit`).
"""

import hashlib
from typing import Any, Sequence, Union

import numpy as np
import tensorflow as tf

from tff_dp.data.federated_data import FederatedData

# One client's examples: the (x, y) arrays of in-memory data, or the unbatched
# dataset of a streamed source.
Examples = Union[tuple[np.ndarray, np.ndarray], tf.data.Dataset]


def client_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int,
                   epochs: int, rng: np.random.Generator) -> tf.data.Dataset:
  """Returns `epochs` shuffled passes over (x, y), batched.

  Args:
    x: Client features, float32 [n, d].
    y: Client labels, int32 [n].
    batch_size: Local batch size.
    epochs: Local epochs; each pass gets its own permutation.
    rng: Source of the permutations.
  """
  order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
  return tf.data.Dataset.from_tensor_slices(
      (x[order], y[order])).batch(batch_size)


class RoundDatasets:
  """Builds the datasets of a round's sampled clients."""

  def __init__(self, data: FederatedData, *, batch_size: int, epochs: int,
               seed: int):
    self._data = data
    self._batch_size = batch_size
    self._epochs = epochs
    self._seed = seed

  def __call__(self, round_num: int,
               client_indices: Sequence[int]) -> list[tf.data.Dataset]:
    return [
        client_dataset(self._data.client_x[i],
                       self._data.client_y[i],
                       batch_size=self._batch_size,
                       epochs=self._epochs,
                       rng=np.random.default_rng(
                           [self._seed, round_num,
                            int(i)])) for i in client_indices
    ]


def _derived_seed(seed: int, round_num: int, client: int) -> int:
  digest = hashlib.sha256(f'{seed}:{round_num}:{client}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') >> 1


class StreamedRoundDatasets:
  """Round datasets of a streamed source (`client_dataset(i)`)."""

  def __init__(self, source, *, batch_size: int, epochs: int, seed: int):
    self._source = source
    self._sizes = source.client_sizes()
    self._batch_size = batch_size
    self._epochs = epochs
    self._seed = seed

  def __call__(self, round_num: int,
               client_indices: Sequence[int]) -> list[tf.data.Dataset]:
    datasets = []
    for i in client_indices:
      i = int(i)
      datasets.append(
          self._source.client_dataset(i).shuffle(
              max(1, int(self._sizes[i])),
              seed=_derived_seed(self._seed, round_num, i),
              reshuffle_each_iteration=True).repeat(self._epochs).batch(
                  self._batch_size))
    return datasets


def round_datasets_for(data, *, batch_size: int, epochs: int, seed: int):
  """The round-dataset builder that fits `data`'s kind."""
  if isinstance(data, FederatedData):
    return RoundDatasets(data, batch_size=batch_size, epochs=epochs, seed=seed)
  return StreamedRoundDatasets(data,
                               batch_size=batch_size,
                               epochs=epochs,
                               seed=seed)


def test_dataset_for(data) -> tf.data.Dataset:
  """The server's held-out examples (unbatched) of any kind of data."""
  if isinstance(data, FederatedData):
    return tf.data.Dataset.from_tensor_slices((data.test_x, data.test_y))
  return data.test_dataset()


def client_examples(data: Any, index: int) -> Examples:
  """Client `index`'s examples of any kind of data, without copying.

  In-memory data (`FederatedData`) gives its (x, y) arrays, a streamed source
  its unbatched `client_dataset(index)`: building hundreds of tiny datasets
  costs about a millisecond each, the arrays nothing.
  """
  if isinstance(data, FederatedData):
    return data.client_x[index], data.client_y[index]
  return data.client_dataset(index)


def client_dataset_for(data: Any, index: int) -> tf.data.Dataset:
  """Client `index`'s examples (unbatched) of any kind of data, as a dataset."""
  examples = client_examples(data, index)
  if isinstance(examples, tf.data.Dataset):
    return examples
  return tf.data.Dataset.from_tensor_slices(examples)
