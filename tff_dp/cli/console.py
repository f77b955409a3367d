"""What the training program prints: the calibration, the data, rounds, summary.

The programs' console output for people; the run's files are written by
`tff_dp.program`. Nothing here imports TensorFlow: the lines before training
are printed before the program pays for importing it.
"""

import math
import os
import shutil
import sys
import time
from typing import Callable, Optional, TextIO

from tff_dp import config as config_lib
from tff_dp.cohorts import sampling


def print_calibration(config: config_lib.TrainConfig, accountant) -> None:
  """Says which noise multiplier --target_epsilon calibrated, and why.

  Args:
    config: The calibrated configuration.
    accountant: The `accounting.AccountantKind` that calibrated it.
  """
  from tff_dp.privacy import calibration  # pylint: disable=g-import-not-at-top
  print(
      f'calibrated --noise_multiplier='
      f'{calibration.format_noise_multiplier(config.noise_multiplier)}: '
      f'{config.rounds} rounds reach epsilon {config.target_epsilon:g} '
      f'at delta {config.delta:g} ({accountant.value} '
      'accountant)',
      flush=True)


def print_banner(config: config_lib.TrainConfig, data, held_out) -> None:
  """Describes the data: in a DP run, public facts only."""
  if not config.private:
    print(data.describe(), flush=True)
    if held_out is not None:
      print(held_out.describe(), flush=True)
    return
  from tff_dp.data import description  # pylint: disable=g-import-not-at-top
  print(description.public_description(
      data,
      dataset=config.dataset,
      held_out_clients=None if held_out is None else config.eval_clients),
        flush=True)
  if config.insecure_sampling_seed is None:
    return
  from tff_dp.privacy import run_secrets  # pylint: disable=g-import-not-at-top
  seed = f'--insecure_sampling_seed={config.insecure_sampling_seed}'
  if run_secrets.seed_voids_guarantee(config):
    print(f'INSECURE: {seed}: {insecure_words(config.client_sampling)}',
          flush=True)
  else:
    print(
        f'public seed: {seed}: the cohorts come from a value in the released '
        'flags; no guarantee of this run relies on hidden cohorts (no '
        'amplification by sampling is claimed), so they still hold',
        flush=True)


def insecure_words(client_sampling) -> str:
  """Why a run whose guarantee relies on hidden cohorts (amplification by
  sampling) says INSECURE when they come from --insecure_sampling_seed (its
  privacy statement says the same at length)."""
  cohorts = 'the cohorts come from a value in the released flags, not a secret'
  if client_sampling is sampling.ClientSampling.FIXED_SIZE:
    return (f'{cohorts}; the RDP epsilon may rely on amplification by '
            'sampling, which is void against anyone who knows it (the PLD '
            'epsilon is unamplified and holds)')
  return (f'{cohorts}; the central guarantee relies on amplification by '
          'sampling, which is void against anyone who knows it')


# The mark on each progress line of such a run.
INSECURE_MARK = ' [INSECURE seed]'


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


# The prefix of the server-side test set's released keys (`tff_dp.program.release`,
# which imports TensorFlow: not imported here before the input is checked).
_TEST_PREFIX = 'eval/'
_NONPRIVATE_PREFIX = 'nonprivate/'
# How a DP run labels what it prints outside its guarantee (round times, the
# ETA and the wall time grow with the hidden cohorts' sizes).
NONPRIVATE_LABEL = 'non-private'


class StartupPhases:
  """Prints a line as each start-up phase begins: the seconds since the
  program started, and the phase (e.g. 'building the learning process'), so
  that the seconds before round 1 are accounted for.

  The seconds grow with the client data (loading them, building their
  datasets), so a DP run prints them only where it releases its other
  times (--release_nonprivate_metrics), labelled non-private, and else the
  phases alone.
  """

  def __init__(self,
               *,
               clock: Callable[[], float] = time.monotonic,
               out: Optional[TextIO] = None):
    self._clock = clock
    self._start = clock()
    self._out = out
    self._label = ' s'

  def hide_times(self) -> None:
    """From now on the phases alone (a DP run keeping its times)."""
    self._label = None

  def label_times(self) -> None:
    """From now on the seconds labelled non-private."""
    self._label = f' s, {NONPRIVATE_LABEL}'

  def __call__(self, phase: str) -> None:
    line = (f'[{self._clock() - self._start:.1f}{self._label}] {phase}'
            if self._label is not None else f'[start-up] {phase}')
    print(line, file=self._out or sys.stdout, flush=True)


# Full progress lines a run prints by default (--log_every=0), besides the
# first and last round's and those of sparse evaluations: in a log (stdout
# not a terminal), and on a terminal, where one more line shows the latest
# round in place, so that the run's output fits about one screen.
DEFAULT_PROGRESS_LINES = 50
TERMINAL_PROGRESS_LINES = 10


def resolve_log_every(log_every: int,
                      *,
                      rounds: int,
                      eval_every: int,
                      terminal: bool = False) -> int:
  """Rounds between two full progress lines.

  Args:
    log_every: --log_every; 0 for about `DEFAULT_PROGRESS_LINES` lines
      (`TERMINAL_PROGRESS_LINES` on a terminal).
    rounds: Rounds planned.
    eval_every: Rounds between two evaluations (--eval_every).
    terminal: Whether the lines go to a terminal.

  Returns:
    `log_every` if set; else the least multiple of `eval_every` (so that
    the lines carry the evaluation) that gives at most that many lines, or
    every round of a short run. Where evaluations are rarer than twice
    that, the rounds' own spacing stays and evaluated rounds are printed
    too (`Progress`).
  """
  if log_every > 0:
    return log_every
  lines = TERMINAL_PROGRESS_LINES if terminal else DEFAULT_PROGRESS_LINES
  every = max(1, math.ceil(rounds / lines))
  if eval_every < every or (every > 1 and eval_every <= 2 * every):
    # Evaluations no rarer than half the lines: lines at evaluations only
    # (between half and all of `lines`), not ~twice as many lines of which
    # half lack the accuracy.
    every = eval_every * math.ceil(every / eval_every)
  return every


class Progress:
  """Prints the rounds' progress: the headline metric, the guarantees, and
  (where round times are released) the round time and an ETA.

  A full line for the first round this process runs, every `log_every`-th
  round, every evaluation when evaluations are rarer than that, and the last
  round; on a terminal, one line in between shows the latest round (rewritten
  in place). The ETA is measured from the end of the first round this
  process ran (which includes tracing the computations and starting the
  worker's executors, not repeated later), so it appears from the second
  round on.
  """

  def __init__(self,
               rounds: int,
               *,
               private: bool,
               headline_key: str = _TEST_PREFIX + 'accuracy',
               log_every: int = 1,
               eval_every: int = 1,
               clock: Callable[[], float] = time.monotonic,
               out: Optional[TextIO] = None,
               terminal: Optional[bool] = None,
               insecure: bool = False):
    """Initializes the printer.

    Args:
      rounds: Rounds planned.
      private: Whether the run claims DP (prints its epsilons, or 'not
        private').
      headline_key: Released key of the metric to print (`tff_dp.data.
        labels.headline_metric` under the evaluation's prefix).
      log_every: Rounds between two full lines (`resolve_log_every`).
      eval_every: Rounds between two evaluations.
      clock: Seconds, for the ETA (time.monotonic; tests pass a fake).
      out: Where to print (default: sys.stdout at each print).
      terminal: Whether `out` is a terminal (rewrites the in-between line in
        place); default: `out.isatty()`.
      insecure: Whether the epsilons printed do not hold against whoever
        knows the run's public sampling seed (`run_secrets.
        seed_voids_guarantee`): every line then ends in `INSECURE_MARK`.
    """
    self._rounds = rounds
    self._private = private
    self._headline_key = headline_key
    # The server-side test set's metric is shown by its name ('accuracy',
    # 'recall_at_5'); anything else under its released key, so that a
    # non-private value reads as one ('nonprivate/...').
    self._headline_label = (headline_key[len(_TEST_PREFIX):]
                            if headline_key.startswith(_TEST_PREFIX) else
                            headline_key)
    self._log_every = log_every
    self._print_evaluations = eval_every >= log_every
    self._clock = clock
    self._out = out
    self._terminal = terminal
    self._mark = INSECURE_MARK if insecure else ''
    self._first = None  # (round, time) at the end of the first round run.
    self._pending = None  # The latest round's line, if not printed in full.
    self._shown = 0  # Width of the in-between line on the terminal.

  def __call__(self, round_num: int, values: dict[str, float]) -> None:
    now = self._clock()
    if self._first is None:
      self._first = (round_num, now)
    line = self._line(round_num, values, now)
    evaluated = self._headline_key in values
    if (round_num == self._first[0] or round_num >= self._rounds or
        round_num % self._log_every == 0 or
        (evaluated and self._print_evaluations)):
      self._write(line, full=True)
      self._pending = None
    else:
      self._pending = line
      if self._is_terminal():
        self._write(line, full=False)

  def close(self) -> None:
    """Ends the output: prints the latest round in full if it was not (a run
    stopped early by its budget, an interruption)."""
    if self._pending is not None:
      self._write(self._pending, full=True)
      self._pending = None

  def _line(self, round_num: int, values: dict[str, float], now: float) -> str:
    parts = [f'round {round_num}/{self._rounds}']
    if self._headline_key in values:
      parts.append(f'{self._headline_label} {values[self._headline_key]:.4f}')
    parts += _guarantee_parts(values, private=self._private)
    # Round times grow with the hidden cohorts: shown only where they are
    # released (non-private runs, or --release_nonprivate_metrics).
    seconds = values.get('nonprivate/round_seconds')
    if seconds is not None:
      times = [f'{seconds:.2f} s']
      first_round, first_time = self._first
      if round_num > first_round:
        per_round = (now - first_time) / (round_num - first_round)
        eta = per_round * max(0, self._rounds - round_num)
        times.append(f'ETA {format_duration(eta)}')
      if self._private:
        # Released on request, outside the guarantee: labelled as such.
        times = [NONPRIVATE_LABEL + ': ' + ', '.join(times)]
      parts += times
    return ' | '.join(parts) + self._mark

  def _stream(self) -> TextIO:
    return self._out or sys.stdout

  def _is_terminal(self) -> bool:
    if self._terminal is None:
      isatty = getattr(self._stream(), 'isatty', None)
      self._terminal = bool(isatty and isatty())
    return self._terminal

  def _write(self, line: str, *, full: bool) -> None:
    stream = self._stream()
    if not self._is_terminal():
      print(line, file=stream, flush=True)
      return
    if not full:  # One screen line, or `\r` would not return to its start.
      line = line[:max(20, shutil.get_terminal_size().columns - 1)]
    # Over the in-between line, if any: `\r`, and spaces over what is left.
    text = '\r' + line + ' ' * max(0, self._shown - len(line))
    stream.write(text + '\n' if full else text)
    stream.flush()
    self._shown = 0 if full else len(line)


def _guarantee_parts(values: dict[str, float], *, private: bool) -> list[str]:
  """The epsilons of the guarantees a round's values carry, in words."""
  if not private:
    return ['not private']
  central = [
      f'{key.rsplit("_", 1)[1]} {_eps(value)}' for key, value in values.items()
      if key.startswith('privacy/epsilon_')
  ]
  parts = ['epsilon ' + ', '.join(central)] if central else []
  if 'privacy/local_epsilon' in values:
    parts.append(f'local epsilon {_eps(values["privacy/local_epsilon"])}')
  if 'privacy/example_epsilon' in values:
    parts.append('record-level epsilon '
                 f'{_eps(values["privacy/example_epsilon"])}')
  return parts


def _eps(value: float) -> str:
  if math.isnan(value):
    return 'n/a'
  return 'inf' if math.isinf(value) else f'{value:.3f}'


def print_summary(summary, statement_path: str, *, eval_prefix: str,
                  metric_names: tuple[str, ...]) -> None:
  """Prints the summary, and where the privacy statement is.

  The statement (20 paragraphs) is not printed: in full, it pushed the run's
  progress off a terminal's screen. The summary repeats its guarantee.

  Args:
    summary: The run's `run_summary.Summary`.
    statement_path: The run's privacy statement.
    eval_prefix: Prefix of the evaluation's released keys.
    metric_names: The metrics to print (`labels.metric_names`), each as
      'test <name>' (the server's test set) or 'federated evaluation
      <name>'.
  """
  print()
  print('Summary')
  print('=======')
  for name in metric_names:
    key = eval_prefix + name
    value = summary.eval_metrics.get(key)
    text = 'n/a' if value is None else f'{value:.4f}'
    caveat = (f'; released as {key}, NOT covered by the DP guarantee'
              if summary.private and value is not None else '')
    if summary.evaluation == config_lib.Evaluation.FEDERATED.value:
      print(f'federated evaluation {name} (held-out clients{caveat}): {text}')
    elif not eval_prefix.startswith(_NONPRIVATE_PREFIX):
      print(f'test {name}: {text}')
    elif summary.private and value is None:
      print(f'test {name}: not released (the test set belongs to the private '
            'population; pass --release_nonprivate_metrics to release it as '
            f'{key}, outside the guarantee)')
    else:
      print(f'test {name} (data of the private population{caveat}): {text}')
  if summary.guarantee_epsilon is not None:
    eps = ', '.join(f'{k} {_eps(math.inf if v is None else v)}'
                    for k, v in summary.epsilon.items())
    print(f'epsilon (central): {eps} (delta = {summary.delta:g})')
    for name in summary.accountants_not_applicable:
      print(f'epsilon ({name}): n/a, this accountant cannot compose the '
            'events of this run')
    insecure = (
        ' -- INSECURE: the cohorts come from a value in the released flags, '
        'not a secret, and this epsilon relies on amplification by sampling, '
        'which is void against anyone who knows it'
        if summary.guarantee_insecure else '')
    print(f'guarantee: ({summary.guarantee_epsilon:.4g}, '
          f'{summary.delta:g})-DP for each client, by the '
          f'{summary.guarantee_accountant} accountant{insecure}')
  elif summary.private:
    print('epsilon (central): none, the released models carry no central '
          'claim')
  else:
    print('epsilon: infinite (not private)')
  if summary.local_epsilon is not None:
    print(f'local epsilon (worst-case client, against the server): '
          f'{summary.local_epsilon:.4g}')
  if summary.record_level_epsilon is not None:
    print(f'record-level epsilon (worst client): '
          f'{summary.record_level_epsilon:.4g}')
  print(f'rounds: {summary.rounds}/{summary.rounds_planned} '
        f'({summary.stop_reason})')
  if summary.wall_seconds is not None:
    label = (f' ({NONPRIVATE_LABEL}, not covered by the DP guarantee)'
             if summary.private else '')
    print(f'wall time{label}: {format_duration(summary.wall_seconds)}')
  print(f'privacy statement (what the guarantee covers, releases and '
        f'assumes): {statement_path}')
  print(f'outputs: {summary.run_dir}')


def print_stopped_statement(run_dir: str, progress: Progress) -> None:
  """Ends `progress` (its latest round's line), then says where an
  interrupted run's statement of its released rounds is
  (`tff_dp.program.run_statement.write_stopped`), if it was written."""
  progress.close()
  path = os.path.join(run_dir, 'privacy_statement.txt')
  if os.path.exists(path):
    print(
        f'stopped early; privacy statement of the rounds released so far: '
        f'{path}',
        flush=True)
