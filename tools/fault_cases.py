"""Fault cases of the campaign that strike a running training process.

* worker killed: the TFF worker child of a training run is SIGKILLed at a
  random moment after it started (while it starts, while the trainer builds
  its computations, or in a round). The trainer must end within
  `HANG_SECONDS` with exit 3 and ONE line naming the worker and signal 9
  and saying that nothing of the interrupted round was released (killed
  before it served, the line is the runtime's start-up failure instead,
  `RuntimeStartError: the TFF worker (pid N) was killed by signal 9 (SIGKILL)
  during start-up`); every round in metrics.csv must be charged in
  ledger.json; the same command must then resume and finish with exactly
  the ledger and epsilon of an uninterrupted run (`fault_runs.verify_run`).
* disk full: as root, a small tmpfs is mounted and filled (a filler file
  leaving a random few KiB to a run's size free) and training is run with
  --output_dir inside it. The run must fail with a non-zero exit, its LAST
  stderr line starting `tff-dp: ` and no Python traceback; every released
  round charged; with the filler removed, the same command must resume and
  finish as an uninterrupted run would. Skipped, with the reason, when not
  root or when the mount fails; always unmounted.

Also the campaign's reference run (uninterrupted, verified: the epsilon and
the files every other case compares with) and its twin (the same flags,
another run id), made by `prepare`.
"""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Optional

from tff_dp.program import resume
from tools import fault_context
from tools import fault_runs

Context = fault_context.Context
Count = fault_context.Count

# A trainer whose worker died must end within this many seconds (it takes
# 1-5 s here); beyond it, it is counted as a hang and stopped.
HANG_SECONDS = 60.0
_EXIT_INTERNAL = 3
_DIED = ('tff-dp: internal error: the TFF worker (pid {pid}) was killed by '
         'signal 9')
# Killed before it served: refused as a failed start (see the README).
_DIED_STARTING = ('tff-dp: internal error: RuntimeStartError: the TFF worker '
                  '(pid {pid}) was killed by signal 9 (SIGKILL) during '
                  'start-up')
_STARTING = 'during its start-up'
_IN_USE = 'in use'
_NOTHING_RELEASED = ('Nothing of the interrupted round was released; run the '
                     'same command again to resume.')
# A kill that came after the trainer had finished is drawn again, in a fresh
# run, at most this many times per kill.
_MISSES_PER_KILL = 3
_RESUMING = re.compile(r'^resuming after round (\d+)', re.MULTILINE)
_TMPFS_SIZE = '4m'
_PAGE = 4096
_FILLS_PER_TRY = 3


def prepare(ctx: Context, *, twin: bool) -> list[str]:
  """Trains the reference run (and a twin); returns problems found."""
  output_dir = os.path.join(ctx.output_dir, 'reference')
  run_dir, problems, window = fault_context.completed_run(
      ctx, output_dir, 'run')
  ctx.log(f'reference run: {"; ".join(problems) or "all checks passed"}')
  if problems:
    return [f'the reference run: {"; ".join(problems)}']
  ctx.reference = run_dir
  if window is not None:
    ctx.worker_window = window
  if not twin:
    return []
  twin_dir, problems, _ = fault_context.completed_run(
      ctx, os.path.join(ctx.output_dir, 'twin'), 'run')
  ctx.log(f'twin run: {"; ".join(problems) or "all checks passed"}')
  if problems:
    return [f'the twin run: {"; ".join(problems)}']
  ctx.twin = twin_dir
  return []


# --- Worker killed. ----------------------------------------------------------


def _left_behind(ctx: Context, run_dir: str) -> list[str]:
  """A released round not charged, or a worker left running."""
  problems = []
  try:
    released = max(fault_runs.csv_rounds(run_dir), default=0)
  except resume.ResumeError as e:
    released = 0
    problems.append(str(e))
  charged = fault_runs.ledger_rounds(run_dir)
  if charged < released:
    problems.append(f'round {released} in the CSV, {charged} charged')
  ctx.workers.update(fault_runs.worker_pids(run_dir))
  left = fault_runs.workers_left(fault_runs.worker_pids(run_dir))
  if left:
    problems.append(f'TFF workers left running: {left}')
  return problems


@dataclasses.dataclass
class WorkerKill:
  """How a trainer ended after its worker was killed (None: no kill)."""
  problems: Optional[list[str]] = None
  seconds: Optional[float] = None  # From the kill to the trainer's end.
  phase: str = ''  # _STARTING or _IN_USE.


def _after_worker_kill(ctx: Context, outcome: fault_context.Outcome, *,
                       pid: int, run_dir: str) -> tuple[list[str], str]:
  """(What the trainer failed to do after its worker was killed, when the
  kill came: _STARTING or _IN_USE)."""
  problems = fault_context.exit_problems(outcome, code=_EXIT_INTERNAL)
  starting = _DIED_STARTING.format(pid=pid)
  if fault_runs.last_line(outcome.stderr).startswith(starting):
    # Before it served: a failed start, no round ran (so none released).
    phase = _STARTING
    problems += fault_context.one_line_problems(outcome, prefix=starting)
  else:
    phase = _IN_USE
    problems += fault_context.one_line_problems(outcome,
                                                prefix=_DIED.format(pid=pid),
                                                needle=_NOTHING_RELEASED)
  return problems + _left_behind(ctx, run_dir), phase


def resumed_after(outcome: fault_context.Outcome) -> str:
  """The round a run resumed after, as it printed it ('0': from scratch)."""
  match = _RESUMING.search(outcome.stdout)
  return match.group(1) if match else '0'


def _open_worker(pid: Optional[int]) -> Optional[int]:
  """A pidfd of the worker `pid` (None if it is no longer running).

  Signalled through it, a kill cannot reach another process that reused the
  pid after the worker ended.
  """
  if pid is None:
    return None
  try:
    pidfd = os.pidfd_open(pid)
  except ProcessLookupError:
    return None
  if not fault_runs.is_running_worker(pid):
    os.close(pidfd)
    return None
  return pidfd


def _sigkill(pidfd: int) -> bool:
  """SIGKILLs the process of `pidfd`; False if it had already ended."""
  try:
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
  except ProcessLookupError:
    return False
  finally:
    os.close(pidfd)
  return True


def _end_before_kill(ctx: Context, program: fault_context.Program,
                     run_name: str) -> Optional[list[str]]:
  """The run ended (or its worker did) before the kill: None if it
  completed (a miss), else its problems."""
  if not program.wait(fault_context.RUN_TIMEOUT_SECONDS):
    program.stop()
    ctx.hang(f'{run_name} before its worker was killed',
             fault_context.RUN_TIMEOUT_SECONDS)
    return ['hung before the kill']
  outcome = program.outcome()
  if outcome.returncode == 0:
    return None
  return [
      f'ended before the kill: exit {outcome.returncode}, '
      f'{fault_runs.last_line(outcome.stderr)}'
  ]


def _kill_worker(ctx: Context, program: fault_context.Program, *, run_name: str,
                 run_dir: str, delay: float) -> WorkerKill:
  """SIGKILLs the program's worker `delay` s after it started."""
  pid = program.wait_for_worker(run_dir, fault_context.RUN_TIMEOUT_SECONDS)
  if pid is None:
    return WorkerKill(
        _end_before_kill(ctx, program, run_name) or
        ['completed, but its worker.log names no worker'])
  pidfd = _open_worker(pid)
  if pidfd is None:
    return WorkerKill(_end_before_kill(ctx, program, run_name))
  if program.wait(delay):
    os.close(pidfd)
    return WorkerKill(_end_before_kill(ctx, program, run_name))
  if not _sigkill(pidfd):
    return WorkerKill(_end_before_kill(ctx, program, run_name))
  killed_at = time.monotonic()
  if not program.wait(HANG_SECONDS):
    program.stop()
    ctx.hang(f'{run_name} after its worker was killed', HANG_SECONDS)
    return WorkerKill(['the trainer did not end after its worker was killed'])
  seconds = time.monotonic() - killed_at
  problems, phase = _after_worker_kill(ctx,
                                       program.outcome(),
                                       pid=pid,
                                       run_dir=run_dir)
  return WorkerKill(problems, seconds, phase)


def _worker_kill_run(ctx: Context, run_name: str,
                     delay: float) -> tuple[WorkerKill, str]:
  """A run whose worker is killed, then the same command again.

  Returns (the kill, with the resume's problems added; what happened).
  """
  output_dir = os.path.join(ctx.output_dir, 'worker-kills')
  run_dir = os.path.join(output_dir, run_name)
  args = fault_runs.train_args(output_dir, run_name, ctx.rounds)
  kill = _kill_worker(ctx,
                      ctx.program(args),
                      run_name=run_name,
                      run_dir=run_dir,
                      delay=delay)
  if kill.problems is None or kill.seconds is None:
    return kill, 'no kill'
  released = max(fault_runs.csv_rounds(run_dir), default=0)
  resumed = ctx.run(args, what=f'{run_name} resumed')
  kill.problems += fault_context.exit_problems(resumed, code=0)
  if not kill.problems:
    kill.problems += ctx.verify(run_dir)
  return kill, (f'killed {kill.phase}, {released} rounds released, '
                f'trainer ended {kill.seconds:.1f} s after the kill, resumed '
                f'after round {resumed_after(resumed)}')


def worker_kills(ctx: Context, kills: int) -> Count:
  """SIGKILLs the worker of `kills` runs at random moments."""
  count = Count('worker kills survived')
  done: list[WorkerKill] = []
  misses = 0
  for number in range(1, kills + 1):
    for attempt in range(_MISSES_PER_KILL):
      run_name = f'worker-kill-{number}' + (f'-{attempt}' if attempt else '')
      delay = ctx.rng.uniform(0, ctx.worker_window)
      kill, what = _worker_kill_run(ctx, run_name, delay)
      if kill.problems is not None:
        break
      misses += 1
      ctx.worker_window *= 0.7  # The run was faster than the estimate.
    else:
      kill = WorkerKill(
          [f'{_MISSES_PER_KILL} runs finished before their '
           'kill'])
    done.append(kill)
    ctx.log(f'worker kill {number}/{kills}: {run_name}, {delay:.1f} s after '
            f'the worker started: {what}: '
            f'{"; ".join(kill.problems) or "survived"}')
    count.add(run_name, kill.problems)
  _worker_kill_details(count, done, misses)
  return count


def _worker_kill_details(count: Count, done: list[WorkerKill],
                         misses: int) -> None:
  seconds = [kill.seconds for kill in done if kill.seconds is not None]
  if seconds:
    count.details.append(f'trainer ended {min(seconds):.1f}-'
                         f'{max(seconds):.1f} s after the kill')
  starting = sum(kill.phase == _STARTING for kill in done)
  count.details.append(f'{len(done) - starting} killed in use, {starting} '
                       'during its start-up')
  if misses:
    count.details.append(f'{misses} runs finished before their kill, '
                         'drawn again')


# --- Disk full. --------------------------------------------------------------


def _mount(path: str) -> str:
  """Mounts a small tmpfs at `path`; '' or why it could not."""
  if os.geteuid() != 0:
    return 'not root: mounting a small tmpfs needs root'
  os.makedirs(path, exist_ok=True)
  try:
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={_TMPFS_SIZE}', 'tmpfs', path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    return f'mount failed: {e}'
  if result.returncode != 0:
    return f'mount failed: {fault_runs.last_line(result.stderr)}'
  return ''


def _unmount(path: str) -> list[str]:
  """Unmounts `path` (lazily if busy); problems if it stays mounted."""
  for args in (['umount', path], ['umount', '-l', path]):
    subprocess.run(args, capture_output=True, timeout=60, check=False)
    if not os.path.ismount(path):
      return [] if args[1] == path else [f'{path} was busy: unmounted lazily']
  return [f'{path} is still mounted']


def _fill(directory: str, leave: int) -> str:
  """Fills the file system of `directory` up to `leave` bytes free."""
  stat = os.statvfs(directory)
  size = max(0, stat.f_bavail * stat.f_frsize - leave)
  path = os.path.join(directory, 'filler')
  chunk = b'\0' * (1 << 20)
  with open(path, 'wb') as f:
    while size > 0:
      f.write(chunk[:min(size, len(chunk))])
      size -= len(chunk)
  return path


def allocated_bytes(directory: str) -> int:
  """What the files under `directory` occupy on disk."""
  return sum(
      os.lstat(os.path.join(root, name)).st_blocks * 512
      for root, _, names in os.walk(directory)
      for name in names)


def _after_disk_full(ctx: Context, outcome: fault_context.Outcome,
                     run_dir: str) -> list[str]:
  """What the failed run must have said and left on disk."""
  problems = []
  if outcome.returncode is not None and outcome.returncode < 0:
    problems.append(f'killed by signal {-outcome.returncode}')
  last = fault_runs.last_line(outcome.stderr)
  if not last.startswith('tff-dp: '):
    problems.append(f'last stderr line {last!r}')
  if 'Traceback' in outcome.stderr:
    problems.append('a Python traceback on stderr')
  return problems + _left_behind(ctx, run_dir)


def _disk_full_once(ctx: Context, mount: str, run_name: str,
                    leave: int) -> tuple[Optional[list[str]], str]:
  """One run on a disk with `leave` bytes free, then resumed with space.

  Returns (problems, what the failure said), or (None, '') if the run
  completed in the space left (not filled).
  """
  filler = _fill(mount, leave)
  run_dir = os.path.join(mount, run_name)
  args = fault_runs.train_args(mount, run_name, ctx.rounds)
  outcome = ctx.run(args, what=f'{run_name} on a full disk')
  if outcome.hung:
    return ['hung on a full disk'], ''
  if outcome.returncode == 0:
    os.remove(filler)
    return None, ''
  problems = _after_disk_full(ctx, outcome, run_dir)
  released = fault_runs.ledger_rounds(run_dir)
  os.remove(filler)
  resumed = ctx.run(args, what=f'{run_name} resumed with space')
  problems += fault_context.exit_problems(resumed, code=0)
  if not problems:
    problems += ctx.verify(run_dir)
  return problems, (f'{released} rounds charged when it failed, resumed '
                    f'after round {resumed_after(resumed)}; it said: '
                    f'{fault_runs.last_line(outcome.stderr)}')


def _fill_and_run(ctx: Context, mount: str, number: int,
                  budget: int) -> tuple[str, list[str], str]:
  """Runs on the mounted disk until a run fails for want of space."""
  leave = ctx.rng.randrange(0, max(_PAGE, budget), _PAGE)
  for fill in range(_FILLS_PER_TRY):
    run_name = f'disk-full-{number}' + (f'-{fill}' if fill else '')
    problems, said = _disk_full_once(ctx, mount, run_name, leave)
    if problems is not None:
      return f'{run_name} ({leave // 1024} KiB free)', problems, said
    leave //= 2  # The run fit: less space next time.
  return f'disk-full-{number}', ['the run fit every time'], ''


def _disk_full_try(ctx: Context, number: int,
                   budget: int) -> tuple[str, list[str], str]:
  """One counted try on a tmpfs of its own, always unmounted."""
  mount = os.path.join(ctx.output_dir, f'disk-full-{number}')
  reason = _mount(mount)
  if reason:
    return 'skip', [], reason
  try:
    what, problems, said = _fill_and_run(ctx, mount, number, budget)
  finally:
    unmounted = _unmount(mount)
  if not os.path.ismount(mount):
    shutil.rmtree(mount, ignore_errors=True)
  return what, problems + unmounted, said


def disk_fulls(ctx: Context, tries: int) -> Count:
  """Runs out of disk `tries` times at random amounts of free space."""
  count = Count('disk-full survived')
  budget = allocated_bytes(ctx.reference) if ctx.reference else 64 * 1024
  ctx.log(f'disk full: a {_TMPFS_SIZE} tmpfs per try, filled to leave 0 to '
          f'{budget // 1024} KiB (what the reference run occupies) free')
  for number in range(1, tries + 1):
    what, problems, said = _disk_full_try(ctx, number, budget)
    if what == 'skip':
      count.skipped = said
      ctx.log(f'disk full: skipped ({said})')
      break
    ctx.log(f'disk full {number}/{tries}: {what}: '
            f'{"; ".join(problems) or "survived"}' +
            (f'\n  {said}' if said else ''))
    count.add(what, problems)
  return count
