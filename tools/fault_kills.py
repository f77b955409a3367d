"""The fault campaign's SIGKILL loop: kill the trainer, resume, check.

Trains a short smoke run (configs/smoke.cfg with --rounds) in a subprocess,
over and over: each attempt is either SIGKILLed from outside after a random
delay, or kills itself at a random named fault point (`tff_dp.program.faults`,
TFF_DP_CRASH_AT=<point>:<round>); the next attempt resumes the same run
directory. Random delays are drawn over the expected length of the attempt
(start-up included, measured on earlier attempts), fault points over the
rounds not yet released; once all rounds of a run are released, an attempt
is killed only one time in four. When a run completes before all kills have
happened, the next run (campaign-2, ...) starts; once the kills are spent,
the last run finishes without faults.

After each kill: the ledger on disk charges every released round, and no TFF
worker of the attempt survives it. Every completed run is checked
(`fault_runs.verify_run`): rounds and ledger events as planned, epsilon of
every accountant exactly that of `planned` rounds computed from the flags,
every round once in metrics.csv and TensorBoard, no worker left. The report
gives survived/total, the rounds lost per kill (rounds released before the
kill minus the round the resumed run started after; negative if it continued
from a checkpointed, charged round that was not yet released) and the
epsilon mismatches.
"""

import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from tff_dp.program import faults
from tff_dp.program import resume
from tools import fault_context
from tools import fault_runs

_RESUMING = re.compile(r'^resuming after round (\d+)')
_ROUND = re.compile(r'^round (\d+)/(\d+)')
ATTEMPT_TIMEOUT_SECONDS = 600
_FINISHED_RUN_KILL_RATE = 0.25


@dataclasses.dataclass
class Kill:
  """One SIGKILL and what the resume made of it."""
  number: int
  run_name: str
  how: str  # 'timer 12.3 s' or 'checkpoint_write:3'
  # After the kill, on disk: the last round released (CSV or ledger, as the
  # resume logic counts it), the last CSV row and the rounds in ledger.json.
  released_before: int
  csv_before: int
  charged_before: int
  workers_left: list[int]  # Workers of the attempt still running.
  resumed_after: Optional[int] = None  # Round the next attempt started after.
  resume_error: str = ''  # Why the next attempt failed, if it did.

  @property
  def rounds_lost(self) -> Optional[int]:
    if self.resumed_after is None:
      return None
    return self.released_before - self.resumed_after

  @property
  def survived(self) -> bool:
    return (not self.resume_error and self.resumed_after is not None and
            not self.workers_left and self.charged_before >= self.csv_before)


@dataclasses.dataclass
class Attempt:
  """One training subprocess: its exit and what it printed."""
  returncode: int
  killed_by_us: bool
  seconds: float
  first_round_at: Optional[float]  # Seconds from start to the first round.
  round_times: list[float]  # Seconds between consecutive rounds.
  resumed_after: Optional[int]  # From 'resuming after round N'.
  first_round: Optional[int]  # The first 'round k/N' it printed.
  stderr: str
  pid: int = 0
  hung: bool = False  # Stopped after ATTEMPT_TIMEOUT_SECONDS.


def started_after(attempt: Attempt, *, progressed: bool) -> Optional[int]:
  """The round `attempt` continued after (0: from scratch), if observable.

  The program prints 'resuming after round N' whenever it restores a
  checkpoint, before it runs any round; without that line it started from
  scratch. Whether it started at all shows in its first round line, or, if it
  was killed before printing one, in what its rounds left on disk (ledger,
  checkpoints). An attempt
  killed before any of that tells nothing (None): the disk is unchanged, so
  the next attempt starts where this one would have.
  """
  if attempt.resumed_after is not None:
    return attempt.resumed_after
  if attempt.first_round is not None:
    return attempt.first_round - 1
  return 0 if progressed else None


def _attempt_from(process, lines, stderr, *, seconds, killed_by_us,
                  hung) -> Attempt:
  """An Attempt from a finished process and its timed stdout lines."""
  resumed_after = first_round = None
  round_at = []
  for at, line in lines:
    match = _RESUMING.match(line)
    if match and resumed_after is None:
      resumed_after = int(match.group(1))
    match = _ROUND.match(line)
    if match:
      if first_round is None:
        first_round = int(match.group(1))
      round_at.append(at)
  return Attempt(returncode=process.returncode,
                 killed_by_us=killed_by_us,
                 seconds=seconds,
                 first_round_at=round_at[0] if round_at else None,
                 round_times=[b - a for a, b in zip(round_at, round_at[1:])],
                 resumed_after=resumed_after,
                 first_round=first_round,
                 stderr=stderr,
                 pid=process.pid,
                 hung=hung)


def run_attempt(args: list[str], *, env: dict[str, str],
                kill_after: Optional[float]) -> Attempt:
  """Runs one training subprocess, SIGKILLing it after `kill_after` s.

  Without `kill_after`, an attempt still running after
  ATTEMPT_TIMEOUT_SECONDS is a hang: SIGKILLed, marked `hung`.
  """
  start = time.monotonic()
  process = subprocess.Popen(args,
                             cwd=fault_runs.REPO_ROOT,
                             env=env,
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             text=True)
  lines = []  # (seconds since start, line)
  stderr_chunks = []

  def read_stdout():
    for line in process.stdout:
      lines.append((time.monotonic() - start, line.rstrip('\n')))

  readers = [
      threading.Thread(target=read_stdout, daemon=True),
      threading.Thread(
          target=lambda: stderr_chunks.append(process.stderr.read()),
          daemon=True)
  ]
  for reader in readers:
    reader.start()
  killed_by_us = hung = False
  try:
    process.wait(
        timeout=(ATTEMPT_TIMEOUT_SECONDS if kill_after is None else kill_after))
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGKILL)
    killed_by_us, hung = kill_after is not None, kill_after is None
    process.wait()
  for reader in readers:
    reader.join(timeout=30)
  return _attempt_from(process,
                       lines,
                       ''.join(stderr_chunks),
                       seconds=time.monotonic() - start,
                       killed_by_us=killed_by_us,
                       hung=hung)


class Timing:
  """Running estimate of an attempt's duration, to place random kills."""

  def __init__(self):
    # Until measured: generous guesses for this machine's smoke runs.
    self.startup = 20.0
    self.per_round = 2.0

  def update(self, attempt: Attempt) -> None:
    if attempt.first_round_at is not None:
      self.startup = attempt.first_round_at
    if attempt.round_times:
      self.per_round = sum(attempt.round_times) / len(attempt.round_times)

  def expected(self, rounds_left: int) -> float:
    return self.startup + self.per_round * rounds_left


class KillLoop:
  """The SIGKILL loop: kills training at random moments, resumes, checks."""

  def __init__(self,
               *,
               kills: int,
               rng: random.Random,
               rounds: int,
               output_dir: str,
               out=sys.stdout):
    self.kills, self.rng, self.planned = kills, rng, rounds
    self.output_dir, self.out = output_dir, out
    self.event, self.delta, self.epsilons = fault_runs.expected_epsilons(
        fault_runs.read_flagfile(fault_runs.SMOKE_CONFIG), rounds)
    self.timing = Timing()
    self.kill_log: list[Kill] = []
    self.run_problems: dict[str, list[str]] = {}
    self.epsilon_checks = self.epsilon_mismatches = 0
    self.attempt_pids: list[int] = []
    self.hangs: list[str] = []
    self.runs = 0

  def _log(self, text: str = '') -> None:
    print(text, file=self.out, flush=True)

  def run(self) -> None:
    """Runs until every kill happened and the last run completed."""
    while len(self.kill_log) < self.kills:
      self.runs += 1
      run_name = 'campaign' if self.runs == 1 else f'campaign-{self.runs}'
      if self._run_to_end(run_name):
        self._verify(run_name)
      elif not any(kill.run_name == run_name for kill in self.kill_log):
        # It failed with no kill to blame: training itself is broken, and
        # every further run would fail the same way.
        self._log('aborting: training fails without any fault')
        return

  def _choose_fault(self,
                    released: int) -> tuple[Optional[str], Optional[float]]:
    """(TFF_DP_CRASH_AT value, seconds until a SIGKILL): one or neither."""
    # Once every round is released only the start-up and the summary are
    # left to interrupt: kill there sometimes, not until the kills run out
    # (which would spend most of them on that one window).
    if len(self.kill_log) >= self.kills or (released >= self.planned and
                                            self.rng.random()
                                            >= _FINISHED_RUN_KILL_RATE):
      return None, None
    if self.rng.random() < 0.5 and released < self.planned:
      return (f'{self.rng.choice(faults.POINTS)}:'
              f'{self.rng.randint(released + 1, self.planned)}'), None
    return None, self.rng.uniform(0,
                                  self.timing.expected(self.planned - released))

  def _run_to_end(self, run_name: str) -> bool:
    """Attempts (killed or not) until the run completes; True if it did."""
    run_dir = os.path.join(self.output_dir, run_name)
    csv_path = os.path.join(run_dir, 'metrics.csv')
    awaiting = []  # Kills whose resume has not started yet.
    while True:
      crash_at, kill_after = self._choose_fault(
          resume.released_rounds(run_dir, csv_path=csv_path))
      before = fault_runs.disk_progress(run_dir)
      attempt = run_attempt(fault_runs.train_args(self.output_dir, run_name,
                                                  self.planned),
                            env=fault_runs.environment(crash_at),
                            kill_after=kill_after)
      self.timing.update(attempt)
      self.attempt_pids.append(attempt.pid)
      start = started_after(attempt,
                            progressed=fault_runs.disk_progress(run_dir)
                            != before)
      if start is not None:
        for kill in awaiting:
          kill.resumed_after = start
        awaiting = []
      if attempt.returncode == -signal.SIGKILL and not attempt.hung and (
          attempt.killed_by_us or crash_at is not None):
        awaiting.append(
            self._record_kill(run_name, attempt, crash_at, kill_after))
        continue
      if attempt.returncode != 0:
        self._failed(run_name, attempt, awaiting)
        return False
      for kill in awaiting:  # Completed without printing a round: impossible.
        kill.resume_error = 'the resumed run printed no start round'
      return True

  def _record_kill(self, run_name: str, attempt: Attempt,
                   crash_at: Optional[str],
                   kill_after: Optional[float]) -> Kill:
    run_dir = os.path.join(self.output_dir, run_name)
    how = f'timer {kill_after:.1f} s' if attempt.killed_by_us else crash_at
    kill = Kill(number=len(self.kill_log) + 1,
                run_name=run_name,
                how=how,
                released_before=resume.released_rounds(run_dir,
                                                       csv_path=os.path.join(
                                                           run_dir,
                                                           'metrics.csv')),
                csv_before=max(fault_runs.csv_rounds(run_dir), default=0),
                charged_before=fault_runs.ledger_rounds(run_dir),
                workers_left=fault_runs.workers_left(
                    fault_runs.worker_pids(run_dir)))
    self.kill_log.append(kill)
    self._log(f'kill {kill.number:2d}/{self.kills}: {run_name} {how:>24} '
              f'after {attempt.seconds:5.1f} s: {kill.released_before} '
              f'rounds released, {kill.charged_before} charged')
    return kill

  def _failed(self, run_name: str, attempt: Attempt,
              awaiting: list[Kill]) -> None:
    if attempt.hung:
      reason = f'hung: no end after {ATTEMPT_TIMEOUT_SECONDS} s'
      self.hangs.append(f'{run_name}: {reason}')
    else:
      reason = (f'exit {attempt.returncode}: '
                f'{fault_runs.last_line(attempt.stderr)}')
    for kill in awaiting:
      kill.resume_error = reason
    self.run_problems[run_name] = [f'attempt failed, {reason}']
    self._log(f'{run_name}: attempt failed ({reason}); starting a new run')

  def _verify(self, run_name: str) -> None:
    problems, checks, mismatches = fault_runs.verify_run(os.path.join(
        self.output_dir, run_name),
                                                         planned=self.planned,
                                                         event=self.event,
                                                         delta=self.delta,
                                                         epsilons=self.epsilons)
    self.epsilon_checks += checks
    self.epsilon_mismatches += mismatches
    self.run_problems[run_name] = problems
    self._log(f'{run_name}: completed, '
              f'{"; ".join(problems) or "all checks passed"}')
    if problems:
      for kill in self.kill_log:
        if kill.run_name == run_name and not kill.resume_error:
          kill.resume_error = 'the run failed its final checks'

  def worker_pids(self) -> list[int]:
    return [
        pid for run in range(1, self.runs + 1)
        for pid in fault_runs.worker_pids(
            os.path.join(self.output_dir, 'campaign' if run ==
                         1 else f'campaign-{run}'))
    ]

  def report(self, seed: int) -> fault_context.Count:
    """Prints the kills' report; returns their count for the summary."""
    survived = sum(kill.survived for kill in self.kill_log)
    lost = [kill.rounds_lost for kill in self.kill_log]
    self._log()
    self._log(f'seed: {seed}; planned rounds per run: {self.planned}; runs: '
              f'{self.runs}')
    self._log(f'survived: {survived}/{len(self.kill_log)}')
    for kill in self.kill_log:
      after = '?' if kill.resumed_after is None else kill.resumed_after
      self._log(f'  kill {kill.number:2d} {kill.run_name:12} {kill.how:>24}: '
                f'released {kill.released_before}, resumed after {after}')
    self._log('rounds lost per kill: ' +
              ' '.join('?' if n is None else str(n) for n in lost))
    if any(n is not None and n < 0 for n in lost):
      # Not a failure: the round was computed, charged in its checkpoint's
      # ledger and kept; the final checks show it was released exactly once.
      self._log('  (negative: the resume continued from a checkpoint of a '
                'round that was charged but not yet released)')
    self._log(f'epsilon mismatches: {self.epsilon_mismatches} (of '
              f'{self.epsilon_checks} exact comparisons)')
    return self._count(lost)

  def _count(self, lost: list[Optional[int]]) -> fault_context.Count:
    count = fault_context.Count('kills survived')
    for kill in self.kill_log:
      reasons = [kill.resume_error] if kill.resume_error else []
      if kill.workers_left:
        reasons.append(f'workers left {kill.workers_left}')
      if kill.charged_before < kill.csv_before:
        reasons.append(f'round {kill.csv_before} in the CSV but only '
                       f'{kill.charged_before} rounds charged in ledger.json')
      if not kill.survived and not reasons:
        reasons.append('no resume observed')
      count.add(f'kill {kill.number} ({kill.run_name}, {kill.how})', reasons)
    for run_name, problems in self.run_problems.items():
      if problems and not any(k.run_name == run_name for k in self.kill_log):
        count.failures.append(f'{run_name}: {"; ".join(problems)}')
    if len(self.kill_log) < self.kills:
      count.failures.append(f'only {len(self.kill_log)} of {self.kills} '
                            'kills happened')
    known = [n for n in lost if n is not None]
    count.details.append(f'rounds lost per kill: max '
                         f'{max(known) if known else "?"}; epsilon mismatches '
                         f'{self.epsilon_mismatches} of {self.epsilon_checks}')
    if self.epsilon_mismatches:
      count.failures.append(f'{self.epsilon_mismatches} epsilon mismatches')
    return count
