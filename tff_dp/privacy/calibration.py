"""Calibration: the noise multiplier (or rounds) that reach a target epsilon.

Brent's method (as in `dp_accounting.calibrate_dp_mechanism`) for the noise
multiplier and an integer bisection for rounds, both through
`accounting.compute_epsilon`, so a calibrated setting is accounted exactly as
a run with it will be, including the smaller of fixed-size sampling's two
bounds (which a fresh dp-accounting accountant cannot compute).

Printed values must keep the guarantee when typed back in: a calibrated z
rounded to the nearest 6 digits can round DOWN and overshoot the target
(1.2105022 printed as 1.2105 gave epsilon 5.00002 > 5). So
`calibrate_noise_multiplier` returns a z with at most 6 significant digits,
checked at exactly that value, and `format_noise_multiplier` rounds any z UP
to 6 significant digits (more noise never costs more epsilon). Calibrated
round counts are integers and print exactly.
"""

import decimal
from typing import Sequence

from dp_accounting import dp_event
from scipy import optimize

from tff_dp import checks
from tff_dp.cohorts.sampling import ClientSampling
from tff_dp.privacy import accounting
from tff_dp.privacy.accounting import AccountantKind

# Below this multiplier one round already costs epsilon ~50 at delta 1e-5, and
# PLD grids grow as 1/z**2; a target that loose is almost surely a mistake.
_MIN_CALIBRATED_NOISE = 0.1
_MAX_CALIBRATED_NOISE = 2.0**20
_MAX_CALIBRATED_ROUNDS = 2**40


class UnreachableBudgetError(ValueError):
  """No noise multiplier calibration accepts meets the target epsilon.

  Accepted multipliers lie in [0.1, 2**20]: above, the target needs absurd
  noise (it is unreachable in practice); below, it is so loose that it is
  almost surely a mistake. A `ValueError`, so callers that catch bad inputs
  keep working; the recommendation table catches this one alone to mark a
  setting that cannot meet the budget, while invalid inputs still raise.
  """


def _check_targets(target_epsilon, delta):
  checks.check_real('target_epsilon', target_epsilon, positive=True)
  checks.check_real('delta', delta, positive=True, below_one=True)


def calibrate_noise_multiplier(*, target_epsilon: float, delta: float,
                               rounds: int, sampling: ClientSampling,
                               population: int, clients_per_round: int,
                               accountant: AccountantKind) -> float:
  """Smallest 6-significant-digit z whose `rounds` rounds cost <= target.

  Returns:
    z with at most 6 significant digits (`f'{z:.6g}'` prints it exactly),
    within ~1e-5 relative above the exact boundary, checked with
    `accounting.compute_epsilon` at exactly this value.

  Raises:
    UnreachableBudgetError: If no z in [0.1, 2**20] meets the target.
    ValueError: For invalid arguments (e.g. more clients than the
      population); TypeError for arguments of the wrong type.
    accounting.UnsupportedAccountingError: If `accountant` cannot compose
      the rounds.
  """
  _check_targets(target_epsilon, delta)
  rounds = checks.check_int('rounds', rounds, minimum=1)
  relation = accounting.neighboring_relation(sampling)

  def event(z):
    return dp_event.SelfComposedDpEvent(
        accounting.gaussian_round_event(sampling=sampling,
                                        population=population,
                                        clients_per_round=clients_per_round,
                                        noise_multiplier=z), rounds)

  def eps(z):
    return accounting.compute_epsilon([event(z)],
                                      delta=delta,
                                      accountant=accountant,
                                      relation=relation)

  accounting.check_supported(event(1.0),
                             accountant=accountant,
                             relation=relation)
  # An explicit bracket (calibrate_dp_mechanism's default starts at z = 0,
  # a non-private event) keeps every probe meaningful.
  hi = 1.0
  while eps(hi) > target_epsilon:
    hi *= 2
    if hi > _MAX_CALIBRATED_NOISE:
      raise UnreachableBudgetError(
          f'No noise multiplier <= {_MAX_CALIBRATED_NOISE} '
          f'reaches epsilon {target_epsilon}.')
  lo = hi / 2
  while eps(lo) <= target_epsilon:
    hi, lo = lo, lo / 2
    if lo < _MIN_CALIBRATED_NOISE:
      raise UnreachableBudgetError(
          f'target_epsilon {target_epsilon} is reached with noise'
          f' multiplier < {_MIN_CALIBRATED_NOISE}; refusing to '
          f'calibrate to such a weak guarantee.')
  # brentq needs eps(lo) > target >= eps(hi), which the loops above ensure;
  # 1e-7 relative is finer than the 6-digit grid the result is rounded to.
  z = optimize.brentq(lambda z: eps(z) - target_epsilon, lo, hi, xtol=1e-7 * lo)
  return _round_up_until_within(z, eps, target_epsilon)


def _round_up_until_within(z: float, eps, target_epsilon: float) -> float:
  """The smallest 6-significant-digit value >= z (stepping up) that fits."""
  z = float(format_noise_multiplier(z))
  for _ in range(64):
    if eps(z) <= target_epsilon:
      return z
    z = float(format_noise_multiplier(z * (1 + 1e-6)))
  raise RuntimeError(f'Calibration overshot epsilon {target_epsilon} at z={z}.')


def format_noise_multiplier(z: float) -> str:
  """`z` printed with 6 significant digits, rounded UP: 1.2105022 -> '1.21051'.

  Use this to print a calibrated noise multiplier: the printed value, given
  back as --noise_multiplier, parses to at least `z`, so it has at least as
  much noise and reaches at most the epsilon `z` reaches. (`f'{z:.6g}'`
  rounds to nearest, which can be below z.)

  Args:
    z: A finite noise multiplier >= 0.

  Returns:
    The smallest 6-significant-digit decimal whose float is >= z, in the
    format of `f'{z:.6g}'`.
  """
  z = checks.check_real('noise_multiplier', z)
  text = f'{z:.6g}'  # The nearest: kept when it does not parse below z.
  if float(text) >= z:
    return text
  exact = decimal.Decimal(z)  # The float's exact binary value.
  step = decimal.Decimal(1).scaleb(exact.adjusted() - 5)
  rounded = exact.quantize(step, rounding=decimal.ROUND_CEILING)
  # `rounded` has 6 significant digits, so this prints it exactly, and it is
  # >= z, so it parses to >= z (rounding to the nearest float is monotone).
  return f'{float(rounded):.6g}'


def calibrate_rounds(*, target_epsilon: float, delta: float,
                     noise_multiplier: float, sampling: ClientSampling,
                     population: int, clients_per_round: int,
                     accountant: AccountantKind) -> int:
  """Largest number of rounds whose epsilon is <= target_epsilon (may be 0).

  An integer bisection rather than `calibrate_dp_mechanism(discrete=True)`:
  its invariant (fits(lo), not fits(hi), hi = lo + 1 at the end) states the
  boundary property directly instead of via Brent's method on a rounded
  function, and its probes go through `compute_epsilon`, which computes the
  RDP curve once (a fixed-size curve costs ~0.3 s) instead of per probe.
  """
  _check_targets(target_epsilon, delta)
  relation = accounting.neighboring_relation(sampling)
  round_event = accounting.gaussian_round_event(
      sampling=sampling,
      population=population,
      clients_per_round=clients_per_round,
      noise_multiplier=noise_multiplier)
  accounting.check_supported(round_event,
                             accountant=accountant,
                             relation=relation)

  def fits(rounds: int) -> bool:
    return accounting.compute_epsilon(
        [dp_event.SelfComposedDpEvent(round_event, rounds)],
        delta=delta,
        accountant=accountant,
        relation=relation) <= target_epsilon

  if not fits(1):
    return 0
  lo, hi = 1, 2  # Invariant: fits(lo) and (hi unknown or not fits(hi)).
  while fits(hi):
    lo, hi = hi, hi * 2
    if hi > _MAX_CALIBRATED_ROUNDS:
      raise ValueError(f'The budget allows more than {_MAX_CALIBRATED_ROUNDS}'
                       ' rounds; check the noise multiplier.')
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def calibrate_noise_for_accountants(
    *, target_epsilon: float, delta: float, rounds: int,
    sampling: ClientSampling, population: int, clients_per_round: int,
    accountants: Sequence[AccountantKind]) -> tuple[float, AccountantKind]:
  """The smallest z any of `accountants` certifies for the target.

  The guarantee a run states is the smallest epsilon among its accountants
  (`accounting.tightest_epsilon`), so the noise needed is the smallest z that
  one of them certifies. Accountants that cannot compose the events are
  skipped.

  Returns:
    (z, the accountant that certifies it).

  Raises:
    accounting.UnsupportedAccountingError: If no accountant applies.
    UnreachableBudgetError: If an accountant finds no z in [0.1, 2**20].
  """
  results = []
  for kind in accountants:
    try:
      z = calibrate_noise_multiplier(target_epsilon=target_epsilon,
                                     delta=delta,
                                     rounds=rounds,
                                     sampling=sampling,
                                     population=population,
                                     clients_per_round=clients_per_round,
                                     accountant=kind)
    except accounting.UnsupportedAccountingError:
      continue
    results.append((z, kind))
  if not results:
    raise accounting.UnsupportedAccountingError(
        f'none of the accountants {[k.value for k in accountants]} can '
        f'account {sampling.value} sampling')
  return min(results, key=lambda item: item[0])
