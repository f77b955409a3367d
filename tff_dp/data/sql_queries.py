"""SQL for SQLite files tff-dp reads as untrusted input, without TensorFlow.

Both kinds of client-data file tff-dp reads keep a client's examples in a
table `examples(split_name, client_id, serialized_example_proto, ...)`: TFF's
benchmark caches (`tff_cache`) and the files `import-data` writes
(`client_data_source`, which adds a label column). A crafted file may hold
any text in `client_id`, so no value of the file is ever pasted into SQL
between quotes (TFF's `SqlClientData` does, and a client named
`c1' OR '1'='1` read every client's rows):

* queries run by Python bind their values as parameters;
* tf.data's `SqlDataset` cannot bind parameters, so a value enters its query
  as a hex blob literal (`X'...'`: only [0-9a-f], whatever the value holds)
  cast to text, see `client_examples_query`.

Files are opened read-only through a URI whose path is percent-quoted: a `?`
or `#` in an unquoted path ends it, so `file:/data/a#b/x.sqlite?mode=ro`
opened (and created) `/data/a` read-write.
"""

import os
import sqlite3
from typing import Any, Optional
import urllib.parse

from tff_dp.data import table_checks

# Characters of a file's value shown in an error message.
_SHOWN_CHARS = 60


def readonly_uri(path: str) -> str:
  """The SQLite URI opening `path` read-only, wherever it lives.

  Args:
    path: A file path (relative paths are made absolute).
  """
  return f'file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro'


def _decode_text(data: bytes) -> str:
  # Never fails: bytes that are not UTF-8 become lone surrogates, which a
  # check can then report by name (str.encode('utf-8') refuses them).
  return data.decode('utf-8', 'surrogateescape')


def connect_readonly(path: str) -> sqlite3.Connection:
  """A read-only connection to `path`; text that is not UTF-8 still reads.

  Args:
    path: An SQLite file.
  """
  con = sqlite3.connect(readonly_uri(path), uri=True)
  con.text_factory = _decode_text
  return con


def hex_text(value: str) -> str:
  """`value` as an SQL expression of type TEXT made only of [0-9a-fA-FX'()].

  Args:
    value: Text that is valid Unicode (no lone surrogate).
  """
  return f"CAST(X'{value.encode('utf-8').hex()}' AS TEXT)"


def client_examples_query(client_id: str, split_name: str) -> str:
  """The statement reading one client's serialized examples, in file order.

  The result is the same for every declared collation of the columns
  (compared byte for byte) and whatever the file's indexes hold (each row is
  checked against the id and split as the table stores them), as long as the
  file's text is UTF-8 and both columns have TEXT affinity: readers check
  those first.

  Args:
    client_id: The client's id (valid Unicode).
    split_name: The split, e.g. 'train'.
  """
  match = (f'client_id = {hex_text(client_id)} COLLATE BINARY AND '
           f'split_name = {hex_text(split_name)} COLLATE BINARY')
  # An index may find the rows (the subquery), but its content may differ
  # from the table's (a crafted file): SQLite reads the columns of a row
  # found through an index from the index itself. NOT INDEXED makes the
  # outer query look rows up by rowid in the table, so the check reads the
  # table's own client_id and split_name. COLLATE BINARY: under a column
  # declared COLLATE NOCASE, 'A' = 'a'.
  return ('SELECT serialized_example_proto FROM examples NOT INDEXED WHERE '
          f'rowid IN (SELECT rowid FROM examples WHERE {match}) AND {match} '
          'ORDER BY rowid')


def has_text_affinity(declared_type: str) -> bool:
  """Whether a column of this declared type has TEXT affinity in SQLite.

  SQLite's rules (section 3.1 of "Datatypes In SQLite"), in order: 'INT'
  gives INTEGER; else 'CHAR', 'CLOB' or 'TEXT' gives TEXT.

  Args:
    declared_type: The column's type as `PRAGMA table_xinfo` reports it.
  """
  upper = declared_type.upper()
  if 'INT' in upper:
    return False
  return any(word in upper for word in ('CHAR', 'CLOB', 'TEXT'))


def client_id_problem(client_id: Any) -> Optional[str]:
  """Why a client id read from an untrusted file is unusable, or None.

  Shared by the two kinds of SQLite file tff-dp reads (its own client-data
  files and TFF's caches): text, valid UTF-8 (ids are queried as UTF-8
  bytes), and the importer's rules (`table_checks.check_client_id`).
  """
  if not isinstance(client_id, str):
    return f'client_id {show(client_id)} is not text'
  try:
    client_id.encode('utf-8')
  except UnicodeEncodeError:
    raw = client_id.encode('utf-8', 'surrogateescape')
    return f'client_id {show(raw)} is not valid UTF-8'
  try:
    table_checks.check_client_id(client_id)
  except ValueError as e:
    return str(e)
  return None


def show(value: Any) -> str:
  """A value for an error message: repr (escaped, so nothing reaches the
  terminal raw), cut short."""
  return shorten(repr(value))


def shorten(text: str) -> str:
  """`text` cut to what an error message shows of a file's value."""
  if len(text) > _SHOWN_CHARS:
    text = f'{text[:_SHOWN_CHARS]}... ({len(text)} characters)'
  return text
