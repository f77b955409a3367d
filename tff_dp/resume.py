"""Resuming a run without lying about epsilon.

The rules (why in brackets):
* Every round is charged to the ledger and checkpointed (state + ledger)
  BEFORE any of its values are released [a released round is always charged
  on disk].
* A resume restores state AND ledger from the newest checkpoint that verifies
  and continues from the next round [no silent restart at round 0 with a fresh
  accountant].
* If rounds after that checkpoint were already released (the newest
  checkpoints are corrupt), the resume is refused [re-running them would
  release fresh noise for rounds the restored ledger does not charge].
* Flags that change the mechanism, the sampler, the population or the data
  must equal the checkpoint's; only `RESUMABLE_CHANGES` may differ.
* Released rows after the checkpoint's round are dropped and TensorBoard is
  rebuilt from the CSV, so no round is missing or duplicated.
Pure Python.
"""

import csv
import io
import os
from typing import Any, Mapping

from tff_dp import accounting
from tff_dp import atomic_io

# Flags that may differ between a run and its resumption: they change neither
# the mechanism, nor the sampler, nor the data.
RESUMABLE_CHANGES = frozenset({
    'rounds', 'max_epsilon', 'eval_every', 'output_dir', 'run_name',
    'accountants',
    # Both paths keep the same state structure and compute the same
    # mechanism (tests/test_grouped_fedavg.py).
    'clients_per_call',
    # Where the worker listens, not what it computes.
    'allow_unconfined_worker',
})


class ResumeError(Exception):
  """The run directory cannot be resumed as is; the message says why."""


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       defaults: Mapping[str, Any]) -> list[str]:
  """'--flag: checkpoint X, now Y' for every non-resumable difference.

  A flag the checkpoint does not know (added to tff-dp since) counts as
  having had its default value then.
  """
  differences = []
  for name in sorted(set(saved) | set(current)):
    if name in RESUMABLE_CHANGES:
      continue
    before = saved[name] if name in saved else defaults.get(name)
    if before != current.get(name):
      differences.append(f'--{name}: checkpoint {before!r}, now '
                         f'{current.get(name)!r}')
  return differences


def read_rows(csv_path: str) -> list[dict[str, str]]:
  if not os.path.isfile(csv_path):
    return []
  with open(csv_path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def released_rounds(run_dir: str, *, csv_path: str) -> int:
  """The last round whose values reached the CSV or whose charge reached
  ledger.json (0 if none)."""
  last = max((int(row['round']) for row in read_rows(csv_path)), default=0)
  ledger_path = os.path.join(run_dir, 'ledger.json')
  if os.path.isfile(ledger_path):
    try:
      last = max(last, accounting.PrivacyLedger.load(ledger_path).rounds)
    except (accounting.LedgerFormatError, OSError):
      pass  # The checkpoint's copy of the ledger is authoritative.
  return last


def truncate_rows(csv_path: str, *, last_round: int) -> list[dict[str, str]]:
  """Drops rows after `last_round` (atomically); returns the rows kept."""
  if not os.path.isfile(csv_path):
    return []
  with open(csv_path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    fieldnames = reader.fieldnames or ['round']
    rows = [row for row in reader if int(row['round']) <= last_round]
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=fieldnames)
  writer.writeheader()
  writer.writerows(rows)
  atomic_io.write_text_atomic(csv_path, text.getvalue())
  return rows


def check_fallback(*, checkpoint_round: int, released: int,
                   skipped: list[str]) -> None:
  """Refuses a fallback past rounds that were already released."""
  if released > checkpoint_round:
    reasons = '; '.join(skipped) or 'no newer checkpoint'
    raise ResumeError(
        f'rounds {checkpoint_round + 1}..{released} were released, but the '
        f'newest valid checkpoint is round {checkpoint_round} ({reasons}). '
        'Resuming would release those rounds again with fresh noise that the '
        'restored ledger does not charge; start a new run (another '
        '--run_name) instead')
