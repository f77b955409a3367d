"""Accounting for local differential privacy: what each client's updates reveal.

In local DP every client randomizes its own update before it leaves the device
(Kasiviswanathan et al. 2008, "What can we learn privately?"; Duchi, Jordan,
Wainwright 2013, "Local privacy and statistical minimax rates"). The adversary
is the server itself, so the unit of privacy is one client and ANY two inputs
of that client are neighbours (replace-one adjacency on a one-record dataset).
`tff_dp.mechanisms.local_dp` clips each update to norm C and adds noise; per participation:

* LAPLACE: L1 clip C, Laplace noise of scale b = 2 C / epsilon_local per
  coordinate. The L1 diameter of the clipping ball is Delta_1 = 2 C, so this is
  epsilon_local-LDP (Dwork, McSherry, Nissim, Smith 2006, "Calibrating noise to
  sensitivity in private data analysis"); dp-accounting event
  `LaplaceDpEvent(b / Delta_1 = 1 / epsilon_local)`.
* GAUSSIAN: L2 clip C, Gaussian noise of std z C per coordinate. The L2
  diameter is 2 C, so this is the Gaussian mechanism with noise multiplier z/2
  relative to its sensitivity: `GaussianDpEvent(z / 2)`.

A client's local guarantee composes over ITS OWN participations only, with no
amplification by sampling: the server sees who took part. The worst-case
client is the one with the most participations k, and its guarantee is the
composition of k events:

* basic composition (LAPLACE): pure (k epsilon_local, 0)-DP (Dwork, Roth 2014,
  "The algorithmic foundations of differential privacy", Thm. 3.16);
* RDP (Mironov 2017, "Renyi differential privacy"): dp-accounting 0.4.3 turns
  Laplace into RDP by the generic conversion for any epsilon-DP mechanism
  (alpha, min(epsilon, alpha epsilon^2 / 2)) (Bun, Steinke 2016), so the RDP
  bound holds whatever the dimension of the update;
* PLD (Koskela, Jalko, Honkela 2020; Doroshenko et al. 2022): dp-accounting's
  Laplace PLD is the one-dimensional pair (Lap(0, b), Lap(Delta_1, b)). Our
  updates are d-dimensional; that pair is attained (the two inputs +C e_1 and
  -C e_1) and we rely on it dominating every d-dimensional pair with the same
  L1 distance. That is checked numerically, not proven here:
  tests/privacy/test_local_accounting.py compares the two-coordinate splits
  with the concentrated shift (d coordinates reduce to two by induction, since
  domination is preserved by composition). If in doubt, use the RDP or pure
  epsilon, which need no such assumption.

dp-accounting 0.4.3 composes unsampled `GaussianDpEvent` and `LaplaceDpEvent`
with both accountants under every neighbouring relation (the relation only
matters for sampled events), so we account under `REPLACE_ONE`, the relation
that matches local DP, and the numbers equal those under add/remove.

This module is pure Python (dp-accounting); it must not import
TensorFlow, so the epsilon program can use it without TFF.
"""

import collections
import dataclasses
import enum
import json
import math
import numbers
from typing import Iterable, Mapping, Optional, Sequence

import dp_accounting
from dp_accounting import dp_event

from tff_dp import checks
from tff_dp.privacy import accounting
from tff_dp.privacy import ledger_json

AccountantKind = accounting.AccountantKind
LedgerFormatError = accounting.LedgerFormatError
NeighboringRelation = dp_accounting.NeighboringRelation

# Any two inputs of one client are neighbours (see module docstring).
RELATION = NeighboringRelation.REPLACE_ONE
LOCAL_LEDGER_FORMAT_VERSION = 1
_LEDGER_KIND = 'local_dp'


class LocalMechanism(enum.Enum):
  """The randomizer each client applies to its own clipped update."""
  LAPLACE = 'laplace'
  GAUSSIAN = 'gaussian'


def check_positive(name: str, value) -> float:
  # `not value > 0` also refuses NaN, which compares False.
  if isinstance(value, bool) or not isinstance(
      value, numbers.Real) or not (math.isfinite(value) and value > 0):
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}.')
  return float(value)


@dataclasses.dataclass(frozen=True)
class LocalMechanismSpec:
  """A local randomizer and its privacy parameter, validated.

  Attributes:
    mechanism: LAPLACE or GAUSSIAN.
    epsilon_local: Per-participation epsilon (LAPLACE only).
    noise_multiplier: z = noise std / L2 clip (GAUSSIAN only).
  """
  mechanism: LocalMechanism
  epsilon_local: Optional[float] = None
  noise_multiplier: Optional[float] = None

  def __post_init__(self):
    if not isinstance(self.mechanism, LocalMechanism):
      raise ValueError(
          f'mechanism must be a LocalMechanism, got {self.mechanism!r}.')
    laplace = self.mechanism is LocalMechanism.LAPLACE
    needed, unused = (('epsilon_local', 'noise_multiplier') if laplace else
                      ('noise_multiplier', 'epsilon_local'))
    if getattr(self, unused) is not None:
      raise ValueError(f'{unused} must be None for {self.mechanism}, got '
                       f'{getattr(self, unused)!r}.')
    if getattr(self, needed) is None:
      raise ValueError(f'{needed} is required for {self.mechanism}.')
    object.__setattr__(self, needed,
                       check_positive(needed, getattr(self, needed)))

  def noise_scale(self, *, clip: float) -> float:
    """Per-coordinate noise parameter for clip norm `clip`.

    Returns the Laplace scale b = 2 clip / epsilon_local, or the Gaussian
    standard deviation z clip. The factor 2 is the diameter of the clipping
    ball: scale clip / epsilon_local would only give 2 epsilon_local-LDP.

    Args:
      clip: The L1 (LAPLACE) or L2 (GAUSSIAN) clip norm.
    """
    clip = check_positive('clip', clip)
    if self.mechanism is LocalMechanism.LAPLACE:
      return 2.0 * clip / self.epsilon_local
    return self.noise_multiplier * clip

  def participation_event(self) -> dp_event.DpEvent:
    """The dp-accounting event of one participation (relation `RELATION`)."""
    if self.mechanism is LocalMechanism.LAPLACE:
      # noise_multiplier = b / Delta_1 = (2C / epsilon) / (2C).
      return dp_event.LaplaceDpEvent(1.0 / self.epsilon_local)
    return dp_event.GaussianDpEvent(self.noise_multiplier / 2.0)

  def pure_epsilon(self, participations: int) -> float:
    """Basic composition: k epsilon_local with delta = 0 (inf for GAUSSIAN)."""
    k = checks.check_int('participations', participations, minimum=0)
    if k == 0:
      return 0.0
    if self.mechanism is LocalMechanism.LAPLACE:
      return k * self.epsilon_local
    return math.inf

  def guarantee(
      self,
      participations: int,
      *,
      delta: float,
      accountants: Sequence[AccountantKind] = tuple(AccountantKind),
      pld_discretization: float = accounting.PLD_DISCRETIZATION,
  ) -> 'LocalGuarantee':
    """The (epsilon, delta) of `participations` compositions of one event."""
    k = checks.check_int('participations', participations, minimum=0)
    events = [dp_event.SelfComposedDpEvent(self.participation_event(), k)
             ] if k else []
    epsilons = {}
    for kind in accountants:
      try:
        epsilons[kind] = accounting.compute_epsilon(
            events,
            delta=delta,
            accountant=kind,
            relation=RELATION,
            pld_discretization=pld_discretization)
      except accounting.UnsupportedAccountingError:
        epsilons[kind] = math.nan  # Reported as n/a, never a guess.
    return LocalGuarantee(participations=k,
                          delta=delta,
                          pure_epsilon=self.pure_epsilon(k),
                          epsilons=epsilons)

  def to_json(self) -> dict:
    return {
        'mechanism': self.mechanism.value,
        'epsilon_local': self.epsilon_local,
        'noise_multiplier': self.noise_multiplier
    }


@dataclasses.dataclass(frozen=True)
class LocalGuarantee:
  """The local guarantee of a client after `participations` participations.

  Attributes:
    participations: k, the number of compositions.
    delta: The delta at which `epsilons` were computed.
    pure_epsilon: Basic composition with delta = 0 (inf for GAUSSIAN).
    epsilons: Epsilon at `delta` per accountant; NaN if it cannot compose.
  """
  participations: int
  delta: float
  pure_epsilon: float
  epsilons: Mapping[AccountantKind, float]

  @property
  def epsilon(self) -> float:
    """The stated epsilon at `delta`: the smallest valid upper bound.

    A pure (epsilon, 0) guarantee is also an (epsilon, delta) guarantee.
    """
    best = accounting.tightest_epsilon(self.epsilons)
    return min(self.pure_epsilon, best[1]) if best else self.pure_epsilon

  @property
  def source(self) -> str:
    """'pure' or the accountant ('rdp', 'pld') that gives `epsilon`."""
    best = accounting.tightest_epsilon(self.epsilons)
    if best is None or self.pure_epsilon <= best[1]:
      return 'pure'
    return best[0].value


class LocalPrivacyLedger:
  """Which clients took part in each round; the local epsilon of the worst one.

  Record (and save) a round before its result is released, as with
  `tff_dp.privacy.privacy_ledger.PrivacyLedger`. Every participant counts, including a
  client whose non-finite update was zeroed: it still sent a noised update.

  JSON format (`to_json`), version 1:
    {"format_version": 1, "kind": "local_dp",
     "neighboring_relation": "REPLACE_ONE",
     "mechanism": "laplace" | "gaussian",
     "epsilon_local": <float> | null, "noise_multiplier": <float> | null,
     "population": <int>,
     "rounds": [{"round": 1, "clients": [<sorted distinct ints>]}, ...],
     "participation_counts": {"<client index>": <count>, ...}}
  The counts are redundant with "rounds" and checked against them on load.
  A checkpoint's journal (`tff_dp.program.ledger_journal`) keeps the object
  without them (they change every round; its head must not) and one line per
  round; `from_json` recounts them when they are absent.
  """

  def __init__(self, spec: LocalMechanismSpec, *, population: int):
    if not isinstance(spec, LocalMechanismSpec):
      raise TypeError(f'spec must be a LocalMechanismSpec, got {spec!r}.')
    self._spec = spec
    self._population = checks.check_int('population', population, minimum=1)
    self._rounds = []
    self._counts = collections.Counter()
    # Each round's JSON and text, kept as recorded: a checkpoint's to_json
    # then costs no re-encoding of every earlier round.
    self._round_json: list[dict] = []
    self._round_lines: list[str] = []

  @property
  def spec(self) -> LocalMechanismSpec:
    return self._spec

  @property
  def population(self) -> int:
    return self._population

  @property
  def rounds(self) -> int:
    return len(self._rounds)

  def cohort(self, round_num: int) -> list[int]:
    """The clients recorded for 1-based round `round_num`."""
    return list(self._rounds[round_num - 1])

  @property
  def participation_counts(self) -> dict[int, int]:
    """Client index -> number of recorded participations (0s omitted)."""
    return dict(sorted(self._counts.items()))

  def _check_clients(self, clients: Iterable[int]) -> list[int]:
    out = []
    for c in clients:
      # numpy ints are Integral; bools and floats are refused.
      if isinstance(c, bool) or not isinstance(c, numbers.Integral):
        raise TypeError(f'client indices must be ints, got {c!r}.')
      if not 0 <= c < self._population:
        raise ValueError(f'client index {c} is outside [0, population = '
                         f'{self._population}).')
      out.append(int(c))
    if len(set(out)) != len(out):
      raise ValueError(f'client indices must be distinct, got {out}.')
    return sorted(out)

  def record_round(self, round_num: int, clients: Iterable[int]) -> None:
    """Appends round `round_num` (must be `rounds + 1`) with its cohort."""
    if isinstance(round_num,
                  bool) or not isinstance(round_num, numbers.Integral):
      raise TypeError(f'round_num must be an int, got {round_num!r}.')
    if round_num != self.rounds + 1:
      raise ValueError(f'Expected round {self.rounds + 1} (rounds are 1-based '
                       f'and consecutive), got {round_num}.')
    cohort = self._check_clients(clients)
    self._rounds.append(cohort)
    self._counts.update(cohort)
    entry = {'round': round_num, 'clients': list(cohort)}
    self._round_json.append(entry)
    self._round_lines.append(json.dumps(entry))

  def max_participations(self, next_round_clients: Iterable[int] = ()) -> int:
    """max_k count_k, optionally as if `next_round_clients` also took part."""
    counts = self._counts.copy()
    counts.update(self._check_clients(next_round_clients))
    return max(counts.values(), default=0)

  def worst_case_clients(self) -> list[int]:
    """The clients with the most participations (empty before any)."""
    k = self.max_participations()
    return sorted(c for c, n in self._counts.items() if n == k) if k else []

  def participation_guarantee(
      self,
      *,
      delta: float,
      accountants: Sequence[AccountantKind] = tuple(AccountantKind),
  ) -> LocalGuarantee:
    """The local guarantee of ONE participation."""
    return self._spec.guarantee(1, delta=delta, accountants=accountants)

  def guarantee(
      self,
      *,
      delta: float,
      accountants: Sequence[AccountantKind] = tuple(AccountantKind),
      next_round_clients: Iterable[int] = (),
      pld_discretization: float = accounting.PLD_DISCRETIZATION,
  ) -> LocalGuarantee:
    """The worst-case client's cumulative local guarantee.

    Args:
      delta: Target delta.
      accountants: Accountants to run (NaN for one that cannot compose).
      next_round_clients: For a budget check before a round: the guarantee as
        if these clients also took part in one more round.
      pld_discretization: PLD value discretization interval.
    """
    return self._spec.guarantee(self.max_participations(next_round_clients),
                                delta=delta,
                                accountants=accountants,
                                pld_discretization=pld_discretization)

  def _head(self) -> dict:
    """The ledger's JSON object without its rounds and counts."""
    return {
        'format_version': LOCAL_LEDGER_FORMAT_VERSION,
        'kind': _LEDGER_KIND,
        'neighboring_relation': RELATION.name,
        **self._spec.to_json(),
        'population': self._population,
    }

  def to_json(self) -> ledger_json.EncodedDict:
    """The ledger as JSON (see the class docstring); do not modify it: its
    rounds are the ledger's own objects. Its `journal` holds each round's
    text (checkpoints append it)."""
    rounds = len(self._round_json)
    head = self._head()
    return ledger_json.EncodedDict(
        {
            **head,
            'rounds': self._round_json[:rounds],
            'participation_counts': {
                str(c): n for c, n in self.participation_counts.items()
            },
        },
        journal=ledger_json.Journal(head=json.dumps(head),
                                    lines=self._round_lines,
                                    count=rounds))

  @classmethod
  def from_json(cls, d) -> 'LocalPrivacyLedger':
    """Parses `to_json` output; raises `LedgerFormatError` if malformed."""
    expected = {
        'format_version', 'kind', 'neighboring_relation', 'mechanism',
        'epsilon_local', 'noise_multiplier', 'population', 'rounds',
        'participation_counts'
    }
    # A checkpoint's journal omits the counts (see the class docstring).
    if (not isinstance(d, dict) or
        set(d) not in (expected, expected - {'participation_counts'})):
      keys = sorted(d) if isinstance(d, dict) else d
      raise LedgerFormatError(f'Local ledger must be a JSON object with keys '
                              f'{sorted(expected)}, got {keys!r:.200}.')
    version = d['format_version']
    if isinstance(version, bool) or version != LOCAL_LEDGER_FORMAT_VERSION:
      raise LedgerFormatError(
          f'Unsupported local ledger format_version {version!r}; this code '
          f'reads {LOCAL_LEDGER_FORMAT_VERSION}.')
    if d['kind'] != _LEDGER_KIND or d['neighboring_relation'] != RELATION.name:
      raise LedgerFormatError(
          f'Expected kind {_LEDGER_KIND!r} and neighboring_relation '
          f'{RELATION.name!r}, got {d["kind"]!r}, '
          f'{d["neighboring_relation"]!r}.')
    try:
      spec = LocalMechanismSpec(mechanism=LocalMechanism(d['mechanism']),
                                epsilon_local=d['epsilon_local'],
                                noise_multiplier=d['noise_multiplier'])
      ledger = cls(spec, population=d['population'])
      if not isinstance(d['rounds'], list):
        raise ValueError('"rounds" must be a list.')
      for i, entry in enumerate(d['rounds']):
        if (not isinstance(entry, dict) or set(entry) != {'round', 'clients'} or
            not isinstance(entry['clients'], list)):
          raise ValueError(f'rounds[{i}]: expected {{"round": <int>, '
                           f'"clients": [<int>, ...]}}, got {entry!r:.80}.')
        ledger.record_round(entry['round'], entry['clients'])
    except (TypeError, ValueError) as e:
      raise LedgerFormatError(str(e)) from e
    counts = {str(c): n for c, n in ledger.participation_counts.items()}
    if d.get('participation_counts', counts) != counts:
      raise LedgerFormatError(
          '"participation_counts" disagree with the clients listed in '
          '"rounds".')
    return ledger

  def save(self, path: str) -> None:
    """Writes the ledger atomically (temp file, fsync, rename)."""
    ledger_json.save(path, self.to_json())

  @classmethod
  def load(cls, path: str) -> 'LocalPrivacyLedger':
    """Reads a saved ledger; errors name the file."""
    return ledger_json.load(path,
                            cls.from_json,
                            what='Local privacy ledger',
                            error=LedgerFormatError)
