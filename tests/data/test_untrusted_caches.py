"""Crafted files in TFF's benchmark cache (--data_dir): read safely, or refused.

The caches are written in TFF's format by the writers of the benchmark tests
(`tests.helpers.fake_tff_caches.write_database` and the fakes built on it,
`fake_shakespeare` and `fake_stackoverflow`), then edited with parameterized
SQL as an adversary would: hostile client ids, bad metadata fields, schemas
that change what a query reads, bad examples. What each client reads is
compared with the ground truth read here with parameterized queries and
TensorFlow's own proto class. Refusals at load must be one line that starts
with the file; a count that only reading a client's rows can check must fail
that read.

These tests use only the loaders' public interface (`loading`, the
sources), so that each fails on the code before the fix (1074f4e).
"""

import os
import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT
from tests.helpers import benchmark_presets
from tests.helpers import fake_shakespeare as shakespeare
from tests.helpers import fake_stackoverflow as stackoverflow
from tests.helpers import fake_tff_caches
from tests.helpers import hostile_sqlite
from tests.helpers import programs
from tff_dp.data import benchmark_source
from tff_dp.data import loading
from tools import fault_sqlite

pytestmark = pytest.mark.tff

_feature = fake_tff_caches.feature
_write_database = fake_tff_caches.write_database
_reference_ids = stackoverflow.reference_ids
_reference_tags = stackoverflow.reference_tag_example
_POSTS = stackoverflow.POSTS
_SENTENCES = stackoverflow.SENTENCES

_INJECTION = hostile_sqlite.INJECTION
_TRAIN, _TEST = 'digits_only_train', 'digits_only_test'
# Each must read exactly its own rows.
_HOSTILE = hostile_sqlite.hostile_ids(_TEST)
_edit = fault_sqlite.edit
_rename = hostile_sqlite.rename


def _emnist_example(k: int, r: int) -> dict:
  """Row r of client k: pixels and label that identify it."""
  return {
      'pixels': np.full((28, 28), (100 * k + r) / 10_000, np.float32),
      'label': (k + r) % 10
  }


def _write_emnist(data_dir: str, ids) -> str:
  """emnist_all.sqlite; client k of `ids` has k % 3 + 1 training rows and 2
  test rows."""
  path = os.path.join(data_dir, 'emnist_all.sqlite')
  _write_database(
      path, {
          _TRAIN: {
              c: [_emnist_example(k, r) for r in range(k % 3 + 1)]
              for k, c in enumerate(ids)
          },
          _TEST: {
              c: [_emnist_example(k, 50 + r) for r in range(2)]
              for k, c in enumerate(ids)
          },
      })
  return path


def _ids(count: int) -> list[str]:
  return [f'f{k:02d}' for k in range(count)]


def _truth(path: str, split: str, client_id: str) -> list:
  """The client's (pixels, label) rows, read with a parameterized query
  that compares bytes and uses no index (an index may lie)."""
  con = sqlite3.connect(path)
  blobs = [
      r[0] for r in con.execute(
          'SELECT serialized_example_proto FROM examples NOT INDEXED WHERE '
          'client_id = ? COLLATE BINARY AND split_name = ? COLLATE BINARY '
          'ORDER BY rowid', (client_id, split))
  ]
  con.close()
  rows = []
  for blob in blobs:
    feature = tf.train.Example.FromString(blob).features.feature
    rows.append(
        (tuple(np.float32(v) for v in feature['pixels'].float_list.value),
         int(feature['label'].int64_list.value[0])))
  return rows


def _read(dataset: tf.data.Dataset) -> list:
  return [(tuple(x.tolist()), int(y)) for x, y in dataset.as_numpy_iterator()]


_load = benchmark_presets.load


def test_injection_id_reads_only_its_own_rows(tmp_path):
  path = _write_emnist(str(tmp_path), ['c0', _INJECTION, 'c2'])
  source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  index = source.client_ids.index(_INJECTION)
  assert _read(source.client_dataset(index)) == _truth(path, _TRAIN, _INJECTION)
  assert source.client_sizes()[index] == 2


def test_hostile_emnist_ids_read_exactly_their_own_rows(tmp_path):
  path = _write_emnist(str(tmp_path), _HOSTILE)
  source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  assert source.client_ids == sorted(_HOSTILE)
  for index, client_id in enumerate(source.client_ids):
    truth = _truth(path, _TRAIN, client_id)
    assert _read(source.client_dataset(index)) == truth, client_id
    assert source.client_sizes()[index] == len(truth)
  # The server's test set is the test rows, each once, never a train row.
  expected = [row for c in _HOSTILE for row in _truth(path, _TEST, c)]
  assert sorted(_read(source.test_dataset())) == sorted(expected)


def test_hostile_cifar100_ids_read_exactly_their_own_rows(tmp_path):
  rng = np.random.default_rng(0)
  clients = {
      c: [{
          'coarse_label': k % 20,
          'image': rng.integers(0, 256, (32, 32, 3)),
          'label': k + r
      } for r in range(k % 2 + 1)] for k, c in enumerate(_HOSTILE)
  }
  _write_database(str(tmp_path / 'cifar100.sqlite'), {
      'train': clients,
      'test': clients
  })
  source = benchmark_source.Cifar100Source(data_dir=str(tmp_path))
  for index, client_id in enumerate(source.client_ids):
    labels = [int(y) for _, y in source.client_dataset(index)]
    assert labels == [e['label'] for e in clients[client_id]], client_id


def test_hostile_shakespeare_ids_read_exactly_their_own_text(tmp_path):
  rng = np.random.default_rng(0)
  train = {
      c: [shakespeare.snippet(rng, 30 + 7 * k)] for k, c in enumerate(_HOSTILE)
  }
  test = {
      c: [shakespeare.snippet(rng, 20 + k)] for k, c in enumerate(_HOSTILE[:4])
  }
  shakespeare.write_fake_cache(str(tmp_path),
                               train_clients=train,
                               test_clients=test)
  source = _load(loading.Dataset.SHAKESPEARE, str(tmp_path))

  def windows(snippets):
    return shakespeare.reference_windows(
        [shakespeare.reference_ids(s) for s in snippets], 80)

  for index, client_id in enumerate(source.client_ids):
    got = shakespeare.as_pairs(source.client_dataset(index))
    assert got == windows(train[client_id]), client_id
  # The test set: client after client (sorted), through one pipeline.
  expected = [w for c in sorted(test) for w in windows(test[c])]
  assert shakespeare.as_pairs(source.test_dataset()) == expected


def test_hostile_stackoverflow_ids_read_exactly_their_own_posts(
    tmp_path, monkeypatch):
  data_dir = str(tmp_path)
  train = {c: _SENTENCES[k % 6:k % 6 + 2] for k, c in enumerate(_HOSTILE)}
  test = {c: _SENTENCES[k % 6:] for k, c in enumerate(_HOSTILE[:5])}
  stackoverflow.write_fake_cache(data_dir,
                                 train_clients=train,
                                 test_clients=test)
  stackoverflow.accept_fake_vocabulary(
      stackoverflow.write_fake_vocabulary(data_dir), monkeypatch.setattr)
  source = _load(loading.Dataset.STACKOVERFLOW_NWP, data_dir)

  def windows(client_sentences):
    return shakespeare.reference_windows(
        [_reference_ids(s) for s in client_sentences], 20)

  for index, client_id in enumerate(source.client_ids):
    got = shakespeare.as_pairs(source.client_dataset(index))
    assert got == windows(train[client_id]), client_id
  expected = [w for c in sorted(test) for w in windows(test[c])[:5]]
  assert shakespeare.as_pairs(source.test_dataset()) == expected


def test_hostile_stackoverflow_ids_read_exactly_their_own_tags(
    tmp_path, monkeypatch):
  data_dir = str(tmp_path)
  posts = {c: [k % 7, (k + 3) % 7] for k, c in enumerate(_HOSTILE)}
  stackoverflow.write_fake_posts(data_dir,
                                 train_clients=posts,
                                 test_clients=dict(list(posts.items())[:3]))
  stackoverflow.write_fake_vocabularies(data_dir, monkeypatch.setattr)
  source = _load(loading.Dataset.STACKOVERFLOW_TAG, data_dir)
  for index, client_id in enumerate(source.client_ids):
    got = [
        labels.tolist()
        for _, labels in source.client_dataset(index).as_numpy_iterator()
    ]
    want = [_reference_tags(_POSTS[i])[1].tolist() for i in posts[client_id]]
    assert got == want, client_id


# Ids refused, each with one error naming the value.
_REFUSED_IDS = hostile_sqlite.refused_ids('f01')


@pytest.mark.parametrize('name', sorted(_REFUSED_IDS))
def test_unusable_client_ids_are_refused_naming_file_and_value(tmp_path, name):
  path = _write_emnist(str(tmp_path), _ids(4))
  craft, message = _REFUSED_IDS[name]
  craft(path)
  with pytest.raises(loading.DataError) as info:
    _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  text = str(info.value)
  assert text.startswith(f'{path}: client_metadata row '), text
  assert message in text
  assert '\n' not in text


def _recreate_examples(path: str, create: str) -> None:
  """Replaces the examples table by `create`'s, with the same rows."""
  _edit(path, ('ALTER TABLE examples RENAME TO old', ()), (create, ()),
        ('INSERT INTO examples (split_name, client_id, '
         'serialized_example_proto) SELECT split_name, client_id, '
         'serialized_example_proto FROM old', ()), ('DROP TABLE old', ()))


def _set_example(client_id: str, example: bytes):
  """Replaces the client's first training example."""

  def craft(path):
    _edit(path, ('UPDATE examples SET serialized_example_proto = ? WHERE '
                 'rowid = (SELECT MIN(rowid) FROM examples WHERE client_id = '
                 '? AND split_name = ?)', (example, client_id, _TRAIN)))

  return craft


def _proto(**features) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      k: _feature(v) for k, v in features.items()
  })).SerializeToString()


def _set_count(client_id: str, value, split: str = _TRAIN):

  def craft(path):
    _edit(path, ('UPDATE client_metadata SET num_examples = ? WHERE '
                 'client_id = ? AND split_name = ?', (value, client_id, split)))

  return craft


_NAN_PIXELS = np.zeros((28, 28), np.float32)
_NAN_PIXELS[3, 4] = np.nan

# name -> (edit of a valid file of clients f00..f03, fragment of the message).
_BAD_FILES = {
    'negative num_examples':
        (_set_count('f01', -1),
         "num_examples -1 of client 'f01': expected an integer >= 0"),
    'num_examples as text':
        (_set_count('f01', 'many'), "num_examples 'many' of client 'f01'"),
    'num_examples a fraction':
        (_set_count('f01', 2.5), "num_examples 2.5 of client 'f01'"),
    'more examples than the table holds':
        (_set_count('f01', 10**9),
         'client_metadata lists 1000000013 examples in split(s) '
         'digits_only_train, digits_only_test, but examples has at most 15'),
    'client listed twice':
        (lambda p: _edit(p, ('INSERT INTO client_metadata SELECT * FROM '
                             "client_metadata WHERE client_id = 'f02'", ())),
         "client 'f02' is listed twice in split 'digits_only_train'"),
    'examples is a view':
        (lambda p: _edit(p, ('ALTER TABLE examples RENAME TO real', ()),
                         ('CREATE VIEW examples AS SELECT * FROM real', ())),
         "examples is not a table ('CREATE VIEW examples AS SELECT"),
    'client_id of INTEGER affinity':
        (lambda p: _recreate_examples(
            p, 'CREATE TABLE examples (split_name TEXT NOT NULL, client_id '
            'INTEGER NOT NULL, serialized_example_proto BLOB NOT NULL)'),
         "column examples.client_id is declared 'INTEGER', which is not of "
         'TEXT affinity'),
    'generated client_id': (lambda p: _edit(
        p, ('ALTER TABLE examples RENAME TO old', ()),
        ('CREATE TABLE examples (split_name TEXT NOT NULL, real_id TEXT, '
         'client_id TEXT GENERATED ALWAYS AS (real_id) VIRTUAL, '
         'serialized_example_proto BLOB NOT NULL)',
         ()), ('INSERT INTO examples (split_name, real_id, '
               'serialized_example_proto) SELECT split_name, client_id, '
               'serialized_example_proto FROM old',
               ()), ('DROP TABLE old',
                     ())), 'column examples.client_id is generated'),
    'no column serialized_example_proto':
        (lambda p: _edit(p, ('ALTER TABLE examples RENAME COLUMN '
                             'serialized_example_proto TO proto', ())),
         'table examples has no column serialized_example_proto'),
    'UTF-16 text': (hostile_sqlite.to_utf16, 'its text encoding is UTF-16le'),
    'not an EMNIST example':
        (_set_example('f00', _proto(snippets=b'To be, or not to be')),
         "client 'f00' of split 'digits_only_train': reading its first "
         "example as TFF's loader does failed: Feature: label (data type: "
         'int64) is required but could not be found.'),
    'label out of range':
        (_set_example('f00',
                      _proto(pixels=np.zeros((28, 28), np.float32), label=12)),
         "client 'f00' of split 'digits_only_train': its first example has "
         'label 12, outside 0..9'),
    'NaN pixel':
        (_set_example('f00', _proto(pixels=_NAN_PIXELS, label=1)),
         "client 'f00' of split 'digits_only_train': its first example has "
         'NaN or infinite pixels'),
    'first client without rows': (
        # Its row moved to a client of no split: the counts still add up.
        lambda p: _edit(p, ("UPDATE examples SET client_id = 'zz' WHERE "
                            "client_id = 'f00' AND split_name = ?", (_TRAIN,))),
        "client 'f00' of split 'digits_only_train': client_metadata says 1 "
        'examples, examples holds none of its rows'),
}


@pytest.mark.parametrize('name', sorted(_BAD_FILES))
def test_bad_fields_and_schemas_are_refused_on_load_by_name(tmp_path, name):
  path = _write_emnist(str(tmp_path), _ids(4))
  craft, message = _BAD_FILES[name]
  craft(path)
  with pytest.raises(loading.DataError) as info:
    _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  text = str(info.value)
  assert text.startswith(f'{path}: '), text
  assert message in text, text
  assert '\n' not in text


def test_case_blind_collation_cannot_merge_two_clients(tmp_path):
  # Under COLLATE NOCASE, 'ab' = 'AB': TFF's query read both clients' rows.
  path = _write_emnist(str(tmp_path), ['ab', 'AB', 'f02'])
  _recreate_examples(
      path, 'CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT '
      'NOT NULL COLLATE NOCASE, serialized_example_proto BLOB NOT NULL)')
  _edit(path, ('CREATE INDEX examples_client ON examples (client_id)', ()))
  source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  for index, client_id in enumerate(source.client_ids):
    assert _read(source.client_dataset(index)) == _truth(
        path, _TRAIN, client_id), client_id


def test_an_index_that_lies_cannot_hand_a_client_other_rows(tmp_path):
  # An index built on (split, client) but declared on (client, split): a
  # lookup of client 'digits_only_test' in the training split finds the rows
  # of client 'digits_only_train' in the test split.
  path = _write_emnist(str(tmp_path), [_TEST, _TRAIN, 'f02'])
  _edit(path, ('CREATE INDEX examples_client_split ON examples '
               '(split_name, client_id)', ()),
        ('PRAGMA writable_schema = ON', ()),
        ("UPDATE sqlite_master SET sql = 'CREATE INDEX examples_client_split "
         "ON examples (client_id, split_name)' WHERE name = "
         "'examples_client_split'", ()))
  try:
    source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  except loading.DataError as e:
    # Refused: the rows the index finds are not the client's.
    assert str(e).startswith(f'{path}: ')
    assert 'examples holds none of its rows' in str(e)
    return
  for index, client_id in enumerate(source.client_ids):
    truth = _truth(path, _TRAIN, client_id)
    try:
      rows = _read(source.client_dataset(index))
    except tf.errors.FailedPreconditionError:
      continue  # Fewer rows than num_examples: refused.
    assert all(row in truth for row in rows), client_id


@pytest.mark.parametrize('count,message', [
    (4, 'expected to contain 4 elements but contained only 3'),
    (2, 'expected to contain 2 elements but contained at least 3'),
])
def test_rows_other_than_num_examples_fail_the_read(tmp_path, count, message):
  # The sizes are those the shuffle and example-level accounting use.
  path = _write_emnist(str(tmp_path), _ids(4))
  _set_count('f02', count)(path)
  _set_count('f03', 1, _TEST)(path)  # So that the total still fits.
  source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  assert source.client_sizes()[2] == count
  # TensorFlow's own check, which names neither file nor client.
  with pytest.raises(tf.errors.FailedPreconditionError, match=message):
    _read(source.client_dataset(2))


def test_a_test_client_with_a_wrong_count_fails_the_test_set(tmp_path):
  path = _write_emnist(str(tmp_path), _ids(4))
  _set_count('f03', 1, split=_TEST)(path)
  source = _load(loading.Dataset.EMNIST_DIGITS, str(tmp_path))
  with pytest.raises(tf.errors.FailedPreconditionError,
                     match='expected to contain 1 element'):
    _read(source.test_dataset())


@pytest.mark.parametrize('name', ['q?mark', 'hash#tag', 'both?and#x', 'pct%41'])
def test_cache_directory_with_uri_characters(tmp_path, name):
  data_dir = tmp_path / name
  data_dir.mkdir()
  path = _write_emnist(str(data_dir), _ids(3))
  source = _load(loading.Dataset.EMNIST_DIGITS, str(data_dir))
  assert source.client_ids == _ids(3)
  assert source.client_sizes().tolist() == [1, 2, 3]
  assert _read(source.client_dataset(2)) == _truth(path, _TRAIN, 'f02')
  assert len(_read(source.test_dataset())) == 6
  # Nothing was opened or created at a path cut at '?' or '#'.
  assert os.listdir(tmp_path) == [name]
  assert sorted(os.listdir(data_dir)) == ['emnist_all.sqlite']


@pytest.mark.e2e
def test_program_refuses_a_crafted_cache_in_one_line(tmp_path):
  data_dir = tmp_path / 'cache'
  data_dir.mkdir()
  path = _write_emnist(str(data_dir), _ids(4))
  _rename(path, 'f01', 'c\x001')
  output_dir = tmp_path / 'runs'
  result = programs.run_train(
      '--flagfile=' + os.path.join(REPO_ROOT, 'configs', 'emnist_tutorial.cfg'),
      f'--data_dir={data_dir}', f'--output_dir={output_dir}')
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(
      f'tff-dp: error: --dataset=emnist_digits: {path}: client_metadata row '
      "2: client id 'c\\x001' contains a NUL character"), lines[-1]
  assert 'Traceback' not in result.stderr
  assert not output_dir.exists() or not os.listdir(output_dir)
