"""Reads a client-data file's serialized examples back as numpy arrays, exactly.

The importer writes each example with `example_encoding.ExampleEncoder`,
whose bytes for a given number of features are a fixed prefix, the features
as little-endian float32, and the label's entry. So the features are a slice
of the blob at a known offset. Every decoded row is encoded again and
compared byte for byte with the stored blob: a row the importer did not
write that way (another writer, a crafted file) is refused, naming it,
rather than misread. No TensorFlow: the sharding (`shard_writer`) and the
worker's client files (`shard_files`) read rows this way.
"""

import sqlite3
from typing import Iterable, Iterator

import numpy as np

from tff_dp.data import client_data_checks
from tff_dp.data import example_encoding

# Rows decoded at a time: bounds the memory whatever the file's size.
BATCH_ROWS = 10_000


class ExampleDecoder:
  """(features, label) of the blobs `ExampleEncoder(input_dim)` writes."""

  def __init__(self, input_dim: int, path: str):
    self._encoder = example_encoding.ExampleEncoder(input_dim)
    self._dim = input_dim
    self._path = path
    # The offset of the features: everything before them has a fixed
    # length, but the leading body length varint depends on the label's
    # entry, so it is read per row.

  def decode(self, rowid: int, blob: bytes, label: int) -> np.ndarray:
    """The row's float32 features; raises naming the row if not exact."""
    data_len = 4 * self._dim
    # b'\n' + varint(body length) + prefix + features + label entry.
    start = 1
    while start < len(blob) and blob[start] & 0x80:
      start += 1
    start += 1 + len(self._encoder._prefix)  # pylint: disable=protected-access
    x_bytes = blob[start:start + data_len]
    if (len(x_bytes) != data_len or
        self._encoder.encode(x_bytes, label) != blob):
      raise client_data_checks.error(
          self._path, f'examples row {rowid}: not an example as tff-dp\'s '
          'importer writes it (features and label column)')
    return np.frombuffer(x_bytes, '<f4')


def rows_as_arrays(path: str, rows: Iterable[tuple[int, bytes, int]], *,
                   input_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """(x float32 [n, input_dim], y int32 [n]) of (rowid, blob, label) rows."""
  decoder = ExampleDecoder(input_dim, path)
  xs, ys = [], []
  for rowid, blob, label in rows:
    xs.append(decoder.decode(rowid, blob, label))
    ys.append(label)
  x = (np.stack(xs).astype(np.float32) if xs else np.zeros(
      (0, input_dim), np.float32))
  return x, np.asarray(ys, np.int32)


def train_rows_by_client(
    con: sqlite3.Connection
) -> Iterator[tuple[str, list[tuple[int, bytes, int]]]]:
  """(client id, its training rows in file order), one client at a time.

  Clients come in the order SQLite sorts their ids (callers index clients by
  Python's sorted order, which is the same for UTF-8 text compared byte for
  byte); memory holds one client's rows.
  """
  current, rows = None, []
  cursor = con.execute(
      'SELECT client_id, rowid, serialized_example_proto, label FROM '
      "examples WHERE split_name = 'train' ORDER BY client_id COLLATE "
      'BINARY, rowid')
  while True:
    batch = cursor.fetchmany(BATCH_ROWS)
    if not batch:
      break
    for cid, rowid, blob, label in batch:
      if cid != current:
        if current is not None:
          yield current, rows
        current, rows = cid, []
      rows.append((rowid, blob, label))
  if current is not None:
    yield current, rows
