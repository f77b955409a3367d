"""metrics.csv, replaced atomically on every release, in time that stays flat.

TFF's `CSVFileReleaseManager` in WRITE mode (what tff-dp used) reads the
whole file with `csv.DictReader` and writes it again with `csv.DictWriter`
on every release: Python work per row already released, so that a release
took 0.006 s at round 10 and 0.018 s at round 1,500
(`./run.sh bench outside-round --sinks`). `MetricsCsvReleaseManager` writes
the same bytes (tested against TFF's manager, byte for byte) with the same
semantics (a release of round r first drops the rows of rounds >= r; a new
key adds a column, filled with '' in earlier rows), but keeps the file's rows
in memory, each already rendered as its CSV line, so that a release renders
one line and writes the joined text: C string copies, not Python per row
(a release of a key above every row's, as each round's is, drops nothing
without looking at the rows).
The file is replaced atomically (`tff_dp.atomic_io`: temporary file, fsync,
rename, fsync of the directory; TFF's rename had no fsync), so a crash
leaves the old rows or the new ones, never half a row.
"""

import collections
import csv
import io
import os
from typing import Any, Mapping

import numpy as np
import tensorflow_federated as tff

from tff_dp import atomic_io


class MetricsCsvReleaseManager(tff.program.ReleaseManager):
  """Releases flat rows {name: number} to a CSV file, one row per key."""

  def __init__(self, path: str, *, key_fieldname: str):
    self._path = os.fspath(path)
    self._key_fieldname = key_fieldname
    os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
    if os.path.exists(self._path):
      with open(self._path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        fieldnames = list(reader.fieldnames or [])
        rows = list(reader)
      if key_fieldname not in fieldnames:
        raise ValueError(f'{self._path} has no {key_fieldname!r} column '
                         f'(columns: {fieldnames})')
      self._set(fieldnames, rows)
    else:
      self._set([key_fieldname], [])
      self._write()

  def _set(self, fieldnames: list[str], rows: list[Mapping[str, Any]]) -> None:
    """Replaces the columns and rows, rendering every row again."""
    self._fieldnames = fieldnames
    self._rows = list(rows)
    # The largest key of the rows: a release of a larger key (every round of
    # a run) drops nothing, which this tells without a pass over the rows.
    self._max_key = max((int(r[self._key_fieldname]) for r in self._rows),
                        default=None)
    self._header = self._render(None)
    self._lines = [self._render(row) for row in self._rows]

  def _render(self, row) -> str:
    """One CSV line as `csv.DictWriter` writes it (the header if None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=self._fieldnames)
    if row is None:
      writer.writeheader()
    else:
      writer.writerow(row)
    return buffer.getvalue()

  def _write(self) -> None:
    atomic_io.write_text_atomic(self._path, self._header + ''.join(self._lines))

  def _drop_from(self, key: int) -> None:
    """Drops the rows of keys >= `key`, as TFF's manager does."""
    if self._max_key is None or self._max_key < key:
      return
    kept = [r for r in self._rows if int(r[self._key_fieldname]) < key]
    if len(kept) == len(self._rows):
      return
    # TFF's manager rebuilds the columns from the rows it keeps, read back
    # from the file: each has every column, so all of them stay (the key
    # first), unless no row is kept.
    fieldnames = [self._key_fieldname]
    if kept:
      fieldnames += [f for f in self._fieldnames if f != self._key_fieldname]
    self._set(fieldnames, kept)

  async def release(self, value: Mapping[str, Any], key: int) -> None:
    """Writes `value` as the row of `key` (after dropping rows >= `key`)."""
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
      raise TypeError(f'key must be an int, got {key!r}')
    self._drop_from(key)
    # As TFF's manager normalizes a flat mapping: names sorted (its
    # structure flattening sorts a dict's keys), values as Python scalars.
    row = collections.OrderedDict([(self._key_fieldname, key)] +
                                  [(name, np.array(v).tolist())
                                   for name, v in sorted(value.items())])
    new = [name for name in row if name not in self._fieldnames]
    if new:
      self._set(self._fieldnames + new, self._rows)
    self._rows.append(row)
    self._max_key = (int(key) if self._max_key is None else max(
        self._max_key, int(key)))
    self._lines.append(self._render(row))
    self._write()
