"""Which canary clients join a run, which are inserted, and when they report.

The canary clients of an audit run (Andrew, Kairouz, Oh, Oprea, McMahan,
Suriyakumar 2024, "One-shot Empirical Privacy Estimation for Federated
Learning") join the population as clients N..N+M-1 and are sampled exactly
like the N real clients, by the run's own sampler over N + M clients. Each
canary is inserted with probability 1/2 (Steinke, Nasr, Jagielski 2023,
"Privacy Auditing with One (1) Training Run"): an inserted canary that is
sampled sends its secret direction scaled far past the clip; one that is not
inserted is the neighbour the accountant assumes: absent under add/remove-one
adjacency, a client sending a zero update under replace-one adjacency.

This module decides only the discrete part (the plan and each round's canary
slots); the directions live in `tff_dp.mechanisms.canaries`. Pure numpy.
"""

import dataclasses
import secrets as os_secrets
from typing import Iterable, Sequence

import numpy as np

# A canary's update is its unit direction times this many clips: far past
# any clip the mechanism can reach, so clipping always binds.
CANARY_SCALE_IN_CLIPS = 1e3

# Codes of a round's canary slots (`CanaryPlan.round_codes`): a code >= 0 is
# the canary whose update joins the sum; these two are the others.
PADDING = -1
ZERO_UPDATE = -2


def default_canaries(population: int, *, limit: int = 1000) -> int:
  """The default M for N real clients: half of them, at most `limit`."""
  return max(2, min(population // 2, limit))


@dataclasses.dataclass(frozen=True, eq=False)
class CanaryPlan:
  """The canaries of one audit run.

  Attributes:
    population: N, the real clients (indices 0..N-1).
    inserted: [M] bool, which canaries are inserted (secret of the auditor).
    absent_if_not_inserted: True under add/remove-one adjacency (a canary
      that is not inserted is absent), False under replace-one (it sends a
      zero update).
  """
  population: int
  inserted: np.ndarray
  absent_if_not_inserted: bool

  def __post_init__(self):
    if self.population < 1:
      raise ValueError(f'population must be >= 1, got {self.population}')
    if self.inserted.ndim != 1 or self.inserted.dtype != bool:
      raise ValueError('inserted must be a 1-D bool array')
    if self.canaries < 2:
      raise ValueError(f'an audit needs at least 2 canaries, got '
                       f'{self.canaries}')

  @classmethod
  def draw(cls, *, population: int, canaries: int,
           absent_if_not_inserted: bool) -> 'CanaryPlan':
    """A plan whose insertions are drawn from the operating system."""
    rng = np.random.default_rng(os_secrets.randbits(128))
    return cls(population=population,
               inserted=rng.random(canaries) < 0.5,
               absent_if_not_inserted=absent_if_not_inserted)

  @property
  def canaries(self) -> int:
    """M, the canary clients."""
    return int(self.inserted.size)

  @property
  def total_population(self) -> int:
    """N + M: the population the sampler draws from and the ledger charges."""
    return self.population + self.canaries

  def real_clients(self, cohort: Sequence[int]) -> np.ndarray:
    """The cohort's real clients (indices below N), in order."""
    cohort = np.asarray(cohort, dtype=np.int64)
    return cohort[cohort < self.population]

  def round_codes(self, cohort: Sequence[int]) -> list[int]:
    """The codes of a cohort's canaries (see `PADDING`, `ZERO_UPDATE`)."""
    codes = []
    for client in np.asarray(cohort, dtype=np.int64):
      canary = int(client) - self.population
      if canary < 0:
        continue
      if self.inserted[canary]:
        codes.append(canary)
      elif not self.absent_if_not_inserted:
        codes.append(ZERO_UPDATE)
    return codes

  def schedule(self, cohorts: Iterable[Sequence[int]]) -> np.ndarray:
    """Each round's canary codes as an int32 table, padded with `PADDING`.

    Args:
      cohorts: The reporting cohort of rounds 1, 2, ... (over N + M).

    Returns:
      [rounds + 1, S] int32, S >= 1 the most canary slots of any round; row
      r - 1 is round r and the last row is all padding (rounds past the
      table add no canary).
    """
    rows = [self.round_codes(cohort) for cohort in cohorts]
    width = max([len(row) for row in rows] + [1])
    table = np.full((len(rows) + 1, width), PADDING, np.int32)
    for i, row in enumerate(rows):
      table[i, :len(row)] = row
    return table
