"""The sweep's one progress line, and the wall times it measures from outside the runs.

The line says how many runs are done of how many, which are running and,
only when every run of the sweep releases its wall time
(`plan.Plan.releases_timing`), the time since the sweep (this invocation)
started and an ETA from the runs that finished in this invocation. On a terminal it is rewritten in place;
otherwise a line is printed whenever a run starts or ends.

The seconds each invocation of a run took are kept in
`nonprivate/wall_times.json` for the runs that release their wall time
only: a DP run does not (it grows with its hidden cohorts), so the sweep
neither keeps nor prints it unless the run asks for values outside the
guarantee; they stay apart from the runs' released values, under the folder
that says so (`tff_dp.sweeps.report`).
"""

import json
import os
import time
from typing import Mapping, Optional, Sequence, TextIO

from tff_dp import atomic_io

WALL_TIMES_JSON = os.path.join('nonprivate', 'wall_times.json')


def clock(seconds: float) -> str:
  """1:05:09, 4:07, 0:09."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return (f'{hours}:{minutes:02d}:{secs:02d}'
          if hours else f'{minutes}:{secs:02d}')


class WallTimes:
  """Run name -> the seconds of each of its invocations, on disk."""

  def __init__(self, sweep_dir: str):
    self._path = os.path.join(sweep_dir, WALL_TIMES_JSON)
    self._runs: dict[str, list[float]] = {}
    if os.path.isfile(self._path):
      try:
        with open(self._path, encoding='utf-8') as f:
          self._runs = {
              name: [float(s) for s in seconds]
              for name, seconds in json.load(f)['runs'].items()
          }
      except (OSError, ValueError, KeyError, TypeError, AttributeError):
        self._runs = {}  # Measurements only: lost ones are not a failure.

  def add(self, name: str, seconds: float) -> None:
    self._runs.setdefault(name, []).append(seconds)
    os.makedirs(os.path.dirname(self._path), exist_ok=True)
    atomic_io.write_text_atomic(
        self._path,
        json.dumps(
            {
                'note': 'NOT covered by the privacy guarantee: seconds of '
                        'each invocation of each run, measured from outside',
                'runs': self._runs
            },
            indent=1))

  def totals(self) -> dict[str, float]:
    """Run name -> its seconds over all its invocations."""
    return {name: sum(seconds) for name, seconds in self._runs.items()}


class Progress:
  """The sweep's progress line."""

  def __init__(self,
               total: int,
               done: int,
               *,
               parallel: int,
               out: TextIO,
               terminal: Optional[bool] = None,
               show_times: bool = True):
    self._total = total
    self._show_times = show_times
    self._done = done
    self._parallel = parallel
    self._out = out
    self._terminal = (out.isatty() if terminal is None else terminal)
    self._start = time.monotonic()
    self._durations: list[float] = []
    self._last = ''

  def finished(self, seconds: float) -> None:
    """A run finished in `seconds` (this invocation of it)."""
    self._done += 1
    self._durations.append(seconds)

  def line(self, running: Sequence[str], now: Optional[float] = None) -> str:
    elapsed = (time.monotonic() if now is None else now) - self._start
    text = f'sweep: {self._done}/{self._total} runs done'
    if running:
      text += f' | running: {", ".join(running)}'
    if not self._show_times:
      return text
    text += f' | elapsed {clock(elapsed)}'
    remaining = self._total - self._done
    if remaining and self._durations:
      mean = sum(self._durations) / len(self._durations)
      batches = -(-remaining // self._parallel)
      text += f' | ETA {clock(mean * batches)}'
    elif remaining:
      text += ' | ETA after the first run'
    return text

  def show(self, running: Sequence[str], *, changed: bool) -> None:
    """Rewrites the line (terminal) or prints it when something changed."""
    text = self.line(running)
    if self._terminal:
      self._out.write('\r\033[K' + text)
      self._out.flush()
    elif changed and text != self._last:
      self._out.write(text + '\n')
      self._out.flush()
    self._last = text

  def close(self) -> None:
    if self._terminal:
      self._out.write('\n')
      self._out.flush()


def summary_line(totals: Mapping[str, float], names: Sequence[str]) -> str:
  """The sweep's measured wall time, labelled as outside the guarantee."""
  seconds = sum(totals.get(name, 0.0) for name in names)
  return (f'wall time of the {len(names)} timed run(s) (those that release '
          f'values outside the guarantee), summed: {clock(seconds)} (measured '
          'from outside the runs; NOT covered by the privacy guarantee: '
          f'{WALL_TIMES_JSON})')
