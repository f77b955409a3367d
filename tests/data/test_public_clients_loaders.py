"""Public clients declared on real files: TFF's Shakespeare and Stack Overflow
(tiny fake caches in TFF's format, read by TFF's loader) and an imported table
(the real importer). The loader removes them from the population; pretraining
reads them; training, its sampler's population and federated evaluation never
see them.
"""

import hashlib

import numpy as np
import pytest

from tests.helpers import client_data_files
from tests.helpers import fake_shakespeare
from tests.helpers import fake_stackoverflow
from tff_dp import api
from tff_dp.checks import ConfigError
from tff_dp.data import csv_import
from tff_dp.data import loading
from tff_dp.data import public_clients
from tff_dp.program import prepare
from tff_dp.program import pretrained_meta

pytestmark = pytest.mark.tff

Declaration = public_clients.PublicDeclaration


def _load(dataset, *, data_dir='', client_data=None, public=Declaration()):
  return loading.load(dataset,
                      num_clients=7,
                      partition=None,
                      seed=0,
                      test_fraction=0.2,
                      dirichlet_alpha=0.5,
                      data_dir=data_dir,
                      client_data=client_data,
                      next_token_labels=True,
                      public=public)


def _windows(source, index):
  return [(x.tolist(), y.tolist())
          for x, y in source.client_dataset(index).as_numpy_iterator()]


def _assert_same_clients(view, source, count=3):
  """The first `count` private clients of `view` are their namesakes of
  `source` (a few: each read is a tf.data pipeline)."""
  for index, client in enumerate(view.client_ids[:count]):
    assert _windows(view, index) == _windows(source,
                                             source.client_ids.index(client))


@pytest.fixture(name='shakespeare_dir')
def fixture_shakespeare_dir(tmp_path):
  rng = np.random.default_rng(0)
  fake_shakespeare.write_fake_cache(
      str(tmp_path),
      train_clients=fake_shakespeare.fake_clients(rng, 8, snippets=1),
      test_clients=fake_shakespeare.fake_clients(rng, 1, snippets=1))
  return str(tmp_path)


def test_shakespeare_roles_listed_public_leave_the_population(
    shakespeare_dir, tmp_path):
  listed = ['PLAY_005_ROLE', 'PLAY_002_ROLE']
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('\n'.join(listed) + '\n')
  source = _load(loading.Dataset.SHAKESPEARE, data_dir=shakespeare_dir)
  view = _load(loading.Dataset.SHAKESPEARE,
               data_dir=shakespeare_dir,
               public=Declaration(file=str(ids_file)))
  assert view.population == 6
  assert view.public_client_ids == sorted(listed)
  assert not set(view.client_ids) & set(listed)
  _assert_same_clients(view, source)
  x, y = pretrained_meta.public_examples(None, view)
  expected = [
      w for c in sorted(listed)
      for w in _windows(source, source.client_ids.index(c))
  ]
  assert [(a.tolist(), b.tolist()) for a, b in zip(x, y)] == expected
  assert x.shape[1] == y.shape[1] == 80


def test_a_shakespeare_role_that_does_not_exist_is_refused(
    shakespeare_dir, tmp_path):
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('PLAY_001_ROLE\nHAMLET\n')
  with pytest.raises(ConfigError,
                     match="'HAMLET' is not a training client "
                     'of --dataset=shakespeare') as refused:
    _load(loading.Dataset.SHAKESPEARE,
          data_dir=shakespeare_dir,
          public=Declaration(file=str(ids_file)))
  assert refused.value.flag == 'public_clients'


def test_stackoverflow_users_below_the_fraction_are_public(
    tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  train = fake_stackoverflow.fake_clients(rng, 12, sentences=1)
  fake_stackoverflow.write_fake_cache(
      str(tmp_path),
      train_clients=train,
      test_clients=fake_stackoverflow.fake_clients(rng, 1, sentences=1))
  fake_stackoverflow.accept_fake_vocabulary(
      fake_stackoverflow.write_fake_vocabulary(str(tmp_path)),
      monkeypatch.setattr)
  source = _load(loading.Dataset.STACKOVERFLOW_NWP, data_dir=str(tmp_path))
  view = _load(loading.Dataset.STACKOVERFLOW_NWP,
               data_dir=str(tmp_path),
               public=Declaration(fraction=0.4))
  # The rule, computed here from its definition.
  expected = sorted(
      c for c in train
      if int(hashlib.sha256(c.encode()).hexdigest()[:8], 16) < 0.4 * 2**32)
  assert 0 < len(expected) < 12  # The fixture makes both sides non-empty.
  assert view.public_client_ids == expected
  assert view.population == 12 - len(expected)
  assert not set(view.client_ids) & set(expected)
  _assert_same_clients(view, source)
  assert '--public_fraction=0.4' in view.public_rule


def _imported(tmp_path, num_clients=10):
  """Client k has k + 1 rows whose features are all k; labels in [0, 3)."""
  rows = [(f'client{k:02d}', [float(k)] * 3, k % 3)
          for k in range(num_clients)
          for _ in range(k + 1)]
  return client_data_files.imported(tmp_path,
                                    rows,
                                    test_split=csv_import.TestSplit.ROWS,
                                    test_fraction=0.2)


def test_imported_clients_declared_public_never_train_or_evaluate(tmp_path):
  path = _imported(tmp_path)
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('client03\nclient07\n')
  config = api.make_config(None,
                           dataset='sqlite',
                           client_data=path,
                           public_clients=str(ids_file),
                           dp_mechanism='none',
                           clients_per_round=2,
                           evaluation='federated',
                           eval_clients=3)
  run = prepare.prepare_run(config)
  public = {'client03', 'client07'}
  assert run.data.public_client_ids == sorted(public)
  assert run.data.population == 10 - 2 - 3
  assert not set(run.data.client_ids) & public
  assert not set(run.held_out.client_ids) & public
  # The training side reads no public row (features name their client).
  seen = {
      int(x[0])
      for i in range(run.data.population)
      for x, _ in run.data.client_dataset(i).as_numpy_iterator()
  }
  assert not seen & {3, 7}
  assert len(seen) == run.data.population
  # Pretraining reads exactly the public clients' training rows.
  x, _ = pretrained_meta.public_examples(config, prepare.load_data(config))
  assert set(x[:, 0].tolist()) == {3.0, 7.0}
  sentence = pretrained_meta.public_data_sentence('', run.data)
  assert sentence.startswith('Public clients: 2 clients')


def test_a_fraction_that_leaves_no_imported_client_private_is_refused(tmp_path):
  config = api.make_config(None,
                           dataset='sqlite',
                           client_data=_imported(tmp_path, num_clients=3),
                           public_fraction=0.999999)
  with pytest.raises(ConfigError,
                     match=r'--public_fraction=0.999999: makes all 3') as r:
    prepare.load_data(config)
  assert '\n' not in str(r.value)


def test_a_checkpoint_of_imported_public_clients_binds_the_run(tmp_path):
  from tff_dp.program import pretrained  # pylint: disable=g-import-not-at-top
  path = _imported(tmp_path)
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('client05\nclient02\n')
  settings = dict(dataset='sqlite',
                  client_data=path,
                  model='mlp',
                  hidden_layers=1,
                  hidden_units=4)
  config = api.make_config(None, public_clients=str(ids_file), **settings)
  data = prepare.load_data(config)
  model, _ = pretrained.pretrain(config,
                                 data,
                                 steps=2,
                                 batch_size=4,
                                 learning_rate=1e-2)
  output = str(tmp_path / 'checkpoint')
  pretrained.save(output, model, config=config, data=data, training={})
  meta = pretrained_meta.read_meta(output)
  assert meta['public_clients'] == ['client02', 'client05']
  assert f'--public_clients={ids_file}' in meta['public_rule']
  assert meta['data_fingerprint'] == data.fingerprint()
  # The same declaration: accepted; none: its public clients would be
  # private clients of the run, refused.
  pretrained_meta.check_checkpoint(output, config, data)
  undeclared = api.make_config(None, **settings)
  with pytest.raises(ConfigError,
                     match='pretrained on 2 clients that are '
                     "private in this run \\(e.g. 'client02'\\)") as refused:
    pretrained_meta.check_checkpoint(output, undeclared,
                                     prepare.load_data(undeclared))
  assert refused.value.flag == 'init_from'
