"""Reads a NumPy .npz archive of column arrays as batches of validated rows.

Each array is a column with one entry per row: a 1-D array is one column;
an array of shape [n, ...] holds prod(...) feature columns named
'name[0]', 'name[1]', ... (flattened in C order). The arrays are read in
chunks of rows (`npy_stream`), so memory is bounded by the batch size. Errors
name the file, the array, the row and the reason; of several bad values in a
batch, the first row's is reported.
"""

import math
from typing import Iterator, Optional, Sequence
import zipfile

import numpy as np

from tff_dp.data import npy_stream
from tff_dp.data import table_checks

# The first bad row of a batch and its error, or None.
_RowError = Optional[tuple[int, table_checks.TableError]]


class NpzReader:
  """Streams validated batches from a NumPy .npz archive of column arrays."""

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

  def batches(self) -> Iterator[table_checks.Batch]:
    try:
      zf = zipfile.ZipFile(self.path)
    except (zipfile.BadZipFile, OSError) as e:
      raise table_checks.TableError(
          self.path, f'not a valid .npz (zip) file: {e}') from None
    streams = []
    try:
      members = {}
      for member in zf.namelist():
        if member.endswith('.npy'):
          members[member[:-len('.npy')]] = member
      if not members:
        raise table_checks.TableError(
            self.path, 'empty file: the archive holds no arrays')
      arrays = list(members)
      feature_arrays = table_checks.resolve_columns(
          self.path,
          arrays,
          client_column=self._client_column,
          label_column=self._label_column,
          feature_columns=self._requested_features,
          line=None,
          what='array')

      def open_stream(name):
        return npy_stream.NpyStream(zf, members[name], self.path, name)

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
        raise table_checks.TableError(
            self.path, f'array {stream.name!r} has {stream.rows} rows but '
            f'client array {client.name!r} has {rows}')
    if rows == 0:
      raise table_checks.TableError(self.path, 'no rows: the arrays are empty')
    for stream, role in ((client, 'client'), (label, 'label')):
      if stream.width != 1 or len(stream.shape) != 1:
        raise table_checks.TableError(
            self.path, f'{role} array {stream.name!r} must be 1-D, got shape '
            f'{stream.shape}')
    if client.dtype.kind not in 'iuUS':
      raise table_checks.TableError(
          self.path, f'client array {client.name!r} has dtype '
          f'{client.dtype}; expected strings or integers')
    if label.dtype.kind not in 'iuf':
      raise table_checks.TableError(
          self.path, f'label array {label.name!r} has dtype {label.dtype}; '
          'expected integers')
    names = []
    for stream in features:
      if stream.dtype.kind not in 'biuf':
        raise table_checks.TableError(
            self.path, f'feature array {stream.name!r} has dtype '
            f'{stream.dtype}, which is not numeric')
      if stream.width == 0:
        raise table_checks.TableError(
            self.path, f'feature array {stream.name!r} has no columns '
            f'(shape {stream.shape})')
      if len(stream.shape) == 1:
        names.append(stream.name)
      else:
        names.extend(f'{stream.name}[{j}]' for j in range(stream.width))
    self.feature_names = names

  def _rows(self, client, label, features) -> Iterator[table_checks.Batch]:
    for start in range(0, client.rows, self._batch_rows):
      n = min(self._batch_rows, client.rows - start)
      client_ids, client_error = self._client_ids(client, client.read(n), start)
      y, label_error = self._labels(label, label.read(n), start)
      x64 = np.concatenate(
          [s.read(n).reshape(n, s.width).astype(np.float64) for s in features],
          axis=1)
      bad_row = []

      def describe(r, c, start=start):
        bad_row.append(start + r)
        return (None, f'feature {self.feature_names[c]!r} row {start + r}',
                self.path)

      try:
        x = table_checks.float32_rows(x64, describe)
        feature_error = None
      except table_checks.TableError as e:
        feature_error = (bad_row[0], e)
      # Each array is checked as a whole: report the first bad row.
      errors = [e for e in (client_error, label_error, feature_error) if e]
      if errors:
        raise min(errors, key=lambda e: e[0])[1]
      yield table_checks.Batch(list(range(start, start + n)), client_ids, x, y)

  def _client_ids(self, stream, raw: np.ndarray,
                  start: int) -> tuple[list[str], _RowError]:
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
        table_checks.check_importable_client_id(client_id)
      except ValueError as e:
        return client_ids, (
            start + r,
            table_checks.TableError(
                self.path,
                f'client array {stream.name!r} row {start + r}: {e}'))
      client_ids.append(client_id)
    return client_ids, None

  def _labels(self, stream, raw: np.ndarray,
              start: int) -> tuple[np.ndarray, _RowError]:
    """int64 labels, and the first bad one (row, error) if any."""
    upper = (table_checks.MAX_NUM_CLASSES
             if self._num_classes is None else self._num_classes)
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
      if isinstance(
          value,
          float) and not (math.isfinite(value) and value == math.floor(value)):
        raise ValueError(f'{value!r} is not an integer')
      table_checks.check_label(int(value), self._num_classes)
      raise AssertionError(f'label {value} was flagged but is valid')
    except ValueError as e:
      return raw[:0].astype(
          np.int64), (start + r,
                      table_checks.TableError(
                          self.path,
                          f'label array {stream.name!r} row {start + r}: '
                          f'label {e}'))
