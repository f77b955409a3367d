"""What a run is charged, for every guarantee it claims, round by round.

* Central (user-level, against whoever sees the released models): the
  `PrivacyLedger` of the sampler's or the tree's events.
* Local (against the server, `tff_dp.local_accounting`): each client composes
  its own participations; there is no amplification because the server sees
  who participates.
* Record-level inside silos (`tff_dp.example_accounting`): each silo composes
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
import math
import os
from typing import Any, Callable, Optional, Sequence

import dp_accounting

from tff_dp import accounting
from tff_dp import example_accounting
from tff_dp import local_accounting


@dataclasses.dataclass
class PrivacyTracker:
  """The ledgers of a run plus the event each round of it costs."""
  ledger: accounting.PrivacyLedger
  # Round number -> the central event that round is charged (constant for
  # sampled Gaussian rounds; DP-FTRL charges a whole tree epoch at its first
  # round).
  round_event: Callable[[int], dp_accounting.DpEvent]
  delta: float
  accountants: Sequence[accounting.AccountantKind]
  local: Optional[local_accounting.LocalPrivacyLedger] = None
  silos: Optional[example_accounting.SiloLedger] = None
  release_silo_epsilon_as_private: bool = True

  @property
  def central_claim(self) -> bool:
    return not isinstance(self.round_event(1), dp_accounting.NonPrivateDpEvent)

  def epsilons(self, *, next_round: Optional[int] = None
               ) -> dict[accounting.AccountantKind, float]:
    """Central epsilon by accountant, optionally as if `next_round` also ran.

    An accountant that cannot compose the ledger's events reports NaN, never
    a number it did not compute.
    """
    result = {}
    for kind in self.accountants:
      try:
        if next_round is not None:
          result[kind] = self.ledger.epsilon_with(
              self.round_event(next_round), delta=self.delta,
              accountant=kind)
        else:
          result[kind] = self.ledger.epsilon(delta=self.delta,
                                             accountant=kind)
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
    return self.local.spec.guarantee(participations, delta=self.delta,
                                     accountants=self.accountants)

  def record_level_report(self) -> Optional[
      example_accounting.RecordLevelReport]:
    if self.silos is None:
      return None
    return self.silos.report(delta=self.delta, accountants=self.accountants)

  def extra_values(self) -> dict[str, float]:
    """Local and record-level epsilons, under their release keys."""
    values = {}
    local = self.local_guarantee()
    if local is not None:
      values['privacy/local_epsilon'] = local.epsilon
    report = self.record_level_report()
    if report is not None:
      worst = report.worst_epsilon()
      key = ('privacy/example_epsilon' if self.release_silo_epsilon_as_private
             else 'nonprivate/example_epsilon')
      values[key] = math.nan if worst is None else worst
    return values

  def to_json(self) -> dict[str, Any]:
    return {
        'central': self.ledger.to_json(),
        'local': None if self.local is None else self.local.to_json(),
        'silos': None if self.silos is None else self.silos.to_json(),
    }

  def restore_json(self, data: dict[str, Any]) -> None:
    """Replaces the ledgers by those of a checkpoint."""
    self.ledger = accounting.PrivacyLedger.from_json(data['central'])
    if self.local is not None:
      self.local = local_accounting.LocalPrivacyLedger.from_json(data['local'])
    if self.silos is not None:
      self.silos = example_accounting.SiloLedger.from_json(data['silos'])

  def save(self, run_dir: str) -> None:
    """Writes the ledgers as plain JSON files of the run directory."""
    self.ledger.save(os.path.join(run_dir, 'ledger.json'))
    if self.local is not None:
      self.local.save(os.path.join(run_dir, 'local_ledger.json'))
    if self.silos is not None:
      self.silos.save(os.path.join(run_dir, 'silo_ledger.json'))
