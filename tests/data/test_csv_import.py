"""Tests for the CSV / .npz import into TFF's SQLite client-data format.

The round trips (marked tff) read the output back through
`SqlClientDataSource`, i.e. through TFF's `SqlClientData` and TensorFlow's
tf.train.Example parser, and compare every value. The bad-file tests check
the error's file, line and reason, and that nothing is left behind.
"""

import csv
import json
import os
import sqlite3
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tff_dp.data import client_data_source
from tff_dp.data import client_data_writer
from tff_dp.data import csv_import

# `python -m pytest` from the root puts it on sys.path; bare `pytest` does not.
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import csv_import_memory

# pylint: enable=g-import-not-at-top,wrong-import-position

TestSplit = csv_import.TestSplit
TableError = csv_import.TableError

# Values chosen to exercise the parser: signs, exponents, more digits than
# float32 keeps, whitespace, quoting, a multi-byte client id, labels whose
# varint takes two bytes.
_CSV = '''\
user,x1,x2,x3,label
alice,1.5,-2,0.1,0
bob,3e-3,"4.25",1e10,127
alice,0.333333333333,1E-40, 7 ,128
"carol, jr",-0,6.02214076e23,-1.0000001,999
bob,2,2,2,1
dörte,0,0,0,5
alice,9,8,7,3
'''


def _write(tmp_path, text, name='data.csv'):
  path = tmp_path / name
  path.write_text(text, encoding='utf-8')
  return str(path)


def _expected_rows(text):
  """client -> [(float32 features, label)] in file order (Python's parser)."""
  rows = list(csv.reader(text.splitlines()))[1:]
  expected = {}
  for row in rows:
    x = np.array([float(v) for v in row[1:-1]], dtype=np.float32)
    expected.setdefault(row[0], []).append((x, int(row[-1])))
  return expected


def _import(tmp_path, text, **kwargs):
  args = dict(output_path=str(tmp_path / 'out.sqlite'),
              client_column='user',
              label_column='label')
  args.update(kwargs)
  return csv_import.import_table(_write(tmp_path, text), **args)


def _assert_rows_equal(actual, expected):
  assert len(actual) == len(expected)
  for (ax, ay), (ex, ey) in zip(actual, expected):
    assert ax.dtype == np.float32
    # Bitwise: the float32 of the text, nothing rounded twice.
    np.testing.assert_array_equal(ax.view(np.uint32), ex.view(np.uint32))
    assert ay == ey


@pytest.mark.tff
def test_csv_round_trip_is_exact(tmp_path):
  summary = _import(tmp_path, _CSV, num_classes=1000, test_split=TestSplit.NONE)
  assert summary.rows == 7
  assert summary.train_clients == 4
  assert summary.feature_names == ('x1', 'x2', 'x3')
  source = client_data_source.SqlClientDataSource(summary.output_path)
  expected = _expected_rows(_CSV)
  assert source.client_ids == sorted(expected)
  assert source.input_dim == 3
  assert source.num_classes == 1000
  assert source.feature_names == ('x1', 'x2', 'x3')
  assert source.client_sizes().tolist() == [
      len(expected[c]) for c in source.client_ids
  ]
  for index, client_id in enumerate(source.client_ids):
    got = list(source.client_dataset(index).as_numpy_iterator())
    _assert_rows_equal(got, expected[client_id])
  assert not source.has_test_set


@pytest.mark.tff
@pytest.mark.parametrize('test_split', [TestSplit.CLIENTS, TestSplit.ROWS])
def test_csv_round_trip_with_test_split(tmp_path, test_split):
  rng = np.random.default_rng(1)
  lines = ['user,a,b,label']
  for i in range(300):
    a, b = rng.standard_normal(2)
    lines.append(f'u{int(rng.integers(30)):02d},{a!r},{b!r},{i % 4}')
  text = '\n'.join(lines) + '\n'
  summary = _import(tmp_path, text, test_split=test_split, test_fraction=0.25)
  source = client_data_source.SqlClientDataSource(summary.output_path)
  expected = _expected_rows(text)
  train = {
      cid: list(source.client_dataset(i).as_numpy_iterator())
      for i, cid in enumerate(source.client_ids)
  }
  test = list(source.test_dataset().as_numpy_iterator())
  assert sum(map(len, train.values())) + len(test) == 300
  assert len(test) == summary.test_examples
  key = lambda row: (row[0].tobytes(), row[1])
  all_rows = sorted(key(r) for rows in expected.values() for r in rows)
  split_rows = sorted([key(r) for rows in train.values() for r in rows] +
                      [key(r) for r in test])
  assert split_rows == all_rows
  if test_split is TestSplit.CLIENTS:
    assert summary.test_clients == round(0.25 * 30)
    assert source.population == 30 - summary.test_clients
    for client_id, rows in train.items():
      _assert_rows_equal(rows, expected[client_id])
  else:
    assert source.population == 30
    for client_id, rows in train.items():
      n = len(expected[client_id])
      assert len(rows) == max(1, int(0.75 * n))
      # The kept rows are a subsequence of the client's rows, in order.
      positions = [
          [key(r) for r in expected[client_id]].index(key(row)) for row in rows
      ]
      assert positions == sorted(positions)


def _split_of(path):
  con = sqlite3.connect(path)
  try:
    return sorted(
        con.execute(
            'SELECT client_id, split_name, num_examples FROM client_metadata'))
  finally:
    con.close()


def _clients_text(num_clients, rows_per_client=3):
  lines = ['user,x,label']
  for r in range(rows_per_client):
    lines += [f'c{k:03d},{k + r},{(k + r) % 3}' for k in range(num_clients)]
  return '\n'.join(lines) + '\n'


def test_split_is_reproducible_and_keyed_by_seed(tmp_path):
  text = _clients_text(60)
  splits = []
  for i, seed in enumerate([0, 0, 1]):
    out = str(tmp_path / f'out{i}.sqlite')
    _import(tmp_path, text, output_path=out, seed=seed)
    splits.append(_split_of(out))
  assert splits[0] == splits[1]
  assert splits[0] != splits[2]
  test_clients = [c for c, split, _ in splits[0] if split == 'test']
  assert len(test_clients) == 12


def test_metadata_table(tmp_path):
  summary = _import(tmp_path, _clients_text(10), test_fraction=0.3)
  con = sqlite3.connect(summary.output_path)
  metadata = {
      k: json.loads(v)
      for k, v in con.execute('SELECT key, value FROM tff_dp_metadata')
  }
  counts = dict(
      con.execute('SELECT split_name, SUM(num_examples) FROM '
                  'client_metadata GROUP BY split_name'))
  indexes = {
      r[0] for r in con.execute(
          "SELECT name FROM sqlite_master WHERE type = 'index'")
  }
  con.close()
  assert metadata['format_version'] == csv_import.FORMAT_VERSION
  assert metadata['feature_names'] == ['x']
  assert metadata['num_classes'] == 3
  assert metadata['num_classes_inferred'] is True
  assert metadata['test_split'] == 'clients'
  assert metadata['train_clients'] == 7 and metadata['test_clients'] == 3
  assert metadata['train_examples'] == counts['train'] == 21
  assert metadata['test_examples'] == counts['test'] == 9
  assert sum(metadata['train_label_histogram']) == 21
  assert sum(metadata['test_label_histogram']) == 9
  assert 'examples_client_split' in indexes


# (csv text, import kwargs, expected line or None, expected reason fragment)
_BAD_FILES = {
    'missing client column':
        ('id,x,label\na,1,0\n', {}, 1, "missing client column 'user'"),
    'missing label column':
        ('user,x,y\na,1,0\n', {}, 1, "missing label column 'label'"),
    'missing feature column': ('user,x,label\na,1,0\n', {
        'feature_columns': ['x', 'z']
    }, 1, "missing feature column(s) 'z'"),
    'duplicate header':
        ('user,x,x,label\na,1,2,0\n', {}, 1,
         "duplicate column name 'x' in the header (fields 2 and 3)"),
    'empty column name': ('user,,label\na,1,0\n', {}, 1, 'empty column name'),
    'non-numeric feature': ('user,x,y,label\na,1,2,0\nb,1,abc,1\n', {}, 3,
                            "column 'y' (field 3): 'abc' is not a number"),
    'empty feature': ('user,x,label\na,1,0\nb,,1\n', {}, 3,
                      "column 'x' (field 2): '' is not a number"),
    'underscore number':
        ('user,x,label\na,1_000,0\n', {}, 2, "'1_000' is not a number"),
    'nan': ('user,x,label\na,1,0\nb,nan,1\n', {}, 3,
            "column 'x' (field 2): nan: NaN and infinite values"),
    'inf': ('user,x,label\na,-inf,0\n', {}, 2, 'NaN and infinite values'),
    'float32 overflow':
        ('user,x,label\na,1e39,0\n', {}, 2, '1e+39 overflows float32'),
    'label out of range': ('user,x,label\na,1,0\nb,1,3\n', {
        'num_classes': 3
    }, 3, "column 'label' (field 3): label 3 is out of range [0, 3)"),
    'negative label': ('user,x,label\na,1,-1\n', {}, 2, 'label -1 is negative'),
    'fractional label':
        ('user,x,label\na,1,1.5\n', {}, 2, "label '1.5' is not an integer"),
    'text label':
        ('user,x,label\na,1,cat\n', {}, 2, "label 'cat' is not an integer"),
    'empty client id': ('user,x,label\na,1,0\n,2,1\n', {}, 3,
                        "column 'user' (field 1): empty client id"),
    'blank client id': ('user,x,label\n  ,2,1\n', {}, 2, 'empty client id'),
    'quote in client id':
        ("user,x,label\no'brien,2,1\n", {}, 2, 'contains a single quote'),
    # The loader refuses both, so the importer must not write them.
    'NUL in client id': ('user,x,label\na,1,0\nb\x00c,2,1\n', {}, 3,
                         "client id 'b\\x00c' contains a NUL character"),
    'long client id': (f'user,x,label\na,1,0\n{"é" * 513},2,1\n', {}, 3,
                       'is 1026 bytes long in UTF-8 (at most 1024)'),
    'too few fields': ('user,x,label\na,1,0\nb,1\n', {}, 3,
                       '2 fields, expected 3 fields as in the header'),
    'blank line': ('user,x,label\na,1,0\n\nb,1,1\n', {}, 3, 'an empty line'),
    'empty file': ('', {}, 1, 'empty file'),
    'header only': ('user,x,label\n', {}, 2, 'no data rows'),
    'bad quoting': ('user,x,label\na,"1"2,0\n', {}, 2, 'malformed CSV'),
    # NaN is found when its batch is converted, after line 4 is parsed.
    'first bad line is reported first':
        ('user,x,label\na,1,0\nb,nan,1\nc,abc,1\n', {}, 3, 'NaN'),
    'all labels zero': ('user,x,label\na,1,0\nb,2,0\n', {}, None,
                        'num_classes cannot be inferred'),
    'one client cannot be split':
        ('user,x,label\na,1,0\na,2,1\n', {}, None, 'at least 2 clients'),
    # The record starting on line 3 spans two lines: the error is on line 5.
    'line numbers after a multi-line field':
        ('user,x,label\na,1,0\n"b\nb",2,1\nc,3,x\n', {}, 5,
         "label 'x' is not an integer"),
}


@pytest.mark.parametrize('name', sorted(_BAD_FILES))
def test_bad_file_error_names_file_line_and_reason(tmp_path, name):
  text, kwargs, line, reason = _BAD_FILES[name]
  path = _write(tmp_path, text)
  output = tmp_path / 'out.sqlite'
  with pytest.raises(TableError) as info:
    csv_import.import_table(path,
                            output_path=str(output),
                            client_column='user',
                            label_column='label',
                            **kwargs)
  error = info.value
  assert error.path == path
  assert error.line == line
  assert reason in error.reason
  prefix = f'{path}:{line}: ' if line is not None else f'{path}: '
  assert str(error).startswith(prefix)
  # Nothing half-written: only the input is left.
  assert os.listdir(tmp_path) == ['data.csv']


def test_invalid_utf8_is_reported_with_a_line(tmp_path):
  path = tmp_path / 'data.csv'
  path.write_bytes(b'user,x,label\na,1,0\nb\xff\xfe,2,1\n')
  with pytest.raises(TableError, match='not valid UTF-8'):
    csv_import.import_table(str(path),
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label')
  assert os.listdir(tmp_path) == ['data.csv']


@pytest.mark.parametrize('newline', [b'\n', b'\r\n', b'\r'])
def test_invalid_utf8_is_reported_at_its_own_line(tmp_path, newline):
  # Far past the first 8 KiB, which a text file decodes ahead of the reader.
  lines = [b'user,x,label'
          ] + [b'c%d,%d,%d' % (i % 5, i, i % 2) for i in range(2000)]
  lines[1500] = b'c\xff1,1,0'
  path = tmp_path / 'data.csv'
  path.write_bytes(newline.join(lines) + newline)
  with pytest.raises(TableError) as info:
    csv_import.import_table(str(path),
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label')
  assert info.value.line == 1501
  assert 'not valid UTF-8 text (invalid start byte at byte 2' in str(info.value)


def test_error_before_invalid_utf8_is_reported_first(tmp_path):
  path = tmp_path / 'data.csv'
  path.write_bytes(b'user,x,label\na,1,0\nb,abc,1\nc\xff,1,1\n')
  with pytest.raises(TableError) as info:
    csv_import.import_table(str(path),
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label')
  assert info.value.line == 3
  assert "'abc' is not a number" in info.value.reason


def test_error_in_a_late_batch_has_the_right_line(tmp_path):
  lines = ['user,x,label'] + [f'c{i % 5},{i},{i % 2}' for i in range(1000)]
  lines[777] = 'c1,oops,0'
  path = _write(tmp_path, '\n'.join(lines) + '\n')
  with pytest.raises(TableError) as info:
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label',
                            batch_rows=100)
  assert info.value.line == 778
  assert os.listdir(tmp_path) == ['data.csv']


def test_failed_overwrite_keeps_the_previous_output(tmp_path):
  summary = _import(tmp_path, _clients_text(5))
  before = open(summary.output_path, 'rb').read()
  with pytest.raises(TableError):
    _import(tmp_path, 'user,x,label\na,1,0\nb,nan,1\n', overwrite=True)
  assert open(summary.output_path, 'rb').read() == before
  assert sorted(os.listdir(tmp_path)) == ['data.csv', 'out.sqlite']


def test_interrupt_removes_the_temporary_file(tmp_path, monkeypatch):

  def interrupted(self, batch):
    del self, batch
    raise KeyboardInterrupt

  monkeypatch.setattr(client_data_writer.ClientDataWriter, 'add', interrupted)
  with pytest.raises(KeyboardInterrupt):
    _import(tmp_path, _clients_text(5))
  assert os.listdir(tmp_path) == ['data.csv']


def test_output_path_checks(tmp_path):
  _import(tmp_path, _clients_text(5))
  with pytest.raises(TableError, match='already exists'):
    _import(tmp_path, _clients_text(5))
  with pytest.raises(TableError, match='does not exist'):
    _import(tmp_path,
            _clients_text(5),
            output_path=str(tmp_path / 'no' / 'o.sqlite'))
  with pytest.raises(TableError, match='no such file'):
    csv_import.import_table(str(tmp_path / 'nothing.csv'),
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label')
  other = _write(tmp_path, 'x', name='data.tsv')
  with pytest.raises(TableError, match="unsupported file type '.tsv'"):
    csv_import.import_table(other,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='user',
                            label_column='label')


@pytest.mark.parametrize('kwargs,message', [
    (dict(client_column='label'), 'both'),
    (dict(feature_columns=['x', 'user']), "includes the client_column"),
    (dict(feature_columns=['x', 'x']), 'duplicates'),
    (dict(num_classes=1), 'num_classes'),
    (dict(test_fraction=1.0), 'test_fraction'),
    (dict(seed=-1), 'seed'),
])
def test_invalid_arguments(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    _import(tmp_path, _clients_text(3), **kwargs)


def test_feature_columns_select_and_order(tmp_path):
  text = 'user,a,b,c,label\nu1,1,2,3,0\nu2,4,5,6,1\n'
  summary = _import(tmp_path,
                    text,
                    feature_columns=['c', 'a'],
                    test_split=TestSplit.NONE)
  assert summary.feature_names == ('c', 'a')
  con = sqlite3.connect(summary.output_path)
  blob = con.execute("SELECT serialized_example_proto FROM examples WHERE "
                     "client_id = 'u2'").fetchone()[0]
  con.close()
  # The float_list holds 6.0 then 4.0 (little-endian float32).
  assert np.array([6.0, 4.0], dtype='<f4').tobytes() in blob


def _npz(tmp_path, compressed=False, **arrays):
  path = str(tmp_path / 'data.npz')
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return path


@pytest.mark.tff
@pytest.mark.parametrize('compressed', [False, True])
def test_npz_round_trip_is_exact(tmp_path, compressed):
  rng = np.random.default_rng(3)
  n = 57
  client = np.array([f'writer{int(k)}' for k in rng.integers(0, 6, n)])
  x = rng.standard_normal((n, 2, 3)).astype(np.float64)
  extra = rng.integers(-5, 5, n)
  y = rng.integers(0, 4, n).astype(np.int16)
  path = _npz(tmp_path, compressed, client=client, x=x, extra=extra, y=y)
  summary = csv_import.import_table(path,
                                    output_path=str(tmp_path / 'out.sqlite'),
                                    client_column='client',
                                    label_column='y',
                                    test_split=TestSplit.NONE,
                                    batch_rows=10)
  assert summary.feature_names == tuple([f'x[{j}]' for j in range(6)] +
                                        ['extra'])
  source = client_data_source.SqlClientDataSource(summary.output_path)
  features = np.concatenate([x.reshape(n, 6), extra[:, None]],
                            axis=1).astype(np.float32)
  for index, client_id in enumerate(source.client_ids):
    rows = np.flatnonzero(client == client_id)
    expected = [(features[r], int(y[r])) for r in rows]
    _assert_rows_equal(list(source.client_dataset(index).as_numpy_iterator()),
                       expected)


def test_npz_integer_client_ids(tmp_path):
  path = _npz(tmp_path,
              ids=np.array([7, 7, 12, 3]),
              x=np.arange(4.0),
              y=np.array([0, 1, 1, 0]))
  summary = csv_import.import_table(path,
                                    output_path=str(tmp_path / 'o.sqlite'),
                                    client_column='ids',
                                    label_column='y',
                                    test_split=TestSplit.NONE)
  assert summary.train_clients == 3
  assert [c for c, _, _ in _split_of(summary.output_path)] == ['12', '3', '7']


_GOOD = dict(client=np.array(['a', 'b', 'c']),
             x=np.zeros((3, 2)),
             y=np.array([0, 1, 1]))


@pytest.mark.parametrize('change,reason', [
    (dict(x=np.zeros((4, 2))), "array 'x' has 4 rows but client array "
     "'client' has 3"),
    (dict(x=np.array([[0, 0], [0, np.nan], [0, 0]])),
     "feature 'x[1]' row 1: nan: NaN and infinite"),
    (dict(x=np.array(['1', '2', '3'])), "feature array 'x' has dtype <U1"),
    (dict(y=np.array([0, 1.5, 1])), "row 1: label 1.5 is not an integer"),
    (dict(y=np.array([0, 1, -2])), 'row 2: label -2 is negative'),
    (dict(client=np.array(['a', '', 'c'])), "client array 'client' row 1: "
     'empty client id'),
    (dict(client=np.array(['a', None, 'c'], dtype=object)), 'dtype object'),
    (dict(client=np.array([1.0, 2.0, 3.0])), "client array 'client' has "
     'dtype float64'),
    (dict(y=None), "missing label array 'y'"),
])
def test_npz_bad_file_errors(tmp_path, change, reason):
  arrays = {k: v for k, v in dict(_GOOD, **change).items() if v is not None}
  path = _npz(tmp_path, **arrays)
  with pytest.raises(TableError) as info:
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='client',
                            label_column='y',
                            test_split=TestSplit.NONE)
  assert info.value.path == path
  assert reason in info.value.reason
  assert os.listdir(tmp_path) == ['data.npz']


def test_npz_first_bad_row_is_reported_across_arrays_and_chunks(tmp_path):
  n = 25
  x = np.zeros((n, 2))
  x[17, 1] = np.inf
  y = np.zeros(n, dtype=np.int64)
  y[1::2] = 1
  y[21] = 7
  client = np.array([f'c{i % 3}' for i in range(n)])
  client[23] = ''
  path = _npz(tmp_path, client=client, x=x, y=y)
  with pytest.raises(TableError) as info:
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='client',
                            label_column='y',
                            num_classes=2,
                            batch_rows=10)
  assert info.value.reason == (
      "feature 'x[1]' row 17: inf: NaN and infinite values are not allowed")
  x[17, 1] = 0
  path = _npz(tmp_path, client=client, x=x, y=y)
  with pytest.raises(TableError,
                     match=r'^.*: label array .y. row 21: label 7 '
                     r'is out of range \[0, 2\)'):
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='client',
                            label_column='y',
                            num_classes=2,
                            batch_rows=10)


@pytest.mark.parametrize('compressed', [False, True])
def test_npz_damaged_member_is_one_error_naming_the_array(tmp_path, compressed):
  # Failed on 4f6c220 with zipfile.BadZipFile (Bad CRC-32) or zlib.error, a
  # traceback from the import program: neither is a ValueError or OSError.
  path = _npz(tmp_path, compressed, **_GOOD)
  with zipfile.ZipFile(path) as zf:
    info = zf.getinfo('x.npy')
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
  with open(path, 'r+b') as f:
    f.seek(start + info.compress_size - 3)  # The data, past the header.
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(TableError) as error:
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='client',
                            label_column='y',
                            test_split=TestSplit.NONE)
  assert error.value.path == path
  assert "array 'x' cannot be read from the archive" in error.value.reason
  assert os.listdir(tmp_path) == ['data.npz']


def test_npz_not_a_zip(tmp_path):
  path = _write(tmp_path, 'user,x,label\n', name='data.npz')
  with pytest.raises(TableError, match='not a valid .npz'):
    csv_import.import_table(path,
                            output_path=str(tmp_path / 'o.sqlite'),
                            client_column='client',
                            label_column='y')


def _run_program(*args):
  return subprocess.run([sys.executable, '-m', 'tff_dp.cli.import_data', *args],
                        capture_output=True,
                        text=True,
                        cwd=REPO_ROOT,
                        timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                        check=False)


@pytest.mark.e2e
def test_program_prints_a_summary(tmp_path):
  path = _write(tmp_path, _clients_text(10, rows_per_client=4))
  output = str(tmp_path / 'out.sqlite')
  result = _run_program(f'--input={path}', f'--output={output}',
                        '--client_column=user', '--label_column=label',
                        '--num_classes=3', '--test_split=rows')
  assert result.returncode == 0, result.stderr
  assert f'imported {path} -> {output}' in result.stdout
  assert 'rows: 40 (train 30, test 10: rows of 10 clients)' in result.stdout
  assert 'clients: 10 (the training population N)' in result.stdout
  assert 'examples per client: min 3, median 3, max 3' in result.stdout
  assert 'features: 1, classes: 3\n' in result.stdout
  # A command that trains on the file: --dataset=sqlite, not only the file
  # (which trained on the default digits).
  assert ('train on it (README, "Your own data"): ./run.sh train '
          f'--dataset=sqlite --client_data={output} ') in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize('text,args,message', [
    ('user,x,label\na,1,0\nb,zz,1\n', [],
     "{path}:3: column 'x' (field 2): 'zz' is not a number"),
    ('user,x,label\na,1,0\nb,1,7\n', ['--num_classes=3'],
     "{path}:3: column 'label' (field 3): label 7 is out of range [0, 3) "
     '(num_classes=3)'),
    ('user,x,label\na,1,0\n', ['--label_column=y'],
     "{path}:1: missing label column 'y' (the file has: 'user', 'x', "
     "'label')"),
    ('user,x,label\na,1,0\n', ['--test_fraction=0'
                              ], 'flag --test_fraction=0.0: must be in (0, 1)'),
])
def test_program_reports_bad_input_in_one_line(tmp_path, text, args, message):
  path = _write(tmp_path, text)
  result = _run_program(f'--input={path}',
                        f'--output={tmp_path / "out.sqlite"}',
                        '--client_column=user', '--label_column=label', *args)
  assert result.returncode == 2
  assert result.stdout == ''
  assert result.stderr == (
      f'tff-dp-import: error: {message.format(path=path)}\n')
  assert os.listdir(tmp_path) == ['data.csv']


@pytest.mark.e2e
def test_program_missing_flags_is_one_line():
  result = _run_program('--input=x.csv')
  assert result.returncode == 2
  assert result.stderr.count('\n') == 1
  assert result.stderr == ('tff-dp-import: error: --output, --client_column '
                           'and --label_column are required\n')


@pytest.mark.e2e
def test_memory_benchmark_small(tmp_path):
  result = csv_import_memory.run(rows=20_000,
                                 clients=200,
                                 features=5,
                                 work_dir=str(tmp_path))
  print(csv_import_memory.report(result))
  assert 'rows: 20000 (train' in result['program_output']
  assert result['peak_rss_mib'] > 0 and result['baseline_rss_mib'] > 0
  con = sqlite3.connect(str(tmp_path / 'bench-20000.sqlite'))
  assert con.execute('SELECT COUNT(*) FROM examples').fetchone()[0] == 20_000
  assert con.execute('SELECT COUNT(DISTINCT client_id) FROM '
                     'examples').fetchone()[0] == 200
  con.close()
