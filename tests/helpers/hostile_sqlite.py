"""How an adversary edits a SQLite data file: hostile ids, refused ids, raw SQL.

Shared by the tests of both kinds of SQLite file tff-dp reads (TFF's caches,
tests/data/test_untrusted_caches.py; its own client-data files,
test_untrusted_sqlite.py) and of the SQL they are read with
(test_sql_queries.py): every reader must read a hostile id's own rows
exactly, and refuse an unusable id with one error naming it.
"""

import os
import sqlite3

from tools import fault_sqlite

# TFF's query for this client was "... WHERE client_id = 'c1' OR '1'='1'
# and split_name = '...'": every client's rows, of every split.
INJECTION = "c1' OR '1'='1"


def hostile_ids(other_split: str) -> list[str]:
  """Usable client ids, each of which must read exactly its own rows.

  Quotes, SQL, escapes, control characters, long and non-ASCII text.

  Args:
    other_split: A split of the file other than the one read (an id that
      tries to read that split's rows too).
  """
  return [
      INJECTION,
      "x'; DROP TABLE examples; --",
      f"t' OR split_name = '{other_split}",
      "'",
      "''",
      '"',
      '"double" quotes',
      '\\',
      'back\\slash',
      'semi;colon',
      'semi;colon;',
      'tab\tand\nnewline',
      '\u00fcn\u00efc\u00f6de \U0001f600',
      '\u00e9' * 512,  # 1,024 bytes: the longest id allowed.
      '%_*',
      "X'41'",
      '\x7f\x1b[2J',
  ]


def rename(path: str, old: str, new) -> None:
  """Renames client `old` to `new` (any SQLite value) in rows and metadata."""
  fault_sqlite.edit(
      path,
      ('UPDATE examples SET client_id = ? WHERE client_id = ?', (new, old)),
      ('UPDATE client_metadata SET client_id = ? WHERE client_id = ?',
       (new, old)))


def _rename_to_non_utf8(path: str, old: str) -> None:
  for table in ('examples', 'client_metadata'):
    fault_sqlite.edit(path,
                      (f"UPDATE {table} SET client_id = CAST(X'63ff' AS TEXT) "
                       'WHERE client_id = ?', (old,)))


def refused_ids(old: str) -> dict:
  """name -> (edit of a file that has client `old`, fragment of the error).

  Each edit renames `old` to an id every reader refuses; the error names the
  value.
  """
  return {
      'NUL': (lambda p: rename(p, old, 'c\x001'),
              "client id 'c\\x001' contains a NUL character"),
      'not UTF-8': (lambda p: _rename_to_non_utf8(p, old),
                    "client_id b'c\\xff' is not valid UTF-8"),
      'too long': (lambda p: rename(p, old, 'x' * 1025),
                   'is 1025 bytes long in UTF-8 (at most 1024)'),
      'empty': (lambda p: rename(p, old, ''), "empty client id ''"),
      'blank': (lambda p: rename(p, old, ' \t'), "empty client id ' \\t'"),
      'a blob': (lambda p: rename(p, old, old.encode()),
                 f'client_id {old.encode()!r} is not text'),
  }


def to_utf16(path: str) -> None:
  """Re-creates the file with the same schema and rows, its text UTF-16."""
  copy = path + '.utf16'
  source = sqlite3.connect(path)
  con = sqlite3.connect(copy)
  con.execute("PRAGMA encoding = 'UTF-16le'")
  schema = source.execute(
      "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
      "ORDER BY type = 'index', rowid").fetchall()
  for kind, name, sql in schema:
    con.execute(sql)
    if kind == 'table':
      rows = source.execute(f'SELECT * FROM "{name}"').fetchall()
      if rows:
        marks = ', '.join('?' * len(rows[0]))
        con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
  con.commit()
  con.close()
  source.close()
  os.replace(copy, path)
