"""No central mechanism: plain aggregation of the client updates.

Non-private FedAvg/FedSGD (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data"), or a run whose only
noise is added at the clients (`tff_dp.mechanisms.local_dp`) or inside them
(example-level DP-SGD). Its ledger charges a zero-noise round, so the central
epsilon is infinite and none is claimed.

The grouped path runs it: behind the clients' noise as the sum over the
fixed count (`tff_dp.algorithms.grouped_local_dp.fixed_count_query`), and
without any noise as FedAvg's mean over the clients that reported, weighted
by n_k or uniformly (`tff_dp.algorithms.grouped_mean`), each against TFF's
one-client-per-call reference (tests/algorithms/test_grouped_*.py). Which
path runs changes nothing above: the ledger and the statement come from this
row and the configuration only.
"""

from tff_dp.mechanisms import central


class NoCentralNoise(central.CentralMechanism):
  """`--dp_mechanism=none`."""
  name = 'none'
  help = 'no central noise'
  noised = False
  grouped = True
  released_keys = ()

  def ledger_events(self, sampler, settings):
    del settings
    return central.sampled_gaussian_events(sampler, 0.0)

  def round_values(self, settings, output):
    del settings, output
    return {}


MECHANISM = NoCentralNoise()
