"""Writes validated rows into a SQLite client-data file, in one transaction.

The file has TFF's `SqlClientData` schema (`examples`, `client_metadata`)
plus tff-dp's metadata table; `SCHEMA` lists every table and index, and the
loader (`client_data_source`) refuses any other. Rows are inserted in input
order as training examples; the held-out test set is then marked by a keyed
BLAKE2b hash of (seed, client id) or (seed, row number), reproducible and
independent of Python's hash seed. The split, the per-client counts and the
index are computed by SQLite, which spills to temporary files, so memory does
not grow with the number of rows.
"""

import hashlib
import json
import sqlite3
from typing import Any

import numpy as np

from tff_dp.data import example_encoding
from tff_dp.data import table_checks

TRAIN_SPLIT = 'train'
TEST_SPLIT = 'test'
METADATA_TABLE = 'tff_dp_metadata'

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


def _key(seed: int, value: Any) -> int:
  """A keyed 64-bit hash (signed, as SQLite integers are)."""
  digest = hashlib.blake2b(f'{seed}\x00{value}'.encode(), digest_size=8)
  return int.from_bytes(digest.digest(), 'big', signed=True)


class ClientDataWriter:
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

  def add(self, batch: table_checks.Batch) -> None:
    if self._encoder is None:
      self._encoder = example_encoding.ExampleEncoder(batch.x.shape[1])
    encode = self._encoder.encode
    data = batch.x.tobytes()
    step = 4 * batch.x.shape[1]
    labels = batch.y.tolist()
    self._con.executemany(
        'INSERT INTO examples (split_name, client_id, '
        'serialized_example_proto, label) VALUES (?, ?, ?, ?)',
        ((TRAIN_SPLIT, cid, encode(data[i * step:(i + 1) * step], label), label)
         for i, (cid, label) in enumerate(zip(batch.client_ids, labels))))
    self.rows += len(labels)
    self.max_label = max(self.max_label, max(labels))

  def add_encoded(self,
                  client_id: str,
                  rows,
                  *,
                  split: str = TRAIN_SPLIT) -> None:
    """Inserts one client's already serialized examples (a shard's rows).

    Args:
      client_id: The client.
      rows: (rowid, serialized example, label) in the order to keep.
      split: Their split.
    """
    labels = [label for _, _, label in rows]
    self._con.executemany(
        'INSERT INTO examples (split_name, client_id, '
        'serialized_example_proto, label) VALUES (?, ?, ?, ?)',
        ((split, client_id, blob, label) for _, blob, label in rows))
    self.rows += len(labels)
    self.max_label = max([self.max_label, *labels])

  def hold_out_clients(self, *, test_fraction: float, seed: int,
                       path: str) -> None:
    """Marks round(test_fraction * C) whole clients' examples TEST_SPLIT.

    At least one client is held out and at least one is left to train.

    Args:
      test_fraction: Fraction of the clients held out.
      seed: Key of the hash that picks them.
      path: The input file, named in errors.
    """
    con = self._con
    clients = con.execute(
        'SELECT COUNT(DISTINCT client_id) FROM examples').fetchone()[0]
    if clients < 2:
      raise table_checks.TableError(
          path, f'test_split=clients needs at least 2 clients (one to train, '
          f'one to hold out); the file has {clients}')
    held_out = min(max(1, round(test_fraction * clients)), clients - 1)
    con.create_function('tffdp_client_key',
                        1,
                        lambda cid: _key(seed, cid),
                        deterministic=True)
    con.execute(
        'CREATE TEMP TABLE held_out AS SELECT client_id FROM (SELECT '
        'DISTINCT client_id FROM examples) ORDER BY '
        'tffdp_client_key(client_id), client_id LIMIT ?', (held_out,))
    con.execute(
        'UPDATE examples SET split_name = ? WHERE client_id IN '
        '(SELECT client_id FROM held_out)', (TEST_SPLIT,))
    con.execute('DROP TABLE held_out')

  def hold_out_rows(self, *, test_fraction: float, seed: int,
                    path: str) -> None:
    """Marks all but max(1, floor((1 - f) n_k)) rows of each client TEST_SPLIT.

    Args:
      test_fraction: f, the fraction of each client's rows held out.
      seed: Key of the hash that picks them.
      path: The input file, named in errors.
    """
    con = self._con
    # Each client's rows are ranked by a keyed hash of the row number.
    con.create_function('tffdp_row_key',
                        1,
                        lambda rowid: _key(seed, rowid),
                        deterministic=True)
    con.create_function('tffdp_keep',
                        1,
                        lambda n: max(1, int((1.0 - test_fraction) * n)),
                        deterministic=True)
    con.execute(
        'UPDATE examples SET split_name = ? WHERE rowid IN (SELECT rid FROM '
        '(SELECT rowid AS rid, ROW_NUMBER() OVER (PARTITION BY client_id '
        'ORDER BY tffdp_row_key(rowid), rowid) AS rn, COUNT(*) OVER '
        '(PARTITION BY client_id) AS n FROM examples) WHERE rn > '
        'tffdp_keep(n))', (TEST_SPLIT,))
    held_out = con.execute(
        'SELECT COUNT(*) FROM examples WHERE split_name = '
        '?', (TEST_SPLIT,)).fetchone()[0]
    if held_out == 0:
      raise table_checks.TableError(
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
    stats = self._stats(metadata['num_classes'])
    metadata = dict(metadata, **stats)
    con.executemany('INSERT INTO tff_dp_metadata (key, value) VALUES (?, ?)',
                    [(k, json.dumps(v)) for k, v in metadata.items()])
    self._validate(stats)
    con.execute('COMMIT')
    return stats

  def _stats(self, num_classes: int) -> dict[str, Any]:
    """Clients, examples and label histogram per split; client sizes."""
    con = self._con
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
    sizes = np.fromiter((n for (n,) in con.execute(
        'SELECT num_examples FROM client_metadata WHERE split_name = ? '
        'ORDER BY client_id', (TRAIN_SPLIT,))),
                        dtype=np.int64)
    stats['examples_per_client_min'] = int(sizes.min())
    stats['examples_per_client_median'] = float(np.median(sizes))
    stats['examples_per_client_max'] = int(sizes.max())
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
