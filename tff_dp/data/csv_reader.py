"""Reads a CSV file with a header row as batches of validated rows.

The file is read with the `csv` module one batch of rows at a time, so memory
is bounded by the batch size, not by the number of rows. Errors name the
file, the line (the first line of a record whose quoted field spans lines),
the column and the reason.
"""

import csv
import operator
from typing import Iterator, Optional, Sequence

import numpy as np

from tff_dp.data import table_checks


class CsvReader:
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

  def batches(self) -> Iterator[table_checks.Batch]:
    """Yields batches of validated rows; the header is read first."""
    with open(self.path, 'rb') as f:
      reader = csv.reader(self._lines(f), strict=True)
      header = self._next(reader, 0)
      if header is None:
        raise table_checks.TableError(self.path,
                                      'empty file: expected a header row',
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
          raise table_checks.TableError(
              self.path, f'not valid UTF-8 text ({e.reason} at byte '
              f'{e.start + 1} of the line)',
              line=number) from None

  def _next(self, reader, last_line: int) -> Optional[list[str]]:
    try:
      return next(reader)
    except StopIteration:
      return None
    except csv.Error as e:
      raise table_checks.TableError(self.path,
                                    f'malformed CSV: {e}',
                                    line=last_line + 1) from None

  def _read_header(self, header: list[str]) -> None:
    seen = {}
    for index, name in enumerate(header):
      if not name.strip():
        raise table_checks.TableError(
            self.path,
            f'empty column name in the header (field {index + 1})',
            line=1)
      if name in seen:
        raise table_checks.TableError(
            self.path, f'duplicate column name {name!r} in the header '
            f'(fields {seen[name] + 1} and {index + 1})',
            line=1)
      seen[name] = index
    self._num_fields = len(header)
    self.feature_names = table_checks.resolve_columns(
        self.path,
        header,
        client_column=self._client_column,
        label_column=self._label_column,
        feature_columns=self._requested_features,
        line=1,
        what='column')
    self._client_index = seen[self._client_column]
    self._label_index = seen[self._label_column]
    self._feature_indices = [seen[n] for n in self.feature_names]
    self._names_by_index = {index: name for name, index in seen.items()}
    fi = self._feature_indices
    # itemgetter of one index returns the item itself, not a tuple.
    self._feature_texts = (operator.itemgetter(
        *fi) if len(fi) > 1 else lambda fields: (fields[fi[0]],))

  def _field_name(self, field: int) -> str:
    return f'column {self._names_by_index[field]!r} (field {field + 1})'

  def _parse_row(self, fields: list[str],
                 line: int) -> tuple[str, list[float], int]:
    """Parses and checks one record; raises TableError."""
    path, num_classes = self.path, self._num_classes
    ci, li, fi = self._client_index, self._label_index, self._feature_indices
    if len(fields) != self._num_fields:
      what = 'an empty line' if not fields else f'{len(fields)} fields'
      raise table_checks.TableError(
          path,
          f'{what}, expected {self._num_fields} fields as in the header',
          line=line)
    client_id = fields[ci]
    try:
      table_checks.check_importable_client_id(client_id)
    except ValueError as e:
      raise table_checks.TableError(path,
                                    f'{self._field_name(ci)}: {e}',
                                    line=line) from None
    texts = self._feature_texts(fields)
    try:
      x = list(map(float, texts))
      # The rule of parse_float, checked once per row (fast path).
      if '_' in ''.join(texts):
        raise ValueError(texts)
    except ValueError:
      for j in fi:
        try:
          table_checks.parse_float(fields[j])
        except ValueError:
          raise table_checks.TableError(
              path,
              f'{self._field_name(j)}: {fields[j]!r} is not a number',
              line=line) from None
      raise
    try:
      label = table_checks.parse_label(fields[li])
      table_checks.check_label(label, num_classes)
    except ValueError as e:
      raise table_checks.TableError(path,
                                    f'{self._field_name(li)}: label {e}',
                                    line=line) from None
    return client_id, x, label

  def _rows(self, reader) -> Iterator[table_checks.Batch]:
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
      except table_checks.TableError:
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

  def _batch(self, positions, client_ids, xs, ys) -> table_checks.Batch:

    def describe(r, c):
      return (positions[r], self._field_name(self._feature_indices[c]),
              self.path)

    x = table_checks.float32_rows(np.array(xs, dtype=np.float64), describe)
    return table_checks.Batch(positions, client_ids, x,
                              np.array(ys, dtype=np.int64))
