"""Tree aggregation of clipped client updates (the noise of DP-FTRL).

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, "Practical and Private
(Deep) Learning without Sampling or Shuffling": fixed clip C, every node of a
binary tree over the rounds of an epoch gets N(0, (z C)^2), the tree restarts
every epoch, and the clients take part once per epoch in a secretly shuffled
order (`tff_dp.cohorts.epoch_sampling`, whose tree event the ledger charges
at each epoch's first round). The server update is FTRL
(`tff_dp.algorithms.dp_ftrl`).
"""

from typing import Any

from tff_dp.cohorts import epoch_sampling
from tff_dp.mechanisms import central


class TreeAggregation(central.CentralMechanism):
  """`--dp_mechanism=tree_aggregation`."""
  name = 'tree_aggregation'
  help = ('fixed clip + tree-aggregated noise (with --algorithm=dp_ftrl)')
  algorithms = frozenset({'dp_ftrl'})
  # Calibration inverts sampled-Gaussian accounting, not the tree's.
  calibrates = False
  local_dp = False
  grouped = True

  def describe(self, settings: central.DpSettings) -> str:
    return (f'tree aggregation (DP-FTRL, Kairouz et al. 2021) of client '
            f'updates clipped to L2 norm {settings.clip:g}, node noise std '
            f'z * clip, z = {settings.noise_multiplier:g}, the tree '
            'restarted every epoch; accounted per epoch with '
            'dp-accounting\'s single-epoch tree event')

  def ledger_events(self, sampler, settings):
    if not isinstance(sampler, epoch_sampling.EpochSampler):
      raise TypeError(
          f'tree aggregation needs an EpochSampler, got {sampler!r}')

    def round_event(round_num):
      return sampler.round_event(round_num,
                                 noise_multiplier=settings.noise_multiplier)

    return epoch_sampling.NEIGHBORING_RELATION, round_event

  def build_aggregator(self, settings: central.DpSettings, *,
                       rounds_per_epoch: int, record_specs: Any,
                       **context) -> Any:
    """The tree's factory; `rounds_per_epoch` from the run's `EpochSampler`,
    `record_specs` the shapes of one client update."""
    del context
    # TensorFlow only when a process is built, not when a config is checked.
    from tff_dp.mechanisms import dp_queries  # pylint: disable=g-import-not-at-top
    return dp_queries.build_tree_aggregator(
        noise_multiplier=settings.noise_multiplier,
        clip=settings.clip,
        clients_per_round=settings.clients_per_round,
        rounds_per_epoch=rounds_per_epoch,
        record_specs=record_specs)


MECHANISM = TreeAggregation()
