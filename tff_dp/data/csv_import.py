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

This module does not import TensorFlow: the tf.train.Example protocol buffers
are encoded directly (their wire format is fixed), which keeps the importer
light and fast. Tests parse the output with TensorFlow and TFF.
"""

import csv
import dataclasses
import enum
import functools
import hashlib
import json
import math
import operator
import os
import sqlite3
import tempfile
import zipfile
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from tff_dp import atomic_io

PathLike = Union[str, os.PathLike]

TRAIN_SPLIT = 'train'
TEST_SPLIT = 'test'
FEATURES_KEY = 'features'
LABEL_KEY = 'label'
METADATA_TABLE = 'tff_dp_metadata'
FORMAT_VERSION = 1
MAX_CLIENT_ID_BYTES = 1024

_DEFAULT_BATCH_ROWS = 10_000
# Labels are stored as int64 but trained on as int32.
_MAX_NUM_CLASSES = 2**31 - 1
_MAX_LISTED_COLUMNS = 20


class TestSplit(enum.Enum):
  """How the server's held-out test set is taken from the table."""
  # Not a test class, despite the name (pytest would try to collect it).
  __test__ = False
  NONE = 'none'
  CLIENTS = 'clients'
  ROWS = 'rows'


class TableError(ValueError):
  """A problem with the input or output file of an import.

  Attributes:
    path: The file concerned.
    line: 1-based line of a CSV file (the first line of the record for a
      quoted field spanning lines), or None.
    reason: What is wrong, naming the column (and for .npz files the row).
  """

  def __init__(self, path: PathLike, reason: str, *,
               line: Optional[int] = None):
    self.path = os.fspath(path)
    self.line = line
    self.reason = reason
    super().__init__(str(self))

  def __str__(self) -> str:
    if self.line is None:
      return f'{self.path}: {self.reason}'
    return f'{self.path}:{self.line}: {self.reason}'


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


@dataclasses.dataclass
class _Batch:
  """Validated rows: where they came from, client ids, features, labels."""
  positions: list[int]
  client_ids: list[str]
  x: np.ndarray  # float32 [b, d]
  y: np.ndarray  # int64 [b]


# --------------------------------------------------------------------------
# tf.train.Example wire format.
#
# Example { Features features = 1; }
# Features { map<string, Feature> feature = 1; }  (entries: key = 1, value = 2)
# Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
#                   Int64List int64_list = 3; } }
# FloatList { repeated float value = 1 [packed]; }  Int64List likewise.


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=4096)
def _label_entry(label: int) -> bytes:
  """The Features map entry 'label' -> int64_list [label]."""
  int64_list = _field(1, _varint(label))
  entry = _field(1, LABEL_KEY.encode()) + _field(2, _field(3, int64_list))
  return _field(1, entry)


class _ExampleEncoder:
  """Serializes (float32 features, label) as a tf.train.Example."""

  def __init__(self, input_dim: int):
    data_len = 4 * input_dim
    # Everything before the float bytes has a fixed length for a fixed
    # input_dim, so it is built once.
    float_list_head = _varint(1 << 3 | 2) + _varint(data_len)
    float_list_len = len(float_list_head) + data_len
    feature_head = _varint(2 << 3 | 2) + _varint(float_list_len)
    feature_len = len(feature_head) + float_list_len
    key = _field(1, FEATURES_KEY.encode())
    value_head = _varint(2 << 3 | 2) + _varint(feature_len)
    entry_len = len(key) + len(value_head) + feature_len
    self._prefix = (_varint(1 << 3 | 2) + _varint(entry_len) + key +
                    value_head + feature_head + float_list_head)
    self._features_entry_len = len(self._prefix) + data_len

  def encode(self, x_bytes: bytes, label: int) -> bytes:
    """x_bytes: the row's features as little-endian float32."""
    label_entry = _label_entry(label)
    body_len = self._features_entry_len + len(label_entry)
    return b'\n' + _varint(body_len) + self._prefix + x_bytes + label_entry


# --------------------------------------------------------------------------
# Parsing and validation of values.


def _parse_float(text: str) -> float:
  # float() also accepts '1_000' (Python literal syntax), which no CSV
  # writer produces for a number: more likely a mangled field.
  if '_' in text:
    raise ValueError(text)
  return float(text)


def _parse_label(text: str) -> int:
  """Returns the integer label in `text`; raises ValueError with a reason."""
  if '_' in text:
    raise ValueError(f'{text!r} is not an integer')
  try:
    return int(text)
  except ValueError:
    pass
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f'{text!r} is not an integer') from None
  if not math.isfinite(value) or value != math.floor(value):
    raise ValueError(f'{text!r} is not an integer')
  return int(value)


def _check_label(label: int, num_classes: Optional[int]) -> None:
  if label < 0:
    raise ValueError(f'{label} is negative; labels must be in '
                     f'[0, {num_classes or "num_classes"})')
  if num_classes is not None and label >= num_classes:
    raise ValueError(f'{label} is out of range [0, {num_classes}) '
                     f'(num_classes={num_classes})')
  if label >= _MAX_NUM_CLASSES:
    raise ValueError(f'{label} is too large (labels must be below '
                     f'{_MAX_NUM_CLASSES})')


def check_client_id(client_id: str) -> None:
  """Raises ValueError if `client_id` cannot name a client in the file.

  The loader (`client_data_source`) applies the same rule to the files it
  reads, so that whatever the importer writes can be trained from.

  Args:
    client_id: A client id, as text.
  """
  if not client_id.strip():
    raise ValueError(f'empty client id {client_id!r} (every row must name '
                     'its client)')
  # SQLite leaves the meaning of text with a NUL undefined.
  if '\x00' in client_id:
    raise ValueError(f'client id {client_id[:40]!r} contains a NUL character')
  try:
    size = len(client_id.encode('utf-8'))
  except UnicodeEncodeError:
    raise ValueError(f'client id {client_id[:40]!r} is not valid '
                     'Unicode') from None
  # Ids are short names; a long one is a wrong column or a hostile file.
  if size > MAX_CLIENT_ID_BYTES:
    raise ValueError(f'client id {client_id[:40]!r}... is {size} bytes long '
                     f'in UTF-8 (at most {MAX_CLIENT_ID_BYTES})')


def _check_client_id(client_id: str) -> None:
  check_client_id(client_id)
  if "'" in client_id:
    raise ValueError(
        f'client id {client_id!r} contains a single quote, which TFF\'s '
        'SqlClientData cannot query')


def _float32_rows(x64: np.ndarray, describe) -> np.ndarray:
  """Casts validated float64 features to float32, rejecting non-finite.

  Args:
    x64: float64 [b, d].
    describe: Callable (row index, column index) -> (line or None, where,
      path) locating a value for the error message.

  Returns:
    float32 [b, d], little-endian.
  """
  # Overflow to inf is detected and reported below, with its location.
  with np.errstate(over='ignore'):
    x32 = x64.astype('<f4')
  finite = np.isfinite(x32)
  if not finite.all():
    r, c = (int(i) for i in np.argwhere(~finite)[0])
    line, where, path = describe(r, c)
    value = x64[r, c]
    if math.isfinite(value):
      reason = f'{value!r} overflows float32 (|x| < 3.4e38 required)'
    else:
      reason = f'{value!r}: NaN and infinite values are not allowed'
    raise TableError(path, f'{where}: {reason}', line=line)
  return x32


# --------------------------------------------------------------------------
# Sources.


def _list_columns(names: Sequence[str]) -> str:
  shown = ', '.join(repr(n) for n in names[:_MAX_LISTED_COLUMNS])
  if len(names) > _MAX_LISTED_COLUMNS:
    shown += f', ... ({len(names) - _MAX_LISTED_COLUMNS} more)'
  return shown


def _resolve_columns(path: str, available: Sequence[str], *,
                     client_column: str, label_column: str,
                     feature_columns: Optional[Sequence[str]],
                     line: Optional[int], what: str) -> list[str]:
  """Checks the named columns exist; returns the feature column names."""
  for role, name in (('client', client_column), ('label', label_column)):
    if name not in available:
      raise TableError(
          path, f'missing {role} {what} {name!r} (the file has: '
          f'{_list_columns(available)})', line=line)
  if feature_columns is None:
    features = [n for n in available if n not in (client_column, label_column)]
    if not features:
      raise TableError(path, f'no feature {what}s: the file has only the '
                       f'client and label {what}s', line=line)
    return features
  missing = [n for n in feature_columns if n not in available]
  if missing:
    raise TableError(
        path, f'missing feature {what}(s) {_list_columns(missing)} (the file '
        f'has: {_list_columns(available)})', line=line)
  return list(feature_columns)


class _CsvSource:
  """Streams validated batches from a CSV file with a header row."""

  def __init__(self, path: str, *, client_column: str, label_column: str,
               feature_columns: Optional[Sequence[str]],
               num_classes: Optional[int], batch_rows: int):
    self.path = path
    self._num_classes = num_classes
    self._batch_rows = batch_rows
    self._client_column = client_column
    self._label_column = label_column
    self._requested_features = feature_columns
    self.feature_names: list[str] = []

  def batches(self) -> Iterator[_Batch]:
    """Yields batches of validated rows; the header is read first."""
    with open(self.path, 'rb') as f:
      reader = csv.reader(self._lines(f), strict=True)
      header = self._next(reader, 0)
      if header is None:
        raise TableError(self.path, 'empty file: expected a header row',
                         line=1)
      self._read_header(header)
      yield from self._rows(reader)

  def _lines(self, f) -> Iterator[str]:
    """The lines of binary `f` as `open(newline='')` splits them, decoded.

    Each line is decoded on its own: a text file decodes 8 KiB blocks ahead
    of the csv reader, so a bad byte was reported lines too early, before
    errors on the lines in between.
    """
    number = 0
    for chunk in f:  # Ends at b'\n'; splitlines() also splits at b'\r'.
      for raw in (chunk.splitlines(keepends=True) if b'\r' in chunk else
                  (chunk,)):
        number += 1
        try:
          # utf-8-sig drops the byte-order mark spreadsheet programs write.
          yield raw.decode('utf-8-sig' if number == 1 else 'utf-8')
        except UnicodeDecodeError as e:
          raise TableError(self.path, f'not valid UTF-8 text ({e.reason} at '
                           f'byte {e.start + 1} of the line)',
                           line=number) from None

  def _next(self, reader, last_line: int) -> Optional[list[str]]:
    try:
      return next(reader)
    except StopIteration:
      return None
    except csv.Error as e:
      raise TableError(self.path, f'malformed CSV: {e}',
                       line=last_line + 1) from None

  def _read_header(self, header: list[str]) -> None:
    seen = {}
    for index, name in enumerate(header):
      if not name.strip():
        raise TableError(self.path, f'empty column name in the header '
                         f'(field {index + 1})', line=1)
      if name in seen:
        raise TableError(self.path, f'duplicate column name {name!r} in the '
                         f'header (fields {seen[name] + 1} and {index + 1})',
                         line=1)
      seen[name] = index
    self._num_fields = len(header)
    self.feature_names = _resolve_columns(
        self.path, header, client_column=self._client_column,
        label_column=self._label_column,
        feature_columns=self._requested_features, line=1, what='column')
    self._client_index = seen[self._client_column]
    self._label_index = seen[self._label_column]
    self._feature_indices = [seen[n] for n in self.feature_names]
    self._names_by_index = {index: name for name, index in seen.items()}
    fi = self._feature_indices
    # itemgetter of one index returns the item itself, not a tuple.
    self._feature_texts = (operator.itemgetter(*fi) if len(fi) > 1 else
                           lambda fields: (fields[fi[0]],))

  def _field_name(self, field: int) -> str:
    return f'column {self._names_by_index[field]!r} (field {field + 1})'

  def _parse_row(self, fields: list[str], line: int
                 ) -> tuple[str, list[float], int]:
    """Parses and checks one record; raises TableError."""
    path, num_classes = self.path, self._num_classes
    ci, li, fi = self._client_index, self._label_index, self._feature_indices
    if len(fields) != self._num_fields:
      what = 'an empty line' if not fields else f'{len(fields)} fields'
      raise TableError(path, f'{what}, expected {self._num_fields} fields '
                       'as in the header', line=line)
    client_id = fields[ci]
    try:
      _check_client_id(client_id)
    except ValueError as e:
      raise TableError(path, f'{self._field_name(ci)}: {e}',
                       line=line) from None
    texts = self._feature_texts(fields)
    try:
      x = list(map(float, texts))
      # The rule of _parse_float, checked once per row (fast path).
      if '_' in ''.join(texts):
        raise ValueError(texts)
    except ValueError:
      for j in fi:
        try:
          _parse_float(fields[j])
        except ValueError:
          raise TableError(path, f'{self._field_name(j)}: {fields[j]!r} '
                           'is not a number', line=line) from None
      raise
    try:
      label = _parse_label(fields[li])
      _check_label(label, num_classes)
    except ValueError as e:
      raise TableError(path, f'{self._field_name(li)}: label {e}',
                       line=line) from None
    return client_id, x, label

  def _rows(self, reader) -> Iterator[_Batch]:
    positions, client_ids, xs, ys = [], [], [], []
    last_line = reader.line_num
    while True:
      try:
        fields = self._next(reader, last_line)
        if fields is None:
          break
        line = last_line + 1
        last_line = reader.line_num
        client_id, x, label = self._parse_row(fields, line)
      except TableError:
        # A non-finite value on an earlier line of this batch is found only
        # when the batch is converted: report the first bad line first.
        if ys:
          self._batch(positions, client_ids, xs, ys)
        raise
      positions.append(line)
      client_ids.append(client_id)
      xs.append(x)
      ys.append(label)
      if len(ys) == self._batch_rows:
        yield self._batch(positions, client_ids, xs, ys)
        positions, client_ids, xs, ys = [], [], [], []
    if ys:
      yield self._batch(positions, client_ids, xs, ys)

  def _batch(self, positions, client_ids, xs, ys) -> _Batch:
    def describe(r, c):
      return (positions[r], self._field_name(self._feature_indices[c]),
              self.path)
    x = _float32_rows(np.array(xs, dtype=np.float64), describe)
    return _Batch(positions, client_ids, x, np.array(ys, dtype=np.int64))


class _NpyStream:
  """Reads a .npy member of a zip file in chunks of rows."""

  def __init__(self, zf: zipfile.ZipFile, member: str, path: str, name: str):
    self.name = name
    self._file = zf.open(member)
    try:
      version = np.lib.format.read_magic(self._file)
      if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(self._file)
      elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(self._file)
      else:
        raise TableError(path, f'array {name!r}: unsupported .npy format '
                         f'version {version}')
    except ValueError as e:
      if isinstance(e, TableError):
        raise
      raise TableError(path, f'array {name!r}: not a valid .npy array '
                       f'({e})') from None
    shape, fortran_order, dtype = header
    if dtype.hasobject:
      raise TableError(
          path, f'array {name!r} has dtype object (needs pickle, which is '
          'not loaded); save strings as a fixed-width array, e.g. '
          'np.asarray(ids, dtype=str)')
    if not shape:
      raise TableError(path, f'array {name!r} is a scalar; expected one '
                       'entry per row')
    if fortran_order and len(shape) > 1:
      raise TableError(path, f'array {name!r} is in Fortran order; save '
                       'np.ascontiguousarray(array) instead')
    self.shape = shape
    self.dtype = dtype
    self.rows = shape[0]
    self.width = int(np.prod(shape[1:], dtype=np.int64))
    self._row_bytes = dtype.itemsize * self.width
    self._path = path

  def read(self, rows: int) -> np.ndarray:
    """The next `rows` rows, as [rows] or [rows, width]."""
    wanted = rows * self._row_bytes
    buf = self._file.read(wanted)
    if len(buf) != wanted:
      raise TableError(self._path, f'array {self.name!r} is truncated')
    array = np.frombuffer(buf, dtype=self.dtype)
    return array.reshape((rows,) if len(self.shape) == 1 else
                         (rows, self.width))

  def close(self) -> None:
    self._file.close()


class _NpzSource:
  """Streams validated batches from a NumPy .npz archive of column arrays.

  Each array is a column with one entry per row: a 1-D array is one column;
  an array of shape [n, ...] holds prod(...) feature columns named
  'name[0]', 'name[1]', ... (flattened in C order).
  """

  def __init__(self, path: str, *, client_column: str, label_column: str,
               feature_columns: Optional[Sequence[str]],
               num_classes: Optional[int], batch_rows: int):
    self.path = path
    self._client_column = client_column
    self._label_column = label_column
    self._requested_features = feature_columns
    self._num_classes = num_classes
    self._batch_rows = batch_rows
    self.feature_names: list[str] = []

  def batches(self) -> Iterator[_Batch]:
    try:
      zf = zipfile.ZipFile(self.path)
    except (zipfile.BadZipFile, OSError) as e:
      raise TableError(self.path, f'not a valid .npz (zip) file: {e}') from None
    streams = []
    try:
      members = {}
      for member in zf.namelist():
        if member.endswith('.npy'):
          members[member[:-len('.npy')]] = member
      if not members:
        raise TableError(self.path, 'empty file: the archive holds no arrays')
      arrays = list(members)
      feature_arrays = _resolve_columns(
          self.path, arrays, client_column=self._client_column,
          label_column=self._label_column,
          feature_columns=self._requested_features, line=None, what='array')
      open_stream = lambda n: _NpyStream(zf, members[n], self.path, n)
      client = open_stream(self._client_column)
      streams.append(client)
      label = open_stream(self._label_column)
      streams.append(label)
      features = []
      for name in feature_arrays:
        features.append(open_stream(name))
        streams.append(features[-1])
      self._check_streams(client, label, features)
      yield from self._rows(client, label, features)
    finally:
      for stream in streams:
        stream.close()
      zf.close()

  def _check_streams(self, client, label, features) -> None:
    rows = client.rows
    for stream in [label] + features:
      if stream.rows != rows:
        raise TableError(
            self.path, f'array {stream.name!r} has {stream.rows} rows but '
            f'client array {client.name!r} has {rows}')
    if rows == 0:
      raise TableError(self.path, 'no rows: the arrays are empty')
    for stream, role in ((client, 'client'), (label, 'label')):
      if stream.width != 1 or len(stream.shape) != 1:
        raise TableError(self.path, f'{role} array {stream.name!r} must be '
                         f'1-D, got shape {stream.shape}')
    if client.dtype.kind not in 'iuUS':
      raise TableError(self.path, f'client array {client.name!r} has dtype '
                       f'{client.dtype}; expected strings or integers')
    if label.dtype.kind not in 'iuf':
      raise TableError(self.path, f'label array {label.name!r} has dtype '
                       f'{label.dtype}; expected integers')
    names = []
    for stream in features:
      if stream.dtype.kind not in 'biuf':
        raise TableError(self.path, f'feature array {stream.name!r} has '
                         f'dtype {stream.dtype}, which is not numeric')
      if stream.width == 0:
        raise TableError(self.path, f'feature array {stream.name!r} has no '
                         f'columns (shape {stream.shape})')
      if len(stream.shape) == 1:
        names.append(stream.name)
      else:
        names.extend(f'{stream.name}[{j}]' for j in range(stream.width))
    self.feature_names = names

  def _rows(self, client, label, features) -> Iterator[_Batch]:
    for start in range(0, client.rows, self._batch_rows):
      n = min(self._batch_rows, client.rows - start)
      client_ids, client_error = self._client_ids(client, client.read(n),
                                                  start)
      y, label_error = self._labels(label, label.read(n), start)
      x64 = np.concatenate(
          [s.read(n).reshape(n, s.width).astype(np.float64)
           for s in features], axis=1)
      bad_row = []

      def describe(r, c, start=start):
        bad_row.append(start + r)
        return (None, f'feature {self.feature_names[c]!r} row {start + r}',
                self.path)

      try:
        x = _float32_rows(x64, describe)
        feature_error = None
      except TableError as e:
        feature_error = (bad_row[0], e)
      # Each array is checked as a whole: report the first bad row.
      errors = [e for e in (client_error, label_error, feature_error) if e]
      if errors:
        raise min(errors, key=lambda e: e[0])[1]
      yield _Batch(list(range(start, start + n)), client_ids, x, y)

  def _client_ids(self, stream, raw: np.ndarray, start: int
                  ) -> tuple[list[str], Optional[tuple[int, TableError]]]:
    """Client ids as strings, and the first bad one (row, error) if any."""
    client_ids = []
    for r, value in enumerate(raw.tolist()):
      try:
        if isinstance(value, bytes):
          try:
            value = value.decode('utf-8')
          except UnicodeDecodeError as e:
            raise ValueError(f'not UTF-8 ({e.reason})') from None
        client_id = str(value)
        _check_client_id(client_id)
      except ValueError as e:
        return client_ids, (start + r, TableError(
            self.path, f'client array {stream.name!r} row {start + r}: {e}'))
      client_ids.append(client_id)
    return client_ids, None

  def _labels(self, stream, raw: np.ndarray, start: int
              ) -> tuple[np.ndarray, Optional[tuple[int, TableError]]]:
    """int64 labels, and the first bad one (row, error) if any."""
    upper = (_MAX_NUM_CLASSES if self._num_classes is None else
             self._num_classes)
    # Checked before the cast to int64, which would wrap or truncate.
    if raw.dtype.kind == 'f':
      with np.errstate(invalid='ignore'):
        bad = ~np.isfinite(raw) | (raw != np.floor(raw)) | (raw < 0) | (
            raw >= upper)
    else:
      bad = (raw < 0) | (raw >= upper)
    if not bad.any():
      return raw.astype(np.int64), None
    r = int(np.argmax(bad))
    value = raw[r].item()
    try:
      if isinstance(value, float) and not (math.isfinite(value) and
                                           value == math.floor(value)):
        raise ValueError(f'{value!r} is not an integer')
      _check_label(int(value), self._num_classes)
      raise AssertionError(f'label {value} was flagged but is valid')
    except ValueError as e:
      return raw[:0].astype(np.int64), (start + r, TableError(
          self.path, f'label array {stream.name!r} row {start + r}: '
          f'label {e}'))


# --------------------------------------------------------------------------
# Writing.


def _key(seed: int, value: Any) -> int:
  """A keyed 64-bit hash (signed, as SQLite integers are)."""
  digest = hashlib.blake2b(f'{seed}\x00{value}'.encode(), digest_size=8)
  return int.from_bytes(digest.digest(), 'big', signed=True)


_CREATE_TABLES = (
    """CREATE TABLE examples (
         split_name TEXT NOT NULL,
         client_id TEXT NOT NULL,
         serialized_example_proto BLOB NOT NULL,
         label INTEGER NOT NULL)""",
    """CREATE TABLE client_metadata (
         client_id TEXT NOT NULL,
         split_name TEXT NOT NULL,
         num_examples INTEGER NOT NULL)""",
    """CREATE TABLE tff_dp_metadata (
         key TEXT PRIMARY KEY,
         value TEXT NOT NULL)""",
)
_CREATE_INDEXES = (
    'CREATE INDEX examples_client_split ON examples (client_id, split_name)',
    'CREATE INDEX client_metadata_split ON client_metadata '
    '(split_name, client_id)',
)
# Every table and index of a client-data file; the loader refuses any other
# schema, since a crafted one (a view, a collation) changes what queries read.
SCHEMA = _CREATE_TABLES + _CREATE_INDEXES


class _Writer:
  """Writes the database into a (temporary) file in one transaction."""

  def __init__(self, path: str):
    self._con = sqlite3.connect(path, isolation_level=None)
    # The file is a private temporary until it is renamed, so there is
    # nothing to roll back to: no journal, no syncs until the end.
    self._con.execute('PRAGMA journal_mode = OFF')
    self._con.execute('PRAGMA synchronous = OFF')
    # SQLite's page cache, 32 MiB (negative: KiB): enough to build the index
    # without thrashing, small next to the machine's memory and independent
    # of the data size. A literal: no SQL text here is built from values.
    self._con.execute('PRAGMA cache_size = -32768')
    self._con.execute('BEGIN')
    for statement in _CREATE_TABLES:
      self._con.execute(statement)
    self._encoder = None
    self.rows = 0
    self.max_label = -1

  def add(self, batch: _Batch) -> None:
    if self._encoder is None:
      self._encoder = _ExampleEncoder(batch.x.shape[1])
    encode = self._encoder.encode
    data = batch.x.tobytes()
    step = 4 * batch.x.shape[1]
    labels = batch.y.tolist()
    self._con.executemany(
        'INSERT INTO examples (split_name, client_id, '
        'serialized_example_proto, label) VALUES (?, ?, ?, ?)',
        ((TRAIN_SPLIT, cid, encode(data[i * step:(i + 1) * step], label),
          label) for i, (cid, label) in enumerate(zip(batch.client_ids,
                                                      labels))))
    self.rows += len(labels)
    self.max_label = max(self.max_label, max(labels))

  def split(self, test_split: TestSplit, *, test_fraction: float,
            seed: int, path: str) -> None:
    """Marks the held-out examples as TEST_SPLIT."""
    con = self._con
    if test_split is TestSplit.NONE:
      return
    if test_split is TestSplit.CLIENTS:
      clients = con.execute(
          'SELECT COUNT(DISTINCT client_id) FROM examples').fetchone()[0]
      if clients < 2:
        raise TableError(path, f'test_split=clients needs at least 2 clients '
                         f'(one to train, one to hold out); the file has '
                         f'{clients}')
      held_out = min(max(1, round(test_fraction * clients)), clients - 1)
      con.create_function('tffdp_client_key', 1,
                          lambda cid: _key(seed, cid), deterministic=True)
      con.execute(
          'CREATE TEMP TABLE held_out AS SELECT client_id FROM (SELECT '
          'DISTINCT client_id FROM examples) ORDER BY '
          'tffdp_client_key(client_id), client_id LIMIT ?', (held_out,))
      con.execute(
          'UPDATE examples SET split_name = ? WHERE client_id IN '
          '(SELECT client_id FROM held_out)', (TEST_SPLIT,))
      con.execute('DROP TABLE held_out')
      return
    # ROWS: rank each client's rows by a keyed hash of the row number; the
    # first max(1, floor((1 - f) n)) train, the rest are held out.
    con.create_function('tffdp_row_key', 1, lambda rowid: _key(seed, rowid),
                        deterministic=True)
    con.create_function(
        'tffdp_keep', 1, lambda n: max(1, int((1.0 - test_fraction) * n)),
        deterministic=True)
    con.execute(
        'UPDATE examples SET split_name = ? WHERE rowid IN (SELECT rid FROM '
        '(SELECT rowid AS rid, ROW_NUMBER() OVER (PARTITION BY client_id '
        'ORDER BY tffdp_row_key(rowid), rowid) AS rn, COUNT(*) OVER '
        '(PARTITION BY client_id) AS n FROM examples) WHERE rn > '
        'tffdp_keep(n))', (TEST_SPLIT,))
    held_out = con.execute('SELECT COUNT(*) FROM examples WHERE split_name = '
                           '?', (TEST_SPLIT,)).fetchone()[0]
    if held_out == 0:
      raise TableError(
          path, f'test_split=rows with test_fraction={test_fraction:g} holds '
          'out no row (every client is too small to give one up); raise '
          'test_fraction or use test_split=clients')

  def finish(self, metadata: dict[str, Any]) -> dict[str, Any]:
    """Builds counts and index, writes metadata, validates; returns stats."""
    con = self._con
    con.execute(
        'INSERT INTO client_metadata (client_id, split_name, num_examples) '
        'SELECT client_id, split_name, COUNT(*) FROM examples '
        'GROUP BY client_id, split_name ORDER BY client_id, split_name')
    for statement in _CREATE_INDEXES:
      con.execute(statement)
    num_classes = metadata['num_classes']
    stats = {}
    for split in (TRAIN_SPLIT, TEST_SPLIT):
      histogram = [0] * num_classes
      for label, count in con.execute(
          'SELECT label, COUNT(*) FROM examples WHERE split_name = ? '
          'GROUP BY label', (split,)):
        histogram[label] = count
      clients, examples = con.execute(
          'SELECT COUNT(*), COALESCE(SUM(num_examples), 0) FROM '
          'client_metadata WHERE split_name = ?', (split,)).fetchone()
      stats[f'{split}_clients'] = clients
      stats[f'{split}_examples'] = examples
      stats[f'{split}_label_histogram'] = histogram
    sizes = np.fromiter(
        (n for (n,) in con.execute(
            'SELECT num_examples FROM client_metadata WHERE split_name = ? '
            'ORDER BY client_id', (TRAIN_SPLIT,))), dtype=np.int64)
    stats['examples_per_client_min'] = int(sizes.min())
    stats['examples_per_client_median'] = float(np.median(sizes))
    stats['examples_per_client_max'] = int(sizes.max())
    metadata = dict(metadata, **stats)
    con.executemany(
        'INSERT INTO tff_dp_metadata (key, value) VALUES (?, ?)',
        [(k, json.dumps(v)) for k, v in metadata.items()])
    self._validate(stats)
    con.execute('COMMIT')
    return stats

  def _validate(self, stats: dict[str, Any]) -> None:
    con = self._con
    total = con.execute('SELECT COUNT(*) FROM examples').fetchone()[0]
    counted = stats['train_examples'] + stats['test_examples']
    if not total == counted == self.rows:
      raise RuntimeError(f'internal error: read {self.rows} rows, wrote '
                         f'{total}, counted {counted}')
    empty = con.execute('SELECT COUNT(*) FROM client_metadata WHERE '
                        'num_examples < 1').fetchone()[0]
    if empty or stats['train_clients'] < 1:
      raise RuntimeError('internal error: a client without examples')
    check = con.execute('PRAGMA quick_check').fetchall()
    if check != [('ok',)]:
      raise RuntimeError(f'internal error: SQLite quick_check: {check[:3]}')

  def close(self) -> None:
    self._con.close()


def _check_arguments(*, client_column, label_column, feature_columns,
                     num_classes, test_split, test_fraction, seed,
                     batch_rows) -> None:
  for name, value in (('client_column', client_column),
                      ('label_column', label_column)):
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
    for role, name in (('client_column', client_column),
                       ('label_column', label_column)):
      if name in feature_columns:
        raise ValueError(f'feature_columns includes the {role} {name!r}')
  if num_classes is not None and (
      isinstance(num_classes, bool) or
      not isinstance(num_classes, (int, np.integer)) or
      not 2 <= num_classes <= _MAX_NUM_CLASSES):
    raise ValueError(f'num_classes must be None (inferred) or an int in '
                     f'[2, {_MAX_NUM_CLASSES}], got {num_classes!r}')
  if not isinstance(test_split, TestSplit):
    raise TypeError(f'test_split must be a TestSplit, got {test_split!r}')
  if test_split is not TestSplit.NONE and not (
      isinstance(test_fraction, (int, float)) and
      0.0 < test_fraction < 1.0):
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction!r}')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or (
      seed < 0):
    raise ValueError(f'seed must be an int >= 0, got {seed!r}')
  if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or (
      batch_rows < 1):
    raise ValueError(f'batch_rows must be an int >= 1, got {batch_rows!r}')


def _check_paths(input_path: str, output_path: str, overwrite: bool) -> None:
  if not os.path.exists(input_path):
    raise TableError(input_path, 'no such file')
  if not os.path.isfile(input_path):
    raise TableError(input_path, 'not a regular file')
  if os.path.isdir(output_path):
    raise TableError(output_path, 'is a directory; give the path of the '
                     '.sqlite file to write')
  directory = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(directory):
    raise TableError(output_path, f'directory {directory} does not exist')
  if os.path.exists(output_path):
    if os.path.samefile(input_path, output_path):
      raise TableError(output_path, 'is the input file')
    if not overwrite:
      raise TableError(output_path, 'already exists (pass overwrite=True, '
                       'or --overwrite, to replace it)')


def _sync_and_publish(tmp_path: str, output_path: str) -> None:
  """Gives the finished file normal permissions, then publishes it."""
  umask = os.umask(0)
  os.umask(umask)
  # mkstemp creates the file 0600; give it the permissions a normal file
  # would have.
  os.chmod(tmp_path, 0o666 & ~umask)
  atomic_io.publish(tmp_path, output_path)


def import_table(input_path: PathLike, *, output_path: PathLike,
                 client_column: str, label_column: str,
                 feature_columns: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None,
                 test_split: TestSplit = TestSplit.CLIENTS,
                 test_fraction: float = 0.2, seed: int = 0,
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
  _check_arguments(client_column=client_column, label_column=label_column,
                   feature_columns=feature_columns, num_classes=num_classes,
                   test_split=test_split, test_fraction=test_fraction,
                   seed=seed, batch_rows=batch_rows)
  _check_paths(input_path, output_path, overwrite)
  extension = os.path.splitext(input_path)[1].lower()
  sources = {'.csv': _CsvSource, '.npz': _NpzSource}
  if extension not in sources:
    raise TableError(input_path, f'unsupported file type {extension!r}: '
                     'expected .csv or .npz')
  source = sources[extension](
      input_path, client_column=client_column, label_column=label_column,
      feature_columns=feature_columns, num_classes=num_classes,
      batch_rows=batch_rows)

  fd, tmp_path = tempfile.mkstemp(
      dir=os.path.dirname(os.path.abspath(output_path)),
      prefix=f'.{os.path.basename(output_path)}.', suffix='.tmp')
  os.close(fd)
  writer = None
  try:
    writer = _Writer(tmp_path)
    for batch in source.batches():
      writer.add(batch)
    if writer.rows == 0:
      raise TableError(input_path, 'no data rows (only a header)', line=2)
    inferred = num_classes is None
    if inferred:
      num_classes = writer.max_label + 1
      if num_classes < 2:
        raise TableError(
            input_path, f'every label is 0, so num_classes cannot be inferred '
            f'(it must be at least 2); pass num_classes')
    writer.split(test_split, test_fraction=test_fraction, seed=seed,
                 path=input_path)
    input_dim = len(source.feature_names)
    metadata = {
        'format_version': FORMAT_VERSION,
        'source': os.path.basename(input_path),
        'source_format': extension[1:],
        'client_column': client_column,
        'label_column': label_column,
        'feature_names': list(source.feature_names),
        'input_dim': input_dim,
        'example_features': {FEATURES_KEY: f'float32[{input_dim}]',
                             LABEL_KEY: 'int64[]'},
        'num_classes': int(num_classes),
        'num_classes_inferred': inferred,
        'test_split': test_split.value,
        'test_fraction': (None if test_split is TestSplit.NONE else
                          float(test_fraction)),
        'seed': int(seed),
        'rows': writer.rows,
    }
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
  return ImportSummary(
      output_path=output_path,
      rows=metadata['rows'],
      feature_names=tuple(source.feature_names),
      num_classes=int(num_classes),
      num_classes_inferred=inferred,
      test_split=test_split,
      train_clients=stats['train_clients'],
      test_clients=stats['test_clients'],
      train_examples=stats['train_examples'],
      test_examples=stats['test_examples'],
      examples_per_client_min=stats['examples_per_client_min'],
      examples_per_client_median=stats['examples_per_client_median'],
      examples_per_client_max=stats['examples_per_client_max'])
