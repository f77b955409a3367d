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
* A checkpoint is bound to its run: it must carry the run directory's random
  run id [a twin's or a foreign checkpoint copied in is refused], a ledger
  that charges exactly its round count [a cut ledger would under-count], the
  sampling secret [without it the cohorts were public], and the fingerprint
  of the data it trained on [a replaced --client_data file is refused].
* A fallback past corrupt newer checkpoints moves them aside, so that their
  rounds can be checkpointed again.
Pure Python: the program checks a resume before it imports TensorFlow.
"""

import csv
import io
import os
import re
import secrets
from typing import Any, Collection, Mapping, Optional

from tff_dp import atomic_io
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import run_secrets
from tff_dp.program import metrics_file

# Flags that may differ between a run and its resumption: they change neither
# the mechanism, nor the sampler, nor the data.
RESUMABLE_CHANGES = frozenset({
    'rounds',
    'max_epsilon',
    'eval_every',
    'output_dir',
    'run_name',
    'accountants',
    # Both paths keep the same state structure and compute the same
    # mechanism (tests/algorithms/test_grouped_fedavg.py).
    'clients_per_call',
    # How many rounds share a TFF call, not what a round computes.
    'rounds_per_call',
    # Where the worker listens, not what it computes.
    'allow_unconfined_worker',
    # Which hosts compute the rounds, not what they compute.
    'workers',
    'worker_certs',
    # What happens if one is lost; the privacy statement records any loss.
    'on_worker_loss',
})


class ResumeError(Exception):
  """The run directory cannot be resumed as is; the message says why."""


def config_differences(saved: Mapping[str, Any],
                       current: Mapping[str, Any],
                       defaults: Mapping[str, Any],
                       *,
                       ignore: Collection[str] = ()) -> list[str]:
  """'--flag: checkpoint X, now Y' for every non-resumable difference.

  A flag the checkpoint does not know (added to tff-dp since) counts as
  having had its default value then. Flags in `ignore` are not compared.
  """
  differences = []
  for name in sorted(set(saved) | set(current)):
    if name in RESUMABLE_CHANGES or name in ignore:
      continue
    before = saved[name] if name in saved else defaults.get(name)
    if before != current.get(name):
      differences.append(f'--{name}: checkpoint {before!r}, now '
                         f'{current.get(name)!r}')
  return differences


def read_metrics(csv_path: str) -> metrics_file.Contents:
  """metrics.csv's contents, a last line a crash cut short apart
  (`tff_dp.program.metrics_file`); `ResumeError` naming it if malformed."""
  if not os.path.isfile(csv_path):
    return metrics_file.Contents([], [], '')
  try:
    return metrics_file.read(csv_path, key_fieldname='round')
  except metrics_file.MetricsFileError as e:
    raise ResumeError(f'{csv_path} is not a metrics file tff-dp wrote '
                      f'({e.detail}); move it aside or use another '
                      '--run_name') from e


def read_rows(csv_path: str) -> list[dict[str, str]]:
  """The whole released rows of metrics.csv (without a cut last line);
  `ResumeError` naming it if malformed."""
  return read_metrics(csv_path).rows


def released_rounds(run_dir: str, *, csv_path: str) -> int:
  """The last round whose values reached the CSV (a cut last line's round
  included: part of it was released) or whose charge reached ledger.json
  (0 if none)."""
  contents = read_metrics(csv_path)
  last = max((int(row['round']) for row in contents.rows), default=0)
  last = max(last, contents.torn_key('round') or 0)
  ledger_path = os.path.join(run_dir, 'ledger.json')
  if os.path.isfile(ledger_path):
    try:
      last = max(last, privacy_ledger.PrivacyLedger.load(ledger_path).rounds)
    except (accounting.LedgerFormatError, OSError):
      pass  # The checkpoint's copy of the ledger is authoritative.
  return last


def truncate_rows(csv_path: str, *, last_round: int) -> list[dict[str, str]]:
  """Rewrites metrics.csv (atomically) without the rows after `last_round`
  and without a cut last line, so that the sink's appends start after a
  whole row; returns the rows kept."""
  if not os.path.isfile(csv_path):
    return []
  contents = read_metrics(csv_path)
  rows = [row for row in contents.rows if int(row['round']) <= last_round]
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=contents.fieldnames or ['round'])
  writer.writeheader()
  writer.writerows(rows)
  atomic_io.write_text_atomic(csv_path, text.getvalue())
  return rows


def metrics_csv_path(run_dir: str) -> str:
  """The run's metrics.csv (`tff_dp.program.sinks.csv_path` names this one
  file; that module imports TFF)."""
  return os.path.join(run_dir, 'metrics.csv')


def check_released(run_dir: str, *, csv_path: str,
                   checkpoint_round: Optional[int], skipped: list[str]) -> None:
  """Refuses a resume that would restart or fall back past released rounds.

  Args:
    run_dir: The run directory.
    csv_path: Its metrics.csv.
    checkpoint_round: The newest checkpoint that verifies, or None if none.
    skipped: Why newer checkpoints were skipped.

  Raises:
    ResumeError: If rounds were released and no checkpoint verifies, or
      rounds after `checkpoint_round` were released (`check_fallback`).
  """
  released = released_rounds(run_dir, csv_path=csv_path)
  if checkpoint_round is None:
    if released:
      raise ResumeError(
          f'{run_dir} holds {released} released rounds but no valid '
          f'checkpoint ({"; ".join(skipped) or "none saved"}); refusing to '
          'restart at round 0 with a fresh ledger. Use another --run_name')
    return
  check_fallback(checkpoint_round=checkpoint_round,
                 released=released,
                 skipped=skipped)


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


# The marker that makes a directory a tff-dp run directory, and its run id.
RUN_MARKER = '.tff-dp-run'
_RUN_ID = re.compile(r'^run_id=([0-9a-f]{32})$', re.MULTILINE)


def read_run_id(run_dir: str) -> Optional[str]:
  """The run id of `run_dir`'s marker, or None (no marker or no id)."""
  try:
    with open(os.path.join(run_dir, RUN_MARKER), encoding='utf-8') as f:
      match = _RUN_ID.search(f.read())
  except (OSError, UnicodeDecodeError):
    return None
  return match.group(1) if match else None


def ensure_run_id(run_dir: str) -> str:
  """The run id of `run_dir`, written into its marker first if it has none.

  Random (it identifies, it protects nothing), so that a twin run with the
  same flags has another one.
  """
  run_id = read_run_id(run_dir)
  if run_id is None:
    run_id = secrets.token_hex(16)
    atomic_io.write_text_atomic(os.path.join(run_dir, RUN_MARKER),
                                f'tff-dp run directory\nrun_id={run_id}\n')
  return run_id


def _ledger_rounds(ledgers: Any) -> list[int]:
  """Round counts of a checkpoint's ledgers (central, local, silos)."""
  counts = [len(ledgers['central']['rounds'])]
  if ledgers.get('local') is not None:
    counts.append(len(ledgers['local']['rounds']))
  if ledgers.get('silos') is not None:
    counts.append(int(ledgers['silos']['rounds']))
  return counts


_DIFFERENT_FLAGS = 'these flags differ from the checkpoint being resumed: '


def _check_rounds(config: Mapping[str, Any], round_num: int) -> None:
  if config.get('rounds', round_num) < round_num:
    raise ResumeError(
        f'--rounds={config["rounds"]}: the run already completed {round_num} '
        f'rounds; pass --rounds={round_num} or more')


def check_flags(
    meta: Mapping[str, Any],
    *,
    path: str,
    round_num: int,
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    unresolved: Collection[str] = ()) -> None:
  """The checks of `check_checkpoint` that need neither the data nor the
  state: the flags, and --rounds against the rounds done.

  The program runs them first, before it loads the data or imports
  TensorFlow, so that a resume under changed flags is refused at once;
  `check_checkpoint` runs them again with the rest.

  Args:
    meta: The checkpoint's verified meta.json.
    path: The checkpoint (for messages).
    round_num: Its round.
    config: The configuration resuming it (`TrainConfig.to_json()`).
    defaults: Default of every setting (see `config_differences`).
    unresolved: Settings whose value is not known yet (the noise multiplier
      that --target_epsilon calibrates on the data): not compared here.

  Raises:
    ResumeError: Naming the flags that differ.
  """
  try:
    differences = config_differences(meta['config'],
                                     config,
                                     defaults,
                                     ignore=unresolved)
  except (KeyError, TypeError, ValueError) as e:
    raise ResumeError(f'{path}: not a checkpoint this tff-dp can resume '
                      f'({type(e).__name__}: {e})') from e
  if differences:
    raise ResumeError(_DIFFERENT_FLAGS + '; '.join(differences))
  _check_rounds(config, round_num)


def check_checkpoint(meta: Mapping[str, Any], *, path: str, round_num: int,
                     config: Mapping[str, Any], defaults: Mapping[str, Any],
                     run_id: Optional[str],
                     data_fingerprint: Optional[str]) -> run_secrets.RunSecrets:
  """Refuses a checkpoint that is not this run's; returns its secrets.

  Args:
    meta: The checkpoint's verified meta.json.
    path: The checkpoint (for messages).
    round_num: Its round.
    config: The configuration resuming it (`TrainConfig.to_json()`).
    defaults: Default of every setting (see `config_differences`).
    run_id: The run directory's id (`read_run_id`).
    data_fingerprint: The fingerprint of the data about to be trained on,
      or None where the data has none.

  Raises:
    ResumeError: Naming what does not match.
  """
  try:
    differences = config_differences(meta['config'], config, defaults)
    saved_id = meta.get('run_id')
    ledger_rounds = _ledger_rounds(meta['ledgers'])
  except (KeyError, TypeError, ValueError) as e:
    raise ResumeError(f'{path}: not a checkpoint this tff-dp can resume '
                      f'({type(e).__name__}: {e})') from e
  if saved_id is None or saved_id != run_id:
    raise ResumeError(
        f'{path} belongs to another run (run id {saved_id}, this directory\'s '
        f'is {run_id}): a checkpoint copied from elsewhere cannot continue '
        'this run\'s ledger. Use another --run_name')
  if differences:
    raise ResumeError(_DIFFERENT_FLAGS + '; '.join(differences))
  if any(count != round_num for count in ledger_rounds):
    raise ResumeError(
        f'{path} is for round {round_num} but its ledgers charge '
        f'{ledger_rounds} rounds: the checkpoint was altered; refusing to '
        'resume with an under- or over-counted ledger')
  saved_data = meta.get('data_fingerprint')
  if saved_data != data_fingerprint:
    raise ResumeError(
        f'the training data changed since {path} was written (fingerprint '
        f'{saved_data}, now {data_fingerprint}); the population and the '
        'clients must stay those the ledger charged. Use another --run_name')
  _check_rounds(config, round_num)
  try:
    return run_secrets.RunSecrets.from_json(meta.get('secrets'))
  except run_secrets.SecretsFormatError as e:
    raise ResumeError(
        f'{path} holds no valid sampling secret ({e}): it was written by a '
        'tff-dp that drew cohorts from the released --seed, so its cohorts '
        'are public and its guarantee does not hold. Start a new run '
        '(another --run_name)') from e
