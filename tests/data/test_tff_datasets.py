"""Tests for the TFF benchmark loaders against tiny caches in the real format.

Each test writes a small SQLite database with the schema TFF's SqlClientData
reads (tables `examples` and `client_metadata`, tf.train.Example rows, the
loader's split names) under the exact file name TFF's loader looks for, then
loads it through `load_tff_dataset` (tff-dp's reader, `tff_cache`); what it
reads is compared with what TFF's real loader reads from the same file:
nothing is mocked. Crafted files are in test_untrusted_caches.py.
"""

import collections
import inspect
import lzma
import os
import sqlite3

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import fake_tff_caches
from tff_dp.data import registry
from tff_dp.data import tff_datasets

pytestmark = pytest.mark.tff

TffDataset = tff_datasets.TffDataset
_RNG_SEED = 0


def _shakespeare_example(rng):
  return {'snippets': f'To be, or not to be {rng.integers(100)}'.encode()}


def _stackoverflow_example(rng):
  return {
      'creation_date': b'2010-01-01 00:00:00 UTC',
      'score': int(rng.integers(-5, 50)),
      'tags': b'python|sqlite',
      'title': b'how to read a database',
      'tokens': f'this is post {rng.integers(1000)}'.encode(),
      'type': b'question'
  }


def _clients(make, ids, sizes):
  return {cid: [make() for _ in range(n)] for cid, n in zip(ids, sizes)}


def _fake_splits(kind):
  """(split name -> client -> examples) for a tiny copy of `kind`'s file."""
  rng = np.random.default_rng(_RNG_SEED)
  if kind in (TffDataset.EMNIST_DIGITS, TffDataset.EMNIST_FULL):
    digits = lambda: fake_tff_caches.emnist_example(rng, 10)
    full = lambda: fake_tff_caches.emnist_example(rng, 62)
    # One file holds both variants, as TFF's emnist_all.sqlite does; writers
    # appear in the train and the test split of each.
    return {
        'digits_only_train':
            _clients(digits, ['f0000_14', 'f0001_41'], [3, 2]),
        'digits_only_test':
            _clients(digits, ['f0000_14', 'f0001_41'], [1, 1]),
        'all_train':
            _clients(full, ['f0000_14', 'f0001_41', 'f0002_01'], [4, 2, 2]),
        'all_test':
            _clients(full, ['f0000_14', 'f0001_41', 'f0002_01'], [1, 1, 1]),
    }
  if kind is TffDataset.SHAKESPEARE:
    make = lambda: _shakespeare_example(rng)
    return {
        'train': _clients(make, ['ALLS_WELL_KING', 'HAMLET_HAMLET'], [2, 3]),
        'test': _clients(make, ['ALLS_WELL_KING', 'HAMLET_HAMLET'], [1, 1])
    }
  if kind in (TffDataset.STACKOVERFLOW_WORD, TffDataset.STACKOVERFLOW_TAG):
    make = lambda: _stackoverflow_example(rng)
    return {
        'train': _clients(make, ['00000001', '00000003'], [2, 2]),
        'heldout': _clients(make, ['00000010'], [1]),
        'test': _clients(make, ['00000001'], [1])
    }
  make = lambda: fake_tff_caches.cifar_example(rng)
  return {
      'train': _clients(make, ['0', '1', '2'], [2, 1, 1]),
      'test': _clients(make, ['0'], [2])
  }


_STRING = tf.TensorSpec([], tf.string)
_EXPECTED_SPECS = {
    TffDataset.EMNIST_DIGITS:
        collections.OrderedDict(label=tf.TensorSpec([], tf.int32),
                                pixels=tf.TensorSpec([28, 28], tf.float32)),
    TffDataset.SHAKESPEARE:
        collections.OrderedDict(snippets=_STRING),
    TffDataset.STACKOVERFLOW_WORD:
        collections.OrderedDict(creation_date=_STRING,
                                score=tf.TensorSpec([], tf.int64),
                                tags=_STRING,
                                title=_STRING,
                                tokens=_STRING,
                                type=_STRING),
    TffDataset.CIFAR100:
        collections.OrderedDict(coarse_label=tf.TensorSpec([], tf.int64),
                                image=tf.TensorSpec([32, 32, 3], tf.uint8),
                                label=tf.TensorSpec([], tf.int64)),
}
_EXPECTED_SPECS[TffDataset.EMNIST_FULL] = _EXPECTED_SPECS[
    TffDataset.EMNIST_DIGITS]
_EXPECTED_SPECS[TffDataset.STACKOVERFLOW_TAG] = _EXPECTED_SPECS[
    TffDataset.STACKOVERFLOW_WORD]

_FILE_NAMES = {
    TffDataset.EMNIST_DIGITS: 'emnist_all.sqlite',
    TffDataset.EMNIST_FULL: 'emnist_all.sqlite',
    TffDataset.SHAKESPEARE: 'shakespeare.sqlite',
    TffDataset.STACKOVERFLOW_WORD: 'stackoverflow.sqlite',
    TffDataset.STACKOVERFLOW_TAG: 'stackoverflow.sqlite',
    TffDataset.CIFAR100: 'cifar100.sqlite',
}


def _install(kind, data_dir):
  splits = _fake_splits(kind)
  fake_tff_caches.write_database(os.path.join(data_dir, _FILE_NAMES[kind]),
                                 splits)
  return splits


def _assert_same_element(actual: dict, expected: dict):
  assert set(actual) == set(expected)
  for key, value in expected.items():
    got = actual[key]
    if isinstance(value, bytes):
      assert got == value, key
    else:
      np.testing.assert_array_equal(got, np.asarray(value), err_msg=key)


@pytest.mark.parametrize('kind', list(TffDataset))
def test_loads_tiny_cache_through_tff_loader(kind, tmp_path):
  splits = _install(kind, str(tmp_path))
  train, test = tff_datasets.load_tff_dataset(kind, data_dir=tmp_path)
  train_split, test_split = (tff_datasets.split_names(kind)[0],
                             tff_datasets.split_names(kind)[-1])
  assert train.client_ids == sorted(splits[train_split])
  assert test.client_ids == sorted(splits[test_split])
  assert train.element_spec == _EXPECTED_SPECS[kind]
  assert test.element_spec == _EXPECTED_SPECS[kind]
  # The values come back as written.
  for client_id, examples in splits[train_split].items():
    got = list(train.dataset(client_id).as_numpy_iterator())
    assert len(got) == len(examples)
    for actual, expected in zip(got, examples):
      _assert_same_element(actual, expected)


_TFF_LOADERS = {
    TffDataset.EMNIST_DIGITS:
        lambda d: tff.simulation.datasets.emnist.load_data(only_digits=True,
                                                           cache_dir=d),
    TffDataset.EMNIST_FULL:
        lambda d: tff.simulation.datasets.emnist.load_data(only_digits=False,
                                                           cache_dir=d),
    TffDataset.SHAKESPEARE:
        lambda d: tff.simulation.datasets.shakespeare.load_data(cache_dir=d),
    TffDataset.STACKOVERFLOW_WORD:
        lambda d: tff.simulation.datasets.stackoverflow.load_data(cache_dir=d)
        [::2],
    TffDataset.STACKOVERFLOW_TAG:
        lambda d: tff.simulation.datasets.stackoverflow.load_data(cache_dir=d)
        [::2],
    TffDataset.CIFAR100:
        lambda d: tff.simulation.datasets.cifar100.load_data(cache_dir=d),
}


def _elements(dataset):
  return [{
      k: (v.tolist() if isinstance(v, np.ndarray) else v)
      for k, v in element.items()
  }
          for element in dataset.as_numpy_iterator()]


@pytest.mark.parametrize('kind', list(TffDataset))
def test_reads_what_tffs_own_loader_reads(kind, tmp_path):
  # On a benign file (ids without quotes), tff-dp's reader and TFF's
  # SqlClientData must agree: clients, order, keys, dtypes and values.
  _install(kind, str(tmp_path))
  train, test = tff_datasets.load_tff_dataset(kind, data_dir=tmp_path)
  tff_train, tff_test = _TFF_LOADERS[kind](str(tmp_path))
  assert train.client_ids == tff_train.client_ids
  assert test.client_ids == tff_test.client_ids
  assert train.element_spec == tff_train.element_type_structure
  for client_id in train.client_ids:
    ours = train.dataset(client_id)
    theirs = tff_train.create_tf_dataset_for_client(client_id)
    assert ours.element_spec == theirs.element_spec
    assert _elements(ours) == _elements(theirs), client_id
  assert (_elements(test.pooled_dataset(seed=0)) == _elements(
      tff_test.create_tf_dataset_from_all_clients(seed=0)))


def test_emnist_variants_read_their_own_splits(tmp_path):
  _install(TffDataset.EMNIST_DIGITS, str(tmp_path))
  digits, _ = tff_datasets.load_tff_dataset(TffDataset.EMNIST_DIGITS,
                                            data_dir=tmp_path)
  full, _ = tff_datasets.load_tff_dataset(TffDataset.EMNIST_FULL,
                                          data_dir=tmp_path)
  assert len(digits.client_ids) == 2
  assert len(full.client_ids) == 3
  sizes = [len(list(full.dataset(c))) for c in full.client_ids]
  assert sizes == [4, 2, 2]


@pytest.mark.parametrize('kind', list(TffDataset))
def test_missing_cache_names_file_directory_and_url(kind, tmp_path):
  with pytest.raises(tff_datasets.MissingDatasetError) as info:
    tff_datasets.load_tff_dataset(kind, data_dir=tmp_path)
  message = str(info.value)
  name = _FILE_NAMES[kind]
  assert f'put {name} in {tmp_path}' in message
  assert os.path.join(str(tmp_path), name) in message
  assert (f'https://storage.googleapis.com/tff-datasets-public/{name}.lzma'
          in message)
  assert tff_datasets.title(kind) in message
  # Nothing was attempted: no download, no partial file.
  assert os.listdir(tmp_path) == []


def test_missing_data_dir_is_a_missing_dataset(tmp_path):
  data_dir = tmp_path / 'not-there'
  with pytest.raises(tff_datasets.MissingDatasetError, match='cifar100.sqlite'):
    tff_datasets.load_tff_dataset(TffDataset.CIFAR100, data_dir=data_dir)
  assert not data_dir.exists()


def test_downloaded_lzma_is_decompressed_in_place(tmp_path):
  source = tmp_path / 'build.sqlite'
  splits = _fake_splits(TffDataset.SHAKESPEARE)
  fake_tff_caches.write_database(str(source), splits)
  # TFF publishes .lzma (LZMA "alone") files.
  (tmp_path / 'shakespeare.sqlite.lzma').write_bytes(
      lzma.compress(source.read_bytes(), format=lzma.FORMAT_ALONE))
  source.unlink()
  train, test = tff_datasets.load_tff_dataset(TffDataset.SHAKESPEARE,
                                              data_dir=tmp_path)
  assert train.client_ids == sorted(splits['train'])
  assert len(list(test.dataset('HAMLET_HAMLET'))) == 1
  assert sorted(os.listdir(tmp_path)) == [
      'shakespeare.sqlite', 'shakespeare.sqlite.lzma'
  ]


def test_truncated_lzma_is_corrupt_and_leaves_nothing(tmp_path):
  source = tmp_path / 'build.sqlite'
  fake_tff_caches.write_database(str(source),
                                 _fake_splits(TffDataset.SHAKESPEARE))
  packed = lzma.compress(source.read_bytes(), format=lzma.FORMAT_ALONE)
  source.unlink()
  lzma_path = tmp_path / 'shakespeare.sqlite.lzma'
  lzma_path.write_bytes(packed[:len(packed) // 2])
  with pytest.raises(tff_datasets.CorruptDatasetError) as info:
    tff_datasets.load_tff_dataset(TffDataset.SHAKESPEARE, data_dir=tmp_path)
  assert str(lzma_path) in str(info.value)
  assert 'truncated' in str(info.value)
  assert os.listdir(tmp_path) == ['shakespeare.sqlite.lzma']


def test_garbage_file_is_corrupt_and_named(tmp_path):
  path = tmp_path / 'emnist_all.sqlite'
  path.write_bytes(b'<html>403 Forbidden</html>' * 10)
  with pytest.raises(tff_datasets.CorruptDatasetError) as info:
    tff_datasets.load_tff_dataset(TffDataset.EMNIST_DIGITS, data_dir=tmp_path)
  assert str(path) in str(info.value)
  assert 'not an SQLite database' in str(info.value)


def test_truncated_database_is_corrupt(tmp_path):
  _install(TffDataset.CIFAR100, str(tmp_path))
  path = tmp_path / 'cifar100.sqlite'
  data = path.read_bytes()
  # An interrupted download: TFF writes straight to the final file name.
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(tff_datasets.CorruptDatasetError) as info:
    tff_datasets.load_tff_dataset(TffDataset.CIFAR100, data_dir=tmp_path)
  assert str(path) in str(info.value)
  assert 'truncated' in str(info.value)


def test_database_without_the_loaders_split_is_corrupt(tmp_path):
  # An EMNIST file without the digits-only splits (e.g. a hand-made subset).
  splits = _fake_splits(TffDataset.EMNIST_FULL)
  del splits['digits_only_test']
  path = tmp_path / 'emnist_all.sqlite'
  fake_tff_caches.write_database(str(path), splits)
  with pytest.raises(tff_datasets.CorruptDatasetError,
                     match='no clients in split.*digits_only_test'):
    tff_datasets.load_tff_dataset(TffDataset.EMNIST_DIGITS, data_dir=tmp_path)
  # The full variant's splits are there.
  tff_datasets.load_tff_dataset(TffDataset.EMNIST_FULL, data_dir=tmp_path)


def test_database_without_tables_is_corrupt(tmp_path):
  path = tmp_path / 'shakespeare.sqlite'
  con = sqlite3.connect(str(path))
  con.execute('CREATE TABLE something_else (x)')
  con.commit()
  con.close()
  with pytest.raises(tff_datasets.CorruptDatasetError,
                     match='no table client_metadata, examples'):
    tff_datasets.load_tff_dataset(TffDataset.SHAKESPEARE, data_dir=tmp_path)


@pytest.mark.parametrize('module,kinds', [
    (tff.simulation.datasets.emnist,
     [TffDataset.EMNIST_DIGITS, TffDataset.EMNIST_FULL]),
    (tff.simulation.datasets.shakespeare, [TffDataset.SHAKESPEARE]),
    (tff.simulation.datasets.stackoverflow,
     [TffDataset.STACKOVERFLOW_WORD, TffDataset.STACKOVERFLOW_TAG]),
    (tff.simulation.datasets.cifar100, [TffDataset.CIFAR100]),
])
def test_urls_and_split_names_match_tffs_loader(module, kinds):
  source = inspect.getsource(module.load_data)
  for kind in kinds:
    database = tff_datasets.cache_files(kind)[0]
    assert database.file_name == _FILE_NAMES[kind]
    assert f"origin='{database.url}'" in source
    for split in tff_datasets.split_names(kind):
      assert f"'{split}'" in source


def test_stackoverflow_vocabulary_files_match_tffs_loader():
  module = tff.simulation.datasets.stackoverflow
  for file, function in ((tff_datasets.STACKOVERFLOW_WORD_COUNTS,
                          module.load_word_counts),
                         (tff_datasets.STACKOVERFLOW_TAG_COUNTS,
                          module.load_tag_counts)):
    source = inspect.getsource(function)
    assert f"'{file.file_name}'" in source
    assert f"origin='{file.url}'" in source
    assert f"'{file.sha256}'" in source
  assert tff_datasets.cache_files(TffDataset.STACKOVERFLOW_TAG)[1:] == (
      tff_datasets.STACKOVERFLOW_WORD_COUNTS,
      tff_datasets.STACKOVERFLOW_TAG_COUNTS)


def test_missing_stackoverflow_vocabulary_names_file(tmp_path):
  with pytest.raises(tff_datasets.MissingDatasetError) as info:
    tff_datasets.load_stackoverflow_word_counts(data_dir=tmp_path)
  message = str(info.value)
  assert (f'put stackoverflow.word_count.tar.bz2 in {tmp_path}/datasets'
          in message)
  assert tff_datasets.STACKOVERFLOW_WORD_COUNTS.sha256 in message


def test_wrong_stackoverflow_vocabulary_is_corrupt(tmp_path):
  (tmp_path / 'datasets').mkdir()
  path = tmp_path / 'datasets' / 'stackoverflow.tag_count.tar.bz2'
  path.write_bytes(b'not the real archive')
  with pytest.raises(tff_datasets.CorruptDatasetError) as info:
    tff_datasets.load_stackoverflow_tag_counts(data_dir=tmp_path)
  assert str(path) in str(info.value)
  assert 'sha256' in str(info.value)


def test_the_registry_names_the_files_each_benchmark_reads():
  # `registry.DatasetSpec.data_files` lets the program name an unusable
  # --data_dir before importing TensorFlow (and this module).
  kinds = {
      'emnist_digits': TffDataset.EMNIST_DIGITS,
      'emnist_full': TffDataset.EMNIST_FULL,
      'cifar100': TffDataset.CIFAR100,
      'shakespeare': TffDataset.SHAKESPEARE,
      'stackoverflow_nwp': TffDataset.STACKOVERFLOW_WORD,
      'stackoverflow_tag': TffDataset.STACKOVERFLOW_TAG,
  }
  assert {s.name for s in registry.DATASETS if s.data_files} == set(kinds)
  for name, kind in kinds.items():
    assert registry.spec(name).data_files == tuple(
        os.path.join(f.subdir, f.file_name)
        for f in tff_datasets.cache_files(kind)), name
