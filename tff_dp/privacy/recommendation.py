"""Recommendation: which cohort size and how many rounds, for a fixed epsilon.

For a target (epsilon, delta) and a population of N clients, each candidate
(cohort size m, rounds T) gets the noise multiplier z that meets the target
(`calibration.calibrate_noise_for_accountants`, the calibration
`--target_epsilon` uses in training, so a row's z is the one a run with
`--clients_per_round=m --rounds=T --target_epsilon=E` trains with) and the
standard deviation of the noise on the averaged update, z * C / m for the
clip C: the DP aggregator adds N(0, (z C)^2) to the sum of m clipped updates
and divides by the fixed m.

The trade-off (McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially
Private Recurrent Language Models", ICLR, Sec. 3): at a fixed epsilon, a
larger cohort raises the sampling rate q = m / N, so each round costs more
and z must rise. Amplification by sampling (Abadi et al. 2016; the sampled
Gaussian's Renyi DP: Mironov 2017, "Renyi Differential Privacy", and
Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled
Gaussian Mechanism") decides by how much: for large z a sampled round costs
about what a Gaussian of multiplier z / q costs, so z grows in proportion to
m and the noise on the average, z C / m, stays about flat; for z around 1 or
below, z grows much more slowly than m and z C / m falls (measured: at
epsilon 5, N = 700, 50 rounds, each doubling of m from 35 to 280 multiplies
z by 1.33, 1.53, 1.74). More rounds cost budget too, and z rises with T.

Marks (`least_noise`, `least_noise_per_work`):

* least noise: the rows meeting the budget whose noise std is the smallest
  of all rows meeting the budget (ties all marked);
* least noise for its work: among the rows meeting the budget with the same
  total work m * T (client updates computed over the run), the ones with the
  smallest noise std; only for work levels with at least two such rows,
  since a row alone is trivially the least of its level.

A mark compares the noise of one round's average, which is what the budget
buys; it does not say which setting trains the better model (fewer rounds
also means fewer model updates). Since every row shares C, the marks do not
depend on it. Pure Python (no TensorFlow).
"""

import dataclasses
import math
from typing import Callable, Optional, Sequence

from dp_accounting import dp_event

from tff_dp import checks
from tff_dp.cohorts.sampling import ClientSampling
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy.accounting import AccountantKind

# The default candidates: the configured cohort times these factors (q
# doubling), the configured rounds times these. Powers of two make m * T
# coincide along diagonals, so rows of equal total work can be compared.
COHORT_FACTORS = (0.25, 0.5, 1, 2, 4)
ROUND_FACTORS = (0.5, 1, 2)
# Sampling schemes whose cohort size is a free choice below N.
_SAMPLINGS = (ClientSampling.POISSON, ClientSampling.FIXED_SIZE)


@dataclasses.dataclass(frozen=True)
class Row:
  """One candidate setting and what the budget allows there.

  Attributes:
    clients_per_round: The cohort size m (expected size under Poisson).
    rounds: The number of rounds T.
    sampling_rate: q = m / N.
    noise_multiplier: The calibrated z; None if the budget cannot be met.
    epsilon: The epsilon z gives, accounted again (the smallest among the
      accountants); None if the budget cannot be met.
    accountant: The accountant that certified z; None likewise.
    noise_std: z * C / m, the noise std of the averaged update; None
      likewise.
    total_work: m * T, the client updates computed over the run.
    unreachable: Why the budget cannot be met here; None if it can.
  """
  clients_per_round: int
  rounds: int
  sampling_rate: float
  noise_multiplier: Optional[float]
  epsilon: Optional[float]
  accountant: Optional[AccountantKind]
  noise_std: Optional[float]
  total_work: int
  unreachable: Optional[str] = None

  @property
  def meets_budget(self) -> bool:
    return self.unreachable is None


# Whether training would accept a row's setting (see `least_noise`).
Runnable = Callable[[Row], bool]


def candidate_cohorts(*, population: int, clients_per_round: int) -> list[int]:
  """The default cohorts: m times `COHORT_FACTORS`, rounded, in [1, N]."""
  population = checks.check_int('population', population, minimum=1)
  m = checks.check_int('clients_per_round', clients_per_round, minimum=1)
  cohorts = {max(1, round(m * f)) for f in COHORT_FACTORS}
  return sorted(c for c in cohorts if c <= population)


def candidate_rounds(*, rounds: int) -> list[int]:
  """The default round counts: T times `ROUND_FACTORS`, rounded, >= 1."""
  rounds = checks.check_int('rounds', rounds, minimum=1)
  return sorted({max(1, round(rounds * f)) for f in ROUND_FACTORS})


def _check_candidates(name: str, values: Sequence[int]) -> list[int]:
  if not values:
    raise ValueError(f'{name} must not be empty.')
  return sorted({checks.check_int(name, v, minimum=1) for v in values})


def build_table(*, target_epsilon: float, delta: float, population: int,
                sampling: ClientSampling, accountants: Sequence[AccountantKind],
                clip: float, cohorts: Sequence[int],
                rounds: Sequence[int]) -> list[Row]:
  """A row per (cohort, rounds), cohorts first, both ascending.

  Args:
    target_epsilon: The budget epsilon, at `delta`.
    delta: The target delta.
    population: The number of clients N.
    sampling: `POISSON` or `FIXED_SIZE` (a cohort below N is a choice).
    accountants: Those of the run (`--accountants`); the smallest z any of
      them certifies is taken, as training does.
    clip: The clip norm C of the noise std column.
    cohorts: Candidate cohort sizes m; m > N gives an unreachable row.
    rounds: Candidate round counts T.

  Returns:
    The rows; a setting that cannot meet the budget is a row with
    `unreachable` set.

  Raises:
    ValueError, TypeError: For invalid arguments.
    accounting.UnsupportedAccountingError: If no accountant applies.
  """
  population = checks.check_int('population', population, minimum=1)
  clip = checks.check_real('clip', clip, positive=True)
  if sampling not in _SAMPLINGS:
    raise ValueError(f'sampling must be one of {[s.value for s in _SAMPLINGS]}'
                     f' (a cohort size to choose), got {sampling}.')
  if not accountants:
    raise ValueError('accountants must not be empty.')
  cohorts = _check_candidates('cohorts', cohorts)
  rounds = _check_candidates('rounds', rounds)
  common = dict(target_epsilon=target_epsilon,
                delta=delta,
                population=population,
                sampling=sampling,
                accountants=tuple(accountants),
                clip=clip)
  return [_row(m=m, t=t, **common) for m in cohorts for t in rounds]


def _row(*, m, t, target_epsilon, delta, population, sampling, accountants,
         clip) -> Row:
  """The row of cohort m and t rounds (see `Row`)."""
  blank = dict(clients_per_round=m,
               rounds=t,
               sampling_rate=m / population,
               noise_multiplier=None,
               epsilon=None,
               accountant=None,
               noise_std=None,
               total_work=m * t)
  if m > population:
    return Row(**blank,
               unreachable=f'more clients than the population N = '
               f'{population}')
  try:
    z, kind = calibration.calibrate_noise_for_accountants(
        target_epsilon=target_epsilon,
        delta=delta,
        rounds=t,
        sampling=sampling,
        population=population,
        clients_per_round=m,
        accountants=accountants)
  except calibration.UnreachableBudgetError as e:
    return Row(**blank, unreachable=str(e))
  epsilon = accounted_epsilon(noise_multiplier=z,
                              delta=delta,
                              rounds=t,
                              sampling=sampling,
                              population=population,
                              clients_per_round=m,
                              accountants=accountants)
  return dataclasses.replace(Row(**blank),
                             noise_multiplier=z,
                             epsilon=epsilon,
                             accountant=kind,
                             noise_std=z * clip / m)


def accounted_epsilon(*, noise_multiplier: float, delta: float, rounds: int,
                      sampling: ClientSampling, population: int,
                      clients_per_round: int,
                      accountants: Sequence[AccountantKind]) -> float:
  """The guarantee `./run.sh epsilon` states for these settings.

  The smallest epsilon among `accountants` (`accounting.tightest_epsilon`)
  of `rounds` sampled Gaussian rounds; an accountant that cannot compose
  them is left out, as the planner leaves it out.
  """
  relation = accounting.neighboring_relation(sampling)
  event = dp_event.SelfComposedDpEvent(
      accounting.gaussian_round_event(sampling=sampling,
                                      population=population,
                                      clients_per_round=clients_per_round,
                                      noise_multiplier=noise_multiplier),
      rounds)
  epsilons = {}
  for kind in accountants:
    try:
      epsilons[kind] = accounting.compute_epsilon([event],
                                                  delta=delta,
                                                  accountant=kind,
                                                  relation=relation)
    except accounting.UnsupportedAccountingError:
      epsilons[kind] = math.nan
  tightest = accounting.tightest_epsilon(epsilons)
  if tightest is None:
    raise accounting.UnsupportedAccountingError(
        f'none of the accountants {[k.value for k in accountants]} can '
        f'account {sampling.value} sampling')
  return tightest[1]


def _least(rows: Sequence[Row], runnable: Optional[Runnable]) -> list[Row]:
  """The rows among `rows` meeting the budget (and runnable, when
  `runnable` is given) with the smallest noise std."""
  meeting = [
      row for row in rows
      if row.meets_budget and (runnable is None or runnable(row))
  ]
  if not meeting:
    return []
  least = min(row.noise_std for row in meeting)
  return [row for row in meeting if row.noise_std == least]


def least_noise(rows: Sequence[Row],
                runnable: Optional[Runnable] = None) -> list[Row]:
  """The 'least noise' mark: the least noise std of all rows meeting the
  budget (every row with that std; empty if no row meets it).

  Args:
    rows: The table.
    runnable: Whether training would accept a row's setting (e.g. adaptive
      clipping refuses z >= 0.1 * m); rows it rejects are never marked, so a
      mark always points at a setting that can run. None: every row can.
  """
  return _least(rows, runnable)


def least_noise_per_work(
    rows: Sequence[Row],
    runnable: Optional[Runnable] = None) -> dict[int, list[Row]]:
  """The 'least noise for its work' marks, by total work m * T.

  Only work levels with at least two rows meeting the budget (and runnable,
  as in `least_noise`) have an entry.
  """
  levels: dict[int, list[Row]] = {}
  for row in rows:
    if row.meets_budget and (runnable is None or runnable(row)):
      levels.setdefault(row.total_work, []).append(row)
  return {
      work: _least(level, runnable)
      for work, level in sorted(levels.items())
      if len(level) >= 2
  }
