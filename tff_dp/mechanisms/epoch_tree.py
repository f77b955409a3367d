"""DP-FTRL's tree restarted every epoch, drawing no node a restart discards.

The mechanism is TF Privacy's tree aggregation as DP-FTRL uses it (Kairouz,
McMahan, Song, Thakkar, Thakurta, Xu 2021, "Practical and Private (Deep)
Learning without Sampling or Shuffling"; Honaker 2015's estimator by
default): a `tfp.TreeResidualSumQuery` inside a `tfp.RestartQuery` that
starts a fresh tree after the last round of every epoch.

TF Privacy's `RestartQuery.get_noised_result` first lets the tree prepare
its NEXT leaf (`get_cumsum_and_update` draws the new leaf's noise and, with
Honaker's estimator, one more node per completed level: 1 + the trailing
one bits of the leaf count) and only then, at a restart, throws that tree
away and draws the new tree's first leaf. Those prepared nodes never enter
any result. With one round per epoch (every client in every round) that is
3 draws of the model's size per round where 1 is used: the server's noise
step on the EMNIST CNN (1.2M parameters) took 162 ms instead of 58 ms, on a
loaded machine (benchmarks/README.md, "DP-FTRL's round").

`EpochTreeQuery` gives the same results and states except for those wasted
draws: at a restart it releases the current prefix noise exactly as the
tree would and restarts from the generator state BEFORE the discarded
draws. Every node that is used is a fresh N(0, (z C)^2) draw under a seed
never used before (the stateless seed counter only moves forward), so the
noise law, the released residuals' law, the state structure (checkpoints
from before load and continue without reusing a seed) and the DP event are
TF Privacy's; only which counter values name the nodes changes.
"""

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.dp_query import tree_aggregation


def _prefix_noise(aggregator, tree_state):
  """The tree's noise for the current leaf's prefix sum, drawing nothing."""
  # The two aggregators' private helpers take different arguments; both
  # are what their `get_cumsum_and_update` returns as the cumulative sum.
  # pylint: disable=protected-access
  if isinstance(aggregator, tree_aggregation.EfficientTreeAggregator):
    return aggregator._get_cumsum(tree_state)
  return aggregator._get_cumsum(tree_state.level_buffer)
  # pylint: enable=protected-access


class EpochTreeQuery(tfp.RestartQuery):
  """`tfp.RestartQuery` over a `tfp.TreeResidualSumQuery`, no wasted draws."""

  def __init__(self, tree_query: tfp.TreeResidualSumQuery,
               restart_indicator: tfp.restart_query.RestartIndicator):
    """Initializes the query.

    Args:
      tree_query: The tree (its noise generator, clip and estimator).
      restart_indicator: When to start a fresh tree (after each epoch).
    """
    if not isinstance(tree_query, tfp.TreeResidualSumQuery):
      raise TypeError('tree_query must be a tfp.TreeResidualSumQuery, got '
                      f'{type(tree_query).__name__}')
    super().__init__(tree_query, restart_indicator)

  def get_noised_result(self, sample_state, global_state):
    """As `tfp.RestartQuery.get_noised_result`, without the wasted draws."""
    tree = self._inner_query
    inner_state = global_state.inner_query_state
    restart_flag, indicator_state = self._restart_indicator.next(
        global_state.indicator_state)

    def continue_tree():
      noised, new_state, _ = tree.get_noised_result(sample_state, inner_state)
      return noised, new_state

    def restart_tree():
      # The residual exactly as `TreeResidualSumQuery.get_noised_result`
      # computes it, then the fresh tree from the generator state that the
      # discarded `get_cumsum_and_update` would have advanced.
      # pylint: disable-next=protected-access
      noise = _prefix_noise(tree._tree_aggregator, inner_state.tree_state)
      noised = tf.nest.map_structure(lambda a, b, c: a + b - c, sample_state,
                                     noise, inner_state.previous_tree_noise)
      return noised, tree.reset_state(noised, inner_state)

    noised, new_inner_state = tf.cond(restart_flag, restart_tree, continue_tree)
    # `TreeResidualSumQuery`'s own event (tests pin that it still is):
    # the ledger charges the tree per epoch (`tff_dp.cohorts.epoch_sampling`).
    return (noised, self._GlobalState(new_inner_state, indicator_state),
            dp_accounting.UnsupportedDpEvent())
