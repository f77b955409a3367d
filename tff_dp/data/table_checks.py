"""Checks an imported table's columns, client ids, labels and features.

Shared by the table readers (`csv_reader`, `npz_reader`) so that a CSV file
and an .npz archive are held to the same rules, and by the loaders
(`client_data_checks`, `tff_cache`), which refuse the client ids the importer
refuses. A problem with the input or output file is a `TableError`; the
readers hand their validated rows on as `Batch`es.
"""

import dataclasses
import math
import os
from typing import Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

MAX_CLIENT_ID_BYTES = 1024
# Labels are stored as int64 but trained on as int32.
MAX_NUM_CLASSES = 2**31 - 1
_MAX_LISTED_COLUMNS = 20


class TableError(ValueError):
  """A problem with the input or output file of an import.

  Attributes:
    path: The file concerned.
    line: 1-based line of a CSV file (the first line of the record for a
      quoted field spanning lines), or None.
    reason: What is wrong, naming the column (and for .npz files the row).
  """

  def __init__(self,
               path: PathLike,
               reason: str,
               *,
               line: Optional[int] = None):
    self.path = os.fspath(path)
    self.line = line
    self.reason = reason
    super().__init__(str(self))

  def __str__(self) -> str:
    if self.line is None:
      return f'{self.path}: {self.reason}'
    return f'{self.path}:{self.line}: {self.reason}'


@dataclasses.dataclass
class Batch:
  """Validated rows: where they came from, client ids, features, labels."""
  positions: list[int]
  client_ids: list[str]
  x: np.ndarray  # float32 [b, d]
  y: np.ndarray  # int64 [b]


def parse_float(text: str) -> float:
  # float() also accepts '1_000' (Python literal syntax), which no CSV
  # writer produces for a number: more likely a mangled field.
  if '_' in text:
    raise ValueError(text)
  return float(text)


def parse_label(text: str) -> int:
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


def check_label(label: int, num_classes: Optional[int]) -> None:
  if label < 0:
    raise ValueError(f'{label} is negative; labels must be in '
                     f'[0, {num_classes or "num_classes"})')
  if num_classes is not None and label >= num_classes:
    raise ValueError(f'{label} is out of range [0, {num_classes}) '
                     f'(num_classes={num_classes})')
  if label >= MAX_NUM_CLASSES:
    raise ValueError(f'{label} is too large (labels must be below '
                     f'{MAX_NUM_CLASSES})')


def check_client_id(client_id: str) -> None:
  """Raises ValueError if `client_id` cannot name a client in the file.

  The loader (`client_data_checks`) applies the same rule to the files it
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


def check_importable_client_id(client_id: str) -> None:
  """`check_client_id`, and no quote: the importer's files stay TFF's."""
  check_client_id(client_id)
  if "'" in client_id:
    raise ValueError(
        f'client id {client_id!r} contains a single quote, which TFF\'s '
        'SqlClientData cannot query')


def float32_rows(x64: np.ndarray, describe) -> np.ndarray:
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


def _list_columns(names: Sequence[str]) -> str:
  shown = ', '.join(repr(n) for n in names[:_MAX_LISTED_COLUMNS])
  if len(names) > _MAX_LISTED_COLUMNS:
    shown += f', ... ({len(names) - _MAX_LISTED_COLUMNS} more)'
  return shown


def resolve_columns(path: str, available: Sequence[str], *, client_column: str,
                    label_column: str, feature_columns: Optional[Sequence[str]],
                    line: Optional[int], what: str) -> list[str]:
  """Checks the named columns exist; returns the feature column names."""
  for role, name in (('client', client_column), ('label', label_column)):
    if name not in available:
      raise TableError(path, f'missing {role} {what} {name!r} (the file has: '
                       f'{_list_columns(available)})',
                       line=line)
  if feature_columns is None:
    features = [n for n in available if n not in (client_column, label_column)]
    if not features:
      raise TableError(path, f'no feature {what}s: the file has only the '
                       f'client and label {what}s',
                       line=line)
    return features
  missing = [n for n in feature_columns if n not in available]
  if missing:
    raise TableError(
        path, f'missing feature {what}(s) {_list_columns(missing)} (the file '
        f'has: {_list_columns(available)})',
        line=line)
  return list(feature_columns)
