"""The central mechanisms' registry: one row per `--dp_mechanism` value.

Pure Python: the rows are read when the configuration is checked, before the
program imports TensorFlow.
"""

import subprocess
import sys

import dp_accounting
import pytest

from tests import helpers
from tests.helpers import central_dp
from tff_dp.checks import ConfigError
from tff_dp.cohorts import epoch_sampling
from tff_dp.cohorts import sampling
from tff_dp.config import DpMechanism
from tff_dp.mechanisms import registry
from tff_dp.privacy import accounting
from tff_dp.program import release


def _settings(mechanism, **overrides):
  values = dict(clients_per_round=10, clip=0.7, noise_multiplier=1.5)
  values.update(overrides)
  return central_dp.settings(mechanism, **values)


def test_every_flag_value_has_exactly_one_row():
  names = [row.name for row in registry.MECHANISMS]
  assert len(set(names)) == len(names)
  assert [m.value for m in DpMechanism] == names
  for member in DpMechanism:
    assert registry.mechanism(member).name == member.value
  help_text = registry.help_text()
  for name in names:
    assert f'{name}: ' in help_text


def test_rows_and_the_configuration_import_no_tensorflow():
  code = ('import sys; import tff_dp.config; '
          'bad = [m for m in sys.modules if m.startswith("tensorflow")]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code],
                 check=True,
                 cwd=helpers.REPO_ROOT)


def test_released_keys_are_on_the_allow_list():
  for key in registry.released_keys():
    assert key in release.DP_SAFE_KEYS


class _Output:
  metrics = {'aggregator': {'dp_query_metrics': {'clip': 0.25}}}


@pytest.mark.parametrize('member', list(DpMechanism))
def test_round_values_use_only_the_rows_keys(member):
  row = registry.mechanism(member)
  values = row.round_values(_settings(member), _Output())
  assert set(values) == set(row.released_keys)


def test_round_values_are_the_public_parameters_or_the_noised_clip():
  fixed = registry.mechanism(DpMechanism.GAUSSIAN_FIXED)
  assert fixed.round_values(_settings(DpMechanism.GAUSSIAN_FIXED),
                            _Output()) == {
                                'privacy/noise_multiplier': 1.5,
                                'privacy/clip': 0.7
                            }
  adaptive = registry.mechanism(DpMechanism.GAUSSIAN_ADAPTIVE)
  assert adaptive.round_values(_settings(DpMechanism.GAUSSIAN_ADAPTIVE),
                               _Output())['privacy/clip'] == 0.25


@pytest.mark.parametrize('member,z', [(DpMechanism.GAUSSIAN_FIXED, 1.5),
                                      (DpMechanism.GAUSSIAN_ADAPTIVE, 1.5),
                                      (DpMechanism.NONE, 0.0)])
def test_sampled_mechanisms_charge_the_samplers_gaussian_event(member, z):
  sampler = sampling.ClientSampler(sampling=sampling.ClientSampling.POISSON,
                                   population=100,
                                   clients_per_round=10,
                                   seed=3)
  relation, round_event = registry.mechanism(member).ledger_events(
      sampler, _settings(member))
  assert relation is accounting.neighboring_relation(sampler.sampling)
  expected = accounting.round_event_for(sampler, noise_multiplier=z)
  assert round_event(1) == expected and round_event(7) == expected


def test_the_tree_charges_the_epoch_samplers_event():
  sampler = epoch_sampling.EpochSampler(population=12,
                                        clients_per_round=4,
                                        seed=3)
  row = registry.mechanism(DpMechanism.TREE_AGGREGATION)
  relation, round_event = row.ledger_events(
      sampler, _settings(DpMechanism.TREE_AGGREGATION))
  assert relation is epoch_sampling.NEIGHBORING_RELATION
  for round_num in range(1, 8):
    assert round_event(round_num) == sampler.round_event(round_num,
                                                         noise_multiplier=1.5)
  assert isinstance(round_event(1), dp_accounting.DpEvent)
  with pytest.raises(TypeError, match='EpochSampler'):
    row.ledger_events(
        sampling.ClientSampler(sampling=sampling.ClientSampling.POISSON,
                               population=12,
                               clients_per_round=4,
                               seed=3), _settings(DpMechanism.TREE_AGGREGATION))


def test_statement_words_name_the_parameters():
  fixed = registry.mechanism(DpMechanism.GAUSSIAN_FIXED).describe(
      _settings(DpMechanism.GAUSSIAN_FIXED))
  assert fixed == ('Gaussian mechanism on the sum of client updates clipped '
                   'to L2 norm 0.7 (fixed), noise std = z * clip, z = 1.5')
  adaptive = registry.mechanism(DpMechanism.GAUSSIAN_ADAPTIVE).describe(
      _settings(DpMechanism.GAUSSIAN_ADAPTIVE))
  for words in ('initial clip 0.1', 'target quantile 0.5',
                'clip learning rate 0.2', 'z = 1.5'):
    assert words in adaptive
  tree = registry.mechanism(DpMechanism.TREE_AGGREGATION).describe(
      _settings(DpMechanism.TREE_AGGREGATION))
  assert 'L2 norm 0.7' in tree and 'z = 1.5' in tree
  with pytest.raises(ValueError, match='no central claim'):
    registry.mechanism(DpMechanism.NONE).describe(_settings(DpMechanism.NONE))


def test_adaptive_refuses_more_noise_than_tff_can_split():
  row = registry.mechanism(DpMechanism.GAUSSIAN_ADAPTIVE)
  row.check(_settings(DpMechanism.GAUSSIAN_ADAPTIVE, noise_multiplier=0.99))
  with pytest.raises(ConfigError, match='--noise_multiplier=1.0'):
    row.check(_settings(DpMechanism.GAUSSIAN_ADAPTIVE, noise_multiplier=1.0))
  # The other rows have no such limit.
  registry.mechanism(DpMechanism.GAUSSIAN_FIXED).check(
      _settings(DpMechanism.GAUSSIAN_FIXED, noise_multiplier=1e5))


def test_no_central_noise_has_no_aggregator():
  with pytest.raises(ValueError, match='no DP aggregator'):
    registry.mechanism(DpMechanism.NONE).build_aggregator(
        _settings(DpMechanism.NONE))
