"""The dataset registry: one row per `--dataset`, and everything follows from it."""

import ast
import importlib.util
import os

from absl import flags
import pytest

from tests.helpers import benchmark_presets
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.data import loading
from tff_dp.data import registry
from tff_dp.data import test_sets
from tff_dp.data.labels import LabelKind
from tff_dp.data.partition import Partition
from tff_dp.program import prepare

_REQUEST = registry.LoadRequest(num_clients=5,
                                partition=Partition.IID,
                                seed=0,
                                test_fraction=0.2,
                                dirichlet_alpha=0.5,
                                data_dir='/nonexistent',
                                client_data=None)


def test_every_row_is_a_dataset_value_and_back():
  assert [d.value for d in loading.Dataset
         ] == [s.name for s in registry.DATASETS]
  assert loading.Dataset('digits') is loading.Dataset.DIGITS


@pytest.mark.parametrize('spec', registry.DATASETS, ids=lambda s: s.name)
def test_every_loader_exists_without_importing_it(spec):
  # Parsed, not imported: the streamed sources import TensorFlow.
  module, function = spec.loader.split(':')
  found = importlib.util.find_spec(module)
  assert found is not None, spec.loader
  with open(found.origin, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  assert function in {
      node.name for node in tree.body if isinstance(node, ast.FunctionDef)
  }, spec.loader


def test_dataset_help_names_every_dataset():
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  cli_flags.define_data_flags(fv)
  help_text = fv['dataset'].help
  for spec in registry.DATASETS:
    assert f'{spec.name}: ' in help_text


def test_what_is_known_before_loading_comes_from_the_rows():
  assert loading.is_offline(loading.Dataset.DIGITS)
  assert not loading.is_offline(loading.Dataset.CIFAR100)
  assert loading.is_token_data(loading.Dataset.SHAKESPEARE)
  assert loading.label_kind(
      loading.Dataset.STACKOVERFLOW_TAG) is LabelKind.MULTI_HOT
  assert loading.test_set_origin(
      loading.Dataset.SQLITE) is test_sets.TestSetOrigin.PRIVATE_POPULATION
  # Only data held out before the split is public by construction.
  for spec in registry.DATASETS:
    assert spec.offline == (
        spec.test_set
        is test_sets.TestSetOrigin.HELD_OUT_BEFORE_PARTITION), spec.name


@pytest.mark.parametrize('name,classes,features', [('digits', 10, 64),
                                                   ('breast_cancer', 2, 30),
                                                   ('wine', 3, 13)])
def test_offline_rows_load_through_the_registry(name, classes, features):
  data = loading.load(loading.Dataset(name),
                      num_clients=5,
                      partition=Partition.IID,
                      seed=0,
                      test_fraction=0.2,
                      dirichlet_alpha=0.5,
                      data_dir='~',
                      client_data=None)
  assert (data.population, data.num_classes, data.input_dim) == (5, classes,
                                                                 features)
  # The test examples were held out before the clients were formed.
  assert data.test_x.shape[0] > 0
  assert sum(data.client_sizes()) + data.test_x.shape[0] == {
      'digits': 1797,
      'breast_cancer': 569,
      'wine': 178
  }[name]


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(KeyError, match='digits'):
    registry.spec('mnist')


def toy_load(request):
  """A loader as a new dataset's module would define it."""
  return ('toy', request.num_clients)


def test_a_new_row_is_all_a_new_source_needs():
  spec = registry.DatasetSpec('toy', 'a toy', f'{__name__}:toy_load')
  assert spec.load(_REQUEST) == ('toy', 5)


_READS_DATA_DIR = [s for s in registry.DATASETS if s.data_files]


def test_the_rows_that_read_data_dir_are_those_whose_help_says_so():
  assert {s.name for s in _READS_DATA_DIR
         } == {s.name for s in registry.DATASETS if '--data_dir' in s.help}


@pytest.mark.parametrize('spec', _READS_DATA_DIR, ids=lambda s: s.name)
def test_an_unusable_data_dir_is_named_as_the_flag_before_loading(
    spec, tmp_path, monkeypatch):
  # It used to be reported, after TensorFlow's import, as the dataset's file
  # missing from it ('put emnist_all.sqlite in /etc/passwd').
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory\n')
  locked = tmp_path / 'locked'
  locked.mkdir()
  access = os.access
  # Root (as in CI's container) may list any directory: stand in for a
  # directory this user cannot list.
  monkeypatch.setattr(
      os, 'access',
      lambda path, mode: path != str(locked) and access(path, mode))

  def never(self, request):
    raise AssertionError(f'{self.name} loaded from {request.data_dir}')

  monkeypatch.setattr(registry.DatasetSpec, 'load', never)
  for value, reason in ((str(a_file), 'is not a directory; '),
                        (str(tmp_path / 'missing'), 'no such directory; '),
                        (str(locked), 'is not readable (permission denied); ')):
    with pytest.raises(loading.DataDirError) as refused:
      benchmark_presets.load(loading.Dataset(spec.name), value)
    message = str(refused.value)
    assert message.startswith(f'--data_dir={value}: {reason}'), message
    assert f'--dataset={spec.name} reads ' in message
    assert all(name in message for name in spec.data_files), message


def test_a_data_dir_is_shown_expanded_when_given_with_a_tilde():
  with pytest.raises(loading.DataDirError) as refused:
    benchmark_presets.load(loading.Dataset.CIFAR100, '~/tff-dp-no-such-dir')
  expanded = os.path.expanduser('~/tff-dp-no-such-dir')
  assert str(refused.value).startswith(
      f'--data_dir=~/tff-dp-no-such-dir: no such directory (that is, '
      f'{expanded});')


def test_datasets_that_do_not_read_data_dir_ignore_it(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory\n')
  # Its 7 clients (`benchmark_presets.load`), whatever --data_dir says.
  assert benchmark_presets.load(loading.Dataset.DIGITS,
                                str(a_file)).population == 7


def test_the_program_names_the_flag_not_the_dataset(tmp_path):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', '--dataset=emnist_digits', '--data_dir=/etc/passwd'])
  with pytest.raises(ConfigError) as refused:
    prepare.load_data(cli_flags.config_from_flags(fv))
  assert refused.value.flag == 'data_dir'
  assert str(refused.value).startswith(
      '--data_dir=/etc/passwd: is not a directory; --dataset=emnist_digits '
      'reads emnist_all.sqlite from the directory it names')
