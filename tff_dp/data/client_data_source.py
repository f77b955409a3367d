"""Federated training data streamed from a tff-dp SQLite client-data file.

`SqlClientDataSource` is what `--client_data=path.sqlite` trains from: a file
written by `tff_dp.data.csv_import.import_table` (`python -m
tff_dp.cli.import_data`). A client's examples are streamed from SQLite by
`tf.data` when its dataset is iterated: in memory are only the client ids and
sizes (FedAvg's |D_k| / |D| weighting needs the sizes).

The file is untrusted input: whoever made it may have crafted it. Opening it
checks all of it (`client_data_checks`; the examples, `client_data_rows`),
and refuses it with a `client_data_checks.ClientDataFormatError` naming the
file, the field and the value, before anything is trained or written:
* the schema is exactly the importer's (`client_data_writer.SCHEMA`), so
  no view, trigger, collation or extra column changes what a query reads;
  the file is not in WAL mode (rows in a -wal file beside it would escape
  the checks and the fingerprint), its text is UTF-8 (ids are queried as
  UTF-8 bytes), and SQLite's quick_check passes;
* every metadata field has its type and range, and agrees with the rows
  (counts, label histograms, feature names against input_dim);
* client_metadata lists exactly the examples' (client, split) counts, and
  every client id is text the importer accepts (`table_checks.check_client_id`);
* every example is parsed by the parser training uses: input_dim finite
  float32 features and the label of its label column, in [0, num_classes).
So no later lazy read meets a value that was not checked, as long as the
file is not changed while in use; `fingerprint()` tells a changed file.
The checks read the file once through SQLite and hash it twice (measured on
2 cores shared with other jobs: 0.5-0.9 s for 130 MB of 32,000 784-feature
rows, 4-6 s for 124 MB of a million 8-feature rows; the rows dominate).

No SQL text is built from a value of the file. tf.data's SqlDataset cannot
bind parameters, so a client id enters its query as a hex blob literal (only
[0-9a-f], whatever the id holds) and the test set is one constant query.
TFF's `SqlClientData` is not used: it pastes ids between quotes, so a client
named `c1' OR '1'='1` read every client's rows.

Clients are the training split's client ids in sorted order; a client index
is a position in that order. The test split, if the file has one, is the
server's held-out evaluation set (see `csv_import` on how it was chosen).
"""

import hashlib
import os
import sqlite3
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import client_data_checks
from tff_dp.data import client_data_rows
from tff_dp.data import client_data_writer
from tff_dp.data import csv_import
from tff_dp.data import example_encoding
from tff_dp.data import registry
from tff_dp.data import sql_queries
from tff_dp.data.federated_data import size_statistics
from tff_dp.data.labels import LabelKind

_TRAIN = client_data_writer.TRAIN_SPLIT
_TEST = client_data_writer.TEST_SPLIT
_HISTOGRAM_LIMIT = 20


def file_fingerprint(path: str) -> str:
  """'sha256:' and the hex SHA-256 of the file's bytes, read in chunks.

  Memory is constant; the time is one read of the file (about 1 GB/s here
  when the file is in the page cache).

  Args:
    path: Any file.
  """
  with open(path, 'rb') as f:
    return 'sha256:' + hashlib.file_digest(f, 'sha256').hexdigest()


# The server's test set, in file order; no client id involved.
_TEST_QUERY = ("SELECT serialized_example_proto FROM examples WHERE "
               "split_name = 'test' ORDER BY rowid")


def _load(path: str) -> tuple[dict[str, Any], list[str], np.ndarray, str]:
  """Checks the whole file.

  Args:
    path: The file.

  Returns:
    (metadata, training client ids, their sizes, fingerprint of the file as
    it was checked).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such client-data file '
                            f'({client_data_checks.CREATE_HINT})')
  # Hashed before and after the checks, so that the fingerprint is that of
  # the bytes checked: a file changed meanwhile is refused.
  fingerprint = file_fingerprint(path)
  client_data_checks.check_header(path)
  try:
    con = sql_queries.connect_readonly(path)
    try:
      client_data_checks.check_schema(path, con)
      metadata = client_data_checks.read_metadata(path, con)
      client_data_checks.check_metadata(path, metadata)
      histograms = client_data_rows.scan_examples(path, con, metadata)
      client_ids, sizes, test_clients = client_data_checks.read_clients(
          path, con)
    finally:
      con.close()
  except sqlite3.Error as e:
    raise client_data_checks.error(
        path, f'cannot be read as a tff-dp client-data file '
        f'(SQLite: {e})') from None
  client_data_checks.check_totals(path, metadata, sizes, test_clients,
                                  histograms)
  if file_fingerprint(path) != fingerprint:
    raise client_data_checks.error(
        path, 'changed while it was being checked; load it again '
        'when nothing writes to it')
  return metadata, client_ids, sizes, fingerprint


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
    metadata: The file's metadata (see `csv_import`), as parsed JSON; the
      fields this class reads are checked, others are kept as they are.
    image_shape: None: imported tables are feature vectors, not images.
    vocab_size: None: nor token ids.
    label_kind: One int32 class id per row.
  """

  image_shape = None
  vocab_size = None
  label_kind = LabelKind.SINGLE

  def __init__(self, path: str):
    """Opens `path` and checks all of it (see the module docstring).

    Args:
      path: A file written by `csv_import.import_table`.

    Raises:
      FileNotFoundError: If `path` does not exist.
      OSError: If it cannot be read.
      client_data_checks.ClientDataFormatError: If it is not a valid tff-dp
        client-data file.
    """
    self.path = os.fspath(path)
    (self.metadata, self.client_ids, self._sizes,
     self._fingerprint) = _load(self.path)
    self.name = os.path.splitext(os.path.basename(self.path))[0]
    self.input_dim = self.metadata['input_dim']
    self.num_classes = self.metadata['num_classes']
    self.feature_names = tuple(self.metadata['feature_names'])
    # The worker process that iterates the datasets may have another cwd.
    self._data_source = os.path.abspath(self.path)

  def fingerprint(self) -> str:
    """The content hash of the file as it was checked: 'sha256:' + 64 hex.

    Hashed when the source was opened (before and after the checks, which
    refuse a file that changed in between), so it names exactly the bytes
    that were checked. Record it with a run and compare it on resume to
    `SqlClientDataSource(path).fingerprint()`; `file_fingerprint(path)`
    hashes the file as it is now (e.g. to tell a file changed during a
    run). Each hash is one read of the file: ~0.12 s for 130 MB in the
    page cache here, constant memory.
    """
    return self._fingerprint

  @property
  def population(self) -> int:
    """Number of training clients: the N used for privacy accounting."""
    return len(self.client_ids)

  @property
  def has_test_set(self) -> bool:
    return self.metadata['test_examples'] > 0

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
    return self._dataset(
        sql_queries.client_examples_query(self.client_ids[int(index)], _TRAIN))

  def test_dataset(self) -> tf.data.Dataset:
    """The server's held-out examples, unbatched, streamed, in file order.

    Raises:
      ValueError: If the file was imported without a test split.
    """
    if not self.has_test_set:
      raise ValueError(
          f'{self.path} has no test split (imported with test_split=none); '
          'server-side evaluation needs one')
    return self._dataset(_TEST_QUERY)

  def _dataset(self, query: str) -> tf.data.Dataset:
    spec = client_data_rows.feature_spec(self.input_dim)

    def parse(serialized):
      example = tf.io.parse_single_example(serialized, spec)
      # In range: the labels were checked against num_classes <= 2**31 - 1.
      return (example[example_encoding.FEATURES_KEY],
              tf.cast(example[example_encoding.LABEL_KEY], tf.int32))

    return tf.data.experimental.SqlDataset(
        'sqlite', self._data_source, query,
        tf.string).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

  def statistics(self) -> dict[str, Any]:
    """Summary statistics as plain Python values (JSON-serializable)."""
    m = self.metadata
    return {
        **size_statistics(self.name, self._sizes),
        'input_dim': self.input_dim,
        'num_classes': self.num_classes,
        'label_histogram': list(m['train_label_histogram']),
        'test_examples': m['test_examples'],
        'test_label_histogram': list(m['test_label_histogram']),
    }

  def provenance(self) -> str:
    m = self.metadata
    split = m['test_split']
    if split == csv_import.TestSplit.NONE.value:
      held_out = 'no test split'
    else:
      held_out = (f'test split by {split} (fraction {m["test_fraction"]}'
                  f', seed {m["seed"]})')
    classes = ('num_classes inferred as max label + 1'
               if m['num_classes_inferred'] else 'num_classes given')
    return (f'imported from {m["source"]} ({m["rows"]} rows); '
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
      lines.append(f"  test examples (server-side evaluation only): "
                   f"{s['test_examples']}; label histogram: "
                   f"{_format_histogram(s['test_label_histogram'])}")
    else:
      lines.append('  test examples: none (no test split)')
    return '\n'.join(lines)


def load(request: registry.LoadRequest) -> SqlClientDataSource:
  """`--dataset=sqlite` (a row of `tff_dp.data.registry`).

  Raises:
    ValueError: No `--client_data`, or a file without a test split (server-
      side evaluation needs one); OSError or ValueError from the file.
  """
  if not request.client_data:
    raise ValueError('--dataset=sqlite needs --client_data=<file.sqlite> '
                     '(made by ./run.sh import-data)')
  source = SqlClientDataSource(request.client_data)
  if not source.has_test_set:
    raise ValueError(f'{request.client_data}: has no test split; server-side '
                     'evaluation needs one (import with a test split)')
  return source
