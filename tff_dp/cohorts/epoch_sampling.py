"""Shuffled-epoch client order and the privacy events of DP-FTRL (pure Python).

DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, "Practical and
Private (Deep) Learning without Sampling or Shuffling", ICML) needs no privacy
amplification: its guarantee holds for ANY data-independent order of clients,
provided each client contributes at most once to each tree of the tree
aggregation. `EpochSampler` provides such an order, as the federated DP-FTRL
experiments do (google-research/federated `dp_ftrl/training_loop.py`,
`ClientIDShuffler`):

* Epoch e is a permutation of the population drawn from `(seed, e)` only, cut
  into consecutive rounds of exactly `clients_per_round` clients. Each client
  therefore takes part at most once per epoch.
* Remainder: the last `population % clients_per_round` clients of each
  permutation sit the epoch out (`rounds_per_epoch = population //
  clients_per_round`). We drop them rather than run a smaller last cohort
  because the DP aggregator divides by the fixed `clients_per_round`: a
  smaller cohort would silently shrink that round's step. Each epoch drops a
  fresh random subset, so no client is left out systematically.
* Round numbers are 1-BASED, like `tff_dp.privacy.privacy_ledger.PrivacyLedger` and
  `tff_dp.program.training_loop`: epoch e (0-based) is rounds `e * R + 1 ... (e + 1) *
  R` with R = `rounds_per_epoch`. The DP-FTRL aggregator (`tff_dp.algorithms.dp_ftrl`)
  restarts its tree after every R calls, so round 1 must be its first call.

The analysis of DP-FTRL does not need the permutation to be secret (it only
has to be independent of the data), which is why no sampling event is ever
charged. The program nevertheless draws it from the run's sampling secret
(`tff_dp.privacy.run_secrets`), like every cohort: one rule for all samplers.

Accounting (Kairouz et al. 2021, Appendix D; dp-accounting's RDP accountant):
one epoch is one tree in which a client changes at most one leaf, i.e.
`SingleEpochTreeAggregationDpEvent(noise_multiplier, rounds_in_epoch)`,
under `NeighboringRelation.REPLACE_SPECIAL` (a client's data replaced by a
"zero" client whose clipped update is 0, so the L2 sensitivity of a leaf is the
clip C and the node noise z*C gives multiplier z). Epochs compose. In
dp-accounting 0.4.3 only the RDP accountant supports this event; PLD refuses
it. The per-round ledger convention is `tree_round_event`: the WHOLE epoch is
charged at the epoch's first round (before that round runs or is released),
and the other rounds of the epoch are `NoOpDpEvent`s.
"""

import dataclasses
import functools

import dp_accounting
from dp_accounting import dp_event
import numpy as np

from tff_dp import checks

# The relation under which tree-aggregation events are accounted (module doc).
NEIGHBORING_RELATION = dp_accounting.NeighboringRelation.REPLACE_SPECIAL

# Domain separation from `tff_dp.cohorts.sampling` (which uses 'SAMP'): the same user
# seed must not give correlated cohorts under the two samplers' streams.
_EPOCH_STREAM_ID = 0x45504F43  # ASCII 'EPOC'.
_MAX_SEED = 2**128  # As in `tff_dp.cohorts.sampling`: a distinct SeedSequence input.


def tree_epoch_event(*, noise_multiplier: float,
                     rounds_in_epoch: int) -> dp_event.DpEvent:
  """The privacy cost of one epoch: one restarted tree, one leaf per client.

  Args:
    noise_multiplier: z; each tree node gets Gaussian noise of std z * clip.
    rounds_in_epoch: Number of leaves (rounds) of the epoch's tree. Charging
      the full planned epoch is an upper bound for a prefix of it: the RDP of
      a tree grows with its depth ceil(log2(rounds + 1)).

  Returns:
    `SingleEpochTreeAggregationDpEvent(z, rounds_in_epoch)`, to be composed
    under `REPLACE_SPECIAL`; `NonPrivateDpEvent` if z == 0 (as
    `tff_dp.privacy.accounting.gaussian_round_event` does).
  """
  z = checks.check_real('noise_multiplier', noise_multiplier)
  rounds_in_epoch = checks.check_int('rounds_in_epoch',
                                     rounds_in_epoch,
                                     minimum=1)
  if z == 0:
    return dp_event.NonPrivateDpEvent()
  return dp_event.SingleEpochTreeAggregationDpEvent(noise_multiplier=z,
                                                    step_counts=rounds_in_epoch)


def tree_round_event(round_num: int, *, noise_multiplier: float,
                     rounds_per_epoch: int) -> dp_event.DpEvent:
  """The ledger entry of 1-based round `round_num` (module doc: convention).

  The first round of an epoch carries the whole epoch's tree event: the
  epoch's cost cannot be split into per-round events that compose (tree RDP
  is not additive in the rounds), and charging it up front means that a
  budget check before the first round covers the whole epoch, and that a
  released round is never uncharged. The epoch's other rounds cost nothing
  more (`NoOpDpEvent`).
  """
  round_num = checks.check_int('round_num', round_num, minimum=1)
  rounds_per_epoch = checks.check_int('rounds_per_epoch',
                                      rounds_per_epoch,
                                      minimum=1)
  if (round_num - 1) % rounds_per_epoch == 0:
    return tree_epoch_event(noise_multiplier=noise_multiplier,
                            rounds_in_epoch=rounds_per_epoch)
  checks.check_real('noise_multiplier', noise_multiplier)
  return dp_event.NoOpDpEvent()


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, population: int, epoch: int) -> np.ndarray:
  # Cached because every round of an epoch needs the same permutation; O(N)
  # to draw, which matters for cross-device populations.
  seed_seq = np.random.SeedSequence(entropy=seed,
                                    spawn_key=(_EPOCH_STREAM_ID, epoch))
  order = np.random.default_rng(seed_seq).permutation(population)
  order = order.astype(np.int64, copy=False)
  order.setflags(write=False)
  return order


@dataclasses.dataclass(frozen=True)
class EpochSampler:
  """Cohorts of shuffled epochs, statelessly and reproducibly.

  Attributes:
    population: Number of clients N (from the data).
    clients_per_round: n, the exact size of every cohort.
    seed: Non-negative int below 2**128 (the run's sampling secret); with the
      epoch it determines the epoch's permutation, so a resumed run redraws
      the original cohorts.
  """

  population: int
  clients_per_round: int
  seed: int

  def __post_init__(self):
    checks.check_int('population', self.population, minimum=1)
    checks.check_int('clients_per_round', self.clients_per_round, minimum=1)
    if self.clients_per_round > self.population:
      raise ValueError(
          f'clients_per_round must be <= population ({self.population}), '
          f'got {self.clients_per_round}.')
    checks.check_int('seed', self.seed, minimum=0)
    if self.seed >= _MAX_SEED:
      raise ValueError(f'seed must be < 2**128, got {self.seed}.')

  @property
  def rounds_per_epoch(self) -> int:
    """R = N // n full cohorts per epoch (the remainder sits out)."""
    return self.population // self.clients_per_round

  @property
  def clients_per_epoch(self) -> int:
    """Clients that take part in each epoch: R * n <= N."""
    return self.rounds_per_epoch * self.clients_per_round

  def epoch_of(self, round_num: int) -> int:
    """0-based epoch of 1-based round `round_num`."""
    round_num = checks.check_int('round_num', round_num, minimum=1)
    return (round_num - 1) // self.rounds_per_epoch

  def round_in_epoch(self, round_num: int) -> int:
    """1-based position of round `round_num` within its epoch (1..R)."""
    round_num = checks.check_int('round_num', round_num, minimum=1)
    return (round_num - 1) % self.rounds_per_epoch + 1

  def is_epoch_start(self, round_num: int) -> bool:
    """True for rounds 1, R + 1, 2R + 1, ...: a fresh tree starts there."""
    return self.round_in_epoch(round_num) == 1

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The read-only permutation of all N clients for 0-based `epoch`."""
    epoch = checks.check_int('epoch', epoch, minimum=0)
    return _epoch_permutation(self.seed, self.population, epoch)

  def sample(self, round_num: int) -> np.ndarray:
    """Returns the cohort of 1-based round `round_num`.

    Depends only on `(seed, epoch_of(round_num))` and the position in the
    epoch: calling it twice, or after a restart, gives the same cohort.

    Args:
      round_num: Round number, >= 1.

    Returns:
      Sorted 1-D int64 array of exactly `clients_per_round` distinct client
      indices in [0, population), disjoint from every other cohort of the
      same epoch.
    """
    position = self.round_in_epoch(round_num) - 1
    order = self.epoch_order(self.epoch_of(round_num))
    n = self.clients_per_round
    return np.sort(order[position * n:(position + 1) * n])

  def round_event(self, round_num: int, *,
                  noise_multiplier: float) -> dp_event.DpEvent:
    """The ledger entry of round `round_num` (see `tree_round_event`)."""
    return tree_round_event(round_num,
                            noise_multiplier=noise_multiplier,
                            rounds_per_epoch=self.rounds_per_epoch)
