"""`./run.sh epsilon --recommend`: the recommendation table, as printed.

The library (`tff_dp.privacy.recommendation`) computes the rows and picks
the marked ones; this module only takes the run's settings from its config,
formats the table and notes the rows the configured mechanism would refuse
to train (adaptive clipping needs z < 0.1 * m). It reads no flags: the
epsilon program passes the candidates in.
"""

import dataclasses
from typing import Optional, Sequence

from tff_dp.checks import ConfigError
from tff_dp.cli import exits
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy import recommendation

_ADAPTIVE = 'gaussian_adaptive'
_HEADER = ('cohort m', 'rounds T', 'q = m/N', 'z', 'epsilon', 'std z*C/m',
           'work m*T', 'mark')
LEAST = 'least noise'
LEAST_FOR_WORK = 'least for its m*T'


def _clip_words(config) -> tuple[float, str]:
  """C and how the header names it."""
  if config.dp_mechanism.value == _ADAPTIVE:
    return config.initial_clip, (
        f'C = {config.initial_clip:g} (--initial_clip;\n  adaptive clipping '
        'moves C from round to round: read the std column as relative)')
  return config.clip, f'C = {config.clip:g} (--clip)'


def marks(
    rows: Sequence[recommendation.Row],
    runnable: Optional[recommendation.Runnable] = None
) -> dict[tuple[int, int], str]:
  """(m, T) -> the mark column of the marked rows (never a row that
  `runnable` rejects)."""
  found: dict[tuple[int, int], list[str]] = {}
  for row in recommendation.least_noise(rows, runnable):
    found.setdefault((row.clients_per_round, row.rounds), []).append(LEAST)
  for level in recommendation.least_noise_per_work(rows, runnable).values():
    for row in level:
      found.setdefault((row.clients_per_round, row.rounds),
                       []).append(LEAST_FOR_WORK)
  return {key: ', '.join(words) for key, words in found.items()}


def format_rows(
    rows: Sequence[recommendation.Row],
    runnable: Optional[recommendation.Runnable] = None) -> list[str]:
  """The table's lines: a header, then one line per row; a row `runnable`
  rejects is marked 'refused' (the note below the table says why)."""
  marked = marks(rows, runnable)
  cells = [_HEADER]
  for row in rows:
    key = (row.clients_per_round, row.rounds)
    if row.meets_budget:
      values = (calibration.format_noise_multiplier(row.noise_multiplier),
                f'{row.epsilon:.6g}', f'{row.noise_std:.4g}')
    else:
      values = ('-', '-', '-')
    if not row.meets_budget:
      mark = 'unreachable'
    elif runnable is not None and not runnable(row):
      mark = 'refused'
    else:
      mark = marked.get(key, '')
    cells.append(
        (str(row.clients_per_round), str(row.rounds),
         f'{row.sampling_rate:.4g}', *values, str(row.total_work), mark))
  widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADER))]
  return [
      '  '.join(cell.rjust(width) for cell, width in zip(line[:-1], widths)) +
      f'  {line[-1]}'.rstrip() for line in cells
  ]


def _refusal(config, row) -> Optional[str]:
  """Why the trainer would refuse this row's z with the configured
  mechanism (adaptive clipping bounds z by the cohort); None if it runs."""
  planned = dataclasses.replace(config,
                                clients_per_round=row.clients_per_round,
                                noise_multiplier=row.noise_multiplier)
  try:
    config.mechanism.check(planned.dp_settings)
  except ConfigError as e:
    return str(e)
  return None


def print_recommendation(config, population: int, *,
                         cohorts: Optional[Sequence[int]],
                         rounds: Optional[Sequence[int]]) -> None:
  """Prints the table for `config`'s target, sampling, delta and clip.

  Args:
    config: The planned run's config (--target_epsilon set).
    population: N.
    cohorts: Candidate cohort sizes; None: the library's defaults around
      --clients_per_round.
    rounds: Candidate round counts; None: the defaults around --rounds.
  """
  if cohorts is None:
    cohorts = recommendation.candidate_cohorts(
        population=population, clients_per_round=config.clients_per_round)
  if rounds is None:
    rounds = recommendation.candidate_rounds(rounds=config.rounds)
  clip, clip_words = _clip_words(config)
  try:
    rows = recommendation.build_table(target_epsilon=config.target_epsilon,
                                      delta=config.delta,
                                      population=population,
                                      sampling=config.client_sampling,
                                      accountants=config.accountants,
                                      clip=clip,
                                      cohorts=cohorts,
                                      rounds=rounds)
  except (ValueError, accounting.UnsupportedAccountingError) as e:
    raise exits.UserError(f'--recommend: {e}') from e
  accountants = ','.join(kind.value for kind in config.accountants)
  print(f'recommend: for each cohort m and rounds T, the z that reaches '
        f'epsilon {config.target_epsilon:g}')
  print(f'  (the smallest of {accountants}, as --target_epsilon calibrates '
        'in training) and the noise std')
  print(f'  of the averaged update z*C/m, {clip_words}')
  runnable = lambda row: _refusal(config, row) is None
  for line in format_rows(rows, runnable):
    print(line)
  print(f'marks: "{LEAST}": the least std of all rows that meet the budget;')
  print(f'  "{LEAST_FOR_WORK}": the least std among the rows of the same '
        'total work m*T')
  print('  (where two or more meet the budget). Less noise per round, not '
        'necessarily a')
  print('  better model: fewer rounds are fewer updates. A row training '
        'refuses is never marked.')
  for row in rows:
    if not row.meets_budget:
      print(f'unreachable: m={row.clients_per_round}, T={row.rounds}: '
            f'{row.unreachable}')
    elif (refused := _refusal(config, row)) is not None:
      print(f'note: m={row.clients_per_round}, T={row.rounds}: training '
            f'refuses this z: {refused}')
