"""DP-FTRL's restarted tree without wasted draws, against TF Privacy's.

`tff_dp.mechanisms.epoch_tree.EpochTreeQuery` must release what TF
Privacy's `RestartQuery` over the same `TreeResidualSumQuery` releases, with
the same state, except that at a restart the fresh tree continues the seed
counter from before the draws TF Privacy discards; it must draw one node per
restart (not 1 + the tree's completed levels + 1) and as many as TF Privacy
otherwise; and the benchmark floor's DP-FTRL work
(`benchmarks.floor_tree.node_draws`) must count the same draws. Pure
TensorFlow, seeded (public) noise: exact comparisons.
"""

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_privacy as tfp

from benchmarks import floor_tree
from tff_dp.mechanisms import epoch_tree

_SPECS = [tf.TensorSpec([3], tf.float32), tf.TensorSpec([2, 2], tf.float32)]
_SEED = 77


def _tree_query(use_efficient=True):
  return tfp.TreeResidualSumQuery.build_l2_gaussian_query(
      1.0, 0.7, _SPECS, noise_seed=_SEED, use_efficient=use_efficient)


def _queries(period, use_efficient=True):
  restart = tfp.restart_query.PeriodicRoundRestartIndicator(period=period)
  ours = epoch_tree.EpochTreeQuery(_tree_query(use_efficient), restart)
  theirs = tfp.RestartQuery(_tree_query(use_efficient), restart)
  return ours, theirs


def _records(round_num):
  rng = np.random.default_rng(round_num)
  return [tf.constant(rng.normal(size=s.shape), tf.float32) for s in _SPECS]


def _seed_counter(state):
  return int(state.inner_query_state.tree_state.value_generator_state.seeds[0])


def _leaf_value(state):
  return [
      np.asarray(b[0]) for b in state.inner_query_state.tree_state.level_buffer
  ]


@pytest.mark.parametrize('use_efficient', [True, False])
@pytest.mark.parametrize('period', [1, 3, 4])
def test_same_results_and_states_as_tf_privacy_but_the_seed_counter(
    period, use_efficient):
  ours, theirs = _queries(period, use_efficient)
  state = ours.initial_global_state()
  for round_num in range(1, 2 * period + 2):
    records = _records(round_num)
    got, new_state, event = ours.get_noised_result(records, state)
    want, want_state, want_event = theirs.get_noised_result(records, state)
    assert event == want_event == dp_accounting.UnsupportedDpEvent()
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)
    assert int(new_state.indicator_state) == int(want_state.indicator_state)
    if round_num % period:
      tf.nest.map_structure(np.testing.assert_array_equal, new_state,
                            want_state)
    else:
      # Restarted: TF Privacy's fresh tree starts after the discarded
      # draws, ours from the counter before them, with one new node.
      nodes = len(_SPECS)
      assert _seed_counter(new_state) == _seed_counter(state) + nodes
      assert _seed_counter(want_state) > _seed_counter(new_state)
      np.testing.assert_array_equal(
          new_state.inner_query_state.tree_state.level_buffer_idx, [0])
      for prev in new_state.inner_query_state.previous_tree_noise:
        np.testing.assert_array_equal(prev, np.zeros_like(prev))
      fresh = _tree_query(use_efficient)._tree_aggregator.value_generator.next(
          state.inner_query_state.tree_state.value_generator_state)[0]
      for a, b in zip(_leaf_value(new_state), fresh):
        np.testing.assert_array_equal(a, b)
    state = new_state


# TF Privacy's restart draws the next leaf, one node per completed level
# (1 + the trailing one bits of the leaf count), then the fresh tree's leaf.
@pytest.mark.parametrize('period, tf_privacy_nodes', [(1, 3), (2, 2), (3, 4),
                                                      (4, 2)])
def test_restart_draws_one_node_where_tf_privacy_draws_more(
    period, tf_privacy_nodes):
  ours, theirs = _queries(period)
  state = ours.initial_global_state()
  for round_num in range(1, period):
    _, state, _ = ours.get_noised_result(_records(round_num), state)
  _, mine, _ = ours.get_noised_result(_records(period), state)  # Restart.
  _, tfps, _ = theirs.get_noised_result(_records(period), state)
  nodes = len(_SPECS)  # One seed per tensor per node.
  assert _seed_counter(mine) - _seed_counter(state) == nodes
  assert _seed_counter(tfps) - _seed_counter(state) == tf_privacy_nodes * nodes


@pytest.mark.parametrize('period', [1, 2, 5, 8])
def test_benchmark_floor_counts_the_trees_draws(period):
  ours, _ = _queries(period)
  state = ours.initial_global_state()
  for round_num in range(1, 3 * period + 1):
    _, new_state, _ = ours.get_noised_result(_records(round_num), state)
    draws = (_seed_counter(new_state) - _seed_counter(state)) // len(_SPECS)
    leaves = (round_num - 1) % period + 1
    assert int(floor_tree.node_draws(tf.constant(leaves), period)) == draws
    state = new_state


def test_refuses_a_query_that_is_not_the_tree():
  with pytest.raises(TypeError, match='TreeResidualSumQuery'):
    epoch_tree.EpochTreeQuery(
        tfp.GaussianSumQuery(1.0, 1.0),
        tfp.restart_query.PeriodicRoundRestartIndicator(period=2))
