"""Privacy accounting: the one place that turns "what ran" into epsilons.

Each released round is one `dp_accounting.DpEvent`, built from the
`ClientSampler` that actually drew the cohort (`round_event_for`), appended to a
`tff_dp.privacy.privacy_ledger.PrivacyLedger`, and composed by dp-accounting's RDP or PLD accountant.

Sources of the formulas:

* Poisson sampling + Gaussian noise (DP-FedAvg): McMahan et al. 2018, "Learning
  differentially private recurrent language models"; RDP of the sampled
  Gaussian mechanism: Mironov, Talwar, Zhang 2019; add/remove-one adjacency.
* Fixed-size sampling without replacement: Wang, Balle, Kasiviswanathan 2019,
  "Subsampled Renyi differential privacy and analytical moments accountant"
  (Theorem 27), which holds under replace-one adjacency only.
* Adaptive clipping: Andrew et al. 2021, "Differentially private learning with
  adaptive clipping" (joint analysis with DP-FedAvg: the noise is split between
  the value query and the clipped-count query so that the pair is one Gaussian
  mechanism of multiplier z; TFF implements the split in
  `tff.aggregators.differential_privacy.adaptive_clip_noise_params`).
* Gaussian queries on the same sample compose into one Gaussian: McMahan et
  al. 2018, "A general approach to adding differential privacy to iterative
  training procedures" (arXiv:1812.06210), Section 3.
* PLD accounting: Koskela, Jalko, Honkela 2020, "Computing tight differential
  privacy guarantees using FFT"; Doroshenko et al. 2022, "Connect the dots:
  tighter discrete approximations of privacy loss distributions"; as
  implemented by dp-accounting (pessimistic discretization), within budgets,
  and exactly for compositions of unsampled Gaussians (`pld_epsilon`).

Fixed-size sampling has two valid bounds, and `compute_epsilon` reports the
smaller one for each accountant:

(a) amplified: each round is `SampledWithoutReplacementDpEvent(N, n,
    GaussianDpEvent(z/2))`, bounded by Wang et al. 2019 (RDP only);
(b) not amplified: each round is `GaussianDpEvent(z/2)`, valid under
    replace-one adjacency (why: `tff_dp.privacy.composition`), which PLD
    computes exactly and RDP by adding its curve.
Wang et al.'s bound is loose when little is sampled away: the smoke preset
with fixed-size sampling (N = 40, n = 10, z = 0.5, 3 rounds, delta 1e-3) gets
(a) 47.28 by RDP while (b) is 44.59 exactly. The ledger keeps the events as
they ran; the minimum is taken when they are composed.

PLD cost is bounded: `tff_dp.privacy.pld_epsilon` coarsens the grid (still an
upper bound) until it fits budgets of grid points (`PLD_MAX_POINTS`,
`PLD_MAX_BUILD_POINTS`, `PLD_MAX_COMPOSED_POINTS`), or raises
`UnsupportedAccountingError` (callers report n/a and use RDP).

Facts about dp-accounting 0.4.3 this module relies on (checked by the tests):
the PLD accountant refuses `SampledWithoutReplacementDpEvent` (used here only
through bound (b)), a `ComposedDpEvent` inside `PoissonSampledDpEvent` and tree
aggregation; the RDP accountant refuses Laplace under Poisson sampling. Such
combinations raise `UnsupportedAccountingError` here, never a number.
"""

import dataclasses
import enum
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting import rdp

from tff_dp import checks
from tff_dp.cohorts import sampling as sampling_lib
from tff_dp.privacy import composition
from tff_dp.privacy import dp_event_json
from tff_dp.privacy import epsilon_cache
from tff_dp.privacy import pld_epsilon

ClientSampling = sampling_lib.ClientSampling
NeighboringRelation = dp_accounting.NeighboringRelation

# PLD value discretization. Discretization is pessimistic, so a coarser grid
# still gives a valid upper bound; it only loosens it. Measured on DP-FedAvg
# settings (1000 rounds, q in [1e-3, 0.3], z in [0.7, 2]) against 1e-5:
# 1e-3 is at most 0.12% looser (0.36% on TF Privacy's MNIST, 14063 steps) and
# takes 50-140 ms, whereas dp-accounting's default 1e-4 takes 0.5-1.3 s, which
# is too slow for a budget check before every round. Pass a finer value to
# `compute_epsilon` for a final report.
PLD_DISCRETIZATION = 1e-3

# PLD budgets in grid points (`pld_epsilon.Budgets`). Read at each
# computation, so that setting them here (as the tests do) takes effect.
PLD_MAX_POINTS = pld_epsilon.MAX_POINTS
PLD_MAX_BUILD_POINTS = pld_epsilon.MAX_BUILD_POINTS
PLD_MAX_COMPOSED_POINTS = pld_epsilon.MAX_COMPOSED_POINTS

LedgerFormatError = dp_event_json.LedgerFormatError
event_to_json = dp_event_json.event_to_json
event_from_json = dp_event_json.event_from_json


class AccountantKind(enum.Enum):
  RDP = 'rdp'
  PLD = 'pld'


# The accountant cannot compose an event under a relation. Defined with the
# PLD arithmetic, which raises it too.
UnsupportedAccountingError = pld_epsilon.UnsupportedAccountingError

# Epsilons computed so far, by composition (`epsilon_cache`).
EPSILONS = epsilon_cache.EpsilonCache()


def tightest_epsilon(
    epsilons: Mapping[AccountantKind, float]
) -> Optional[tuple[AccountantKind, float]]:
  """The accountant with the smallest epsilon, and that epsilon.

  Every accountant gives a valid upper bound, so the smallest one is the
  guarantee we can state. NaN marks an accountant that could not compose the
  events and is ignored; None if no accountant computed anything.
  """
  computed = [
      (kind, eps) for kind, eps in epsilons.items() if not math.isnan(eps)
  ]
  return min(computed, key=lambda item: item[1]) if computed else None


def neighboring_relation(sampling: ClientSampling) -> NeighboringRelation:
  """The adjacency under which `sampling` is accounted (see module doc)."""
  if sampling is ClientSampling.FIXED_SIZE:
    return NeighboringRelation.REPLACE_ONE
  if sampling in (ClientSampling.POISSON, ClientSampling.FULL):
    return NeighboringRelation.ADD_OR_REMOVE_ONE
  if sampling is ClientSampling.SHUFFLED_EPOCHS:
    # Tree aggregation (tff_dp.cohorts.epoch_sampling): a client replaced by a zero
    # client, as dp-accounting's tree event requires.
    return NeighboringRelation.REPLACE_SPECIAL
  raise TypeError(f'sampling must be a ClientSampling, got {sampling!r}.')


def gaussian_round_event(*, sampling: ClientSampling, population: int,
                         clients_per_round: int,
                         noise_multiplier: float) -> dp_event.DpEvent:
  """One round of the central Gaussian mechanism with client sampling.

  Covers TFF's `DifferentiallyPrivateFactory.gaussian_fixed` and
  `gaussian_adaptive`; for the latter pass the nominal total multiplier z.

  Why z/2 for `FIXED_SIZE`: replacing one client moves a C-clipped sum by up
  to 2C while the noise std is z*C, so the multiplier relative to the
  replace-one sensitivity is z/2. Adaptive clipping (Andrew et al. 2021) adds
  a count query with records b - 1/2 (b = 1 if the update was not clipped) and
  noise std sigma_b; TFF picks the value multiplier z_v with
  z**-2 = z_v**-2 + (2 sigma_b)**-2 (adaptive_clip_noise_params). Gaussian
  queries on the same cohort compose into one Gaussian whose inverse squared
  multipliers add (arXiv:1812.06210, Sec. 3). Under add/remove the count
  query has sensitivity 1/2, multiplier 2 sigma_b, and the pair is one
  Gaussian with multiplier z. Under replace-one the count record moves from
  -1/2 to +1/2 (sensitivity 1, multiplier sigma_b) and the value query has
  multiplier z_v/2:
    (z_v/2)**-2 + sigma_b**-2 = 4 (z_v**-2 + (2 sigma_b)**-2) = (z/2)**-2,
  so the pair is again exactly one Gaussian, with multiplier z/2.

  Args:
    sampling: The sampling scheme that drew the cohort.
    population: Number of clients N.
    clients_per_round: n (expected n for `POISSON`).
    noise_multiplier: z = noise std / clip norm (TFF's nominal multiplier).

  Returns:
    The `DpEvent` of one round; `NonPrivateDpEvent` if z == 0.
  """
  sampling_lib.validate_cohort(sampling=sampling,
                               population=population,
                               clients_per_round=clients_per_round)
  z = checks.check_real('noise_multiplier', noise_multiplier)
  if z == 0:
    return dp_event.NonPrivateDpEvent()
  if sampling is ClientSampling.POISSON:
    return dp_event.PoissonSampledDpEvent(
        sampling_probability=clients_per_round / population,
        event=dp_event.GaussianDpEvent(z))
  if sampling is ClientSampling.FIXED_SIZE:
    return dp_event.SampledWithoutReplacementDpEvent(
        source_dataset_size=population,
        sample_size=clients_per_round,
        event=dp_event.GaussianDpEvent(z / 2))
  return dp_event.GaussianDpEvent(z)


def round_event_for(sampler: sampling_lib.ClientSampler, *,
                    noise_multiplier: float) -> dp_event.DpEvent:
  """The `DpEvent` of one round drawn by `sampler` (use this, not a flag)."""
  if not isinstance(sampler, sampling_lib.ClientSampler):
    raise TypeError(f'sampler must be a ClientSampler, got {sampler!r}.')
  return gaussian_round_event(sampling=sampler.sampling,
                              population=sampler.population,
                              clients_per_round=sampler.clients_per_round,
                              noise_multiplier=noise_multiplier)


# --- Composition. ------------------------------------------------------------


def make_accountant(kind: AccountantKind, relation: NeighboringRelation,
                    pld_discretization: float):
  """dp-accounting's accountant of `kind` (for `supports`), from its row."""
  if not isinstance(kind, AccountantKind):
    raise TypeError(f'accountant must be an AccountantKind, got {kind!r}.')
  return ACCOUNTANTS[kind].build(relation, pld_discretization)


def check_supported(event: dp_event.DpEvent, *, accountant: AccountantKind,
                    relation: NeighboringRelation) -> None:
  """Raises `UnsupportedAccountingError` unless `accountant` can compose it.

  "Can compose" includes bound (b) of the module docstring: the PLD
  accountant composes fixed-size rounds without amplification.
  """
  acc = make_accountant(accountant, relation, PLD_DISCRETIZATION)
  if not any(
      acc.supports(bound[0])
      for bound in composition.valid_bounds([event], relation)):
    raise UnsupportedAccountingError(
        f'The {accountant.name} accountant (dp-accounting) cannot compose '
        f'{event} under {relation.name}.')


def compute_epsilon(events: Sequence[dp_event.DpEvent],
                    *,
                    delta: float,
                    accountant: AccountantKind,
                    relation: NeighboringRelation,
                    pld_discretization: float = PLD_DISCRETIZATION) -> float:
  """Epsilon at `delta` of the composition of `events`.

  The smallest of the valid bounds the accountant can compute: for
  sampling without replacement, with and without amplification (module
  docstring); for everything else the one composition.

  Args:
    events: The events, e.g. one per round. Identical events are composed as
      one self-composition (composition is commutative).
    delta: Target delta in (0, 1).
    accountant: Which dp-accounting accountant to use.
    relation: The neighboring relation of the whole run.
    pld_discretization: PLD value discretization interval (the finest used;
      coarser where the grid would exceed the budgets of `pld_epsilon`).

  Returns:
    Epsilon (0.0 for no events, inf if any event is non-private).

  Raises:
    UnsupportedAccountingError: If the accountant can compute no bound.
  """
  return EPSILONS.get_or_compute(
      *_request(events, delta, accountant, relation, pld_discretization))


def _request(events, delta, accountant, relation, pld_discretization):
  """(cache key, computation) of `compute_epsilon`'s arguments, checked."""
  delta = checks.check_real('delta', delta, positive=True, below_one=True)
  pld_discretization = checks.check_real('pld_discretization',
                                         pld_discretization,
                                         positive=True)
  if not isinstance(relation, NeighboringRelation):
    raise TypeError(f'relation must be a NeighboringRelation, got {relation!r}')
  if not isinstance(accountant, AccountantKind):
    raise TypeError(f'accountant must be an AccountantKind, got '
                    f'{accountant!r}.')
  events = list(events)
  budgets = _budgets()
  # The same composition is asked for twice per round (epsilon_cache).
  key = (epsilon_cache.composition_key(events), accountant, relation, delta,
         pld_discretization) + budgets

  def compute() -> float:
    return _computed_epsilon(events, delta, accountant, relation,
                             pld_discretization)

  return key, compute


def _budgets() -> tuple[int, int, int]:
  return PLD_MAX_POINTS, PLD_MAX_BUILD_POINTS, PLD_MAX_COMPOSED_POINTS


def _computed_epsilon(events, delta: float, accountant: AccountantKind,
                      relation: NeighboringRelation,
                      pld_discretization: float) -> float:
  """`compute_epsilon`, computed (its arguments checked)."""
  epsilons, refusals = [], []
  for bound in composition.valid_bounds(events, relation):
    groups = composition.group_events(bound)
    try:
      for _, event, _ in groups:
        if not make_accountant(accountant, relation,
                               PLD_DISCRETIZATION).supports(event):
          raise UnsupportedAccountingError(
              f'The {accountant.name} accountant (dp-accounting) cannot '
              f'compose {event} under {relation.name}.')
      if not groups:
        epsilons.append(0.0)
      else:
        epsilons.append(ACCOUNTANTS[accountant].epsilon(groups, delta, relation,
                                                        pld_discretization))
    except UnsupportedAccountingError as e:
      refusals.append(e)
  if not epsilons:
    raise refusals[0]
  return min(epsilons)


def _rdp_epsilon(groups, delta: float, relation: NeighboringRelation,
                 discretization: float) -> float:
  del discretization  # PLD only.
  return composition.rdp_epsilon(groups, delta, relation)


def _pld_epsilon(groups, delta: float, relation: NeighboringRelation,
                 discretization: float) -> float:
  # Checked by `supports` first: dp-accounting composes Poisson sampling under
  # add/remove only, and the unsampled events the same under every relation.
  del relation
  budgets = pld_epsilon.Budgets(points=PLD_MAX_POINTS,
                                build_points=PLD_MAX_BUILD_POINTS,
                                composed_points=PLD_MAX_COMPOSED_POINTS)
  return pld_epsilon.epsilon(groups, delta, discretization, budgets)


# --- The accountants: one row each. -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Accountant:
  """One `AccountantKind`: how to build it and compose with it, and its words.

  Its `--accountants` value, its released key (`released_key`) and the
  release allow-list entry follow from the kind; adding an accountant is an
  `AccountantKind` value and one row of `ACCOUNTANTS`.

  Attributes:
    build: (relation, pld_discretization) -> dp-accounting's accountant,
      asked which events it `supports`.
    epsilon: (groups of identical events, delta, relation,
      pld_discretization) -> epsilon of their composition.
    words: How the privacy statement names it.
  """
  build: Callable[[NeighboringRelation, float], Any]
  epsilon: Callable[[list, float, NeighboringRelation, float], float]
  words: str


ACCOUNTANTS = {
    AccountantKind.RDP:
        Accountant(build=lambda relation, _: rdp.RdpAccountant(
            neighboring_relation=relation),
                   epsilon=_rdp_epsilon,
                   words='RDP accountant, dp-accounting'),
    AccountantKind.PLD:
        Accountant(
            build=lambda relation, discretization: pld.PLDAccountant(
                neighboring_relation=relation,
                value_discretization_interval=discretization),
            epsilon=_pld_epsilon,
            words=(
                f'PLD accountant, dp-accounting, value discretization '
                f'{PLD_DISCRETIZATION:g}, coarser where a round alone costs a '
                'very large epsilon (still an upper bound); compositions of '
                'unsampled Gaussians exactly; under fixed-size sampling the '
                'unamplified bound')),
}


def released_key(kind: AccountantKind) -> str:
  """The key under which a run releases the central epsilon of `kind`."""
  return f'privacy/epsilon_{kind.value}'
