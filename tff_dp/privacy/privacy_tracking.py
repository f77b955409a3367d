"""What a run is charged, for every guarantee it claims, round by round.

* Central (user-level, against whoever sees the released models): the
  `PrivacyLedger` of the sampler's or the tree's events.
* Local (against the server, `tff_dp.privacy.local_accounting`): each client composes
  its own participations; there is no amplification because the server sees
  who participates.
* Record-level inside silos (`tff_dp.privacy.example_accounting`): each silo composes
  its DP-SGD steps.

What may be released about the last two is itself a privacy question:
* the realized worst-case participation count depends on which clients were
  sampled, which the central analysis assumes hidden; when a central claim is
  made, the released local epsilon therefore assumes a client took part in
  every round (data- and sampling-independent), and otherwise the realized
  count is used (the server saw it anyway);
* record-level epsilons depend on the silos' sizes n_k; they are released as
  `privacy/` values in runs whose claim is record-level only (silo sizes are
  public by assumption, as in Opacus and TF Privacy), and only on request and
  as `nonprivate/` values when a user-level central claim is also made.
Pure Python.
"""

import dataclasses
import json
import math
import os
from typing import Any, Callable, Optional, Sequence

import dp_accounting

from tff_dp import atomic_io
from tff_dp.privacy import accounting
from tff_dp.privacy import example_accounting
from tff_dp.privacy import local_accounting
from tff_dp.privacy import privacy_ledger


@dataclasses.dataclass
class PrivacyTracker:
  """The ledgers of a run plus the event each round of it costs."""
  ledger: privacy_ledger.PrivacyLedger
  # Round number -> the central event that round is charged (constant for
  # sampled Gaussian rounds; DP-FTRL charges a whole tree epoch at its first
  # round).
  round_event: Callable[[int], dp_accounting.DpEvent]
  delta: float
  accountants: Sequence[accounting.AccountantKind]
  local: Optional[local_accounting.LocalPrivacyLedger] = None
  silos: Optional[example_accounting.SiloLedger] = None
  release_silo_epsilon_as_private: bool = True
  # Whether values outside the guarantee may be released (the record-level
  # epsilon of a run with a central claim).
  release_nonprivate: bool = False

  @property
  def central_claim(self) -> bool:
    return not isinstance(self.round_event(1), dp_accounting.NonPrivateDpEvent)

  def epsilons(
      self,
      *,
      next_round: Optional[int] = None,
      through_round: Optional[int] = None
  ) -> dict[accounting.AccountantKind, float]:
    """Central epsilon by accountant, optionally as if rounds `next_round`
    to `through_round` (default: `next_round` alone) also ran.

    An accountant that cannot compose the ledger's events reports NaN, never
    a number it did not compute.
    """
    result = {}
    last = next_round if through_round is None else through_round
    for kind in self.accountants:
      try:
        if next_round is not None:
          events = [self.round_event(r) for r in range(next_round, last + 1)]
          result[kind] = self.ledger.epsilon_with(*events,
                                                  delta=self.delta,
                                                  accountant=kind)
        else:
          result[kind] = self.ledger.epsilon(delta=self.delta, accountant=kind)
      except accounting.UnsupportedAccountingError:
        result[kind] = math.nan
    return result

  def charge(self, round_num: int, cohort: Sequence[int]) -> None:
    """Records a round that ran with the clients in `cohort` reporting."""
    self.ledger.record(round_num, self.round_event(round_num))
    clients = [int(i) for i in cohort]
    if self.local is not None:
      self.local.record_round(round_num, clients)
    if self.silos is not None:
      self.silos.record_round(round_num, clients)

  def local_guarantee(self) -> Optional[local_accounting.LocalGuarantee]:
    if self.local is None:
      return None
    participations = (self.ledger.rounds if self.central_claim else
                      self.local.max_participations())
    return self.local.spec.guarantee(participations,
                                     delta=self.delta,
                                     accountants=self.accountants)

  def record_level_report(
      self) -> Optional[example_accounting.RecordLevelReport]:
    if self.silos is None:
      return None
    return self.silos.report(delta=self.delta, accountants=self.accountants)

  def guarantees(self) -> list[str]:
    """The guarantees this run claims, in words: 'central', 'local',
    'record-level'; empty for a run that is not private."""
    claims = []
    if self.central_claim:
      claims.append('central')
    if self.local is not None:
      claims.append('local')
    if self.silos is not None:
      claims.append('record-level')
    return claims

  def released_values(self) -> dict[str, float]:
    """The epsilons of the guarantees that apply, under their release keys.

    Central epsilons only with a central claim, and only from accountants
    that could compose the events (never a NaN, never the infinite epsilon
    of a guarantee the run does not claim); local and record-level epsilons
    where those guarantees exist.
    """
    values = {}
    if self.central_claim:
      for kind, eps in self.epsilons().items():
        if not math.isnan(eps):
          values[accounting.released_key(kind)] = eps
    local = self.local_guarantee()
    if local is not None:
      values['privacy/local_epsilon'] = local.epsilon
    report = self.record_level_report()
    worst = None if report is None else report.worst_epsilon()
    if worst is not None and self.release_silo_epsilon_as_private:
      values['privacy/example_epsilon'] = worst
    elif worst is not None and self.release_nonprivate:
      values['nonprivate/example_epsilon'] = worst
    return values

  def to_json(self) -> dict[str, Any]:
    return {
        'central': self.ledger.to_json(),
        'local': None if self.local is None else self.local.to_json(),
        'silos': None if self.silos is None else self.silos.to_json(),
    }

  def restore_json(self, data: dict[str, Any]) -> None:
    """Replaces the ledgers by those of a checkpoint."""
    self.ledger = privacy_ledger.PrivacyLedger.from_json(data['central'])
    if self.local is not None:
      self.local = local_accounting.LocalPrivacyLedger.from_json(data['local'])
    if self.silos is not None:
      self.silos = example_accounting.SiloLedger.from_json(data['silos'])

  def save(self, run_dir: str) -> None:
    """Writes what may be released of the ledgers into the run directory.

    The full ledgers (with every round's cohort) are in `to_json`, which goes
    only into the checkpoints: written next to the released files, the
    cohorts would void amplification by sampling. Released: the central
    ledger (one public event per round), the local guarantee's inputs
    (`LOCAL_GUARANTEE_FILE`, no cohorts), and the silo ledger only where the
    record-level epsilon is itself released as covered (its silo sizes are
    then public by assumption).
    """
    self.ledger.save(os.path.join(run_dir, LEDGER_FILE))
    local = self.local_guarantee()
    if local is not None:
      atomic_io.write_text_atomic(
          os.path.join(run_dir, LOCAL_GUARANTEE_FILE),
          json.dumps(self._local_guarantee_json(local),
                     indent=1,
                     allow_nan=False))
    if self.silos is not None and self.release_silo_epsilon_as_private:
      self.silos.save(os.path.join(run_dir, SILO_LEDGER_FILE))

  def _local_guarantee_json(self, local) -> dict[str, Any]:
    return {
        'format_version':
            1,
        'kind':
            LOCAL_GUARANTEE_KIND,
        **self.local.spec.to_json(),
        'rounds':
            self.ledger.rounds,
        'participations':
            local.participations,
        # With a central claim the realized counts would reveal the hidden
        # cohorts: every round is counted instead.
        'counted': ('every_round' if self.central_claim else
                    'most_participations_of_any_client'),
    }


LEDGER_FILE = 'ledger.json'
LOCAL_GUARANTEE_FILE = 'local_guarantee.json'
SILO_LEDGER_FILE = 'silo_ledger.json'
LOCAL_GUARANTEE_KIND = 'local_dp_guarantee'


def local_guarantee_from_json(
    data: Any, *, delta: float, accountants: Sequence[accounting.AccountantKind]
) -> local_accounting.LocalGuarantee:
  """The local guarantee a run directory's `LOCAL_GUARANTEE_FILE` states.

  Raises:
    accounting.LedgerFormatError: If `data` is not such a file's content.
  """
  keys = {
      'format_version', 'kind', 'mechanism', 'epsilon_local',
      'noise_multiplier', 'rounds', 'participations', 'counted'
  }
  if (not isinstance(data, dict) or set(data) != keys or
      data['kind'] != LOCAL_GUARANTEE_KIND or data['format_version'] != 1):
    raise accounting.LedgerFormatError(
        f'expected a {LOCAL_GUARANTEE_KIND} object with keys {sorted(keys)}')
  try:
    spec = local_accounting.LocalMechanismSpec(
        mechanism=local_accounting.LocalMechanism(data['mechanism']),
        epsilon_local=data['epsilon_local'],
        noise_multiplier=data['noise_multiplier'])
    return spec.guarantee(data['participations'],
                          delta=delta,
                          accountants=accountants)
  except (TypeError, ValueError) as e:
    raise accounting.LedgerFormatError(str(e)) from e
