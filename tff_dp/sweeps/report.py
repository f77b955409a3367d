"""The results table of a sweep or comparison, as CSV and Markdown, and the wall times apart.

`results.csv` and `results.md`: one row per setting, every cell a value the
runs released (epsilon per accountant, delta, the final accuracy on the
public test set as mean, standard deviation and range over the seeds,
rounds). Epsilons are the largest over the setting's runs: the guarantee
that holds for each of them.

Wall times are not released by a DP run (they grow with the hidden cohorts),
so they never enter that table: `nonprivate/wall_times.csv` and `.md` hold
them, measured from outside the runs (or as released by runs that release
values outside the guarantee), under a line saying they are not covered.
"""

import csv
import io
import os
from typing import Mapping, Optional, Sequence

from tff_dp import atomic_io
from tff_dp.sweeps import results

TABLE_CSV = 'results.csv'
TABLE_MD = 'results.md'
NONPRIVATE_DIR = 'nonprivate'
WALL_TIMES_CSV = 'wall_times.csv'
WALL_TIMES_MD = 'wall_times.md'
WALL_TIMES_NOTE = (
    'NOT covered by the privacy guarantee: a DP run\'s wall time grows with '
    'the sizes of its hidden cohorts, so DP runs do not release it. These '
    'are measured from outside each run (or released by runs that release '
    'values outside the guarantee); publish them only if that is acceptable.')
_ACCOUNTANT_ORDER = ('rdp', 'pld')


def _fmt(value: Optional[float], digits: int = 4) -> str:
  return 'n/a' if value is None else f'{value:.{digits}g}'


def accountants(groups: Sequence[results.Group]) -> list[str]:
  """The accountants some run released a central epsilon of, in order."""
  found = {a for g in groups for run in g.runs for a in run.epsilon}
  return sorted(found,
                key=lambda a: (_ACCOUNTANT_ORDER.index(a)
                               if a in _ACCOUNTANT_ORDER else 99, a))


def _has(groups, attribute: str) -> bool:
  return any(
      getattr(run, attribute) is not None for g in groups for run in g.runs)


def accuracy_text(acc: Optional[results.Stats]) -> str:
  """mean ± sd (low-high), or the value of a single run."""
  if acc is None:
    return 'n/a'
  if acc.n == 1:
    return f'{acc.mean:.4f}'
  return (f'{acc.mean:.4f} ± {acc.sd:.4f} ({acc.low:.3f}-{acc.high:.3f})')


def _epsilon_cell(group: results.Group, accountant: str) -> str:
  if not group.private or not any(r.guarantee_kind for r in group.runs):
    return 'none (not private)' if not group.private else 'n/a'
  if not all(accountant in run.epsilon for run in group.runs):
    return 'n/a'
  value = group.epsilon(accountant)
  return 'inf' if value is None else _fmt(value)


def _rounds(group: results.Group) -> str:
  rounds = sorted({run.rounds for run in group.runs})
  return '/'.join(str(r) for r in rounds)


def _metric_name(groups: Sequence[results.Group]) -> str:
  metrics = {run.metric for g in groups for run in g.runs if run.metric}
  if len(metrics) == 1:
    return metrics.pop().split('/', 1)[1].replace('_', ' ')
  return 'accuracy'


def rows(groups: Sequence[results.Group]) -> tuple[list[str], list[list[str]]]:
  """The Markdown table's header and cells."""
  names = accountants(groups)
  local = _has(groups, 'local_epsilon')
  record = _has(groups, 'record_level_epsilon')
  header = ['setting', 'runs', 'target epsilon']
  header += [f'epsilon ({a.upper()})' for a in names]
  header += ['local epsilon'] * local + ['record-level epsilon'] * record
  header += [
      'delta', f'test {_metric_name(groups)} (mean ± sd (range))', 'rounds'
  ]
  cells = []
  for g in groups:
    row = [g.label, str(len(g.runs)), _fmt(g.target_epsilon)]
    row += [_epsilon_cell(g, a) for a in names]
    if local:
      row.append(_fmt(g.worst(r.local_epsilon for r in g.runs)))
    if record:
      row.append(_fmt(g.worst(r.record_level_epsilon for r in g.runs)))
    delta = g.runs[0].delta
    row += [
        'n/a' if delta is None else f'{delta:g}',
        accuracy_text(g.accuracy()),
        _rounds(g)
    ]
    cells.append(row)
  return header, cells


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in cells]
  return '\n'.join(lines) + '\n'


def _csv_text(header: Sequence[str], cells: Sequence[Sequence]) -> str:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(cells)
  return text.getvalue()


def _number(value: Optional[float]) -> str:
  return '' if value is None else repr(value)


def csv_rows(groups: Sequence[results.Group]) -> tuple[list[str], list[list]]:
  """The CSV table: the same columns as numbers (empty: none, or infinite)."""
  names = accountants(groups)
  header = ['setting', 'runs', 'private', 'target_epsilon']
  header += [f'epsilon_{a}' for a in names]
  header += [
      'local_epsilon', 'record_level_epsilon', 'delta', 'metric',
      'accuracy_mean', 'accuracy_sd', 'accuracy_min', 'accuracy_max', 'rounds'
  ]
  cells = []
  for g in groups:
    acc = g.accuracy()
    metric = next((r.metric for r in g.runs if r.metric), '')
    cells.append([
        g.label,
        len(g.runs), g.private,
        _number(g.target_epsilon), *(_number(g.epsilon(a)) for a in names),
        _number(g.worst(r.local_epsilon for r in g.runs)),
        _number(g.worst(r.record_level_epsilon for r in g.runs)),
        _number(g.runs[0].delta), metric,
        *(('',) * 4 if acc is None else (_number(acc.mean), _number(acc.sd),
                                         _number(acc.low), _number(acc.high))),
        _rounds(g)
    ])
  return header, cells


def write_table(out_dir: str, groups: Sequence[results.Group]) -> str:
  """Writes results.csv and results.md; returns the Markdown table."""
  table = markdown(*rows(groups))
  atomic_io.write_text_atomic(os.path.join(out_dir, TABLE_CSV),
                              _csv_text(*csv_rows(groups)))
  atomic_io.write_text_atomic(os.path.join(out_dir, TABLE_MD), table)
  return table


def wall_time_rows(
    groups: Sequence[results.Group],
    seconds: Mapping[str, float]) -> tuple[list[str], list[list[str]]]:
  """Per setting, the mean seconds of its runs that have a wall time.

  Args:
    groups: The settings.
    seconds: Run name -> wall seconds (runs without one are left out).
  """
  header = ['setting', 'runs timed', 'wall time per run (mean)', 'range']
  cells = []
  for g in groups:
    timed = results.stats(seconds.get(run.name) for run in g.runs)
    if timed is None:
      cells.append([g.label, '0', 'n/a', 'n/a'])
    else:
      cells.append([
          g.label,
          str(timed.n), f'{timed.mean:.0f} s',
          f'{timed.low:.0f}-{timed.high:.0f} s'
      ])
  return header, cells


def write_wall_times(out_dir: str, groups: Sequence[results.Group],
                     seconds: Mapping[str, float], *, source: str) -> str:
  """Writes nonprivate/wall_times.{csv,md}; returns the Markdown.

  Args:
    out_dir: The sweep's (or comparison's) directory.
    groups: The settings.
    seconds: Run name -> wall seconds.
    source: How they were obtained, for the note.
  """
  folder = os.path.join(out_dir, NONPRIVATE_DIR)
  os.makedirs(folder, exist_ok=True)
  # The label travels with every row: a CSV has no place for a note.
  per_run = [[
      'setting', 'run', 'wall_seconds', 'covered_by_privacy_guarantee', 'source'
  ]]
  per_run += [[g.label, run.name,
               _number(seconds.get(run.name)), 'no', source]
              for g in groups
              for run in g.runs]
  atomic_io.write_text_atomic(os.path.join(folder, WALL_TIMES_CSV),
                              _csv_text(per_run[0], per_run[1:]))
  table = markdown(*wall_time_rows(groups, seconds))
  atomic_io.write_text_atomic(
      os.path.join(folder, WALL_TIMES_MD),
      f'{WALL_TIMES_NOTE}\n\nSource: {source}.\n\n'
      f'{table}')
  return table
