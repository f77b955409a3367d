"""Tests for SqlClientDataSource: training data streamed from imported SQLite.

Files are made by the real importer; values are checked in
test_csv_import.py, here the interface the training loop relies on.
"""

import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import client_data_files
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.data import client_data_checks
from tff_dp.data import client_data_source
from tff_dp.data import csv_import

pytestmark = pytest.mark.tff

SqlClientDataSource = client_data_source.SqlClientDataSource


def _make(tmp_path,
          *,
          test_split=csv_import.TestSplit.CLIENTS,
          num_clients=10,
          name='data'):
  """Client k has k + 1 rows; 4 features; labels in [0, 3)."""
  rows = [(f'client{k:02d}', [0.5 * (k + r + j)
                              for j in range(4)], (k + r) % 3)
          for k in range(num_clients)
          for r in range(k + 1)]
  return client_data_files.imported(tmp_path,
                                    rows,
                                    name=name,
                                    test_split=test_split,
                                    test_fraction=0.2)


def test_interface_and_statistics(tmp_path):
  source = SqlClientDataSource(_make(tmp_path))
  assert source.population == 8 == len(source.client_ids)
  assert source.client_ids == sorted(source.client_ids)
  assert source.input_dim == 4
  assert source.num_classes == 3
  sizes = source.client_sizes()
  assert sizes.dtype == np.int64
  # Client k has k + 1 rows; the sizes follow the sorted ids.
  assert sizes.tolist() == [int(c[-2:]) + 1 for c in source.client_ids]
  stats = source.statistics()
  assert stats['clients'] == 8
  assert stats['examples_total'] == int(sizes.sum())
  assert stats['examples_total'] + stats['test_examples'] == 55
  assert sum(stats['label_histogram']) == stats['examples_total']
  assert sum(stats['test_label_histogram']) == stats['test_examples']
  text = source.describe()
  assert "Federated data 'data': 8 clients" in text
  assert f"train examples: {stats['examples_total']}; per client min" in text
  assert 'features: 4, classes: 3' in text
  assert 'test split by clients (fraction 0.2, seed 0)' in text
  assert (f"test examples (server-side evaluation only): "
          f"{stats['test_examples']}") in text


def test_client_dataset_feeds_the_model(tmp_path):
  source = SqlClientDataSource(_make(tmp_path))
  index = source.client_ids.index('client05')
  dataset = source.client_dataset(index)
  assert dataset.element_spec == (tf.TensorSpec([4], tf.float32),
                                  tf.TensorSpec([], tf.int32))
  assert len(list(dataset)) == 6
  batched = dataset.batch(4)
  assert batched.element_spec == models.input_spec(4)
  model = models.build_keras_model(ModelKind.MLP,
                                   input_dim=4,
                                   num_classes=3,
                                   hidden_units=8,
                                   seed=0)
  model.compile(loss=models.loss_fn(),
                metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])
  loss, _ = model.evaluate(source.test_dataset().batch(16), verbose=0)
  assert np.isfinite(loss)


def test_client_dataset_streams_from_the_file(tmp_path):
  path = _make(tmp_path, test_split=csv_import.TestSplit.NONE)
  source = SqlClientDataSource(path)
  dataset = source.client_dataset(0)
  assert len(list(dataset)) == 1
  # The dataset reads SQLite when iterated, not when built: a row added
  # afterwards is seen.
  con = sqlite3.connect(path)
  blob, label = con.execute('SELECT serialized_example_proto, label FROM '
                            'examples LIMIT 1').fetchone()
  con.execute('INSERT INTO examples VALUES (?, ?, ?, ?)',
              ('train', source.client_ids[0], blob, label))
  con.commit()
  con.close()
  assert len(list(dataset)) == 2


def test_reading_does_not_modify_the_file(tmp_path):
  path = _make(tmp_path)
  with open(path, 'rb') as f:
    before = f.read()
  source = SqlClientDataSource(path)
  for i in range(source.population):
    list(source.client_dataset(i))
  list(source.test_dataset())
  with open(path, 'rb') as f:
    assert f.read() == before


def test_bad_client_index(tmp_path):
  source = SqlClientDataSource(_make(tmp_path))
  with pytest.raises(IndexError, match=r'out of range \[0, 8\)'):
    source.client_dataset(8)
  with pytest.raises(IndexError):
    source.client_dataset(-1)
  with pytest.raises(TypeError):
    source.client_dataset('client00')


def test_no_test_split(tmp_path):
  source = SqlClientDataSource(
      _make(tmp_path, test_split=csv_import.TestSplit.NONE))
  assert source.population == 10
  assert not source.has_test_set
  with pytest.raises(ValueError, match='has no test split'):
    source.test_dataset()
  assert 'test examples: none' in source.describe()


def test_missing_file(tmp_path):
  # The command a user runs, not a module path.
  with pytest.raises(FileNotFoundError, match=r'\./run\.sh import-data'):
    SqlClientDataSource(str(tmp_path / 'nothing.sqlite'))


def test_not_a_client_data_file(tmp_path):
  garbage = tmp_path / 'garbage.sqlite'
  garbage.write_bytes(b'just some bytes, not SQLite' * 10)
  with pytest.raises(client_data_checks.ClientDataFormatError,
                     match='not a tff-dp client-data file'):
    SqlClientDataSource(str(garbage))
  # A TFF-format database without tff-dp's metadata (e.g. a TFF download).
  plain = tmp_path / 'plain.sqlite'
  con = sqlite3.connect(str(plain))
  con.execute('CREATE TABLE examples (split_name TEXT, client_id TEXT, '
              'serialized_example_proto BLOB)')
  con.execute('CREATE TABLE client_metadata (client_id TEXT, split_name '
              'TEXT, num_examples INTEGER)')
  con.commit()
  con.close()
  with pytest.raises(client_data_checks.ClientDataFormatError,
                     match='no table tff_dp_metadata'):
    SqlClientDataSource(str(plain))


def test_future_format_version_is_refused(tmp_path):
  path = _make(tmp_path)
  con = sqlite3.connect(path)
  con.execute("UPDATE tff_dp_metadata SET value = '99' WHERE key = "
              "'format_version'")
  con.commit()
  con.close()
  with pytest.raises(client_data_checks.ClientDataFormatError,
                     match='format_version 99'):
    SqlClientDataSource(path)
