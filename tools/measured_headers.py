"""The "# Measured (...)" line of a preset's header, written from a run.

`tools.mechanism_table --write_configs` trains each preset through the real
program and writes, into the preset's header, the accuracy its run reached
and the guarantees it claims, in the form tests/test_configs_headers.py
reads (and holds to the planner's epsilons, `./run.sh epsilon`):

  # Measured (2026-12-04, this machine, tools/mechanism_table.py): accuracy
  # 0.930 after 100 rounds; central epsilon 7.05 (PLD, delta 1e-5).

(one line in the file). The central and record-level epsilons are the run's
own (summary.json: the accountants composing the events that ran); a local
epsilon is planned for the worst case, a client in every round, which a
sampled run's clients rarely are: the run's most frequent client's follows.
"""

import os
import statistics
from typing import Any, Mapping, Optional, Sequence

from absl import flags

_PREFIX = '# Measured ('


def _delta(delta: float) -> str:
  """1e-05 as '1e-5', the form of the flags."""
  mantissa, exponent = f'{delta:.0e}'.split('e')
  return f'{mantissa}e{int(exponent)}'


def _planned_local_epsilon(flagfile: str) -> Optional[float]:
  """The planned worst-case local epsilon of a preset (pure Python)."""
  # pylint: disable=g-import-not-at-top
  from tff_dp.cli import cli_flags
  from tff_dp.program import prepare
  from tff_dp.program import run_privacy
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', f'--flagfile={flagfile}'])
  prepared = prepare.prepare_run(cli_flags.config_from_flags(fv),
                                 calibrate_noise=False)
  local = run_privacy.planned_tracker(prepared.config,
                                      prepared.data).local_guarantee()
  return None if local is None else local.epsilon


def _accuracy(summary: Mapping[str, Any],
              accuracies: Optional[Sequence[float]]) -> str:
  if not accuracies or len(accuracies) == 1:
    return f"{summary['accuracy']:.3f}"
  return (f'{statistics.mean(accuracies):.3f} (mean of {len(accuracies)} '
          f'runs, sd {statistics.stdev(accuracies):.3f})')


def measured_line(summary: Mapping[str, Any],
                  *,
                  date: str,
                  planned_local_epsilon: Optional[float],
                  accuracies: Optional[Sequence[float]] = None) -> str:
  """The header line for a run's summary.json.

  Args:
    summary: The run's summary.json (of the worst run, for the realized
      local and record-level epsilons, when there are several).
    date: The day of the measurement (YYYY-MM-DD).
    planned_local_epsilon: The preset's planned local epsilon, if it has
      local DP.
    accuracies: The accuracy of each run of the same settings, if several:
      their mean and standard deviation are stated.

  Returns:
    The line, without a newline.
  """
  clauses = []
  if summary['guarantee_epsilon'] is not None:
    clauses.append(f"central epsilon {summary['guarantee_epsilon']:.3g} "
                   f"({summary['guarantee_accountant'].upper()}, delta "
                   f"{_delta(summary['delta'])})")
  if planned_local_epsilon is not None:
    clauses.append(f'local epsilon {planned_local_epsilon:.3g} (planned worst '
                   f"case: a client in all {summary['rounds_planned']} rounds; "
                   "the run's most frequent client: "
                   f"{summary['local_epsilon']:.3g})")
  if summary['record_level_epsilon'] is not None:
    clauses.append('record-level epsilon '
                   f"{summary['record_level_epsilon']:.3g} (worst silo, delta "
                   f"{_delta(summary['delta'])})")
  if not summary['private']:
    clauses.append('not private')
  return (
      f'{_PREFIX}{date}, this machine, tools/mechanism_table.py): '
      f"accuracy {_accuracy(summary, accuracies)} after {summary['rounds']} "
      f"rounds; {'; '.join(clauses)}.")


def write_measured_line(flagfile: str,
                        summary: Mapping[str, Any],
                        *,
                        date: str,
                        accuracies: Optional[Sequence[float]] = None) -> str:
  """Replaces (or adds, at the header's end) a preset's Measured line.

  Args:
    flagfile: The preset's path.
    summary: Its run's summary.json.
    date: The day of the measurement (YYYY-MM-DD).
    accuracies: See `measured_line`.

  Returns:
    The line written.
  """
  line = measured_line(summary,
                       date=date,
                       planned_local_epsilon=_planned_local_epsilon(flagfile),
                       accuracies=accuracies)
  with open(flagfile, encoding='utf-8') as f:
    lines = f.read().splitlines()
  header_end = next(
      (i for i, text in enumerate(lines) if not text.startswith('#')),
      len(lines))
  measured = [i for i in range(header_end) if lines[i].startswith(_PREFIX)]
  if measured:
    lines[measured[0]] = line
  else:
    lines.insert(header_end, line)
  tmp = flagfile + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  os.replace(tmp, flagfile)
  return line
