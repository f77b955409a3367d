"""Token data held in memory (`tff_dp.data.token_memory`): the same windows
as the streamed source, in `FederatedData`, and which path `train` chooses.

The data are a small fake standard library (`python_stdlib` reading a
temporary directory) and a tiny fake Shakespeare cache in TFF's format
(`tests.helpers.fake_shakespeare`, read by TFF's real loader). No TFF
computation runs; the path is what `tff_dp.program.prepare` resolves.
"""

import numpy as np
import pytest

from tests.helpers import fake_shakespeare as fake
from tff_dp import api
from tff_dp import simulation_path
from tff_dp.checks import ConfigError
from tff_dp.data import public_clients
from tff_dp.data import python_stdlib
from tff_dp.data import token_memory
from tff_dp.data import token_sources
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.program import prepare

_TINY = dict(transformer_layers=1,
             transformer_width=8,
             transformer_heads=2,
             transformer_ff_width=16)


@pytest.fixture(scope='module', name='stdlib')
def fixture_stdlib(tmp_path_factory):
  root = tmp_path_factory.mktemp('stdlib')
  for i in range(60):  # Enough modules for every side of the split.
    with open(root / f'm{i}.py', 'w', encoding='utf-8') as f:
      # Modules of different lengths (at least the 512 bytes kept).
      f.write(f'def f{i}(x):\n    return x + {i}\n' * (20 + 5 * (i % 5)))
  return python_stdlib.PythonStdlibSource(str(root), next_token_labels=True)


def _stack(dataset):
  xs, ys = zip(*dataset.as_numpy_iterator())
  return np.stack(xs), np.stack(ys)


def test_in_memory_windows_are_the_streamed_ones(stdlib):
  data = token_memory.to_federated_data(stdlib)
  assert isinstance(data, FederatedData)
  assert data.client_ids == tuple(stdlib.client_ids)
  assert data.label_kind is LabelKind.NEXT_TOKENS
  assert (data.vocab_size, data.num_classes,
          data.input_dim) == (stdlib.vocab_size, stdlib.num_classes,
                              python_stdlib.WINDOW)
  np.testing.assert_array_equal(data.client_sizes(), stdlib.client_sizes())
  for i in range(stdlib.population):
    x, y = _stack(stdlib.client_dataset(i))
    np.testing.assert_array_equal(data.client_x[i], x)
    np.testing.assert_array_equal(data.client_y[i], y)
  test_x, test_y = _stack(stdlib.test_dataset())
  np.testing.assert_array_equal(data.test_x, test_x)
  np.testing.assert_array_equal(data.test_y, test_y)
  # The public modules stay out of the population, named for --init_from.
  assert data.public_client_ids == tuple(stdlib.public_client_ids)
  assert data.public_rule == python_stdlib.PUBLIC_RULE
  assert not set(data.public_client_ids) & set(data.client_ids)


@pytest.mark.tff  # TFF's Shakespeare loader reads the cache.
def test_shakespeare_in_memory_is_its_streamed_windows(tmp_path):
  rng = np.random.default_rng(0)
  train = {
      'KING': ['O'],
      'HAMLET': [fake.snippet(rng, 150),
                 fake.snippet(rng, 47)],
  }
  test = {'HAMLET': [fake.snippet(rng, 90)]}
  fake.write_fake_cache(str(tmp_path), train_clients=train, test_clients=test)
  source = token_sources.shakespeare_source(data_dir=str(tmp_path),
                                            next_token_labels=True)
  data = token_memory.to_federated_data(source)
  for i in range(source.population):
    x, y = _stack(source.client_dataset(i))
    np.testing.assert_array_equal(data.client_x[i], x)
    np.testing.assert_array_equal(data.client_y[i], y)
  assert data.client_y[0].shape[1] == token_sources.SHAKESPEARE_WINDOW
  np.testing.assert_array_equal(data.test_x, _stack(source.test_dataset())[0])
  # A declared public client never enters the in-memory population.
  ids = tmp_path / 'public.txt'
  ids.write_text('KING\n')
  private = public_clients.apply(
      source,
      public_clients.PublicDeclaration(file=str(ids)),
      dataset='shakespeare')
  data = token_memory.to_federated_data(private)
  assert data.client_ids == ('HAMLET',)
  assert data.public_client_ids == ('KING',)
  np.testing.assert_array_equal(data.client_x[0],
                                _stack(source.client_dataset(0))[0])


def _windows(**overrides):
  x = np.array([[0, 0, 3, 4], [5, 6, 7, 8]], np.float32)
  y = np.array([[0, 3, 4, 5], [6, 7, 8, 9]], np.int32)
  fields = dict(name='t',
                client_ids=('a',),
                client_x=(x,),
                client_y=(y,),
                test_x=x,
                test_y=y,
                num_classes=10,
                vocab_size=10,
                label_kind=LabelKind.NEXT_TOKENS)
  fields.update(overrides)
  return FederatedData(**fields)


@pytest.mark.parametrize('overrides,message', [
    (dict(label_kind=LabelKind.SINGLE), 'y must be a 1-D int32'),
    (dict(client_y=(np.zeros([2, 3], np.int32),)), 'one id per feature'),
    (dict(vocab_size=None), 'need a vocab_size'),
    (dict(vocab_size=8), 'integer ids in \\[0, 8\\)'),
    (dict(client_x=(np.full([2, 4], 0.5, np.float32),)), 'integer ids'),
    (dict(public_client_ids=('a',)), 'public client is also a training'),
])
def test_next_token_windows_are_validated(overrides, message):
  assert _windows().label_kind is LabelKind.NEXT_TOKENS
  with pytest.raises(ValueError, match=message):
    _windows(**overrides)


def test_statistics_count_every_position():
  stats = _windows().statistics()
  assert sum(stats['label_histogram']) == 8
  assert stats['label_histogram'][0] == 1  # The padding, counted too.


def _prepared(stdlib, **settings):
  config = api.make_config(
      None, **{
          'dataset': 'python_stdlib',
          'model': 'transformer',
          'clients_per_round': 4,
          'dp_mechanism': 'gaussian_fixed',
          **_TINY,
          **settings
      })
  return prepare.prepare_data(config, stdlib)


def test_train_runs_the_transformer_on_the_grouped_path(stdlib):
  prepared = _prepared(stdlib)
  assert isinstance(prepared.data, FederatedData)
  assert prepared.clients_per_call == simulation_path.AUTO_CLIENTS_PER_CALL
  assert prepared.data.population == stdlib.population
  # DP-FTRL and adaptive clipping too, --trainable as well.
  for settings in (dict(algorithm='dp_ftrl',
                        dp_mechanism='tree_aggregation',
                        client_sampling='shuffled_epochs'),
                   dict(dp_mechanism='gaussian_adaptive',
                        noise_multiplier=0.3,
                        clients_per_round=10,
                        trainable='lora')):
    assert _prepared(stdlib, **settings).clients_per_call > 1, settings


@pytest.mark.parametrize(
    'settings',
    [
        dict(clients_per_call=1),  # Asked for: stays streamed.
        dict(model='rnn'),  # Not validated on the grouped path.
        dict(dp_mechanism='none'),  # |D_k| weights: one client per call.
    ])
def test_other_runs_keep_the_streamed_source(stdlib, settings):
  prepared = _prepared(stdlib, **settings)
  assert prepared.data is stdlib and prepared.clients_per_call == 1


def test_more_clients_than_the_bound_stay_streamed(stdlib, monkeypatch):
  monkeypatch.setattr(token_memory, 'MAX_IN_MEMORY_CLIENTS',
                      stdlib.population - 1)
  prepared = _prepared(stdlib)
  assert prepared.data is stdlib and prepared.clients_per_call == 1
  with pytest.raises(ConfigError, match='is streamed') as refused:
    _prepared(stdlib, clients_per_call=8)
  assert refused.value.flag == 'clients_per_call'
