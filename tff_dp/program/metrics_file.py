"""metrics.csv read back: its whole rows, and a last line a crash cut short.

The CSV sink (`tff_dp.program.csv_sink`) appends each round's row to the
file and fsyncs it, so that a release costs the same at round 1,500 as at
round 10. A crash in the middle of an append can leave the file's last
line without its line end (half a row, or bytes the file system had not
yet written). Every row tff-dp writes ends with a line end and no value
holds one, so the text after the file's last line end is exactly that cut
line: readers take the rows before it, and a resume (`tff_dp.program.resume`)
rewrites the file without it before the run appends again. Only the last
line can be cut this way; anything else that is not a row of the header's
columns with an integer key is an error naming the file and the line.
Pure Python: the program reads it before it imports TensorFlow.
"""

import csv
import dataclasses
import io
from typing import Optional


class MetricsFileError(ValueError):
  """metrics.csv is not a file tff-dp wrote; the message names file and line."""

  def __init__(self, path: str, detail: str):
    super().__init__(f'{path}: {detail}')
    self.path = path
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class Contents:
  """What a metrics file holds.

  Attributes:
    fieldnames: The header's columns ([] for an empty file).
    rows: The whole rows, each {column: text}, in file order.
    torn: The last line if a crash cut it short (no line end), else ''.
  """
  fieldnames: list[str]
  rows: list[dict[str, str]]
  torn: str = ''

  def torn_key(self, key_fieldname: str) -> Optional[int]:
    """The key of the cut last line, if the cut left it whole (a field
    follows it), else None: the round whose release a crash interrupted."""
    if not self.torn or key_fieldname not in self.fieldnames:
      return None
    index = self.fieldnames.index(key_fieldname)
    try:
      fields = next(csv.reader([self.torn]))
      return int(fields[index]) if len(fields) > index + 1 else None
    except (csv.Error, StopIteration, ValueError):
      return None


def parse(text: str, *, path: str, key_fieldname: str) -> Contents:
  """The rows of a metrics file's `text` (read with newline='').

  Raises:
    MetricsFileError: Naming `path` and the line: a cut header, a row whose
      field count differs from the header's, a key that is not an integer,
      no key column, or CSV the csv module refuses.
  """
  end = text.rfind('\n') + 1
  whole, torn = text[:end], text[end:]
  if not whole:
    if torn:
      raise MetricsFileError(path, 'line 1: the header has no line end')
    return Contents([], [], '')
  reader = csv.reader(io.StringIO(whole, newline=''))
  try:
    fieldnames = next(reader)
    if key_fieldname not in fieldnames:
      raise MetricsFileError(
          path, f'no {key_fieldname!r} column (columns: {fieldnames})')
    key_index = fieldnames.index(key_fieldname)
    rows = []
    for fields in reader:
      if not fields:
        continue  # A blank line, as csv.DictReader skips it.
      if len(fields) != len(fieldnames):
        raise MetricsFileError(
            path, f'line {reader.line_num}: {len(fields)} fields, the '
            f'header has {len(fieldnames)}')
      try:
        int(fields[key_index])
      except ValueError:
        raise MetricsFileError(
            path, f'line {reader.line_num}: {key_fieldname} '
            f'{fields[key_index]!r:.40} is not an integer') from None
      rows.append(dict(zip(fieldnames, fields)))
  except csv.Error as e:
    raise MetricsFileError(path, f'line {reader.line_num}: {e}') from e
  return Contents(fieldnames, rows, torn)


def read(path: str, *, key_fieldname: str) -> Contents:
  """`parse` of the file at `path`; unreadable or non-UTF-8 files raise
  `MetricsFileError` naming it."""
  try:
    with open(path, newline='', encoding='utf-8') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise MetricsFileError(path, f'unreadable ({type(e).__name__}: {e})') from e
  return parse(text, path=path, key_fieldname=key_fieldname)
