"""metrics.csv, one appended row per release, in time that stays flat.

TFF's `CSVFileReleaseManager` in WRITE mode (what tff-dp used) reads the
whole file with `csv.DictReader` and writes it again with `csv.DictWriter`
on every release: Python work per row already released, so that a release
took 0.006 s at round 10 and 0.018 s at round 1,500
(`./run.sh bench outside-round --sinks`). `MetricsCsvReleaseManager` writes
the same bytes (tested against TFF's manager, byte for byte) with the same
semantics (a release of round r first drops the rows of rounds >= r; a new
key adds a column, filled with '' in earlier rows), but keeps the file's rows
in memory, each already rendered as its CSV line.

A release of a key above every row's (each round's, in a run) with no new
column appends its one line and fsyncs the file: O(1) per round, where
replacing the whole file (fsync'ed, 2 KB at round 10, ~300 KB at round
1,500) grew with the run. Earlier bytes are never rewritten by an append, so
a crash leaves the old file plus at most one line cut short, which every
reader drops (`tff_dp.program.metrics_file`) and a resume cuts
(`tff_dp.program.resume.truncate_rows`). Every other release (rows dropped,
a new column, the first one after the file was opened, or a file changed
behind the manager's back) replaces the file atomically (`tff_dp.atomic_io`:
temporary file, fsync, rename, fsync of the directory), which also cuts a
line a crash left.
"""

import collections
import csv
import io
import os
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow_federated as tff

from tff_dp import atomic_io
from tff_dp.program import faults
from tff_dp.program import metrics_file


class MetricsCsvReleaseManager(tff.program.ReleaseManager):
  """Releases flat rows {name: number} to a CSV file, one row per key."""

  def __init__(self, path: str, *, key_fieldname: str):
    self._path = os.fspath(path)
    self._key_fieldname = key_fieldname
    os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
    # (inode, size, mtime_ns) of the file as this manager last wrote it;
    # None until it wrote it: the next release replaces the file.
    self._written: Optional[tuple[int, int, int]] = None
    if os.path.exists(self._path):
      contents = metrics_file.read(self._path, key_fieldname=key_fieldname)
      if key_fieldname not in contents.fieldnames:
        raise metrics_file.MetricsFileError(
            self._path, f'no {key_fieldname!r} column (columns: '
            f'{contents.fieldnames})')
      # A cut last line is not kept: the first release rewrites the file.
      self._set(contents.fieldnames, contents.rows)
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
    """Replaces the file by every line, atomically."""
    atomic_io.write_text_atomic(self._path, self._header + ''.join(self._lines))
    self._written = atomic_io.file_identity(self._path)

  def _append(self, line: str, key: int) -> None:
    """Appends `line` to the file as this manager last wrote it, durably."""
    data = line.encode('utf-8')
    with open(self._path, 'ab') as f:
      if faults.armed('csv_write', key):
        # The crash tests' cut line: half of it on disk, then SIGKILL.
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        faults.crash_point('csv_write', key)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    self._written = atomic_io.file_identity(self._path)

  def _drop_from(self, key: int) -> bool:
    """Drops the rows of keys >= `key`, as TFF's manager does; whether any
    was dropped."""
    if self._max_key is None or self._max_key < key:
      return False
    kept = [r for r in self._rows if int(r[self._key_fieldname]) < key]
    if len(kept) == len(self._rows):
      return False
    # TFF's manager rebuilds the columns from the rows it keeps, read back
    # from the file: each has every column, so all of them stay (the key
    # first), unless no row is kept.
    fieldnames = [self._key_fieldname]
    if kept:
      fieldnames += [f for f in self._fieldnames if f != self._key_fieldname]
    self._set(fieldnames, kept)
    return True

  async def release(self, value: Mapping[str, Any], key: int) -> None:
    """Writes `value` as the row of `key` (after dropping rows >= `key`)."""
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
      raise TypeError(f'key must be an int, got {key!r}')
    dropped = self._drop_from(key)
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
    line = self._render(row)
    self._lines.append(line)
    if (dropped or new or self._written is None or
        atomic_io.file_identity(self._path) != self._written):
      self._write()
    else:
      self._append(line, key)
