"""The fault cases' machinery: programs that may hang, counts, a context.

* `Program` runs one tff-dp program as a subprocess in a session of its own,
  reading its output as it comes, so that a case can act while it runs (kill
  its worker) and a program that never ends is stopped, not waited for;
* `Count` is one line of the campaign's report (tries passed / made);
* `Context` holds what the cases share: the epsilons the flags imply, the
  hangs seen, the workers started, the reference run and its twin;
* checks of how a program ended: its exit code, its one `tff-dp:` line.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from tools import fault_runs

# What one program's output may take to drain after it exited.
_READER_JOIN_SECONDS = 30


@dataclasses.dataclass
class Outcome:
  """How one program ended (returncode None: it hung and was stopped)."""
  returncode: Optional[int]
  stdout: str
  stderr: str
  seconds: float

  @property
  def hung(self) -> bool:
    return self.returncode is None


class Program:
  """One tff-dp program running as a subprocess, its output read as it comes.

  It runs in a session of its own, so that a program that hangs can be
  stopped with whatever it started (its process group, by its pid).
  """

  def __init__(self, args: list[str], *, env: Optional[dict[str, str]] = None):
    self.started = time.monotonic()
    self.process = subprocess.Popen(args,
                                    cwd=fault_runs.REPO_ROOT,
                                    env=env or fault_runs.environment(),
                                    stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    text=True,
                                    start_new_session=True)
    self.lines: list[tuple[float, str]] = []  # (seconds since start, line)
    self._stderr: list[str] = []
    self._readers = [
        threading.Thread(target=self._read_stdout, daemon=True),
        threading.Thread(
            target=lambda: self._stderr.append(self.process.stderr.read()),
            daemon=True)
    ]
    for reader in self._readers:
      reader.start()

  def _read_stdout(self) -> None:
    for line in self.process.stdout:
      self.lines.append((time.monotonic() - self.started, line.rstrip('\n')))

  def wait(self, timeout: float) -> bool:
    """Waits up to `timeout` seconds; True if the program has ended."""
    try:
      self.process.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
      return False
    for reader in self._readers:
      reader.join(timeout=_READER_JOIN_SECONDS)
    return True

  def stop(self) -> None:
    """SIGKILLs the program's process group (a hang) and reaps it."""
    try:
      os.killpg(self.process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.wait(_READER_JOIN_SECONDS)

  def wait_for_worker(self, run_dir: str, timeout: float) -> Optional[int]:
    """The pid of the first worker the run starts from now on, if any."""
    known = set(fault_runs.worker_pids(run_dir))
    deadline = time.monotonic() + timeout
    while True:
      ended = self.process.poll() is not None
      new = [pid for pid in fault_runs.worker_pids(run_dir) if pid not in known]
      if new or ended or time.monotonic() > deadline:
        return new[0] if new else None
      time.sleep(0.05)

  def outcome(self, *, hung: bool = False) -> Outcome:
    return Outcome(returncode=None if hung else self.process.returncode,
                   stdout='\n'.join(line for _, line in self.lines),
                   stderr=''.join(self._stderr),
                   seconds=time.monotonic() - self.started)


# --- What the cases share: counts, hangs, the reference run. ---------------

# A run of the smoke config, start to end, on this shared 2-core machine
# takes 30-50 s; a refused one 3-20 s. Far beyond either is a hang.
RUN_TIMEOUT_SECONDS = 600.0


@dataclasses.dataclass
class Count:
  """One line of the report: the tries of a case that passed."""
  label: str
  passed: int = 0
  total: int = 0
  failures: list[str] = dataclasses.field(default_factory=list)
  skipped: str = ''  # Why the case did not run, if it did not.
  details: list[str] = dataclasses.field(default_factory=list)

  def add(self, what: str, problems: list[str]) -> None:
    """Counts one try: passed if it found no problem."""
    self.total += 1
    if problems:
      self.failures.append(f'{what}: {"; ".join(problems)}')
    else:
      self.passed += 1

  @property
  def ok(self) -> bool:
    return not self.failures

  def line(self) -> str:
    if self.skipped and not self.total:
      return f'{self.label}: skipped ({self.skipped})'
    text = f'{self.label}: {self.passed}/{self.total}'
    return f'{text} ({"; ".join(self.details)})' if self.details else text


class Context:
  """What the cases share: the flags' expectations, hangs, workers seen."""

  def __init__(self,
               *,
               output_dir: str,
               rounds: int,
               rng,
               quick: bool,
               out=sys.stdout):
    self.output_dir = output_dir
    self.rounds = rounds
    self.rng = rng
    self.quick = quick
    self.out = out
    self.event, self.delta, self.epsilons = fault_runs.expected_epsilons(
        fault_runs.read_flagfile(fault_runs.SMOKE_CONFIG), rounds)
    self.hangs: list[str] = []
    self.workers: set[int] = set()  # Every worker pid seen in a run.
    self.pids: list[int] = []  # Every program started.
    self.reference: Optional[str] = None  # A verified uninterrupted run.
    self.twin: Optional[str] = None  # Another, with the same flags.
    # Seconds from the reference's worker start to its exit.
    self.worker_window = 20.0

  def log(self, text: str) -> None:
    print(text, file=self.out, flush=True)

  def hang(self, what: str, seconds: float) -> None:
    self.hangs.append(f'{what}: no end after {seconds:.0f} s')
    self.log(f'  HANG: {self.hangs[-1]}')

  def program(self,
              args: list[str],
              *,
              env: Optional[dict[str, str]] = None) -> Program:
    """Starts a program (its pid recorded)."""
    program = Program(args, env=env)
    self.pids.append(program.process.pid)
    return program

  def run(self,
          args: list[str],
          *,
          what: str,
          timeout: float = RUN_TIMEOUT_SECONDS,
          env: Optional[dict[str, str]] = None) -> Outcome:
    """Runs a program to its end; a hang is counted and stopped."""
    program = self.program(args, env=env)
    if program.wait(timeout):
      return program.outcome()
    program.stop()
    self.hang(what, timeout)
    return program.outcome(hung=True)

  def verify(self, run_dir: str) -> list[str]:
    """The problems `fault_runs.verify_run` finds in a completed run."""
    self.workers.update(fault_runs.worker_pids(run_dir))
    problems, _, _ = fault_runs.verify_run(run_dir,
                                           planned=self.rounds,
                                           event=self.event,
                                           delta=self.delta,
                                           epsilons=self.epsilons)
    return problems


def exit_problems(outcome: Outcome, *, code: int) -> list[str]:
  """Why `outcome` is not an exit with `code`, if it is not."""
  if outcome.hung:
    return ['hung']
  if outcome.returncode != code:
    return [
        f'exit {outcome.returncode}, expected {code}: '
        f'{fault_runs.last_line(outcome.stderr)}'
    ]
  return []


def one_line_problems(outcome: Outcome,
                      *,
                      prefix: str,
                      needle: str = '') -> list[str]:
  """Why stderr is not ONE `tff-dp:` line, last, starting with `prefix`."""
  problems = []
  ours = [
      line for line in outcome.stderr.splitlines() if line.startswith('tff-dp:')
  ]
  last = fault_runs.last_line(outcome.stderr)
  if ours != [last]:
    problems.append(f'stderr has {len(ours)} tff-dp: lines, last {last!r}')
  if not last.startswith(prefix):
    problems.append(f'last stderr line {last!r} does not start with '
                    f'{prefix!r}')
  if needle not in last:
    problems.append(f'last stderr line does not say {needle!r}: {last!r}')
  if 'Traceback' in outcome.stderr:
    problems.append('a Python traceback on stderr')
  return problems


def completed_run(ctx: Context, output_dir: str,
                  run_name: str) -> tuple[str, list[str], Optional[float]]:
  """Trains the smoke config uninterrupted and verifies it.

  Returns (run directory, problems, seconds from the start of its worker to
  its last round line: the window in which killing the worker interrupts
  the run).
  """
  run_dir = os.path.join(output_dir, run_name)
  program = ctx.program(fault_runs.train_args(output_dir, run_name, ctx.rounds))
  pid = program.wait_for_worker(run_dir, RUN_TIMEOUT_SECONDS)
  worker_started = time.monotonic()
  if not program.wait(RUN_TIMEOUT_SECONDS):
    program.stop()
    ctx.hang(f'{run_name} (uninterrupted)', RUN_TIMEOUT_SECONDS)
    return run_dir, ['hung'], None
  rounds_at = [at for at, line in program.lines if line.startswith('round ')]
  window = None
  if pid is not None and rounds_at:
    window = program.started + rounds_at[-1] - worker_started
  outcome = program.outcome()
  problems = exit_problems(outcome, code=0)
  if not problems:
    problems = ctx.verify(run_dir)
  return run_dir, problems, window
