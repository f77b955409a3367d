"""What finished runs released, read from their directories and grouped by setting.

Only released values are read: `summary.json` (the epsilons of each
accountant, delta, the final evaluation, rounds) and the `eval/` and
`privacy/` columns of `metrics.csv` (the per-round series). An evaluation
outside the guarantee (`nonprivate/eval/`, `nonprivate/fed_eval/`: computed
from client data without noise) is never read, so it cannot reach a table;
nothing is recomputed from client data. Pure Python.
"""

import dataclasses
import json
import math
import os
import re
import statistics
from typing import Any, Iterable, Mapping, Optional, Sequence

from tff_dp.program import metrics_file
from tff_dp.program import resume as resume_rules

SUMMARY_FILE = 'summary.json'
METRICS_FILE = 'metrics.csv'
# The released evaluation covered by the guarantee: on the public test set.
COVERED_EVAL_PREFIX = 'eval/'
_SERIES_PREFIXES = (COVERED_EVAL_PREFIX, 'privacy/')
# Settings that do not change what a run computes, or that every repetition
# changes: runs equal in all other settings are one setting's seeds.
_NOT_A_SETTING = frozenset({
    'seed', 'run_name', 'output_dir', 'allow_unconfined_worker',
    'clients_per_call', 'eval_every', 'insecure_sampling_seed', 'workers',
    'worker_certs'
})
_SEED_SUFFIX = re.compile(r'[_-]seed\d+$')


class NotARunError(ValueError):
  """A directory that is not a finished run; the message names it."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  """The released values of one finished run.

  Attributes:
    name: The run directory's name.
    run_dir: Its path.
    setting: The label of its setting (runs of a setting differ in seed).
    seed: Its --seed (public).
    private: Whether it claims any guarantee.
    target_epsilon: Its --target_epsilon, if it calibrated to one.
    epsilon: Central epsilon by accountant (None: infinite).
    guarantee_epsilon: The stated guarantee's epsilon: the central one, else
      the local, else the record-level one (None if the run claims none).
    guarantee_kind: 'central', 'local', 'record-level' or None.
    guarantee_accountant: The central guarantee's accountant (rdp, pld).
    local_epsilon: The worst client's local epsilon, if claimed.
    record_level_epsilon: The worst silo's record-level epsilon, if released.
    delta: The guarantee's delta (None if not private).
    metric: The released key of the headline metric on the public test set
      (eval/accuracy, eval/recall_at_5), None if the run released none.
    accuracy: Its final value.
    rounds: Rounds completed.
    history: metrics.csv's rows, only `round` and the eval/ and privacy/
      columns (NaN where a row has no value).
    released_wall_seconds: The wall time the run released (only runs that
      release values outside the guarantee do), else None.
    config: config.json (public settings).
  """
  name: str
  run_dir: str
  setting: str
  seed: Optional[int]
  private: bool
  target_epsilon: Optional[float]
  epsilon: Mapping[str, Optional[float]]
  guarantee_epsilon: Optional[float]
  guarantee_kind: Optional[str]
  guarantee_accountant: Optional[str]
  local_epsilon: Optional[float]
  record_level_epsilon: Optional[float]
  delta: Optional[float]
  metric: Optional[str]
  accuracy: Optional[float]
  rounds: int
  history: tuple[Mapping[str, float], ...]
  released_wall_seconds: Optional[float]
  config: Mapping[str, Any]

  @property
  def epsilon_key(self) -> Optional[str]:
    """The released per-round key of the stated guarantee's epsilon."""
    return {
        'central': f'privacy/epsilon_{self.guarantee_accountant}',
        'local': 'privacy/local_epsilon',
        'record-level': 'privacy/example_epsilon',
    }.get(self.guarantee_kind)

  @property
  def guarantee_text(self) -> Optional[str]:
    """'central, PLD', 'local', 'record-level' or None."""
    if self.guarantee_kind == 'central':
      return f'central, {self.guarantee_accountant.upper()}'
    return self.guarantee_kind


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _history(path: str) -> tuple[dict[str, float], ...]:
  if not os.path.isfile(path):
    return ()
  rows = []
  # A run interrupted mid-append leaves a cut last line: its released rows
  # are the whole ones before it (`metrics_file`), as a resume reads them.
  for row in metrics_file.read(path, key_fieldname='round').rows:
    kept = {'round': float(row['round'])}
    for key, value in row.items():
      if key.startswith(_SERIES_PREFIXES):
        kept[key] = float(value) if value != '' else math.nan
    rows.append(kept)
  return tuple(rows)


def _guarantee(
    summary: Mapping[str, Any]) -> tuple[Optional[float], Optional[str]]:
  """The stated guarantee's epsilon and kind: central, local, record-level."""
  if summary.get('guarantee_accountant'):
    return summary.get('guarantee_epsilon'), 'central'
  if summary.get('local_epsilon') is not None:
    return summary['local_epsilon'], 'local'
  if summary.get('record_level_epsilon') is not None:
    return summary['record_level_epsilon'], 'record-level'
  return None, None


def check_run_dir(path: str, flag: str = 'DIR') -> None:
  """Raises `NotARunError` unless `path` is a finished run's directory."""
  if not os.path.isdir(path):
    raise NotARunError(f'{flag} {path}: no such directory')
  if os.path.isfile(os.path.join(path, SUMMARY_FILE)):
    return
  entries = os.listdir(path)
  if resume_rules.RUN_MARKER in entries or 'config.json' in entries:
    raise NotARunError(f'{flag} {path}: the run has not finished (no '
                       f'{SUMMARY_FILE}); run its command again to resume it')
  raise NotARunError(f'{flag} {path}: not a tff-dp run directory (no '
                     f'{SUMMARY_FILE})')


def read_run(path: str, *, setting: Optional[str] = None) -> RunResult:
  """The released values of the finished run in `path`.

  Raises:
    NotARunError: If `path` is not a finished run or its files are not a
      run's.
  """
  check_run_dir(path)
  try:
    summary = _read_json(os.path.join(path, SUMMARY_FILE))
    config_path = os.path.join(path, 'config.json')
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    history = _history(os.path.join(path, METRICS_FILE))
    epsilon, kind = _guarantee(summary)
    headline = summary.get('headline_key') or ''
    covered = headline.startswith(COVERED_EVAL_PREFIX)
    name = os.path.basename(os.path.normpath(path))
    return RunResult(
        name=name,
        run_dir=path,
        setting=setting or _SEED_SUFFIX.sub('', name),
        seed=config.get('seed'),
        private=bool(summary['private']),
        target_epsilon=config.get('target_epsilon'),
        epsilon=dict(summary.get('epsilon') or {}),
        guarantee_epsilon=epsilon,
        guarantee_kind=kind,
        guarantee_accountant=summary.get('guarantee_accountant'),
        local_epsilon=summary.get('local_epsilon'),
        record_level_epsilon=summary.get('record_level_epsilon'),
        delta=summary.get('delta'),
        metric=headline if covered else None,
        accuracy=summary.get('headline_value') if covered else None,
        rounds=int(summary['rounds']),
        history=history,
        released_wall_seconds=summary.get('wall_seconds'),
        config=config)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise NotARunError(f'DIR {path}: its {SUMMARY_FILE}, config.json or '
                       f'{METRICS_FILE} is not a run\'s ({type(e).__name__}: '
                       f'{e})') from e


@dataclasses.dataclass(frozen=True)
class Stats:
  """Mean, sample standard deviation (None for one value) and range."""
  mean: float
  sd: Optional[float]
  low: float
  high: float
  n: int


def stats(values: Iterable[Optional[float]]) -> Optional[Stats]:
  """`Stats` of the values that are numbers; None if there are none."""
  numbers = [v for v in values if v is not None and not math.isnan(v)]
  if not numbers:
    return None
  sd = statistics.stdev(numbers) if len(numbers) > 1 else None
  return Stats(statistics.fmean(numbers), sd, min(numbers), max(numbers),
               len(numbers))


@dataclasses.dataclass(frozen=True)
class Group:
  """One setting's runs (its seeds)."""
  label: str
  runs: tuple[RunResult, ...]

  @property
  def private(self) -> bool:
    return any(run.private for run in self.runs)

  @property
  def target_epsilon(self) -> Optional[float]:
    return self.runs[0].target_epsilon

  def worst(self, values: Iterable[Optional[float]]) -> Optional[float]:
    """The largest epsilon over the runs (None: infinite, or none)."""
    values = list(values)
    if not values or any(v is None for v in values):
      return None
    return max(values)

  def epsilon(self, accountant: str) -> Optional[float]:
    """The largest central epsilon of `accountant` over the runs."""
    if not all(accountant in run.epsilon for run in self.runs):
      return None
    return self.worst(run.epsilon[accountant] for run in self.runs)

  def accuracy(self) -> Optional[Stats]:
    return stats(run.accuracy for run in self.runs)

  def series(self, key: str) -> tuple[list[float], list[Stats]]:
    """(rounds, stats over the runs) of a released per-round `key`."""
    by_round: dict[float, list[float]] = {}
    for run in self.runs:
      for row in run.history:
        if not math.isnan(row.get(key, math.nan)):
          by_round.setdefault(row['round'], []).append(row[key])
    rounds = sorted(by_round)
    return rounds, [stats(by_round[r]) for r in rounds]


def setting_key(config: Mapping[str, Any]) -> str:
  """What runs of one setting share: every setting but the seed's kind."""
  return json.dumps({
      k: v for k, v in config.items() if k not in _NOT_A_SETTING
  },
                    sort_keys=True)


def group(runs: Sequence[RunResult], *, by_label: bool) -> list[Group]:
  """Groups runs into settings, in the order of their first run.

  Args:
    runs: Finished runs.
    by_label: Group by each run's `setting` label (a sweep's plan names
      them); otherwise by equal configurations (`setting_key`), the label
      of the first run naming the group.
  """
  groups: dict[str, list[RunResult]] = {}
  labels: dict[str, str] = {}
  for run in runs:
    key = run.setting if by_label else setting_key(run.config)
    groups.setdefault(key, []).append(run)
    labels.setdefault(key, run.setting)
  seen: dict[str, int] = {}
  result = []
  for key, members in groups.items():
    label = labels[key]
    seen[label] = seen.get(label, 0) + 1
    if seen[label] > 1:  # Two settings whose run names look alike.
      label = f'{label} ({seen[label]})'
    result.append(Group(label, tuple(members)))
  return result
