"""The vectorized epsilon-for-delta walk returns dp-accounting's float, to the bit."""

import math

from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import pytest

from tff_dp.privacy import dp_accounting_internals
from tff_dp.privacy import pld_epsilon
from tff_dp.privacy import pld_search

_DELTAS = (1e-12, 1e-7, 1e-5, 1e-3, 0.1, 0.9)


def _composed(sampling_prob, z, count, interval=1e-3):
  base = privacy_loss_distribution.from_gaussian_mechanism(
      z, value_discretization_interval=interval, sampling_prob=sampling_prob)
  total = base.self_compose(count)
  identity = privacy_loss_distribution.identity(
      value_discretization_interval=interval)
  return identity.compose(total)


@pytest.mark.parametrize('sampling_prob,z,count',
                         [(0.1, 1.0, 1), (0.1, 1.0, 10), (0.1, 1.0, 1500),
                          (0.035, 1.2, 300), (1.0, 0.8, 20), (0.5, 0.6, 40)])
def test_composed_distributions_give_dp_accountings_epsilon(
    sampling_prob, z, count):
  distribution = _composed(sampling_prob, z, count)
  for delta in _DELTAS:
    assert pld_epsilon.epsilon_for_delta(
        distribution, delta) == distribution.get_epsilon_for_delta(delta)


def _dense(probs, *, lower_loss=0, infinity_mass=0.0, interval=1e-2):
  return pld_pmf.DensePLDPmf(interval, lower_loss,
                             np.asarray(probs, dtype=np.float64), infinity_mass,
                             True)


@pytest.mark.parametrize('pmf', [
    _dense(np.full(10000, 1e-4)),
    _dense(np.full(10000, 1e-4), lower_loss=-5000),
    _dense(np.full(10000, 1e-4), infinity_mass=2e-5),
    _dense([0.5, 0.5], infinity_mass=0.1),
    _dense([1.0]),
    _dense([0.0, 1.0], lower_loss=100000, interval=1.0),
    _dense(np.random.default_rng(0).dirichlet(np.ones(9000)), lower_loss=-100),
    _dense(np.concatenate([np.full(5000, -1e-19), [1.0],
                           np.full(9000, 1e-20)]),
           lower_loss=-3000,
           interval=1e-3),
])
def test_hand_made_pmfs_give_dp_accountings_epsilon(pmf):
  grid = dp_accounting_internals.dense_grid(pmf)
  for delta in _DELTAS + (0.0, 1.0):
    expected = pmf.get_epsilon_for_delta(delta)
    got = pld_search.epsilon_for_delta(*grid, delta)
    assert got == expected and type(got) is type(expected), (delta, got,
                                                             expected)


def test_sparse_pmfs_are_left_to_dp_accounting():
  sparse = privacy_loss_distribution.from_gaussian_mechanism(
      3.0, value_discretization_interval=0.1)
  assert dp_accounting_internals.dense_grid(
      dp_accounting_internals.pmfs(sparse)[0]) is None
  assert pld_epsilon.epsilon_for_delta(
      sparse, 1e-5) == sparse.get_epsilon_for_delta(1e-5)


@pytest.mark.parametrize('block,after', [(4096, 256), (7, 1), (3, 2)])
def test_any_block_boundaries_give_dp_accountings_epsilon(
    monkeypatch, block, after):
  # Where the blocks end changes how many exps are computed, never the float.
  monkeypatch.setattr(pld_search, '_BLOCK', block)
  monkeypatch.setattr(pld_search, '_BLOCK_AFTER', after)
  for distribution in (_composed(0.1, 1.0, 10), _composed(1.0, 0.8, 20)):
    for delta in _DELTAS:
      assert pld_epsilon.epsilon_for_delta(
          distribution, delta) == distribution.get_epsilon_for_delta(delta)


class _CountingMath:
  """`math` with its exp counted."""

  def __init__(self):
    self.exps = 0

  def __getattr__(self, name):
    return getattr(math, name)

  def exp(self, x):
    self.exps += 1
    return math.exp(x)


def test_the_walk_computes_few_exps_past_its_stop(monkeypatch):
  # The main job after 1,500 rounds: the loop visits ~20,700 points of its
  # larger pmf; blocks of 4,096 from the top computed ~3,900 exps past them.
  counting = _CountingMath()
  monkeypatch.setattr(pld_search, 'math', counting)
  distribution = _composed(0.1, 1.0, 1500)
  pmf = dp_accounting_internals.pmfs(distribution)[0]
  infinity_mass, upper_loss, interval, probs = (
      dp_accounting_internals.dense_grid(pmf))
  epsilon = pld_search.epsilon_for_delta(infinity_mass, upper_loss, interval,
                                         probs, 1e-5)
  visited = round((upper_loss - epsilon) / interval) + 1
  assert visited <= counting.exps <= visited + 2 * pld_search._BLOCK_AFTER  # pylint: disable=protected-access
