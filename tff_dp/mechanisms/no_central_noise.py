"""No central mechanism: plain aggregation of the client updates.

Non-private FedAvg/FedSGD (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data"), or a run whose only
noise is added at the clients (`tff_dp.mechanisms.local_dp`) or inside them
(example-level DP-SGD). Its ledger charges a zero-noise round, so the central
epsilon is infinite and none is claimed.
"""

from tff_dp.mechanisms import central


class NoCentralNoise(central.CentralMechanism):
  """`--dp_mechanism=none`."""
  name = 'none'
  help = 'no central noise'
  noised = False
  released_keys = ()

  def ledger_events(self, sampler, settings):
    del settings
    return central.sampled_gaussian_events(sampler, 0.0)

  def round_values(self, settings, output):
    del settings, output
    return {}


MECHANISM = NoCentralNoise()
