"""Federated training data streamed from a tff-dp SQLite client-data file.

`SqlClientDataSource` is what `--client_data=path.sqlite` trains from: a file
written by `tff_dp.data.csv_import.import_table` (`python -m
tff_dp.import_data`). It reads the examples through TFF's own reader,
`tff.simulation.datasets.load_and_parse_sql_client_data` (an `SqlClientData`
parsing each row's tf.train.Example), so a client's examples are streamed
from SQLite by `tf.data` when the dataset is iterated: nothing is loaded
into memory up front beyond one integer per client (the client sizes, which
FedAvg's |D_k| / |D| weighting needs).

Clients are the training split's client ids in sorted order; a client index
is a position in that order. The test split, if the file has one, is the
server's held-out evaluation set (see `csv_import` on how it was chosen).
"""

import json
import os
import sqlite3
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.data import csv_import
from tff_dp.data.federated_data import size_statistics
from tff_dp.data.labels import LabelKind

_HISTOGRAM_LIMIT = 20


class ClientDataFormatError(ValueError):
  """The file is not a readable tff-dp client-data file."""


def _read_metadata(path: str) -> dict[str, Any]:
  """Reads and checks the metadata table, without TensorFlow."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such client-data file (create one '
                            'with `python -m tff_dp.import_data`)')
  try:
    # Read-only: a training run must never modify its data.
    con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
      rows = con.execute(
          f'SELECT key, value FROM {csv_import.METADATA_TABLE}').fetchall()
      splits = dict(con.execute(
          'SELECT split_name, COUNT(*) FROM client_metadata '
          'GROUP BY split_name').fetchall())
    finally:
      con.close()
  except sqlite3.DatabaseError as e:
    raise ClientDataFormatError(
        f'{path}: not a tff-dp client-data file ({e}); create one with '
        '`python -m tff_dp.import_data`') from None
  metadata = {key: json.loads(value) for key, value in rows}
  version = metadata.get('format_version')
  if version != csv_import.FORMAT_VERSION:
    raise ClientDataFormatError(
        f'{path}: format_version {version!r}; this tff-dp reads version '
        f'{csv_import.FORMAT_VERSION}')
  for key in ('input_dim', 'num_classes', 'feature_names', 'train_examples',
              'test_examples'):
    if key not in metadata:
      raise ClientDataFormatError(f'{path}: metadata has no {key!r}')
  if not splits.get(csv_import.TRAIN_SPLIT):
    raise ClientDataFormatError(f'{path}: no training clients')
  return metadata


def _format_histogram(counts: Sequence[int]) -> str:
  shown = ' '.join(f'{label}:{count}'
                   for label, count in enumerate(counts[:_HISTOGRAM_LIMIT]))
  # Many-class data would otherwise flood the start-up banner.
  if len(counts) > _HISTOGRAM_LIMIT:
    shown += f' ... ({len(counts) - _HISTOGRAM_LIMIT} more classes)'
  return shown


class SqlClientDataSource:
  """Clients and the server's test set of an imported SQLite file.

  Attributes:
    path: The SQLite file.
    name: Its base name without extension (shown in summaries).
    client_ids: Training client ids, sorted (the index order).
    input_dim: Number of features.
    num_classes: Labels are in [0, num_classes).
    feature_names: Names of the features, in order.
    metadata: The file's metadata (see `csv_import`), as parsed JSON.
    image_shape: None: imported tables are feature vectors, not images.
    vocab_size: None: nor token ids.
    label_kind: One int32 class id per row.
  """

  image_shape = None
  vocab_size = None
  label_kind = LabelKind.SINGLE

  def __init__(self, path: str):
    """Opens `path`.

    Args:
      path: A file written by `csv_import.import_table`.

    Raises:
      FileNotFoundError: If `path` does not exist.
      ClientDataFormatError: If it is not a tff-dp client-data file.
    """
    self.path = os.fspath(path)
    self.metadata = _read_metadata(self.path)
    self.name = os.path.splitext(os.path.basename(self.path))[0]
    self.input_dim = int(self.metadata['input_dim'])
    self.num_classes = int(self.metadata['num_classes'])
    self.feature_names = tuple(self.metadata['feature_names'])
    element_spec = {
        csv_import.FEATURES_KEY: tf.TensorSpec([self.input_dim], tf.float32),
        csv_import.LABEL_KEY: tf.TensorSpec([], tf.int32),
    }
    load = tff.simulation.datasets.load_and_parse_sql_client_data
    self._train = load(self.path, element_spec,
                       split_name=csv_import.TRAIN_SPLIT)
    self.client_ids = list(self._train.client_ids)
    self._test = None
    if self.metadata['test_examples']:
      self._test = load(self.path, element_spec,
                        split_name=csv_import.TEST_SPLIT)
    self._sizes = self._read_sizes()

  def _read_sizes(self) -> np.ndarray:
    con = sqlite3.connect(f'file:{self.path}?mode=ro', uri=True)
    try:
      rows = con.execute(
          'SELECT client_id, num_examples FROM client_metadata WHERE '
          'split_name = ? ORDER BY client_id',
          (csv_import.TRAIN_SPLIT,)).fetchall()
    finally:
      con.close()
    # TFF sorts ids in Python; SQLite orders TEXT by its UTF-8 bytes, which
    # is the same order. Checked, since indices must mean the same client.
    if [cid for cid, _ in rows] != self.client_ids:
      raise ClientDataFormatError(
          f'{self.path}: client_metadata does not match the clients TFF '
          'reads')
    return np.array([n for _, n in rows], dtype=np.int64)

  @property
  def population(self) -> int:
    """Number of training clients: the N used for privacy accounting."""
    return len(self.client_ids)

  @property
  def train_client_data(self) -> tff.simulation.datasets.ClientData:
    """TFF's ClientData of the training split (elements are dicts)."""
    return self._train

  @property
  def has_test_set(self) -> bool:
    return self._test is not None

  def client_sizes(self) -> np.ndarray:
    """Number of training examples of each client, in client order."""
    return self._sizes.copy()

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The training examples of client `index`, unbatched, streamed.

    Args:
      index: Position of the client in `client_ids`.

    Returns:
      A dataset of (features float32 [input_dim], label int32 []) in the
      order of the input file.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
      raise TypeError(f'client index must be an int, got {index!r}')
    if not 0 <= index < self.population:
      raise IndexError(f'client index {index} is out of range '
                       f'[0, {self.population})')
    # serializable_dataset_fn skips create_tf_dataset_for_client's linear
    # membership test over all ids; the index is already checked.
    dataset = self._train.serializable_dataset_fn(self.client_ids[int(index)])
    return dataset.map(_to_tuple)

  def test_dataset(self) -> tf.data.Dataset:
    """The server's held-out examples, unbatched, streamed.

    Raises:
      ValueError: If the file was imported without a test split.
    """
    if self._test is None:
      raise ValueError(
          f'{self.path} has no test split (imported with test_split=none); '
          'server-side evaluation needs one')
    # A fixed seed: the clients' order is reproducible (TFF shuffles it).
    return self._test.create_tf_dataset_from_all_clients(seed=0).map(
        _to_tuple)

  def statistics(self) -> dict[str, Any]:
    """Summary statistics as plain Python values (JSON-serializable)."""
    m = self.metadata
    sizes = self._sizes
    return {
        **size_statistics(self.name, sizes),
        'input_dim': self.input_dim,
        'num_classes': self.num_classes,
        'label_histogram': list(m.get('train_label_histogram', [])),
        'test_examples': int(m['test_examples']),
        'test_label_histogram': list(m.get('test_label_histogram', [])),
    }

  def provenance(self) -> str:
    m = self.metadata
    split = m.get('test_split')
    if split == csv_import.TestSplit.NONE.value:
      held_out = 'no test split'
    else:
      held_out = (f'test split by {split} (fraction {m.get("test_fraction")}'
                  f', seed {m.get("seed")})')
    classes = ('num_classes inferred as max label + 1'
               if m.get('num_classes_inferred') else 'num_classes given')
    return (f'imported from {m.get("source")} ({m.get("rows")} rows); '
            f'{held_out}; {classes}')

  def describe(self) -> str:
    """Multi-line human-readable summary, like `FederatedData.describe()`."""
    s = self.statistics()
    lines = [
        f"Federated data '{s['name']}': {s['clients']} clients "
        '(the population N for privacy accounting)',
        f'  source: {self.path}',
        f'  provenance: {self.provenance()}',
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']} (mean "
        f"{s['examples_per_client_mean']:.2f})",
        f"  features: {s['input_dim']}, classes: {s['num_classes']}",
        f"  train label histogram: {_format_histogram(s['label_histogram'])}",
    ]
    if self.has_test_set:
      lines.append(
          f"  test examples (server-side evaluation only): "
          f"{s['test_examples']}; label histogram: "
          f"{_format_histogram(s['test_label_histogram'])}")
    else:
      lines.append('  test examples: none (no test split)')
    return '\n'.join(lines)


def _to_tuple(element: dict[str, tf.Tensor]
              ) -> tuple[tf.Tensor, tf.Tensor]:
  return element[csv_import.FEATURES_KEY], element[csv_import.LABEL_KEY]

