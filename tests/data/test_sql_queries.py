"""Tests for `sql_queries`: the SQL that reads untrusted client-data files.

Pure Python and SQLite: the statements are run by Python's sqlite3 on small
tables in TFF's layout; tf.data runs the same text (test_untrusted_caches).
"""

import os
import re
import sqlite3

import pytest

from tests.helpers import hostile_sqlite
from tff_dp.data import sql_queries

# Every reader's hostile ids, and one that readers refuse (blank) but the
# query must still hold as bytes.
_HOSTILE = hostile_sqlite.hostile_ids('train') + [' ']
_MATCH = (r"client_id = (CAST\(X'[0-9a-f]*' AS TEXT\)) COLLATE BINARY AND "
          r"split_name = (CAST\(X'[0-9a-f]*' AS TEXT\)) COLLATE BINARY")
_QUERY = re.compile(
    r'SELECT serialized_example_proto FROM examples NOT INDEXED WHERE '
    rf'rowid IN \(SELECT rowid FROM examples WHERE {_MATCH}\) AND '
    r'client_id = \1 COLLATE BINARY AND split_name = \2 COLLATE BINARY '
    r'ORDER BY rowid')


@pytest.mark.parametrize('client_id', _HOSTILE)
def test_query_holds_the_id_only_as_hex(client_id):
  query = sql_queries.client_examples_query(client_id, 'train')
  match = _QUERY.fullmatch(query)
  assert match, query
  assert match.group(1) == (
      f"CAST(X'{client_id.encode('utf-8').hex()}' AS TEXT)")


def _database(path,
              create_examples='CREATE TABLE examples (split_name TEXT '
              'NOT NULL, client_id TEXT NOT NULL, serialized_example_proto '
              'BLOB NOT NULL)'):
  """Client k of _HOSTILE has k + 1 rows in 'train' and one in 'test'."""
  con = sqlite3.connect(path)
  con.execute(create_examples)
  for k, client_id in enumerate(_HOSTILE):
    for r in range(k + 1):
      con.execute('INSERT INTO examples VALUES (?, ?, ?)',
                  ('train', client_id, f'{k}:{r}'.encode()))
    con.execute('INSERT INTO examples VALUES (?, ?, ?)',
                ('test', client_id, f'{k}:test'.encode()))
  con.commit()
  return con


def _rows(con, client_id, split='train'):
  return [
      r[0]
      for r in con.execute(sql_queries.client_examples_query(client_id, split))
  ]


def test_each_hostile_id_reads_exactly_its_own_rows(tmp_path):
  con = _database(str(tmp_path / 'a.sqlite'))
  for k, client_id in enumerate(_HOSTILE):
    assert _rows(con, client_id) == [f'{k}:{r}'.encode() for r in range(k + 1)
                                    ], client_id
    assert _rows(con, client_id, 'test') == [f'{k}:test'.encode()]
  assert _rows(con, 'nobody') == []


def test_a_case_blind_column_cannot_merge_clients(tmp_path):
  con = _database(
      str(tmp_path / 'a.sqlite'),
      ('CREATE TABLE examples (split_name TEXT COLLATE NOCASE, client_id '
       'TEXT COLLATE NOCASE, serialized_example_proto BLOB)'))
  con.execute('CREATE INDEX by_client ON examples (client_id, split_name)')
  con.executemany('INSERT INTO examples VALUES (?, ?, ?)',
                  [('TRAIN', 'ab', b'split'), ('train', 'AB', b'other')])
  assert _rows(con, 'ab') == []
  assert _rows(con, 'AB') == [b'other']


def test_an_index_that_lies_hands_no_other_rows(tmp_path):
  path = str(tmp_path / 'a.sqlite')
  con = _database(path)
  con.executemany('INSERT INTO examples VALUES (?, ?, ?)',
                  [('test', 'train', b'wrong'), ('train', 'test', b'right')])
  # Built on (split, client), declared on (client, split).
  con.execute('CREATE INDEX lying ON examples (split_name, client_id)')
  con.execute('PRAGMA writable_schema = ON')
  con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX lying ON "
              "examples (client_id, split_name)' WHERE name = 'lying'")
  con.commit()
  con.close()
  con = sqlite3.connect(path)
  # Quoting the id, the index answers with the other client's row, even
  # with the terms repeated behind a unary + (read from the index too).
  assert con.execute(
      "SELECT serialized_example_proto FROM examples WHERE client_id = "
      "'test' AND split_name = 'train' AND +client_id = 'test' AND "
      "+split_name = 'train'").fetchall() == [(b'wrong',)]
  # The index finds no row of the client; what it finds is refused.
  assert _rows(con, 'test') == []


@pytest.mark.parametrize('name',
                         ['q?mark', 'hash#tag', 'b?th#', 'pct%41', 'sp ace'])
def test_readonly_uri_opens_that_file_read_only(tmp_path, name):
  directory = tmp_path / name
  directory.mkdir()
  path = str(directory / 'x.sqlite')
  _database(path).close()
  con = sql_queries.connect_readonly(path)
  assert con.execute('SELECT COUNT(*) FROM examples').fetchone()[0] == sum(
      k + 2 for k in range(len(_HOSTILE)))
  with pytest.raises(sqlite3.OperationalError, match='readonly'):
    con.execute('DELETE FROM examples')
  con.close()
  # Nothing was created at a path cut at '?' or '#'.
  assert os.listdir(tmp_path) == [name]


def test_readonly_uri_is_absolute_and_quoted(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  uri = sql_queries.readonly_uri('a?b#c%/x.sqlite')
  assert uri == f'file:{tmp_path}/a%3Fb%23c%25/x.sqlite?mode=ro'


def test_text_that_is_not_utf8_reads_as_surrogates(tmp_path):
  path = str(tmp_path / 'a.sqlite')
  con = _database(path)
  con.execute("INSERT INTO examples VALUES ('train', CAST(X'63ff' AS TEXT), "
              "X'00')")
  con.commit()
  con.close()
  con = sql_queries.connect_readonly(path)
  ids = [r[0] for r in con.execute('SELECT DISTINCT client_id FROM examples')]
  bad = [i for i in ids if i.startswith('c') and len(i) == 2]
  assert bad == ['c\udcff']
  with pytest.raises(UnicodeEncodeError):
    bad[0].encode('utf-8')


@pytest.mark.parametrize('declared,text', [
    ('TEXT', True),
    ('text', True),
    ('VARCHAR(10)', True),
    ('CLOB', True),
    ('NCHAR', True),
    ('CHARINT', False),
    ('INTEGER', False),
    ('INT', False),
    ('', False),
    ('BLOB', False),
    ('NUMERIC', False),
    ('REAL', False),
    ('STRING', False),
])
def test_text_affinity_follows_sqlites_rules(tmp_path, declared, text):
  assert sql_queries.has_text_affinity(declared) is text
  # SQLite agrees: TEXT affinity stores the number 1 as the text '1'.
  con = sqlite3.connect(':memory:')
  con.execute(f'CREATE TABLE t (c {declared})')
  con.execute('INSERT INTO t VALUES (1)')
  assert (con.execute('SELECT typeof(c) FROM t').fetchone()[0] == 'text') \
      is text
