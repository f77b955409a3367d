"""One split of a checked TFF cache file, each client's rows read by tf.data.

`tff_cache.open_cache` checks the file and returns a `CacheSplit` per split.
A client's rows are read lazily, as training iterates them, with
`sql_queries.client_examples_query` (the id as a hex literal, never pasted
between quotes), parsed as TFF's loader parses them, and must be as many as
`client_metadata` says (TensorFlow's cardinality check).
"""

import collections
import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import sql_queries
from tff_dp.data.tff_cache_formats import ExampleFormat

Transform = Callable[[tf.data.Dataset], tf.data.Dataset]


class CacheSplit:
  """One split of a checked cache file: its clients and their examples.

  Attributes:
    path: The file.
    split: The split name, e.g. 'digits_only_train'.
    example_format: How its examples are parsed.
    client_ids: The split's client ids, sorted (TFF's order).
    element_spec: The structure of an element (TFF's loader's).
  """

  def __init__(self, path: str, split: str, example_format: ExampleFormat,
               sizes: Mapping[str, int]):
    self.path = path
    self.split = split
    self.client_ids = sorted(sizes)
    self._sizes = dict(sizes)
    self.example_format = example_format
    # The process that iterates the datasets may have another cwd; a path
    # starting with '/' is never taken for an SQLite URI.
    self._data_source = os.path.abspath(path)
    self.element_spec = collections.OrderedDict(
        (key,
         tf.TensorSpec(example_format.features[key].shape,
                       example_format.dtypes[key]))
        for key in sorted(example_format.features))

  def client_sizes(self) -> np.ndarray:
    """`num_examples` of each client, in `client_ids` order (int64)."""
    return np.array([self._sizes[c] for c in self.client_ids], np.int64)

  def _read(self, query, expected) -> tf.data.Dataset:
    rows = tf.data.experimental.SqlDataset('sqlite', self._data_source, query,
                                           tf.string)
    # Rows other than num_examples fail TensorFlow's own cardinality check
    # (one op, no measurable cost), whose message names the counts but not
    # the client: naming it would take an enumerate, an end marker and a
    # filter per client (up to ~1 ms more per client, measured).
    return rows.map(self.example_format.parse,
                    num_parallel_calls=tf.data.AUTOTUNE).apply(
                        tf.data.experimental.assert_cardinality(expected))

  def dataset(self, client_id: str) -> tf.data.Dataset:
    """The examples of `client_id`, in file order (TFF's elements).

    Reading them fails unless they are as many as `client_metadata` says.

    Args:
      client_id: A client of the split.
    """
    return self._read(sql_queries.client_examples_query(client_id, self.split),
                      self._size(client_id))

  def _size(self, client_id: str) -> int:
    if client_id not in self._sizes:
      raise KeyError(
          f'{self.path}: no client {sql_queries.show(client_id)} in split '
          f'{self.split!r}')
    return self._sizes[client_id]

  def clients_dataset(self,
                      client_ids: Sequence[str],
                      *,
                      transform: Optional[Transform] = None,
                      per_client: Optional[int] = None) -> tf.data.Dataset:
    """The examples of `client_ids`, client after client.

    Reading them fails unless each client's rows are as many as
    `client_metadata` says.

    Args:
      client_ids: Clients of the split, in the order wanted.
      transform: Applied to each client's examples (e.g. cutting windows).
      per_client: Keep at most this many (the first) elements of each
        client's transformed examples; None: all.
    """
    sizes = tf.constant([self._size(c) for c in client_ids],
                        tf.int64,
                        shape=[len(client_ids)])
    queries = tf.constant(
        [sql_queries.client_examples_query(c, self.split) for c in client_ids],
        tf.string,
        shape=[len(client_ids)])

    def examples(query, expected):
      dataset = self._read(query, expected)
      if transform is not None:
        dataset = transform(dataset)
      return dataset if per_client is None else dataset.take(per_client)

    return tf.data.Dataset.from_tensor_slices(
        (queries, sizes)).flat_map(examples)

  def pooled_dataset(self, seed: int) -> tf.data.Dataset:
    """Every client's examples, clients in TFF's seeded order.

    The order of TFF's `ClientData.create_tf_dataset_from_all_clients(seed)`.

    Args:
      seed: The seed of the clients' order.
    """
    client_ids = list(self.client_ids)
    np.random.RandomState(seed=seed).shuffle(client_ids)
    return self.clients_dataset(client_ids)
