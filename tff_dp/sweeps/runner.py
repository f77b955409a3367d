"""Runs a sweep's plan: each run a subprocess of the training program, finished ones skipped.

Each run is the training program with every setting on its command line,
`--output_dir=<sweep dir> --run_name=<run>`, so it is an ordinary run with an
ordinary run's guarantees. A run whose `summary.json` exists finished and is
skipped; any other run is started with the same command, which resumes it
from its newest checkpoint by the training program's own rules
(`tff_dp.program.resume`) or starts it afresh.

Runs go one after another, or `parallel` at a time with the machine's cores
split between them (TensorFlow's intra- and inter-op pools and OpenMP, in
the child and in the TFF worker it starts, through their environment
variables; values the user set are kept). Each run's output goes to
`logs/<run>.log`. Children run in their own sessions: a Ctrl-C or SIGTERM
reaches the sweep, which forwards it to every running child, waits for them
to stop (each stops its TFF worker and keeps its checkpoint) and exits with
128 + the signal. The kernel sends SIGTERM to a child whose sweep died
(`PR_SET_PDEATHSIG`). The first run that fails stops the sweep: the runs in
progress finish, none start, and the sweep exits with the run's code.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence, TextIO

from tff_dp.sweeps import plan as plan_lib
from tff_dp.sweeps import progress as progress_lib
from tff_dp.sweeps import results

TRAIN_PROGRAM = (sys.executable, '-m', 'tff_dp.cli.train')
LOG_DIR = 'logs'
THREAD_VARIABLES = ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS',
                    'OMP_NUM_THREADS')
EXIT_INTERNAL = 3
# How long stopped children may take to stop their worker and exit.
_STOP_SECONDS = 120

# Runs in the child between fork and exec: the parent-death signal (SIGTERM:
# the trainer then stops its worker), and the default dispositions of the
# signals the sweep forwards even when the sweep's were ignored (`nohup`).
_EXEC_RUN = r"""
import ctypes, os, signal, sys
for sig in (signal.SIGINT, signal.SIGTERM):
  signal.signal(sig, signal.SIG_DFL)
if sys.platform.startswith('linux'):
  ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
  if os.getppid() != int(sys.argv[1]):
    os._exit(128 + signal.SIGTERM)  # The sweep died before prctl.
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclasses.dataclass
class Outcome:
  """How a sweep invocation ended.

  Attributes:
    code: The exit code: 0, a failed run's, or 128 + a signal.
    message: Why it stopped, if not 0.
    ran: Runs started by this invocation.
    skipped: Runs that had finished before it.
  """
  code: int
  message: str = ''
  ran: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)


def is_finished(run_dir: str) -> bool:
  """Whether the run wrote its summary (it finished)."""
  return os.path.isfile(os.path.join(run_dir, results.SUMMARY_FILE))


def thread_environment(parallel: int,
                       cpus: Optional[int] = None) -> dict[str, str]:
  """The environment of a child when `parallel` runs share `cpus` cores."""
  env = dict(os.environ)
  if parallel > 1:
    cpus = cpus or len(os.sched_getaffinity(0))
    threads = str(max(1, cpus // parallel))
    for name in THREAD_VARIABLES:
      env.setdefault(name, threads)
  return env


def _last_line(path: str) -> str:
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ''
  return lines[-1] if lines else ''


class _Child:
  """One running invocation of a run."""

  def __init__(self, run: plan_lib.Run, argv: Sequence[str], env, log: str):
    self.run = run
    self.log = log
    self.start = time.monotonic()
    with open(log, 'a', encoding='utf-8') as f:
      # No clock time: run after run, the start times would give each DP
      # run's duration, which grows with its hidden cohorts.
      f.write(f'=== {" ".join(argv[1:])}\n')
      f.flush()
      self.process = subprocess.Popen(
          [sys.executable, '-I', '-c', _EXEC_RUN,
           str(os.getpid()), *argv],
          stdin=subprocess.DEVNULL,
          stdout=f,
          stderr=subprocess.STDOUT,
          env=env,
          start_new_session=True)


class _Signals:
  """Records SIGINT, SIGTERM and SIGHUP while installed (never raises)."""

  def __init__(self):
    self.received: list[int] = []
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      if signal.getsignal(sig) is not signal.SIG_IGN:
        self._previous[sig] = signal.signal(
            sig, lambda signum, frame: self.received.append(signum))
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def run_plan(plan: plan_lib.Plan,
             sweep_dir: str,
             *,
             program: Sequence[str] = TRAIN_PROGRAM,
             parallel: int = 1,
             out: TextIO = sys.stdout,
             terminal: Optional[bool] = None,
             poll_seconds: float = 0.2) -> Outcome:
  """Runs every unfinished run of `plan` in `sweep_dir`.

  Args:
    plan: The sweep's plan (written to `sweep_dir` by the caller).
    sweep_dir: The sweep directory; each run writes `sweep_dir/<run>/`.
    program: The training program's argv prefix (tests pass a fake).
    parallel: How many runs at a time.
    out: Where the progress line goes.
    terminal: Whether `out` is a terminal (default: ask it).
    poll_seconds: How often to look at the children.

  Returns:
    The `Outcome`.
  """
  os.makedirs(os.path.join(sweep_dir, LOG_DIR), exist_ok=True)
  outcome = Outcome(code=0)
  pending = []
  for run in plan.runs:
    if is_finished(os.path.join(sweep_dir, run.name)):
      outcome.skipped.append(run.name)
    else:
      pending.append(run)
  wall_times = progress_lib.WallTimes(sweep_dir)
  progress = progress_lib.Progress(
      len(plan.runs),
      len(outcome.skipped),
      parallel=parallel,
      out=out,
      terminal=terminal,
      show_times=all(plan.releases_timing(run) for run in plan.runs))
  env = thread_environment(parallel)
  running: list[_Child] = []
  with _Signals() as signals:
    while (pending and not outcome.code) or running:
      if signals.received:
        return _stop(running, signals, wall_times, outcome, progress, plan)
      changed = False
      while len(running) < parallel and pending and not outcome.code:
        run = pending.pop(0)
        args = plan_lib.argv(plan.settings(run, sweep_dir=sweep_dir))
        running.append(
            _Child(run, [*program, *args], env,
                   os.path.join(sweep_dir, LOG_DIR, f'{run.name}.log')))
        outcome.ran.append(run.name)
        changed = True
      for child in [c for c in running if c.process.poll() is not None]:
        running.remove(child)
        changed = True
        _finish(child, sweep_dir,
                wall_times if plan.releases_timing(child.run) else None,
                progress, outcome)
      progress.show([c.run.name for c in running], changed=changed)
      time.sleep(poll_seconds)
  progress.close()
  return outcome


def _finish(child: _Child, sweep_dir: str, wall_times, progress,
            outcome: Outcome) -> None:
  """Records a child that exited; a failure stops the sweep."""
  seconds = time.monotonic() - child.start
  if wall_times is not None:
    wall_times.add(child.run.name, seconds)
  code = child.process.returncode
  if code == 0 and is_finished(os.path.join(sweep_dir, child.run.name)):
    progress.finished(seconds)
    return
  if outcome.code:
    return  # The first failure is the one reported.
  if code == 0:
    code, why = EXIT_INTERNAL, 'exited 0 without writing summary.json'
  elif code < 0:
    code, why = 128 - code, f'killed by {signal.Signals(-code).name}'
  else:
    why = f'exited {code}'
  outcome.code = code
  outcome.message = (f'run {child.run.name} {why}: {_last_line(child.log)} '
                     f'(its output: {child.log}); no further runs were '
                     'started. Run the same command again to go on.')


def _stop(running: Sequence[_Child], signals: _Signals, wall_times,
          outcome: Outcome, progress, plan: plan_lib.Plan) -> Outcome:
  """Forwards the first signal to every child and waits for them."""
  signum = signals.received[0]
  for child in running:
    try:
      child.process.send_signal(signum)
    except ProcessLookupError:
      pass  # Exited meanwhile.
  deadline = time.monotonic() + _STOP_SECONDS
  for child in running:
    try:
      child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      child.process.kill()
      child.process.wait()
    if plan.releases_timing(child.run):
      wall_times.add(child.run.name, time.monotonic() - child.start)
  progress.close()
  outcome.code = 128 + signum
  outcome.message = (
      f'{signal.Signals(signum).name}: stopped '
      f'{", ".join(c.run.name for c in running) or "between runs"}; run the '
      'same command again to resume the sweep')
  return outcome
