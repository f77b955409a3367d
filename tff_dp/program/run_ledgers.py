"""The guarantees of a run directory, from its verified ledgers.

`./run.sh epsilon --run_dir` reports a run's central, local and record-level
epsilons. Where they come from matters, because the released `ledger.json`
is a plain file anyone can edit (an edited one reported 2 rounds' epsilon for
a 6-round run). So:

* If the run directory holds a checkpoint whose checksums verify, its ledgers
  are the source (they are what the run itself resumes from), and a
  `ledger.json` that disagrees is named in a warning. The only exception
  errs on the safe side: a `ledger.json` charging MORE rounds than the newest
  verified checkpoint (newer checkpoints lost) is reported instead, as the
  larger cost.
* A published run directory has no checkpoints (they stay private): then the
  released files are the source, and the report says they are unverified.
Pure Python.
"""

import dataclasses
import json
import math
import os
from typing import Any, Optional, Sequence

from dp_accounting import dp_event

from tff_dp.privacy import accounting
from tff_dp.privacy import example_accounting
from tff_dp.privacy import local_accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking
from tff_dp.program import checkpoint


class RunDirError(ValueError):
  """The run directory cannot be reported on; the message names the file."""


@dataclasses.dataclass
class RunGuarantees:
  """What a run's ledgers guarantee.

  Attributes:
    source: Where the ledgers came from (a checkpoint or the released files).
    ledger: The central ledger.
    local: The local guarantee (local DP), else None.
    local_counted: How its participations were counted, in words.
    record_level: The worst client's record-level epsilon, else None.
    warnings: Disagreements found on the way.
  """
  source: str
  ledger: privacy_ledger.PrivacyLedger
  local: Optional[local_accounting.LocalGuarantee] = None
  local_counted: str = ''
  record_level: Optional[example_accounting.SiloEpsilon] = None
  warnings: list[str] = dataclasses.field(default_factory=list)

  @property
  def central_claim(self) -> bool:
    return any(not isinstance(e, dp_event.NonPrivateDpEvent)
               for e in self.ledger.events)

  def central_epsilons(
      self, *, delta: float, accountants: Sequence[accounting.AccountantKind]
  ) -> dict[accounting.AccountantKind, float]:
    """Central epsilon per accountant; NaN where one cannot compose."""
    result = {}
    for kind in accountants:
      try:
        result[kind] = self.ledger.epsilon(delta=delta, accountant=kind)
      except accounting.UnsupportedAccountingError:
        result[kind] = math.nan
    return result


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunDirError(f'cannot read {path}: {e}') from e


def run_delta(run_dir: str) -> Optional[float]:
  """The run's --delta from its config.json (None if it has none)."""
  path = os.path.join(run_dir, 'config.json')
  if not os.path.exists(path):
    return None
  config = _read_json(path)
  delta = config.get('delta') if isinstance(config, dict) else None
  if isinstance(delta,
                bool) or not isinstance(delta,
                                        (int, float)) or not (0 < delta < 1):
    raise RunDirError(f'{path}: delta must be a number in (0, 1), got '
                      f'{delta!r:.40}')
  return float(delta)


def _from_checkpoint(path: str, meta: dict[str, Any], *, delta: float,
                     accountants) -> RunGuarantees:
  """The guarantees in a verified checkpoint's ledgers."""
  try:
    ledgers = meta['ledgers']
    ledger = privacy_ledger.PrivacyLedger.from_json(ledgers['central'])
    result = RunGuarantees(source=f'{path} (checksums verified)', ledger=ledger)
    if ledgers.get('local') is not None:
      local = local_accounting.LocalPrivacyLedger.from_json(ledgers['local'])
      every_round = result.central_claim
      participations = (ledger.rounds
                        if every_round else local.max_participations())
      result.local = local.spec.guarantee(participations,
                                          delta=delta,
                                          accountants=accountants)
      result.local_counted = ('every round' if every_round else
                              'most participations of any client')
    if ledgers.get('silos') is not None:
      silos = example_accounting.SiloLedger.from_json(ledgers['silos'])
      result.record_level = silos.report(delta=delta,
                                         accountants=accountants).worst()
  except (KeyError, TypeError, ValueError) as e:
    raise RunDirError(f'{path}: its ledgers do not parse: {e}') from e
  if ledger.rounds != meta.get('round'):
    result.warnings.append(
        f'{path} is for round {meta.get("round")} but its ledger charges '
        f'{ledger.rounds} rounds: the checkpoint was altered')
  return result


def _from_released_files(run_dir: str, ledger: privacy_ledger.PrivacyLedger, *,
                         delta: float, accountants) -> RunGuarantees:
  """The guarantees the released files state (unverified)."""
  result = RunGuarantees(
      source=(f'{os.path.join(run_dir, privacy_tracking.LEDGER_FILE)} '
              '(unverified: no checkpoint in this directory)'),
      ledger=ledger)
  local_path = os.path.join(run_dir, privacy_tracking.LOCAL_GUARANTEE_FILE)
  if os.path.isfile(local_path):
    data = _read_json(local_path)
    try:
      result.local = privacy_tracking.local_guarantee_from_json(
          data, delta=delta, accountants=accountants)
    except accounting.LedgerFormatError as e:
      raise RunDirError(f'invalid {local_path}: {e}') from e
    result.local_counted = str(data['counted']).replace('_', ' ')
  silo_path = os.path.join(run_dir, privacy_tracking.SILO_LEDGER_FILE)
  if os.path.isfile(silo_path):
    try:
      silos = example_accounting.SiloLedger.load(silo_path)
      result.record_level = silos.report(delta=delta,
                                         accountants=accountants).worst()
    except (OSError, ValueError) as e:
      raise RunDirError(f'invalid {silo_path}: {e}') from e
  return result


def load_run_guarantees(
    run_dir: str, *, delta: float,
    accountants: Sequence[accounting.AccountantKind]) -> RunGuarantees:
  """The guarantees of `run_dir`'s ledgers (module docstring: which ones).

  Raises:
    RunDirError: Naming the file, for anything that cannot be read.
  """
  if not os.path.isdir(run_dir):
    raise RunDirError(f'{run_dir} is not a directory')
  ledger_path = os.path.join(run_dir, privacy_tracking.LEDGER_FILE)
  try:
    released = privacy_ledger.PrivacyLedger.load(ledger_path)
  except (OSError, accounting.LedgerFormatError) as e:
    released, released_error = None, str(e)
  checkpoints = checkpoint.CheckpointManager(run_dir)
  round_num, meta, _ = checkpoints.latest_verified_meta()
  if meta is None:
    if released is None:
      raise RunDirError(released_error)
    return _from_released_files(run_dir,
                                released,
                                delta=delta,
                                accountants=accountants)
  result = _from_checkpoint(checkpoints.path(round_num),
                            meta,
                            delta=delta,
                            accountants=accountants)
  if released is None:
    result.warnings.append(f'{ledger_path}: {released_error}')
  elif released.rounds > result.ledger.rounds:
    result.warnings.append(
        f'{ledger_path} charges {released.rounds} rounds, more than the '
        f'newest verified checkpoint ({result.ledger.rounds}): reporting it, '
        'the larger cost')
    result.ledger, result.source = released, f'{ledger_path} (unverified)'
  elif released.to_json() != result.ledger.to_json():
    result.warnings.append(
        f'{ledger_path} disagrees with the verified checkpoint '
        f'({released.rounds} rounds there, {result.ledger.rounds} in the '
        'checkpoint): reporting the checkpoint\'s ledger')
  return result
