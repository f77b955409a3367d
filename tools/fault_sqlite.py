"""Crafted --client_data files for the fault campaign (`fault_files`).

Files are made by the real importer (`tff_dp.data.csv_import`), then edited
with parameterized SQL as an adversary would. What each client of a file
with hostile ids reads is compared with the ground truth read here with
parameterized queries and TensorFlow's own proto class, not with the
loader's parser (as tests/data/test_untrusted_sqlite.py does).
"""

import os
import sqlite3

from tff_dp.data import csv_import

# Client ids that are SQL; the loader must read each one's rows only.
HOSTILE_IDS = ("c1' OR '1'='1", "x'; DROP TABLE examples; --", '%_*',
               "t' OR split_name = 'test")
_NUM_CLIENTS = 10


def make_file(directory: str, name: str = 'data') -> str:
  """A valid file: client k has k + 2 rows of 4 features, labels in [0, 3)."""
  os.makedirs(directory, exist_ok=True)
  lines = ['client,f0,f1,f2,f3,label']
  for k in range(_NUM_CLIENTS):
    for r in range(k + 2):
      values = ','.join(str(k + 0.25 * r + j) for j in range(4))
      lines.append(f'c{k:02d},{values},{(k + r) % 3}')
  csv_path = os.path.join(directory, f'{name}.csv')
  with open(csv_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  output = os.path.join(directory, f'{name}.sqlite')
  csv_import.import_table(csv_path,
                          output_path=output,
                          client_column='client',
                          label_column='label',
                          num_classes=3,
                          test_split=csv_import.TestSplit.CLIENTS,
                          test_fraction=0.25)
  return output


def edit(path: str, *statements) -> None:
  """Runs (sql, parameters) pairs on the file and commits."""
  con = sqlite3.connect(path)
  try:
    for sql, parameters in statements:
      con.execute(sql, parameters)
    con.commit()
  finally:
    con.close()


def _train_ids(path: str) -> list[str]:
  con = sqlite3.connect(path)
  try:
    return [
        row[0] for row in con.execute(
            "SELECT client_id FROM client_metadata WHERE split_name = 'train' "
            'ORDER BY client_id')
    ]
  finally:
    con.close()


def _rename(path: str, old: str, new: str) -> None:
  edit(path,
       ('UPDATE examples SET client_id = ? WHERE client_id = ?', (new, old)),
       ('UPDATE client_metadata SET client_id = ? WHERE client_id = ?',
        (new, old)))


def _truth(path: str) -> dict[str, list[tuple[tuple[float, ...], int]]]:
  """Training client id -> its (features, label) rows, in rowid order."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  con = sqlite3.connect(path)
  try:
    rows = con.execute("SELECT client_id, serialized_example_proto FROM "
                       "examples WHERE split_name = 'train' ORDER BY "
                       'rowid').fetchall()
  finally:
    con.close()
  truth = {}
  for client_id, blob in rows:
    feature = tf.train.Example.FromString(blob).features.feature
    truth.setdefault(client_id, []).append(
        (tuple(
            float(np.float32(v)) for v in feature['features'].float_list.value),
         int(feature['label'].int64_list.value[0])))
  return truth


def check_hostile_ids(directory: str, ids) -> list[tuple[str, list[str]]]:
  """[(hostile id, problems)]: what the loader gives each client."""
  # The loader imports TensorFlow: only when this case runs.
  # pylint: disable=g-import-not-at-top
  from tff_dp.data import client_data_checks
  from tff_dp.data import client_data_source
  # pylint: enable=g-import-not-at-top
  path = make_file(directory, 'hostile')
  for old, new in zip(_train_ids(path), ids):
    _rename(path, old, new)
  truth = _truth(path)
  try:
    source = client_data_source.SqlClientDataSource(path)
  except client_data_checks.ClientDataFormatError as e:
    return [(client_id, [f'refused: {e}']) for client_id in ids]
  read = {}
  for index, client_id in enumerate(source.client_ids):
    read[client_id] = [
        (tuple(float(v)
               for v in x.tolist()), int(y))
        for x, y in source.client_dataset(index).as_numpy_iterator()
    ]
  others = sorted(c for c in truth if c not in ids and read.get(c) != truth[c])
  results = []
  for client_id in ids:
    problems = []
    if client_id not in truth:
      problems.append('not a training client of the crafted file')
    elif read.get(client_id) != truth[client_id]:
      problems.append(f'read {len(read.get(client_id) or [])} rows, owns '
                      f'{len(truth[client_id])}')
    if others:
      problems.append(f'clients {others} read rows not their own')
    results.append((client_id, problems))
  return results


def _set_metadata(key: str, value: str):
  return lambda path: edit(path, (
      'UPDATE tff_dp_metadata SET value = ? WHERE key = ?', (value, key)))


def _first_row(column: str, value):
  return lambda path: edit(
      path,
      (
          f'UPDATE examples SET {column} = ? WHERE rowid = '  # Fixed names.
          '(SELECT MIN(rowid) FROM examples)',
          (value,)))


def _schema(*statements: str):
  return lambda path: edit(path, *[(s, ()) for s in statements])


def _overwrite(data_of):

  def craft(path):
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data_of(data))

  return craft


# name -> (edit of a valid file, fragment of the one-line refusal).
_CRAFTS = {
    'metadata feature_names=5':
        (_set_metadata('feature_names', '5'), 'metadata feature_names=5'),
    'metadata num_classes=0': (_set_metadata('num_classes',
                                             '0'), 'metadata num_classes=0'),
    'metadata input_dim=0': (_set_metadata('input_dim', '0'), 'input_dim=0'),
    'metadata train_clients=99': (_set_metadata('train_clients',
                                                '99'), 'train_clients=99'),
    'metadata test_split removed':
        (lambda path: edit(path,
                           ('DELETE FROM tff_dp_metadata WHERE key = ?',
                            ('test_split',))), "metadata has no 'test_split'"),
    'a label out of range': (_first_row('label', 7), 'label 7'),
    'an example that is not one':
        (_first_row('serialized_example_proto', b'\xff' * 20),
         'serialized_example_proto is not an example'),
    'a trigger':
        (_schema('CREATE TRIGGER t AFTER INSERT ON examples BEGIN DELETE FROM '
                 'examples; END'), "trigger 't'"),
    'a view for examples':
        (_schema('ALTER TABLE examples RENAME TO real_examples',
                 'CREATE VIEW examples AS SELECT * FROM real_examples'),
         "table 'real_examples'"),
    'WAL mode': (_schema('PRAGMA journal_mode = WAL'), 'WAL mode'),
    'not SQLite': (_overwrite(lambda data: b'\x00garbage' * 512),
                   'not an SQLite database'),
    'empty': (_overwrite(lambda data: b''), 'not an SQLite database'),
    'cut in half':
        (_overwrite(lambda data: data[:len(data) // 2]), 'malformed'),
}
# name -> fragment of the refusal.
BAD_FILES = {name: fragment for name, (_, fragment) in _CRAFTS.items()}
# The two crafted files of issue 14's report.
QUICK_BAD_FILES = ['metadata feature_names=5', 'metadata num_classes=0']


def make_bad_file(directory: str, name: str) -> str:
  """A file crafted as `name` says; its path."""
  path = make_file(directory)
  _CRAFTS[name][0](path)
  return path
