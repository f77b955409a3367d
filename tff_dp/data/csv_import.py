"""Imports a table (CSV or NumPy .npz) into TFF's SQLite client-data format.

Bring your own federated data: one row per example, with a client-id column,
feature columns and an integer label column. `import_table` writes the SQLite
file that `tff.simulation.datasets.SqlClientData` reads (the format of TFF's
own EMNIST, Shakespeare, Stack Overflow and CIFAR-100 files) and that
`tff_dp.data.client_data_source.SqlClientDataSource` trains from.

Output schema (SQLite):

* `examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB,
  label INTEGER)`: one row per example, in input order. The blob is a
  serialized `tf.train.Example` with two features: 'features' (float_list of
  `input_dim` float32 values) and 'label' (int64_list of one value).
  `split_name` is 'train' or 'test'. The `label` column duplicates the label
  so that label histograms are one SQL query; TFF ignores extra columns.
  Indexed on (client_id, split_name): TFF fetches a client with
  `WHERE client_id = ... and split_name = ...`.
* `client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)`:
  TFF's per-client counts, one row per (client, split) with examples.
* `tff_dp_metadata(key TEXT PRIMARY KEY, value TEXT)`: JSON values:
  format_version, source, feature_names, input_dim, num_classes (and whether
  it was inferred), the split settings, row/client counts per split and the
  label histogram per split.

Decisions:

* Features are stored as float32 (the training dtype); a value that is
  finite in the file but overflows float32 is an error, not a silent inf.
* Labels must be integers in [0, num_classes). Integral float text ('3.0')
  is accepted as an integer; '2.5' is not. If `num_classes` is None it is
  inferred as max label + 1 (at least 2). Inferring it is a statistic of the
  data; pass `num_classes` when the number of classes is public knowledge.
* Held-out test set (for server-side evaluation), `test_split`:
  - CLIENTS (default): round(test_fraction * C) whole clients (at least one,
    at most C - 1) are held out. They are not part of the training
    population, so evaluation metrics released un-noised do not depend on
    any training client's data.
  - ROWS: each client keeps max(1, floor((1 - test_fraction) * n_k)) of its
    rows for training and the rest is pooled into the test set, as
    `tff_dp.data.offline.generate_synthetic` does. Caveat: then the released
    evaluation metrics depend on every training client's held-out rows, which
    the DP guarantee does not cover.
  - NONE: everything is training data.
  Which clients / rows are held out is decided by a keyed BLAKE2b hash of
  (seed, client id) or (seed, row number): reproducible, independent of
  Python's hash seed.
* A client exists only through its rows, so "a client with no rows" can only
  be a row whose client id is empty (or blank): that is an error, as is a
  client id containing a NUL character or longer than MAX_CLIENT_ID_BYTES
  (the loader refuses them too), or a single quote (TFF's SqlClientData
  builds its SQL query by string concatenation and would break on it;
  tff-dp's loader reads any id safely, but the file stays readable by TFF).

Memory: a CSV is read with the `csv` module one batch of rows at a time, and
an .npz member is read in chunks from the zip stream, so memory is bounded
by the batch size and SQLite's page cache, not by the number of rows. The
split, the per-client counts and the index are computed by SQLite, which
spills to temporary files. The summary reads the per-client counts (one
integer per client).

Atomicity: the database is written to a hidden temporary file next to
`output_path`, validated (row counts, `PRAGMA quick_check`), flushed to disk
and only then renamed to `output_path`. On any error (or Ctrl-C) the
temporary file is removed, so a file at `output_path` is always complete.

The importer is split by job: `csv_reader` and `npz_reader` (with
`npy_stream`) read and validate the rows by the rules of `table_checks`,
`example_encoding` serializes them as tf.train.Example protocol buffers
without TensorFlow (their wire format is fixed; tests parse the output with
TensorFlow and TFF), and `client_data_writer` writes the SQLite file. This
module checks the arguments, drives them and publishes the file.
"""

import dataclasses
import enum
import os
import tempfile
from typing import Any, Optional, Sequence, Union

import numpy as np

from tff_dp import atomic_io
from tff_dp.data import client_data_writer
from tff_dp.data import csv_reader
from tff_dp.data import example_encoding
from tff_dp.data import npz_reader
from tff_dp.data import table_checks

FORMAT_VERSION = 1

# Names of the file format that this module defined before the importer was
# split; kept here so that code importing them from this module still works.
PathLike = table_checks.PathLike
TableError = table_checks.TableError
MAX_CLIENT_ID_BYTES = table_checks.MAX_CLIENT_ID_BYTES
check_client_id = table_checks.check_client_id
FEATURES_KEY = example_encoding.FEATURES_KEY
LABEL_KEY = example_encoding.LABEL_KEY
TRAIN_SPLIT = client_data_writer.TRAIN_SPLIT
TEST_SPLIT = client_data_writer.TEST_SPLIT
METADATA_TABLE = client_data_writer.METADATA_TABLE
SCHEMA = client_data_writer.SCHEMA

_DEFAULT_BATCH_ROWS = 10_000
_READERS = {'.csv': csv_reader.CsvReader, '.npz': npz_reader.NpzReader}
_Reader = Union[csv_reader.CsvReader, npz_reader.NpzReader]


class TestSplit(enum.Enum):
  """How the server's held-out test set is taken from the table."""
  # Not a test class, despite the name (pytest would try to collect it).
  __test__ = False
  NONE = 'none'
  CLIENTS = 'clients'
  ROWS = 'rows'


@dataclasses.dataclass(frozen=True)
class ImportSummary:
  """What `import_table` wrote.

  Attributes:
    output_path: The SQLite file.
    rows: Examples read (train + test).
    feature_names: Names of the features, in storage order.
    num_classes: Number of classes.
    num_classes_inferred: Whether num_classes was inferred (max label + 1).
    test_split: How the test set was held out.
    train_clients: Clients in the training split: the population N.
    test_clients: Clients with at least one test example.
    train_examples: Examples in the training split.
    test_examples: Examples in the test split.
    examples_per_client_min: Smallest training client.
    examples_per_client_median: Median training client size.
    examples_per_client_max: Largest training client.
  """
  output_path: str
  rows: int
  feature_names: tuple[str, ...]
  num_classes: int
  num_classes_inferred: bool
  test_split: TestSplit
  train_clients: int
  test_clients: int
  train_examples: int
  test_examples: int
  examples_per_client_min: int
  examples_per_client_median: float
  examples_per_client_max: int


def _check_arguments(*, client_column, label_column, feature_columns,
                     num_classes, test_split, test_fraction, seed,
                     batch_rows) -> None:
  for name, value in (('client_column', client_column), ('label_column',
                                                         label_column)):
    if not isinstance(value, str) or not value:
      raise ValueError(f'{name} must be a non-empty string, got {value!r}')
  if client_column == label_column:
    raise ValueError(f'client_column and label_column are both '
                     f'{client_column!r}')
  if feature_columns is not None:
    if isinstance(feature_columns, str) or not feature_columns:
      raise ValueError('feature_columns must be None (all other columns) or '
                       f'a non-empty list of names, got {feature_columns!r}')
    if len(set(feature_columns)) != len(feature_columns):
      raise ValueError(f'feature_columns has duplicates: {feature_columns}')
    for role, name in (('client_column', client_column), ('label_column',
                                                          label_column)):
      if name in feature_columns:
        raise ValueError(f'feature_columns includes the {role} {name!r}')
  if num_classes is not None and (
      isinstance(num_classes, bool) or not isinstance(num_classes,
                                                      (int, np.integer)) or
      not 2 <= num_classes <= table_checks.MAX_NUM_CLASSES):
    raise ValueError(
        f'num_classes must be None (inferred) or an int in '
        f'[2, {table_checks.MAX_NUM_CLASSES}], got {num_classes!r}')
  if not isinstance(test_split, TestSplit):
    raise TypeError(f'test_split must be a TestSplit, got {test_split!r}')
  if test_split is not TestSplit.NONE and not (isinstance(
      test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction!r}')
  if isinstance(seed, bool) or not isinstance(seed,
                                              (int, np.integer)) or (seed < 0):
    raise ValueError(f'seed must be an int >= 0, got {seed!r}')
  if isinstance(batch_rows,
                bool) or not isinstance(batch_rows, int) or (batch_rows < 1):
    raise ValueError(f'batch_rows must be an int >= 1, got {batch_rows!r}')


def _check_paths(input_path: str, output_path: str, overwrite: bool) -> None:
  if not os.path.exists(input_path):
    raise TableError(input_path, 'no such file')
  if not os.path.isfile(input_path):
    raise TableError(input_path, 'not a regular file')
  if os.path.isdir(output_path):
    raise TableError(
        output_path, 'is a directory; give the path of the '
        '.sqlite file to write')
  directory = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(directory):
    raise TableError(output_path, f'directory {directory} does not exist')
  if os.path.exists(output_path):
    if os.path.samefile(input_path, output_path):
      raise TableError(output_path, 'is the input file')
    if not overwrite:
      raise TableError(
          output_path, 'already exists (pass overwrite=True, '
          'or --overwrite, to replace it)')


def _sync_and_publish(tmp_path: str, output_path: str) -> None:
  """Gives the finished file normal permissions, then publishes it."""
  umask = os.umask(0)
  os.umask(umask)
  # mkstemp creates the file 0600; give it the permissions a normal file
  # would have.
  os.chmod(tmp_path, 0o666 & ~umask)
  atomic_io.publish(tmp_path, output_path)


def _open_reader(input_path: str, **options) -> _Reader:
  """The reader of the file's type; `options` are the readers' arguments."""
  extension = os.path.splitext(input_path)[1].lower()
  if extension not in _READERS:
    raise TableError(
        input_path, f'unsupported file type {extension!r}: '
        'expected .csv or .npz')
  return _READERS[extension](input_path, **options)


def _insert_rows(writer: client_data_writer.ClientDataWriter, reader: _Reader,
                 num_classes: Optional[int]) -> tuple[int, bool]:
  """Inserts every row; returns num_classes and whether it was inferred."""
  for batch in reader.batches():
    writer.add(batch)
  if writer.rows == 0:
    raise TableError(reader.path, 'no data rows (only a header)', line=2)
  if num_classes is not None:
    return num_classes, False
  num_classes = writer.max_label + 1
  if num_classes < 2:
    raise TableError(
        reader.path, 'every label is 0, so num_classes cannot be inferred (it '
        'must be at least 2); pass num_classes')
  return num_classes, True


def _hold_out(writer: client_data_writer.ClientDataWriter,
              test_split: TestSplit, *, test_fraction: float, seed: int,
              path: str) -> None:
  """Marks the held-out examples as the test split."""
  if test_split is TestSplit.CLIENTS:
    writer.hold_out_clients(test_fraction=test_fraction, seed=seed, path=path)
  elif test_split is TestSplit.ROWS:
    writer.hold_out_rows(test_fraction=test_fraction, seed=seed, path=path)


def _metadata(reader: _Reader, rows: int, *, client_column: str,
              label_column: str, num_classes: int, inferred: bool,
              test_split: TestSplit, test_fraction: float,
              seed: int) -> dict[str, Any]:
  """The file's metadata, but for the writer's statistics."""
  input_dim = len(reader.feature_names)
  return {
      'format_version': FORMAT_VERSION,
      'source': os.path.basename(reader.path),
      'source_format': os.path.splitext(reader.path)[1].lower()[1:],
      'client_column': client_column,
      'label_column': label_column,
      'feature_names': list(reader.feature_names),
      'input_dim': input_dim,
      'example_features': {
          example_encoding.FEATURES_KEY: f'float32[{input_dim}]',
          example_encoding.LABEL_KEY: 'int64[]'
      },
      'num_classes': int(num_classes),
      'num_classes_inferred': inferred,
      'test_split': test_split.value,
      'test_fraction':
          (None if test_split is TestSplit.NONE else float(test_fraction)),
      'seed': int(seed),
      'rows': rows,
  }


def _write_and_publish(reader: _Reader, output_path: str, *, client_column: str,
                       label_column: str, num_classes: Optional[int],
                       test_split: TestSplit, test_fraction: float,
                       seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """Writes the file to a temporary beside `output_path`, then publishes it.

  Returns:
    The metadata and the writer's statistics (also in the file's metadata).
  """
  fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(
      os.path.abspath(output_path)),
                                  prefix=f'.{os.path.basename(output_path)}.',
                                  suffix='.tmp')
  os.close(fd)
  writer = None
  try:
    writer = client_data_writer.ClientDataWriter(tmp_path)
    num_classes, inferred = _insert_rows(writer, reader, num_classes)
    _hold_out(writer,
              test_split,
              test_fraction=test_fraction,
              seed=seed,
              path=reader.path)
    metadata = _metadata(reader,
                         writer.rows,
                         client_column=client_column,
                         label_column=label_column,
                         num_classes=num_classes,
                         inferred=inferred,
                         test_split=test_split,
                         test_fraction=test_fraction,
                         seed=seed)
    stats = writer.finish(metadata)
    writer.close()
    writer = None
    _sync_and_publish(tmp_path, output_path)
  except BaseException:
    if writer is not None:
      writer.close()
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise
  return metadata, stats


def _summary(output_path: str, metadata: dict[str, Any], stats: dict[str, Any],
             test_split: TestSplit) -> ImportSummary:
  """What `import_table` returns, from what it wrote."""
  return ImportSummary(
      output_path=output_path,
      rows=metadata['rows'],
      feature_names=tuple(metadata['feature_names']),
      num_classes=metadata['num_classes'],
      num_classes_inferred=metadata['num_classes_inferred'],
      test_split=test_split,
      train_clients=stats['train_clients'],
      test_clients=stats['test_clients'],
      train_examples=stats['train_examples'],
      test_examples=stats['test_examples'],
      examples_per_client_min=stats['examples_per_client_min'],
      examples_per_client_median=stats['examples_per_client_median'],
      examples_per_client_max=stats['examples_per_client_max'])


def import_table(input_path: PathLike,
                 *,
                 output_path: PathLike,
                 client_column: str,
                 label_column: str,
                 feature_columns: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None,
                 test_split: TestSplit = TestSplit.CLIENTS,
                 test_fraction: float = 0.2,
                 seed: int = 0,
                 overwrite: bool = False,
                 batch_rows: int = _DEFAULT_BATCH_ROWS) -> ImportSummary:
  """Converts a CSV or .npz table into TFF's SQLite client-data format.

  See the module docstring for the output schema and the decisions taken.

  Args:
    input_path: A .csv file (comma-separated, UTF-8, header row) or a .npz
      archive of column arrays (`np.savez(path, client=..., x=..., y=...)`).
    output_path: The .sqlite file to write; its directory must exist.
    client_column: Column (CSV) or array (.npz) holding the client ids.
    label_column: Column or array holding the integer labels.
    feature_columns: Feature columns / arrays in the order to store them;
      None takes every other column in file order.
    num_classes: Number of classes; labels must be in [0, num_classes). None
      infers max label + 1.
    test_split: How the server's held-out test set is taken.
    test_fraction: Fraction of clients (CLIENTS) or of each client's rows
      (ROWS) held out; ignored for NONE.
    seed: Key of the hash that picks the held-out clients or rows.
    overwrite: Replace an existing `output_path`.
    batch_rows: Rows converted and inserted at a time (bounds memory).

  Returns:
    An `ImportSummary`.

  Raises:
    TableError: On a bad input file (naming the file, line or row, column
      and reason), or an output path that cannot be written.
    ValueError, TypeError: On invalid arguments.
  """
  input_path = os.fspath(input_path)
  output_path = os.fspath(output_path)
  _check_arguments(client_column=client_column,
                   label_column=label_column,
                   feature_columns=feature_columns,
                   num_classes=num_classes,
                   test_split=test_split,
                   test_fraction=test_fraction,
                   seed=seed,
                   batch_rows=batch_rows)
  _check_paths(input_path, output_path, overwrite)
  reader = _open_reader(input_path,
                        client_column=client_column,
                        label_column=label_column,
                        feature_columns=feature_columns,
                        num_classes=num_classes,
                        batch_rows=batch_rows)
  metadata, stats = _write_and_publish(reader,
                                       output_path,
                                       client_column=client_column,
                                       label_column=label_column,
                                       num_classes=num_classes,
                                       test_split=test_split,
                                       test_fraction=test_fraction,
                                       seed=seed)
  return _summary(output_path, metadata, stats, test_split)
