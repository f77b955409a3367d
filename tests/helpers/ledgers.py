"""Central privacy ledgers for the tests: one round event over rounds 1..N.

What a run whose rounds all cost the same leaves in ledger.json (`save` it
there), for the tests of the accountant, the planner's --run_dir and the
bounds; `poisson` is the Poisson-sampled Gaussian run the program tests
read.
"""

import dp_accounting

from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger


def of_rounds(
    event, rounds: int, relation: dp_accounting.NeighboringRelation
) -> privacy_ledger.PrivacyLedger:
  """A ledger of `relation` that charged `event` in rounds 1 to `rounds`."""
  ledger = privacy_ledger.PrivacyLedger(relation)
  for round_num in range(1, rounds + 1):
    ledger.record(round_num, event)
  return ledger


def poisson(rounds: int,
            *,
            population: int = 100,
            clients_per_round: int = 10,
            noise_multiplier: float = 1.1) -> privacy_ledger.PrivacyLedger:
  """`rounds` rounds of Poisson sampling and Gaussian noise (add/remove)."""
  event = accounting.gaussian_round_event(
      sampling=accounting.ClientSampling.POISSON,
      population=population,
      clients_per_round=clients_per_round,
      noise_multiplier=noise_multiplier)
  return of_rounds(event, rounds,
                   dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
