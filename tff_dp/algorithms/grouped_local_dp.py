"""Local DP on the grouped path: each simulated client randomizes its update.

Local DP (`tff_dp.mechanisms.local_dp`; Kasiviswanathan et al. 2008, "What
can we learn privately?"; Duchi, Jordan, Wainwright 2013, "Local privacy and
statistical minimax rates") clips and noises every client's update before
it leaves the client. The reference runs the factory's randomizer as one TF
computation per client (`LocalDpFactory.client_computation`); the grouped
path runs the same ops (`LocalDpFactory.randomize`) once per SIMULATED
client inside the group's loop (`tff_dp.algorithms.grouped_client_work`),
before any sum. Each execution of those ops draws a fresh nonce
(`tff_dp.mechanisms.noise_seeds`), so every simulated client, in every round,
gets its own Philox stream under the factory's 128-bit key from the
operating system: the same secrecy as one TFF call per client. No client's
training metric leaves its group (the reference's `no_client_metrics`).

The noised updates are then aggregated as the reference's factory chain
does: by a central DP factory (client plus server noise; its query clips
the noised update again, sanitized first), or, without one, summed and
divided by the fixed `clients_per_round` (`fixed_count_query`), with no
aggregator state, as `local_dp._SumOverFixedCount`.
"""

import dataclasses

import tensorflow_privacy as tfp

from tff_dp.algorithms.grouped_client_options import ClientOptions
from tff_dp.mechanisms import local_dp


def client_options(options: ClientOptions,
                   factory: local_dp.LocalDpFactory) -> ClientOptions:
  """`options` with the factory's randomizer and no client metrics."""
  if not isinstance(factory, local_dp.LocalDpFactory):
    raise TypeError('local_dp_factory must be a tff_dp.mechanisms.local_dp.'
                    f'LocalDpFactory, got {type(factory).__name__}')
  return dataclasses.replace(options,
                             local_randomizer=factory.randomize,
                             client_metrics=False)


def fixed_count_query(clients_per_round: int) -> tfp.DPQuery:
  """Noise inside the clients only: the sum over the fixed count.

  A query with neither clipping nor noise (the records are already
  randomized at the clients: local DP, or example-level DP-SGD) that divides
  the sum by `clients_per_round`, never by the actual count, as the
  reference's `_SumOverFixedCount` and `example_dp.FixedDenominatorMeanFactory`
  do. Its global state is a constant, rebuilt every round: the process keeps
  no aggregator state.
  """
  return tfp.NormalizedQuery(tfp.NoPrivacySumQuery(),
                             denominator=float(clients_per_round))
