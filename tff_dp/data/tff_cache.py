"""TFF's benchmark cache files, read as untrusted input.

A file in the cache directory (`--data_dir`) may have been crafted by
whoever could write there, or damaged. TFF's own reader, `SqlClientData`,
pastes each client id between quotes into its SQL, so a client named
`c1' OR '1'='1` read every client's rows: one update then carried many
clients' data and the per-client DP guarantee was void. `open_cache` reads
the file without it:

* SQL run by Python binds its values; tf.data reads a client's rows with
  `sql_queries.client_examples_query` (the id as a hex literal, compared
  byte for byte with the table's own values);
* on load, refused with a `CacheFormatError` ("<file>: <what>"): text not
  UTF-8; `examples` or `client_metadata` not a table, without TFF's
  columns, `client_id` or `split_name` not stored text (TEXT affinity, not
  generated); a `client_metadata` row of a split read whose client id
  `import-data` would refuse (`table_checks.check_client_id`: NUL, over 1,024
  bytes of UTF-8, blank; or not text, not UTF-8), listed twice, or whose
  `num_examples` is not an integer >= 0; counts that add up to more rows
  than the examples table can hold; a first example (of the first
  non-empty client of each split) that is missing, does not parse as TFF's
  loader parses it, or has a value out of range;
* as a client's rows are read (lazily, as training iterates them, by the
  `tff_cache_split.CacheSplit`s `open_cache` returns), their number must be
  `client_metadata`'s (the size the shuffle and example-level DP accounting
  use), or TensorFlow's cardinality check fails ("expected to contain N
  elements"); a row that does not parse fails TensorFlow's parser.
So the load reads `client_metadata` and a few examples, never the whole
file (Stack Overflow's is tens of GB). The values of the other examples are
not checked: Assert ops in the parser made building and reading a client's
dataset ~60% slower (measured, EMNIST clients of 100 rows). A label outside
the model's classes fails TensorFlow's sparse cross-entropy anyway; other
values change only their own client's update, as any of its data could.

The elements are those of TFF's loaders (`tff.simulation.datasets.<name>.
load_data`): same keys, shapes, dtypes and values, clients in the same
(sorted) order, each client's rows in file order.
"""

import re
import sqlite3
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import sql_queries
from tff_dp.data import table_checks
from tff_dp.data.tff_cache_formats import ExampleFormat
from tff_dp.data.tff_cache_split import CacheSplit

_MAX_ID_BYTES = table_checks.MAX_CLIENT_ID_BYTES
_TABLES = {
    'examples': ('split_name', 'client_id', 'serialized_example_proto'),
    'client_metadata': ('client_id', 'split_name', 'num_examples'),
}
_TEXT_COLUMNS = ('client_id', 'split_name')


class CacheFormatError(ValueError):
  """The file is not a usable cache file: '<path>: <reason>'."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.reason = reason


def _error(path: str, reason: str) -> CacheFormatError:
  return CacheFormatError(path, reason)


def _check_tables(path: str, con: sqlite3.Connection) -> None:
  """The tables TFF's format needs, as tables, with usable columns."""
  encoding = con.execute('PRAGMA encoding').fetchone()[0]
  if encoding != 'UTF-8':
    # Ids are queried as UTF-8 bytes: every client would read no row.
    raise _error(path, f'its text encoding is {encoding}; TFF writes UTF-8')
  rows = {
      table:
          con.execute(
              'SELECT type, sql FROM sqlite_master WHERE name = ? COLLATE NOCASE',
              (table,)).fetchone() for table in _TABLES
  }
  missing = sorted(table for table, row in rows.items() if row is None)
  if missing:
    raise _error(path, f'no table {", ".join(missing)}')
  for table, columns in _TABLES.items():
    kind, sql = rows[table]
    # A view or a virtual table could return anything, and differently at
    # each read.
    if kind != 'table' or not str(sql).upper().startswith('CREATE TABLE'):
      raise _error(path, f'{table} is not a table ({sql_queries.show(sql)})')
    # The table name is a constant of this module (PRAGMA binds nothing).
    declared = {
        name.lower(): (decl, hidden) for _, name, decl, _, _, _, hidden in
        con.execute(f'PRAGMA table_xinfo({table})')
    }
    for column in columns:
      if column not in declared:
        raise _error(path, f'table {table} has no column {column}')
      decl, hidden = declared[column]
      if hidden:
        raise _error(
            path, f'column {table}.{column} is generated (hidden '
            f'{hidden}), not stored')
      if column in _TEXT_COLUMNS and not sql_queries.has_text_affinity(decl):
        # Other affinities convert values in comparisons: '01' = 1 = '1'.
        raise _error(
            path, f'column {table}.{column} is declared '
            f'{sql_queries.show(decl)}, which is not of TEXT affinity')


def _check_client_id(path: str, where: str, client_id: Any) -> None:
  problem = sql_queries.client_id_problem(client_id)
  if problem is not None:
    raise _error(path, f'{where}: {problem}')


def _read_split(path: str, con: sqlite3.Connection,
                split: str) -> dict[str, int]:
  """Client id -> num_examples of `split`, every row checked."""
  sizes = {}
  # NOT INDEXED: the values compared and returned are the table's own (an
  # index's copy may differ); COLLATE BINARY: byte for byte. The ids come as
  # bytes, decoded here: no Python call per value from SQLite (2.5x faster
  # than a text_factory for Stack Overflow's 342,477 training clients).
  for rowid, is_text, raw, count in con.execute(
      "SELECT rowid, typeof(client_id) = 'text', CAST(client_id AS BLOB), "
      'num_examples FROM client_metadata NOT INDEXED WHERE split_name = ? '
      'COLLATE BINARY ORDER BY rowid', (split,)):
    try:
      client_id = raw.decode('utf-8') if is_text else None
    except UnicodeDecodeError:
      client_id = None
    # The rule of `_check_client_id`, inlined; it words the refusal.
    if (client_id is None or b'\x00' in raw or len(raw) > _MAX_ID_BYTES or
        not client_id.strip()):
      (value,) = con.execute(
          'SELECT client_id FROM client_metadata WHERE '
          'rowid = ?', (rowid,)).fetchone()
      _check_client_id(path, f'client_metadata row {rowid}', value)
    # SQLite gives int, float, str, bytes or None (never a bool).
    if not isinstance(count, int) or count < 0:
      raise _error(
          path, f'client_metadata row {rowid}: num_examples '
          f'{sql_queries.show(count)} of client {sql_queries.show(client_id)}: expected an '
          'integer >= 0')
    if client_id in sizes:
      raise _error(
          path, f'client_metadata row {rowid}: client '
          f'{sql_queries.show(client_id)} is listed twice in split {split!r}')
    sizes[client_id] = count
  return sizes


def _has_clients(con: sqlite3.Connection, split: str) -> bool:
  return con.execute(
      'SELECT 1 FROM client_metadata NOT INDEXED WHERE split_name = ? '
      'COLLATE BINARY LIMIT 1', (split,)).fetchone() is not None


def _check_capacity(path: str, con: sqlite3.Connection,
                    sizes: Mapping[str, Mapping[str, int]]) -> None:
  """The examples counted must fit in the examples table."""
  low, high = con.execute(
      'SELECT MIN(rowid), MAX(rowid) FROM examples').fetchone()
  # rowids are distinct: the table has at most high - low + 1 rows.
  capacity = 0 if low is None else high - low + 1
  total = sum(sum(s.values()) for s in sizes.values())
  if total > capacity:
    raise _error(
        path, f'client_metadata lists {total} examples in split(s) '
        f'{", ".join(sizes)}, but examples has at most {capacity} '
        'rows')


def _tf_reason(error: Exception) -> str:
  """TensorFlow's message, one line, without its '{{function_node}}'s."""
  reason = re.sub(r'\{\{.*?\}\}', '', getattr(error, 'message', str(error)))
  # TensorFlow's tail: '[[node]] [Op:IteratorGetNext] name: '.
  reason = re.sub(r'\s*\[\[.*?\]\]|\s*\[Op:[^\]]*\]( name:.*)?',
                  '',
                  reason,
                  flags=re.DOTALL)
  return ' '.join(reason.split())[:300]


def _check_first_example(path: str, con: sqlite3.Connection,
                         split: CacheSplit) -> None:
  """The first example of the first non-empty client is one of the format.

  Read by SQLite here (with the query the client's dataset uses), then by
  tf.data, so that a path tf.data cannot open is reported on load too.
  """
  sizes = split.client_sizes()
  nonempty = np.flatnonzero(sizes)
  if not nonempty.size:
    return
  client_id = split.client_ids[int(nonempty[0])]
  where = f'client {sql_queries.show(client_id)} of split {split.split!r}'
  row = con.execute(
      sql_queries.client_examples_query(client_id, split.split) +
      ' LIMIT 1').fetchone()
  if row is None:
    raise _error(
        path, f'{where}: client_metadata says '
        f'{sizes[nonempty[0]]} examples, examples holds none of its '
        'rows')
  if not isinstance(row[0], bytes):
    raise _error(
        path, f'{where}: serialized_example_proto is '
        f'{type(row[0]).__name__}, not a blob')
  try:
    problem = split.example_format.problem(row[0])
    next(iter(split.dataset(client_id).take(1)))
  except (tf.errors.OpError, UnicodeDecodeError) as e:
    raise _error(
        path, f'{where}: reading its first example as TFF\'s '
        f'loader does failed: {_tf_reason(e)}') from None
  if problem:
    raise _error(path, f'{where}: its first example has {problem}')


def open_cache(path: str, *, example_format: ExampleFormat,
               splits: Sequence[str],
               required: Sequence[str]) -> list[CacheSplit]:
  """Checks a cache file (module docstring) and opens `splits` of it.

  Args:
    path: An SQLite file in TFF's format.
    example_format: How its examples are parsed and checked.
    splits: The splits to read.
    required: Splits that must have clients (those TFF's loader opens).

  Returns:
    One `CacheSplit` per name in `splits`, in that order.

  Raises:
    CacheFormatError: The file is not usable; the message names it.
  """
  try:
    con = sql_queries.connect_readonly(path)
    try:
      _check_tables(path, con)
      sizes = {split: _read_split(path, con, split) for split in splits}
      empty = [
          s for s in required
          if not (sizes[s] if s in sizes else _has_clients(con, s))
      ]
      if empty:
        raise _error(path, f'no clients in split(s) {", ".join(empty)}')
      _check_capacity(path, con, sizes)
      result = [CacheSplit(path, s, example_format, sizes[s]) for s in splits]
      for split in result:
        _check_first_example(path, con, split)
    finally:
      con.close()
  except sqlite3.Error as e:
    raise _error(path, f'cannot be read as SQLite ({e})') from None
  return result
