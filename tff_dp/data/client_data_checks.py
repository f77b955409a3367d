"""Checks a tff-dp client-data file's header, schema, metadata and clients.

What `client_data_source.SqlClientDataSource` checks of a file before it
reads any example (see that module for the whole list): the SQLite header
(not WAL, UTF-8), the schema (exactly `client_data_writer.SCHEMA`), every
metadata field's type and range, the client lists against the examples'
counts, and, once `client_data_rows` has scanned the examples, the
metadata's totals against what the rows hold. A file that fails raises a
`ClientDataFormatError` naming the file, the field and the value.
"""

import json
import sqlite3
from typing import Any

import numpy as np

from tff_dp.data import client_data_writer
from tff_dp.data import csv_import
from tff_dp.data import sql_queries

_TRAIN = client_data_writer.TRAIN_SPLIT
_TEST = client_data_writer.TEST_SPLIT

# Labels are trained on as int32.
_MAX_NUM_CLASSES = 2**31 - 1
_SQLITE_MAGIC = b'SQLite format 3\x00'
CREATE_HINT = 'create one with `./run.sh import-data`'

# Integer metadata fields: (key, smallest, largest or None).
_INT_FIELDS = (
    ('input_dim', 1, None),
    ('num_classes', 2, _MAX_NUM_CLASSES),
    ('rows', 1, None),
    ('train_examples', 1, None),
    ('test_examples', 0, None),
    ('train_clients', 1, None),
    ('test_clients', 0, None),
    ('seed', 0, None),
)


class ClientDataFormatError(ValueError):
  """The file is not a valid tff-dp client-data file; the message says why."""


def _show_json(value: Any) -> str:
  """A metadata value as JSON (ASCII, so nothing reaches the terminal raw)."""
  return sql_queries.shorten(json.dumps(value))


def error(path: str, reason: str) -> ClientDataFormatError:
  """The error refusing `path`: '<path>: <reason>'."""
  return ClientDataFormatError(f'{path}: {reason}')


def check_header(path: str) -> None:
  """An SQLite file, not in WAL mode, whose text is UTF-8."""
  with open(path, 'rb') as f:
    header = f.read(100)
  if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
    raise error(
        path, f'not a tff-dp client-data file (not an SQLite '
        f'database); {CREATE_HINT}')
  # Bytes 18 and 19, the file format's write and read versions, are 2 in
  # WAL mode; import-data never writes that.
  if 2 in (header[18], header[19]):
    raise error(
        path, "is in SQLite's WAL mode (rows may live in a -wal "
        'file beside it); convert it with sqlite3 and '
        '"PRAGMA journal_mode = DELETE"')
  # Bytes 56-59: the text encoding, 1 for UTF-8. The queries spell ids as
  # UTF-8 bytes: in a UTF-16 file every client would read no row.
  encoding = int.from_bytes(header[56:60], 'big')
  if encoding != 1:
    names = {2: 'UTF-16le', 3: 'UTF-16be'}
    raise error(
        path, f'its text encoding is {names.get(encoding, encoding)}'
        '; import-data writes UTF-8, the only one tff-dp reads')


def check_schema(path: str, con: sqlite3.Connection) -> None:
  """The tables and indexes must be exactly those `csv_import` writes."""
  expected = {
      s.split()[2]: ' '.join(s.split()) for s in client_data_writer.SCHEMA
  }
  entries = con.execute('SELECT type, name, sql FROM sqlite_master').fetchall()
  # First, since TFF's own files lack only this.
  if 'tff_dp_metadata' not in {name for _, name, _ in entries}:
    raise error(
        path, 'not a tff-dp client-data file (no table '
        f'tff_dp_metadata); {CREATE_HINT}')
  found = set()
  for kind, name, sql in entries:
    # SQLite's own index of the metadata's PRIMARY KEY, and ANALYZE's
    # statistics, which change query plans but not results.
    if (name == 'sqlite_autoindex_tff_dp_metadata_1' and
        sql is None) or (kind == 'table' and
                         str(name).startswith('sqlite_stat')):
      continue
    if not isinstance(sql, str) or ' '.join(sql.split()) != expected.get(name):
      what = 'not as import-data writes it' if name in expected else (
          'not part of a tff-dp client-data file')
      raise error(
          path, f'{kind} {sql_queries.show(name)} is {what} '
          f'({sql_queries.show(sql)}); {CREATE_HINT}')
    found.add(name)
  missing = sorted(set(expected) - found, key=list(expected).index)
  if missing:
    raise error(path, f'has no {missing[0]!r} (table or index); '
                f'{CREATE_HINT}')
  check = con.execute('PRAGMA quick_check').fetchone()
  if check != ('ok',):
    raise error(path,
                f'is damaged (SQLite quick_check: {sql_queries.show(check)})')


def _no_constant(name: str) -> None:
  # Python's json accepts NaN and Infinity; JSON does not.
  raise ValueError(f'{name} is not a JSON number')


def read_metadata(path: str, con: sqlite3.Connection) -> dict[str, Any]:
  """The metadata table as parsed JSON; every value must be strict JSON."""
  metadata = {}
  for key, value in con.execute('SELECT key, value FROM tff_dp_metadata'):
    try:
      if not isinstance(value, str):
        raise ValueError('not text')
      metadata[key] = json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
      raise error(
          path,
          f'metadata {sql_queries.show(key)}: {sql_queries.show(value)} is not '
          f'valid JSON ({e})') from None
  return metadata


def is_int(value: Any) -> bool:
  """An int that is not a bool."""
  return isinstance(value, int) and not isinstance(value, bool)


def _field(path: str, metadata: dict[str, Any], key: str) -> Any:
  if key not in metadata:
    raise error(path, f'metadata has no {key!r}')
  return metadata[key]


def _bad(path: str, key: str, value: Any, expected: str):
  return error(path, f'metadata {key}={_show_json(value)}: expected '
               f'{expected}')


def check_metadata(path: str, m: dict[str, Any]) -> None:
  """Types and ranges of every field the loader reads, and their agreement."""
  version = _field(path, m, 'format_version')
  if not is_int(version) or version != csv_import.FORMAT_VERSION:
    raise error(
        path, f'format_version {_show_json(version)}; this tff-dp '
        f'reads version {csv_import.FORMAT_VERSION}')
  for key, low, high in _INT_FIELDS:
    value = _field(path, m, key)
    if not is_int(value) or value < low or (high and value > high):
      bounds = f'in [{low}, {high}]' if high else f'>= {low}'
      raise _bad(path, key, value, f'an integer {bounds}')
  dim, classes = m['input_dim'], m['num_classes']
  names = _field(path, m, 'feature_names')
  if not (isinstance(names, list) and len(names) == dim and all(
      isinstance(n, str) and n for n in names) and len(set(names)) == dim):
    raise _bad(path, 'feature_names', names,
               f'a list of input_dim={dim} distinct names')
  if not isinstance(_field(path, m, 'num_classes_inferred'), bool):
    raise _bad(path, 'num_classes_inferred', m['num_classes_inferred'],
               'true or false')
  source = _field(path, m, 'source')
  if not (isinstance(source, str) and source and source.isprintable()):
    raise _bad(path, 'source', source, "the input file's name")
  _check_split_fields(path, m)
  for split in (_TRAIN, _TEST):
    key = f'{split}_label_histogram'
    counts = _field(path, m, key)
    if not (isinstance(counts, list) and len(counts) == classes and
            all(is_int(c) and c >= 0 for c in counts)):
      raise _bad(path, key, counts, f'num_classes={classes} counts >= 0')
  if m['rows'] != m['train_examples'] + m['test_examples']:
    raise _bad(
        path, 'rows', m['rows'], 'train_examples + test_examples = '
        f"{m['train_examples'] + m['test_examples']}")


def _check_split_fields(path: str, m: dict[str, Any]) -> None:
  split = _field(path, m, 'test_split')
  values = [s.value for s in csv_import.TestSplit]
  if split not in values:
    raise _bad(path, 'test_split', split, f'one of {json.dumps(values)}')
  fraction = _field(path, m, 'test_fraction')
  none = split == csv_import.TestSplit.NONE.value
  if none and fraction is not None:
    raise _bad(path, 'test_fraction', fraction, 'null (test_split is "none")')
  if not none and not (isinstance(fraction, float) and 0 < fraction < 1):
    raise _bad(path, 'test_fraction', fraction, 'a number in (0, 1)')
  for key in ('test_examples', 'test_clients'):
    if (m[key] == 0) != none:
      raise _bad(
          path, key, m[key], f'{"0" if none else "> 0"} (test_split '
          f'is {json.dumps(split)})')


def _check_client_id(path: str, where: str, client_id: Any) -> None:
  problem = sql_queries.client_id_problem(client_id)
  if problem is not None:
    raise error(path, f'{where}: {problem}')


def read_clients(path: str,
                 con: sqlite3.Connection) -> tuple[list[str], np.ndarray, int]:
  """(sorted training ids, their sizes, number of test clients), checked."""
  train, test_clients, seen = {}, 0, set()
  for rowid, cid, split, n in con.execute(
      'SELECT rowid, client_id, split_name, num_examples FROM '
      'client_metadata ORDER BY rowid'):
    where = f'client_metadata row {rowid}'
    if split not in (_TRAIN, _TEST):
      raise error(
          path, f'{where}: split_name {sql_queries.show(split)}: expected '
          f'{_TRAIN!r} or {_TEST!r}')
    _check_client_id(path, where, cid)
    if not is_int(n) or n < 1:
      raise error(
          path, f'{where}: num_examples {sql_queries.show(n)} of client '
          f'{sql_queries.show(cid)}: expected an integer >= 1')
    if (cid, split) in seen:
      raise error(
          path, f'{where}: client {sql_queries.show(cid)} is listed twice in '
          f'split {split!r}')
    seen.add((cid, split))
    if split == _TRAIN:
      train[cid] = n
    else:
      test_clients += 1
  row = con.execute(
      'SELECT e.client_id, e.split_name, e.n, m.num_examples FROM (SELECT '
      'client_id, split_name, COUNT(*) AS n FROM examples GROUP BY '
      'client_id, split_name) AS e LEFT JOIN client_metadata AS m ON '
      'm.client_id = e.client_id AND m.split_name = e.split_name WHERE '
      'm.num_examples IS NOT e.n LIMIT 1').fetchone()
  if row:
    raise error(
        path,
        f'examples has {row[2]} rows of client {sql_queries.show(row[0])} '
        f'in split {sql_queries.show(row[1])}, client_metadata '
        f'{"says " + str(row[3]) if row[3] else "lists none"}')
  row = con.execute(
      'SELECT client_id, split_name FROM client_metadata AS m WHERE NOT '
      'EXISTS (SELECT 1 FROM examples AS e WHERE e.client_id = m.client_id '
      'AND e.split_name = m.split_name) LIMIT 1').fetchone()
  if row:
    raise error(
        path, f'client_metadata lists client {sql_queries.show(row[0])} in '
        f'split {row[1]!r}, which has no rows in examples')
  ids = sorted(train)
  return ids, np.array([train[c] for c in ids], dtype=np.int64), test_clients


def check_totals(path: str, m: dict[str, Any], sizes: np.ndarray,
                 test_clients: int, histograms: dict[str, list[int]]) -> None:
  """The metadata's counts must be those of the rows."""
  found = {
      'train_clients': len(sizes),
      'test_clients': test_clients,
      'train_examples': sum(histograms[_TRAIN]),
      'test_examples': sum(histograms[_TEST]),
  }
  for key, value in found.items():
    if m[key] != value:
      raise error(
          path, f'metadata {key}={_show_json(m[key])}, but the '
          f'file has {value}')
  for split in (_TRAIN, _TEST):
    key = f'{split}_label_histogram'
    if m[key] != histograms[split]:
      label = next(k for k, (a, b) in enumerate(zip(m[key], histograms[split]))
                   if a != b)
      raise error(
          path, f'metadata {key}={_show_json(m[key])}: says '
          f'{m[key][label]} examples of label {label}, the file has '
          f'{histograms[split][label]}')
