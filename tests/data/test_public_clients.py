"""Clients declared public (`--public_clients`, `--public_fraction`): the rule,
the view without them, and the refusals. Pure Python: the sources here are
small fakes; tests/data/test_public_clients_loaders.py reads real files.
"""

import hashlib

from absl import flags
import numpy as np
import pytest

from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.data import loading
from tff_dp.data import public_clients
from tff_dp.data.labels import LabelKind
from tff_dp.program import prepare
from tff_dp.program import pretrained_meta

Declaration = public_clients.PublicDeclaration


class _Examples(list):
  """A client's examples, iterated as tf.data's as_numpy_iterator() does."""

  def as_numpy_iterator(self):
    return iter(self)


class _Source:
  """A streamed source whose client i holds (i + 1) examples of value i."""

  name = 'fake'
  input_dim = 2
  num_classes = 3
  image_shape = None
  vocab_size = None
  label_kind = LabelKind.SINGLE

  def __init__(self, client_ids):
    self.client_ids = list(client_ids)

  @property
  def population(self):
    return len(self.client_ids)

  def client_sizes(self):
    return np.arange(1, self.population + 1, dtype=np.int64)

  def client_dataset(self, index):
    return _Examples((np.full(2, index, np.float32), np.int32(index % 3))
                     for _ in range(index + 1))

  def test_dataset(self):
    return 'the test set'

  def fingerprint(self):
    return 'sha256:source'

  def describe(self):
    return "Federated data 'fake': N clients\n  more"


_IDS = [f'user{i:04d}' for i in range(2000)]


def _write(tmp_path, lines):
  path = tmp_path / 'public.txt'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


def test_the_hash_rule_is_sha256_of_the_id_and_keeps_about_the_fraction():
  for client in ('KING', 'user0001', 'naïve'):
    digest = hashlib.sha256(client.encode('utf-8')).digest()
    assert public_clients.id_hash_fraction(client) == (
        int.from_bytes(digest[:4], 'big') / 2**32)
  fraction = 0.1
  public = public_clients.public_indices(_IDS,
                                         Declaration(fraction=fraction),
                                         dataset='fake')
  # Binomial(2000, 0.1): sd 13.4; 6 sd either side (flake rate ~2e-9).
  assert abs(len(public) - 200) < 6 * 13.4


def test_the_hash_rule_depends_on_the_id_alone_and_grows_with_the_fraction():
  small = public_clients.public_indices(_IDS,
                                        Declaration(fraction=0.05),
                                        dataset='fake')
  large = public_clients.public_indices(_IDS,
                                        Declaration(fraction=0.2),
                                        dataset='fake')
  assert set(small) < set(large)
  # Other clients added or removed: no one crosses the split.
  fewer = _IDS[::3]
  kept = public_clients.public_indices(fewer,
                                       Declaration(fraction=0.2),
                                       dataset='fake')
  assert {fewer[i] for i in kept} == {_IDS[i] for i in large} & set(fewer)


def test_a_file_names_its_clients(tmp_path):
  path = _write(tmp_path, ['  user0007 ', '', 'user0003', 'user0007'])
  assert public_clients.read_id_file(path) == ['user0007', 'user0003']
  indices = public_clients.public_indices(_IDS,
                                          Declaration(file=path),
                                          dataset='fake')
  assert list(indices) == [3, 7]


@pytest.mark.parametrize('declaration,flag,named', [
    (Declaration(file='/nonexistent/public.txt'), 'public_clients',
     'cannot be read'),
    (Declaration(fraction=1e-9), 'public_fraction', 'makes none of the 2000'),
    (Declaration(fraction=0.999999), 'public_fraction',
     'leaves no private client'),
])
def test_bad_declarations_are_one_line_naming_the_flag(declaration, flag,
                                                       named):
  with pytest.raises(ConfigError, match=named) as refused:
    public_clients.public_indices(_IDS, declaration, dataset='fake')
  assert refused.value.flag == flag
  assert refused.value.value == declaration.flag[1]
  assert '\n' not in str(refused.value)


def test_an_unknown_or_empty_list_is_refused(tmp_path):
  path = _write(tmp_path, ['user0001', 'nobody', 'noone'])
  with pytest.raises(ConfigError,
                     match=r"'nobody' \(and 1 more\) is not a training "
                     r'client of --dataset=fake \(2000 clients\)') as refused:
    public_clients.public_indices(_IDS, Declaration(file=path), dataset='fake')
  assert refused.value.flag == 'public_clients'
  empty = _write(tmp_path, ['', '  '])
  with pytest.raises(ConfigError, match='lists no client id'):
    public_clients.read_id_file(empty)
  everyone = _write(tmp_path, ['a', 'b'])
  with pytest.raises(ConfigError, match='leaves no private client'):
    public_clients.public_indices(['a', 'b'],
                                  Declaration(file=everyone),
                                  dataset='fake')


def test_the_view_holds_the_private_clients_only(tmp_path):
  source = _Source(['a', 'b', 'c', 'd', 'e'])
  path = _write(tmp_path, ['d', 'b'])
  view = public_clients.apply(source, Declaration(file=path), dataset='sqlite')
  assert view.population == 3
  assert view.client_ids == ['a', 'c', 'e']
  assert view.public_client_ids == ['b', 'd']
  assert path in view.public_rule
  np.testing.assert_array_equal(view.client_sizes(), [1, 3, 5])
  # Every private index reaches its own client of the source, never a
  # public one (client i of the source holds the value i).
  for index, expected in enumerate([0, 2, 4]):
    values = {int(x[0]) for x, _ in view.client_dataset(index)}
    assert values == {expected}
  assert view.test_dataset() == 'the test set'
  x, y = view.public_examples()
  assert x.shape == (2 + 4, 2) and sorted(set(x[:, 0])) == [1, 3]
  np.testing.assert_array_equal(y, [1, 1, 0, 0, 0, 0])
  assert '2 clients (6 examples)' in view.describe()
  assert '3 private clients' in view.describe().splitlines()[0]


def test_the_fingerprint_covers_the_declaration(tmp_path):
  source = _Source(['a', 'b', 'c', 'd'])
  one = public_clients.apply(source,
                             Declaration(file=_write(tmp_path, ['a'])),
                             dataset='sqlite')
  two = public_clients.apply(source,
                             Declaration(file=_write(tmp_path, ['a', 'b'])),
                             dataset='sqlite')
  assert one.fingerprint() != two.fingerprint() != source.fingerprint()
  assert one.fingerprint() == public_clients.apply(
      source, Declaration(file=_write(tmp_path, ['a'])),
      dataset='sqlite').fingerprint()


def test_nothing_declared_leaves_the_source_as_it_is():
  source = _Source(['a', 'b'])
  assert public_clients.apply(source, Declaration(), dataset='sqlite') is source


def test_datasets_that_cannot_take_a_declaration_are_refused(tmp_path):
  source = _Source(['a', 'b'])
  with pytest.raises(ConfigError, match='both declare public clients'):
    public_clients.apply(source,
                         Declaration(file=_write(tmp_path, ['a']),
                                     fraction=0.5),
                         dataset='sqlite')
  with pytest.raises(ConfigError, match='declares its own public modules'):
    public_clients.apply(source,
                         Declaration(fraction=0.5),
                         dataset='python_stdlib')
  digits = loading.load(loading.Dataset.DIGITS,
                        num_clients=20,
                        partition=loading.partition_lib.Partition.IID,
                        seed=0,
                        test_fraction=0.2,
                        dirichlet_alpha=0.5,
                        data_dir='',
                        client_data=None)
  with pytest.raises(ConfigError, match='splits one pool of examples') as r:
    public_clients.apply(digits, Declaration(fraction=0.5), dataset='digits')
  assert r.value.flag == 'public_fraction'


def test_the_program_refuses_through_the_loader():
  config = prepare.config_lib.config_from_mapping({
      **_default_flags(), 'dataset': 'digits',
      'public_fraction': 0.3
  })
  with pytest.raises(ConfigError, match='splits one pool') as refused:
    prepare.load_data(config)
  assert refused.value.flag == 'public_fraction'


def _default_flags(argv=()):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['prog', *argv])
  return {name: fv[name].value for name in fv}


@pytest.mark.parametrize('value', ['1', '1.5', '-0.1', 'nan', 'inf'])
def test_a_fraction_out_of_range_is_refused_at_parse_time(value):
  with pytest.raises(flags.IllegalFlagValueError, match='public_fraction'):
    _default_flags([f'--public_fraction={value}'])


class _Data:
  """What the checkpoint check reads of the run's data."""
  input_dim = 2
  num_classes = 3
  vocab_size = None
  image_shape = None

  def __init__(self, public):
    self.public_client_ids = public


def test_a_checkpoint_pretrained_on_this_runs_private_clients_is_refused():
  config = prepare.config_lib.config_from_mapping({
      **_default_flags(), 'dataset': 'sqlite'
  })
  meta = {
      'dataset': 'sqlite',
      'model': pretrained_meta.model_signature(config, _Data([])),
      'public_clients': ['a', 'b'],
      'public_rule': 'the client ids listed in --public_clients=p.txt',
  }
  check = pretrained_meta._check_matches  # pylint: disable=protected-access
  check('ckpt', meta, config, _Data(['a', 'b', 'c']))  # Declared: accepted.
  for declared in ([], ['a']):
    with pytest.raises(ConfigError, match='private in this run') as refused:
      check('ckpt', meta, config, _Data(declared))
    assert refused.value.flag == 'init_from'
    assert '--public_clients=p.txt' in str(refused.value)


def test_the_statement_names_the_public_clients_without_a_checkpoint():
  data = _Data(['a', 'b'])
  data.public_rule = 'the rule'
  sentence = pretrained_meta.public_data_sentence('', data)
  assert sentence.startswith('Public clients: 2 clients')
  assert 'the rule' in sentence and 'not in the population' in sentence
  assert pretrained_meta.public_data_sentence('', _Data([])) is None
  assert pretrained_meta.public_data_sentence('') is None
