"""A crafted --client_data file: read safely, or refused in one named line.

Files are made by the real importer, then edited with parameterized SQL as
an adversary would: hostile client ids, bad metadata fields, bad rows, a
schema that changes what queries read. What each client reads is compared
with the ground truth read here with parameterized queries and TensorFlow's
own proto class, not with the loader's parser.
"""

import hashlib
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT
from tests.helpers import client_data_files
from tests.helpers import hostile_sqlite
from tests.helpers import programs
from tff_dp.data import client_data_checks
from tff_dp.data import client_data_rows
from tff_dp.data import client_data_source
from tff_dp.data import csv_import
from tff_dp.data import loading
from tools import fault_sqlite

SqlClientDataSource = client_data_source.SqlClientDataSource
ClientDataFormatError = client_data_checks.ClientDataFormatError
TestSplit = csv_import.TestSplit

_INJECTION = hostile_sqlite.INJECTION
_edit = fault_sqlite.edit
_rename = hostile_sqlite.rename


def _make(tmp_path,
          *,
          test_split=TestSplit.CLIENTS,
          num_clients=10,
          name='data'):
  """Client k (id 'c{k:02d}') has k + 2 rows of 4 features; labels in [0, 3)."""
  rows = [(f'c{k:02d}', [k + 0.25 * r + j
                         for j in range(4)], (k + r) % 3)
          for k in range(num_clients)
          for r in range(k + 2)]
  return client_data_files.imported(tmp_path,
                                    rows,
                                    name=name,
                                    num_classes=3,
                                    test_split=test_split,
                                    test_fraction=0.25)


def _decode(blob):
  example = tf.train.Example.FromString(blob)
  features = example.features.feature
  return (tuple(np.float32(v) for v in features['features'].float_list.value),
          int(features['label'].int64_list.value[0]))


def _truth(path, split):
  """client id -> [(features, label)] of `split`, in rowid order."""
  con = sqlite3.connect(path)
  rows = con.execute(
      'SELECT client_id, serialized_example_proto FROM '
      'examples WHERE split_name = ? ORDER BY rowid', (split,)).fetchall()
  con.close()
  truth = {}
  for client_id, blob in rows:
    truth.setdefault(client_id, []).append(_decode(blob))
  return truth


def _read(dataset):
  return [(tuple(x.tolist()), int(y)) for x, y in dataset.as_numpy_iterator()]


def _example(features, label):
  return tf.train.Example(features=tf.train.Features(
      feature={
          'features':
              tf.train.Feature(float_list=tf.train.FloatList(value=features)),
          'label':
              tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      })).SerializeToString()


@pytest.mark.tff
def test_hostile_client_ids_read_exactly_their_own_rows(tmp_path):
  # One client per id, the training clients' first (the injection reads a
  # training client's rows); the test split's ids never enter a query, but
  # are checked.
  hostile = hostile_sqlite.hostile_ids('train')
  path = _make(tmp_path, num_clients=len(hostile))
  con = sqlite3.connect(path)
  ids = [
      r[0] for r in con.execute(
          "SELECT client_id FROM client_metadata ORDER BY split_name = 'test', "
          'client_id')
  ]
  con.close()
  assert len(ids) == len(hostile)
  for old, new in zip(ids, hostile):
    _rename(path, old, new)
  train, test = _truth(path, 'train'), _truth(path, 'test')
  # round(test_fraction * clients) whole clients hold the test split.
  assert _INJECTION in train and len(test) == round(0.25 * len(hostile))

  source = SqlClientDataSource(path)
  assert sorted(source.client_ids) == sorted(train)
  for index, client_id in enumerate(source.client_ids):
    assert _read(source.client_dataset(index)) == train[client_id], client_id
  assert source.client_sizes().tolist() == [
      len(train[c]) for c in source.client_ids
  ]
  # The held-out set is the test rows, never a training row.
  expected_test = [row for rows in test.values() for row in rows]
  assert sorted(_read(source.test_dataset())) == sorted(expected_test)


# Ids refused, each with one error naming the value.
_REFUSED_IDS = hostile_sqlite.refused_ids('c01')


@pytest.mark.parametrize('name', sorted(_REFUSED_IDS))
def test_unusable_client_ids_are_refused_by_value(tmp_path, name):
  path = _make(tmp_path)
  craft, message = _REFUSED_IDS[name]
  craft(path)
  with pytest.raises(ClientDataFormatError) as info:
    SqlClientDataSource(path)
  text = str(info.value)
  assert text.startswith(f'{path}: client_metadata row ')
  assert message in text
  assert '\n' not in text


@pytest.mark.tff
def test_an_index_that_lies_cannot_hand_a_client_another_clients_rows(tmp_path):
  # Under the importer's name and definition, an index built on (split,
  # client): a lookup of client 'test' in split 'train' then finds the rows
  # of client 'train' in split 'test'.
  path = _make(tmp_path, test_split=TestSplit.ROWS)
  _rename(path, 'c02', 'train')
  _rename(path, 'c03', 'test')
  _edit(path, ('DROP INDEX examples_client_split', ()),
        ('CREATE INDEX examples_client_split ON examples '
         '(split_name, client_id)', ()), ('PRAGMA writable_schema = ON', ()),
        ("UPDATE sqlite_master SET sql = 'CREATE INDEX examples_client_split "
         "ON examples (client_id, split_name)' WHERE name = "
         "'examples_client_split'", ()))
  train = _truth(path, 'train')
  try:
    source = SqlClientDataSource(path)
  except ClientDataFormatError as e:
    assert str(e).startswith(f'{path}: examples has ')
    return
  for index, client_id in enumerate(source.client_ids):
    got = _read(source.client_dataset(index))
    assert all(row in train[client_id] for row in got), client_id


# (key, JSON text or None to delete the key, fragment of the message).
_BAD_METADATA = [
    ('format_version', 'true', 'format_version true'),
    ('input_dim', '0', 'input_dim=0: expected an integer >= 1'),
    ('input_dim', '"4"', 'input_dim="4"'),
    ('input_dim', '4.0', 'input_dim=4.0'),
    ('input_dim', '5', 'input_dim=5 distinct names'),
    ('input_dim', 'not json', "'not json' is not valid JSON"),
    ('feature_names', '5', 'feature_names=5: expected a list of input_dim=4'),
    ('feature_names', '["a", "b", "c"]', 'feature_names=["a", "b", "c"]'),
    ('feature_names', '["a", "a", "b", "c"]', 'feature_names=["a", "a"'),
    ('feature_names', '[1, 2, 3, 4]', 'feature_names=[1, 2, 3, 4]'),
    ('feature_names', '[' * 100_000 + ']' * 100_000, "'feature_names': '[[[["),
    ('num_classes', '0', 'num_classes=0: expected an integer in [2, '),
    ('num_classes', '1', 'num_classes=1'),
    ('num_classes', '-3', 'num_classes=-3'),
    ('num_classes', 'null', 'num_classes=null'),
    ('num_classes', '3.0', 'num_classes=3.0'),
    ('num_classes', '2147483648', 'num_classes=2147483648'),
    ('num_classes', '2', 'num_classes=2 counts'),
    ('num_classes_inferred', '"no"', 'num_classes_inferred="no"'),
    ('rows', '3', 'rows=3: expected train_examples + test_examples'),
    ('train_examples', '-1', 'train_examples=-1'),
    ('train_examples', '100', 'train_examples + test_examples'),
    ('test_examples', '-5', 'test_examples=-5'),
    ('train_clients', '99', 'train_clients=99, but the file has 8'),
    ('test_clients', '0', 'test_clients=0: expected > 0'),
    ('train_label_histogram', '[1, 2]', 'train_label_histogram=[1, 2]'),
    ('train_label_histogram', '"x"', 'train_label_histogram="x"'),
    ('test_split', '"bogus"', 'test_split="bogus"'),
    ('test_split', '"none"', 'test_fraction=0.25: expected null'),
    ('test_split', None, "metadata has no 'test_split'"),
    ('test_fraction', '1.5', 'test_fraction=1.5: expected a number in (0, 1)'),
    ('test_fraction', 'null', 'test_fraction=null'),
    ('test_fraction', 'NaN', 'NaN is not a JSON number'),
    ('seed', '-1', 'seed=-1'),
    ('source', '5', 'source=5'),
    ('source', '"\\u001b[2Jdata.csv"', 'source="\\u001b[2Jdata.csv"'),
    ('source', None, "metadata has no 'source'"),
]


@pytest.mark.parametrize(
    'key,value,message',
    _BAD_METADATA,
    ids=[f'{k}={"" if v is None else v[:12]}' for k, v, _ in _BAD_METADATA])
def test_bad_metadata_field_is_refused_naming_file_field_and_value(
    tmp_path, key, value, message):
  path = _make(tmp_path)
  if value is None:
    _edit(path, ('DELETE FROM tff_dp_metadata WHERE key = ?', (key,)))
  else:
    _edit(path,
          ('UPDATE tff_dp_metadata SET value = ? WHERE key = ?', (value, key)))
  with pytest.raises(ClientDataFormatError) as info:
    SqlClientDataSource(path)
  text = str(info.value)
  assert text.startswith(f'{path}: ')
  assert key in text and message in text
  assert '\n' not in text and len(text) < len(path) + 300


def test_histogram_that_disagrees_with_the_rows_is_refused(tmp_path):
  path = _make(tmp_path)
  con = sqlite3.connect(path)
  counts = json.loads(
      con.execute("SELECT value FROM tff_dp_metadata WHERE key = "
                  "'train_label_histogram'").fetchone()[0])
  con.close()
  # Same total, different labels.
  moved = [counts[0] + 1, counts[1] - 1, counts[2]]
  _edit(path, ('UPDATE tff_dp_metadata SET value = ? WHERE key = ?',
               (json.dumps(moved), 'train_label_histogram')))
  with pytest.raises(
      ClientDataFormatError,
      match=(
          f'train_label_histogram=.*: says {moved[0]} examples of label 0, the '
          f'file has {counts[0]}')):
    SqlClientDataSource(path)


def _first_rowid(path, client_id='c01'):
  con = sqlite3.connect(path)
  rowid = con.execute('SELECT MIN(rowid) FROM examples WHERE client_id = ?',
                      (client_id,)).fetchone()[0]
  con.close()
  return rowid


_SET_COLUMN = {
    column: f'UPDATE examples SET {column} = ? WHERE rowid = ?'
    for column in ('label', 'serialized_example_proto', 'split_name')
}


def _set_row(column, value):

  def craft(path):
    rowid = _first_rowid(path)
    _edit(path, (_SET_COLUMN[column], (value, rowid)))
    return rowid

  return craft


def _set_schema(*statements):

  def craft(path):
    _edit(path, *[(s, ()) for s in statements])

  return craft


# name -> (edit of a valid file, fragment of the message); '{rowid}' is the
# edited row.
_BAD_ROWS = {
    'label out of range':
        (_set_row('label', 7),
         'examples row {rowid}: label 7: expected an integer in [0, '
         'num_classes=3)'),
    'label not an integer': (_set_row('label',
                                      1.5), 'examples row {rowid}: label 1.5'),
    'example label differs from its column':
        (_set_row('serialized_example_proto', _example([1.0, 2.0, 3.0, 4.0],
                                                       2)),
         "examples row {rowid}: the example's label 2 differs from its label "
         'column'),
    'example with 3 features':
        (_set_row('serialized_example_proto', _example([1.0, 2.0, 3.0], 1)),
         'examples row {rowid}: serialized_example_proto is not an example of '
         '4 float features'),
    'not an example':
        (_set_row('serialized_example_proto', b'\xff' * 20),
         'examples row {rowid}: serialized_example_proto is not an example'),
    'NaN feature': (_set_row('serialized_example_proto',
                             _example([1.0, float('nan'), 3.0, 4.0], 1)),
                    "examples row {rowid}: feature 'f1' is nan"),
    'example stored as text':
        (_set_row('serialized_example_proto', 'text'),
         'examples row {rowid}: serialized_example_proto is text of 4 bytes'),
    'huge blob': (_set_row('serialized_example_proto', b'\x00' * 100_000),
                  'serialized_example_proto is blob of 100000 bytes'),
    'unknown split':
        (_set_row('split_name', 'validation'),
         "examples row {rowid}: split_name 'validation': expected 'train' or "
         "'test'"),
    'size that disagrees with the rows':
        (_set_schema("UPDATE client_metadata SET num_examples = 2 WHERE "
                     "client_id = 'c05'"),
         "examples has 7 rows of client 'c05' in split 'train', "
         'client_metadata says 2'),
    'client listed twice':
        (_set_schema("INSERT INTO client_metadata SELECT * FROM "
                     "client_metadata WHERE client_id = 'c05'"),
         "client 'c05' is listed twice in split 'train'"),
    'client without rows':
        (_set_schema("INSERT INTO client_metadata VALUES ('ghost', 'train', "
                     '3)'),
         "client_metadata lists client 'ghost' in split 'train', which has "
         'no rows'),
    'client with 0 examples':
        (_set_schema("INSERT INTO client_metadata VALUES ('ghost', 'train', "
                     '0)'), "num_examples 0 of client 'ghost'"),
    'a view for examples':
        (_set_schema('ALTER TABLE examples RENAME TO real_examples',
                     'CREATE VIEW examples AS SELECT * FROM real_examples'),
         "table 'real_examples' is not part of a tff-dp client-data file"),
    'case-blind client ids':
        (_set_schema(
            'ALTER TABLE examples RENAME TO old',
            'CREATE TABLE examples (split_name TEXT NOT NULL, '
            'client_id TEXT NOT NULL COLLATE NOCASE, '
            'serialized_example_proto BLOB NOT NULL, label INTEGER '
            'NOT NULL)', 'INSERT INTO examples SELECT * FROM old',
            'DROP TABLE old', 'CREATE INDEX examples_client_split ON examples '
            '(client_id, split_name)'),
         "table 'examples' is not as import-data writes it"),
    'extra column': (_set_schema('ALTER TABLE examples ADD COLUMN extra TEXT'),
                     "table 'examples' is not as import-data writes it"),
    'trigger': (_set_schema('CREATE TRIGGER t AFTER INSERT ON examples BEGIN '
                            'DELETE FROM examples; END'),
                "trigger 't' is not part of a tff-dp client-data file"),
    'WAL mode':
        (_set_schema('PRAGMA journal_mode = WAL'), "in SQLite's WAL mode"),
    # Every client would read no row: ids are spelled as UTF-8 bytes.
    'UTF-16 text': (hostile_sqlite.to_utf16, 'its text encoding is UTF-16le'),
}


@pytest.mark.parametrize('name', sorted(_BAD_ROWS))
def test_bad_rows_and_schemas_are_refused_by_name(tmp_path, name):
  path = _make(tmp_path)
  craft, message = _BAD_ROWS[name]
  rowid = craft(path)
  with pytest.raises(ClientDataFormatError) as info:
    SqlClientDataSource(path)
  text = str(info.value)
  assert text.startswith(f'{path}: ')
  assert message.format(rowid=rowid) in text
  assert '\n' not in text


def test_loading_turns_every_refusal_into_a_data_error(tmp_path):
  path = _make(tmp_path)
  _edit(path, ("UPDATE tff_dp_metadata SET value = '5' WHERE key = "
               "'feature_names'", ()))
  with pytest.raises(loading.DataError,
                     match=f'^{path}: metadata '
                     'feature_names=5'):
    loading.load(loading.Dataset.SQLITE,
                 num_clients=0,
                 partition=None,
                 seed=0,
                 test_fraction=0.2,
                 dirichlet_alpha=1.0,
                 data_dir='',
                 client_data=path)


@pytest.mark.e2e
@pytest.mark.parametrize('key,value', [('feature_names', '5'),
                                       ('num_classes', '0')])
def test_program_refuses_crafted_metadata_before_the_run_directory(
    tmp_path, key, value):
  path = _make(tmp_path)
  _edit(path,
        ('UPDATE tff_dp_metadata SET value = ? WHERE key = ?', (value, key)))
  output_dir = tmp_path / 'runs'
  result = programs.run_train(
      '--flagfile=' + os.path.join(REPO_ROOT, 'configs', 'smoke.cfg'),
      '--dataset=sqlite', f'--client_data={path}', f'--output_dir={output_dir}')
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(
      f'tff-dp: error: --dataset=sqlite: {path}: metadata {key}={value}: ')
  assert 'Traceback' not in result.stderr
  assert not output_dir.exists() or not os.listdir(output_dir)


def test_fingerprint_is_the_sha256_of_the_bytes_checked(tmp_path):
  path = _make(tmp_path)
  source = SqlClientDataSource(path)
  with open(path, 'rb') as f:
    expected = 'sha256:' + hashlib.sha256(f.read()).hexdigest()
  assert source.fingerprint() == expected
  # Another file at the same path: what a resume would compare.
  other = _make(tmp_path, num_clients=11, name='other')
  shutil.copyfile(other, path)
  assert source.fingerprint() == expected
  assert client_data_source.file_fingerprint(path) != expected
  assert SqlClientDataSource(path).fingerprint() == (
      client_data_source.file_fingerprint(other))


def test_a_file_changed_while_checked_is_refused(tmp_path, monkeypatch):
  path = _make(tmp_path)
  scan = client_data_rows.scan_examples

  def scan_then_write(*args):
    result = scan(*args)
    _edit(path, ("UPDATE examples SET label = 2 WHERE rowid = 1", ()))
    return result

  monkeypatch.setattr(client_data_rows, 'scan_examples', scan_then_write)
  with pytest.raises(ClientDataFormatError,
                     match='changed while it was being checked'):
    SqlClientDataSource(path)
