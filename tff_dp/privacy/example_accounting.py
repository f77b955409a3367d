"""Record-level epsilon of each silo running example-level DP-SGD.

Accounts `tff_dp.algorithms.example_dp`: DP-SGD of Abadi et al. 2016, "Deep Learning with
Differential Privacy" (CCS), with Poisson-sampled batches, whose steps are
sampled Gaussian mechanisms (Mironov, Talwar, Zhang 2019, "Renyi Differential
Privacy of the Sampled Gaussian Mechanism"; PLD: Koskela, Jalko, Honkela 2020
and Doroshenko et al. 2022, as implemented by dp-accounting).

Unit of privacy: one RECORD of one silo, under add/remove-one-record adjacency.
Silo k holds n_k records and runs `local_steps` DP-SGD steps each round it
takes part in; each step is `PoissonSampledDpEvent(q_k, GaussianDpEvent(z))`
with q_k = min(1, B / n_k). A record lives in one silo only, so silo k's
guarantee is the composition of its own local_steps * count_k steps, whatever
the other silos do; the guarantee for every record of the federation is the
worst (largest) silo epsilon. We claim no amplification from the sampling of
silos, nor any help from a central DP aggregator: both would only lower it.

A silo with n_k <= B has q_k = 1: every record is in every batch, there is no
amplification, and each step is accounted as the plain `GaussianDpEvent(z)`
(which is what `PoissonSampledDpEvent` with q = 1 means; a test checks that
both accountants agree). Like Opacus and TF Privacy, we treat n_k as public:
q_k is computed from it, and it is stored in the ledger.

Pure Python: no TensorFlow import (checked in a subprocess by the tests).
"""

import dataclasses
import math
import numbers
from typing import Iterable, Mapping, Optional, Sequence

from dp_accounting import dp_event

from tff_dp import checks
from tff_dp.privacy import accounting
from tff_dp.privacy import ledger_json

AccountantKind = accounting.AccountantKind
RELATION = accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
FORMAT_VERSION = 1
_SILO_KEYS = frozenset({'num_examples', 'participations'})
_KEYS = frozenset({
    'format_version', 'unit', 'neighboring_relation', 'noise_multiplier',
    'expected_batch_size', 'local_steps', 'rounds', 'silos'
})


class SiloLedgerFormatError(ValueError):
  """A saved silo ledger is malformed."""


@dataclasses.dataclass(frozen=True)
class ExampleDpSettings:
  """The public parameters of the silos' DP-SGD (see `tff_dp.algorithms.example_dp`)."""
  noise_multiplier: float
  expected_batch_size: int
  local_steps: int

  def __post_init__(self):
    object.__setattr__(
        self, 'noise_multiplier',
        checks.check_real('noise_multiplier', self.noise_multiplier))
    object.__setattr__(
        self, 'expected_batch_size',
        checks.check_int('expected_batch_size',
                         self.expected_batch_size,
                         minimum=1))
    object.__setattr__(
        self, 'local_steps',
        checks.check_int('local_steps', self.local_steps, minimum=1))


def silo_sampling_rate(*, num_examples: int, expected_batch_size: int) -> float:
  """q_k = min(1, B / n_k), the same float64 value the client computes."""
  n = checks.check_int('num_examples', num_examples, minimum=1)
  batch = checks.check_int('expected_batch_size',
                           expected_batch_size,
                           minimum=1)
  return min(1.0, batch / n)


def step_event(*, num_examples: int,
               settings: ExampleDpSettings) -> dp_event.DpEvent:
  """The DpEvent of one DP-SGD step of a silo with `num_examples` records."""
  q = silo_sampling_rate(num_examples=num_examples,
                         expected_batch_size=settings.expected_batch_size)
  if settings.noise_multiplier == 0:
    return dp_event.NonPrivateDpEvent()
  gaussian = dp_event.GaussianDpEvent(settings.noise_multiplier)
  return gaussian if q >= 1 else dp_event.PoissonSampledDpEvent(q, gaussian)


@dataclasses.dataclass(frozen=True)
class SiloEpsilon:
  """One silo's record-level privacy loss."""
  silo: int
  num_examples: int
  sampling_rate: float
  steps: int
  epsilons: Mapping[AccountantKind, float]  # NaN: could not compose.

  @property
  def guarantee(self) -> Optional[tuple[AccountantKind, float]]:
    return accounting.tightest_epsilon(self.epsilons)


@dataclasses.dataclass(frozen=True)
class RecordLevelReport:
  """Per-silo epsilons at `delta`, and the worst case over silos."""
  delta: float
  silos: tuple[SiloEpsilon, ...]

  def worst_by_accountant(self) -> dict[AccountantKind, float]:
    """Max over silos per accountant (NaN if any silo's value is unknown)."""
    kinds = {kind for silo in self.silos for kind in silo.epsilons}
    return {
        kind:
            max((silo.epsilons.get(kind, math.nan) for silo in self.silos),
                key=_nan_first) for kind in kinds
    }

  def worst(self) -> Optional[SiloEpsilon]:
    """The silo with the largest stated guarantee; None if any is unknown.

    Each silo's guarantee is its tightest accountant, so the federation-wide
    record-level epsilon is the max over silos of those minima.
    """
    if not self.silos or any(s.guarantee is None for s in self.silos):
      return None
    return max(self.silos, key=lambda s: s.guarantee[1])

  def worst_epsilon(self) -> Optional[float]:
    worst = self.worst()
    return None if worst is None else worst.guarantee[1]


def _nan_first(value: float) -> float:
  # An unknown epsilon must win the max: it could be anything.
  return math.inf if math.isnan(value) else value


class SiloLedger:
  """Participation counts of each silo; turns them into record-level epsilons.

  Record a round (`record_round`) and save the ledger before the round's
  model is released: a crash then over-charges instead of under-charging.

  JSON format (`to_json`), version 1:
    {"format_version": 1, "unit": "example",
     "neighboring_relation": "ADD_OR_REMOVE_ONE",
     "noise_multiplier": 1.1, "expected_batch_size": 64, "local_steps": 10,
     "rounds": 3,
     "silos": [{"num_examples": 5000, "participations": 3}, ...]}
  """

  def __init__(self, *, settings: ExampleDpSettings,
               num_examples: Sequence[int]):
    if not isinstance(settings, ExampleDpSettings):
      raise TypeError(f'settings must be ExampleDpSettings, got {settings!r}.')
    if isinstance(num_examples, (str, bytes)) or not isinstance(
        num_examples, Sequence) or not num_examples:
      raise ValueError('num_examples must be a non-empty sequence of ints.')
    self._settings = settings
    self._num_examples = tuple(
        checks.check_int(f'num_examples[{k}]', n, minimum=1)
        for k, n in enumerate(num_examples))
    self._participations = [0] * len(self._num_examples)
    self._rounds = 0

  @property
  def settings(self) -> ExampleDpSettings:
    return self._settings

  @property
  def num_examples(self) -> tuple[int, ...]:
    return self._num_examples

  @property
  def participations(self) -> tuple[int, ...]:
    return tuple(self._participations)

  @property
  def rounds(self) -> int:
    return self._rounds

  def record_round(self, round_num: int, participants: Iterable[int]) -> None:
    """Charges round `round_num` (must be `rounds + 1`) to its participants.

    Args:
      round_num: 1-based, consecutive round number.
      participants: Indices of the silos that trained in this round (each at
        most once; an empty round is still a round).
    """
    if isinstance(round_num,
                  bool) or not isinstance(round_num, numbers.Integral):
      raise TypeError(f'round_num must be an int, got {round_num!r}.')
    if round_num != self._rounds + 1:
      raise ValueError(f'Expected round {self._rounds + 1} (rounds are '
                       f'1-based and consecutive), got {round_num}.')
    silos = list(participants)
    for k in silos:
      if isinstance(k, bool) or not isinstance(
          k, numbers.Integral) or not (0 <= k < len(self._num_examples)):
        raise ValueError(f'Unknown silo {k!r}; silos are 0..'
                         f'{len(self._num_examples) - 1}.')
    if len(set(silos)) != len(silos):
      raise ValueError(f'A silo appears twice in round {round_num}: {silos}.')
    for k in silos:
      self._participations[k] += 1
    self._rounds += 1

  def silo_events(self, silo: int) -> list[dp_event.DpEvent]:
    """The events of silo `silo` so far (empty if it never took part)."""
    steps = self._settings.local_steps * self._participations[silo]
    if steps == 0:
      return []
    return [
        dp_event.SelfComposedDpEvent(
            step_event(num_examples=self._num_examples[silo],
                       settings=self._settings), steps)
    ]

  def report(
      self,
      *,
      delta: float,
      accountants: Sequence[AccountantKind] = tuple(AccountantKind),
      pld_discretization: float = accounting.PLD_DISCRETIZATION
  ) -> RecordLevelReport:
    """Each silo's record-level epsilon at `delta`, by accountant.

    Args:
      delta: Target delta; must be below 1 / n_k for every silo (a guarantee
        with delta >= 1/n_k allows releasing a record outright).
      accountants: Which accountants to run; NaN where one cannot compose.
      pld_discretization: PLD value discretization interval.

    Raises:
      ValueError: If delta >= 1 / max(n_k).
    """
    delta = checks.check_real('delta', delta, positive=True, below_one=True)
    largest = max(self._num_examples)
    if not delta < 1 / largest:
      raise ValueError(f'delta={delta:g} must be below 1/n_k for every silo, '
                       f'i.e. below 1/{largest}.')
    cache = {}  # Silos with equal (n_k, count_k) share one computation.
    silos = []
    for k, (n, count) in enumerate(zip(self._num_examples,
                                       self._participations)):
      key = (silo_sampling_rate(
          num_examples=n,
          expected_batch_size=self._settings.expected_batch_size), count)
      if key not in cache:
        cache[key] = {
            kind:
                _epsilon(self.silo_events(k),
                         delta=delta,
                         accountant=kind,
                         pld_discretization=pld_discretization)
            for kind in accountants
        }
      silos.append(
          SiloEpsilon(silo=k,
                      num_examples=n,
                      sampling_rate=key[0],
                      steps=self._settings.local_steps * count,
                      epsilons=dict(cache[key])))
    return RecordLevelReport(delta=delta, silos=tuple(silos))

  def to_json(self) -> dict:
    return {
        'format_version':
            FORMAT_VERSION,
        'unit':
            'example',
        'neighboring_relation':
            RELATION.name,
        'noise_multiplier':
            self._settings.noise_multiplier,
        'expected_batch_size':
            self._settings.expected_batch_size,
        'local_steps':
            self._settings.local_steps,
        'rounds':
            self._rounds,
        'silos': [{
            'num_examples': n,
            'participations': c
        } for n, c in zip(self._num_examples, self._participations)],
    }

  @classmethod
  def from_json(cls, d) -> 'SiloLedger':
    """Parses `to_json` output; raises `SiloLedgerFormatError` if malformed."""
    if not isinstance(d, dict) or set(d) != _KEYS:
      raise SiloLedgerFormatError(
          f'Silo ledger must be an object with keys {sorted(_KEYS)}.')
    if (d['format_version'] != FORMAT_VERSION or d['unit'] != 'example' or
        d['neighboring_relation'] != RELATION.name or
        isinstance(d['format_version'], bool)):
      raise SiloLedgerFormatError(
          f'Expected format_version {FORMAT_VERSION}, unit "example" and '
          f'{RELATION.name}, got {d["format_version"]!r}, {d["unit"]!r}, '
          f'{d["neighboring_relation"]!r}.')
    silos = d['silos']
    if not isinstance(silos, list) or not all(
        isinstance(s, dict) and set(s) == _SILO_KEYS for s in silos):
      raise SiloLedgerFormatError(
          f'"silos" must be a list of objects with keys {sorted(_SILO_KEYS)}.')
    try:
      ledger = cls(settings=ExampleDpSettings(
          noise_multiplier=d['noise_multiplier'],
          expected_batch_size=d['expected_batch_size'],
          local_steps=d['local_steps']),
                   num_examples=[s['num_examples'] for s in silos])
      rounds = checks.check_int('rounds', d['rounds'], minimum=0)
      counts = [
          checks.check_int(f'silos[{k}].participations',
                           s['participations'],
                           minimum=0) for k, s in enumerate(silos)
      ]
    except (TypeError, ValueError) as e:
      raise SiloLedgerFormatError(str(e)) from e
    if any(c > rounds for c in counts):
      raise SiloLedgerFormatError(
          f'A silo took part more often than the {rounds} rounds: {counts}.')
    ledger._participations = counts  # pylint: disable=protected-access
    ledger._rounds = rounds  # pylint: disable=protected-access
    return ledger

  def save(self, path: str) -> None:
    """Writes the ledger atomically (temp file, fsync, rename)."""
    ledger_json.save(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> 'SiloLedger':
    """Reads a saved ledger; errors name the file."""
    return ledger_json.load(path,
                            cls.from_json,
                            what='Silo ledger',
                            error=SiloLedgerFormatError)


def _epsilon(events, *, delta, accountant, pld_discretization) -> float:
  try:
    return accounting.compute_epsilon(events,
                                      delta=delta,
                                      accountant=accountant,
                                      relation=RELATION,
                                      pld_discretization=pld_discretization)
  except accounting.UnsupportedAccountingError:
    return math.nan
