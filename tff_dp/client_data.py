"""Turns the clients' numpy arrays into the tf.data datasets TFF trains on.

Local shuffling is done in numpy from a seed derived from (seed, round, client),
so a round's local data order is reproducible (and identical after a resume)
without relying on tf.data's op-level seeds inside TFF's serialized graphs.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data.federated_data import FederatedData


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
  return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(
      batch_size)


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
        client_dataset(
            self._data.client_x[i], self._data.client_y[i],
            batch_size=self._batch_size, epochs=self._epochs,
            rng=np.random.default_rng([self._seed, round_num, int(i)]))
        for i in client_indices
    ]
