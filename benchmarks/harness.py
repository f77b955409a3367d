"""What every engine subprocess shares: the spec/result files, clocks, /proc.

The orchestrator (`benchmarks.run_all`) starts one fresh subprocess per engine:

  python -m benchmarks.<engine> --spec=SPEC.json --out=RESULT.json

SPEC.json holds the engine's workloads and `spawn_time` (wall clock just before
the orchestrator started the subprocess), so the subprocess can report its
time to the first round from its very start. The subprocess rewrites
RESULT.json after every workload, so a failure late in a run keeps the results
measured before it. Engines must not print to a pipe that a TFF worker could
inherit: the orchestrator sends their stdout and stderr to a log file.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import time
from typing import Any, Callable, Optional

import psutil

from benchmarks import stats
from benchmarks import workloads as workloads_lib

_MB = 1024.0 * 1024.0
_STOP_TIMEOUT_SECONDS = 10.0
WORKER_BINARY_NAME = 'worker_binary'
# The line tff_dp.execution.worker_launch writes to the worker log
# (worker_launch.WORKER_LOG_PREFIX; not imported, so that the orchestrator does
# not import TFF).
_LOGGED_WORKER = re.compile(r'tff-dp: started TFF worker pid (\d+)')


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--spec', required=True, help='engine spec (JSON)')
  parser.add_argument('--out', required=True, help='result file (JSON)')
  return parser.parse_args(argv[1:])


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value: Any) -> None:
  """Writes `value` atomically (a reader never sees half a file)."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2, allow_nan=False)
  os.replace(tmp, path)


def spec_workloads(spec: dict[str, Any]) -> list[workloads_lib.Workload]:
  return [workloads_lib.Workload.from_json(w) for w in spec['workloads']]


def cpu_seconds(pid: Optional[int] = None) -> float:
  """User + system CPU seconds of a process (all its threads) so far."""
  times = psutil.Process(pid).cpu_times()
  return times.user + times.system


def rss_mb(pid: Optional[int] = None) -> float:
  """Current resident set size of a process, in MiB."""
  return psutil.Process(pid).memory_info().rss / _MB


def peak_rss_mb(pid: Optional[int] = None) -> Optional[float]:
  """The kernel's high-water mark of the resident set (VmHWM), in MiB."""
  path = f'/proc/{pid or os.getpid()}/status'
  try:
    with open(path) as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except FileNotFoundError:
    return None
  return None


def worker_children() -> list[psutil.Process]:
  """TFF worker processes that are direct children of this process."""
  found = []
  for child in psutil.Process().children(recursive=False):
    try:
      if any(WORKER_BINARY_NAME in part for part in child.cmdline()):
        found.append(child)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  return found


def logged_worker_pids(log_path: str) -> list[int]:
  """Pids of the workers tff_dp.execution.worker_launch logged to `log_path` (or none)."""
  try:
    with open(log_path, errors='replace') as f:
      return [int(pid) for pid in _LOGGED_WORKER.findall(f.read())]
  except FileNotFoundError:
    return []


def is_running_worker(pid: int) -> bool:
  """True if `pid` is alive, not a zombie, and still a TFF worker."""
  try:
    process = psutil.Process(pid)
    return (process.status() != psutil.STATUS_ZOMBIE and
            any(WORKER_BINARY_NAME in part for part in process.cmdline()))
  except (psutil.NoSuchProcess, psutil.AccessDenied):
    return False


def stop_worker_pid(pid: int) -> str:
  """Stops ONE worker by pid: SIGINT (its clean shutdown), then SIGKILL.

  Returns:
    'not running', 'SIGINT' or 'SIGKILL': what it took.
  """
  if not is_running_worker(pid):
    return 'not running'
  process = psutil.Process(pid)
  for sig, name in ((signal.SIGINT, 'SIGINT'), (signal.SIGKILL, 'SIGKILL')):
    try:
      process.send_signal(sig)
      process.wait(timeout=_STOP_TIMEOUT_SECONDS)
      return name
    except psutil.TimeoutExpired:
      continue
    except psutil.NoSuchProcess:
      return name
  return 'SIGKILL'


def load_average() -> list[float]:
  """1, 5 and 15 minute load averages (the machine is shared)."""
  return [round(v, 2) for v in os.getloadavg()]


class Clock:
  """Wall-clock marks relative to the orchestrator's spawn of this process."""

  def __init__(self, spawn_time: float):
    self._spawn = spawn_time
    self.marks: dict[str, float] = {}

  def mark(self, name: str) -> None:
    self.marks[name] = time.time() - self._spawn


def time_rounds(
    workload: workloads_lib.Workload,
    run_round: Callable[[int], dict[str, float]],
    *,
    worker_pid: Optional[int] = None,
    on_round: Optional[Callable[[int], None]] = None,
) -> dict[str, Any]:
  """Runs warm-up plus timed rounds and summarizes the timed ones.

  Args:
    workload: Gives the numbers of warm-up and timed rounds.
    run_round: Runs round `r` (0-based) and returns named parts of its time
      in seconds (e.g. building datasets vs. the TFF call); the round's total
      is measured here around the call. A runner that runs several rounds
      per call (`--rounds_per_call`) says how many under 'rounds': its
      times, parts and CPU seconds are then per round.
    worker_pid: If given, the TFF worker's CPU seconds per round are recorded.
    on_round: Called after each round (outside the timed region).

  Returns:
    JSON-able dict: 'first_round_s' (round 0, which includes tracing),
    'rounds' (every round's record), 'seconds' and 'parts' (summaries over
    the timed rounds), 'cpu_self_s' and 'cpu_worker_s' (medians per timed
    round), 'load_average' before and after.
  """
  return time_interleaved(workload, {'': (run_round, worker_pid)},
                          on_round=on_round)['']


def time_interleaved(
    workload: workloads_lib.Workload,
    runners: dict[str, tuple[Callable[[int], dict[str, float]], Optional[int]]],
    *,
    on_round: Optional[Callable[[int], None]] = None,
) -> dict[str, dict[str, Any]]:
  """`time_rounds` for several engines, round by round in turn.

  Round r of every runner runs before round r + 1 of any, and the order
  rotates by one each round, so that drift in the shared machine's speed
  (seen at up to 30% over minutes here) and position in the cycle fall on
  all runners alike: their ratio is measured under the same conditions.

  Args:
    workload: Gives the numbers of warm-up and timed rounds.
    runners: Name -> (run_round as in `time_rounds`, the pid of a TFF worker
      whose CPU seconds to record, or None).
    on_round: Called after round r of every runner (outside timed regions).

  Returns:
    Name -> what `time_rounds` returns for that runner.
  """
  names = list(runners)
  records = {name: [] for name in names}
  load_before = load_average()
  total_rounds = workload.warmup_rounds + workload.timed_rounds
  for r in range(total_rounds):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      run_round, worker_pid = runners[name]
      cpu_self = cpu_seconds()
      cpu_worker = cpu_seconds(worker_pid) if worker_pid else None
      start = time.perf_counter()
      parts = dict(run_round(r))
      seconds = time.perf_counter() - start
      per_call = parts.pop('rounds', 1)
      record = {
          'round': r,
          'seconds': seconds / per_call,
          'timed': r >= workload.warmup_rounds,
          'cpu_self_s': (cpu_seconds() - cpu_self) / per_call
      }
      if worker_pid:
        record['cpu_worker_s'] = (cpu_seconds(worker_pid) -
                                  cpu_worker) / per_call
      record['parts'] = {k: v / per_call for k, v in parts.items()}
      if per_call != 1:
        record['rounds_per_call'] = per_call
      records[name].append(record)
    if on_round is not None:
      on_round(r)
  load = {'before': load_before, 'after': load_average()}
  return {name: _summarize_rounds(records[name], load) for name in names}


def against_first(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """`time_interleaved`'s results as one row per runner: first round, median,
  p10 and p90 of the timed rounds, and the median's ratio to the first
  runner's (the A/B scripts' table)."""
  base = next(iter(results.values()))['seconds']['median']
  return {
      name: {
          'first_round_s': r['first_round_s'],
          'median_s': r['seconds']['median'],
          'p10_s': r['seconds']['p10'],
          'p90_s': r['seconds']['p90'],
          'ratio_to_first': r['seconds']['median'] / base,
      } for name, r in results.items()
  }


def print_against_first(rows: dict[str, dict[str, float]]) -> None:
  """Prints `against_first`'s rows, one line each."""
  for name, row in rows.items():
    print(f'{name:22s} first {row["first_round_s"]:8.2f} s  median '
          f'{row["median_s"]:.4f} s  p10 {row["p10_s"]:.4f}  p90 '
          f'{row["p90_s"]:.4f}  ratio {row["ratio_to_first"]:.2f}')


def _summarize_rounds(records: list[dict[str, Any]],
                      load: dict[str, list[float]]) -> dict[str, Any]:
  timed = [rec for rec in records if rec['timed']]
  result = {
      'first_round_s': records[0]['seconds'],
      'rounds': records,
      'seconds': stats.summarize([rec['seconds'] for rec in timed]),
      'parts': {
          name: stats.summarize([rec['parts'][name] for rec in timed])
          for name in timed[0]['parts']
      },
      'cpu_self_s': stats.percentile([rec['cpu_self_s'] for rec in timed], 50),
      'load_average': load,
  }
  if 'cpu_worker_s' in timed[0]:
    result['cpu_worker_s'] = stats.percentile(
        [rec['cpu_worker_s'] for rec in timed], 50)
  return result


def stop_subprocess(process: subprocess.Popen) -> None:
  """Stops a subprocess we started: SIGTERM, then SIGKILL."""
  if process.poll() is not None:
    return
  for sig in (signal.SIGTERM, signal.SIGKILL):
    process.send_signal(sig)
    try:
      process.wait(timeout=_STOP_TIMEOUT_SECONDS)
      return
    except subprocess.TimeoutExpired:
      continue


def run_peer_engine(
    argv: list[str], engine: str,
    run_workload: Callable[[workloads_lib.Workload], dict[str, Any]]) -> int:
  """The main loop of a peer engine (`benchmarks.peer_flower`, `peer_pfl`).

  Runs each workload of the spec with `run_workload`, which returns its
  measurements including 'first_round_wall' (wall clock at the end of its
  first round); rewrites the result file after every workload. The caller has
  imported its framework already, so 'imports_done' is now.
  """
  args = parse_args(argv)
  spec = read_json(args.spec)
  clock = Clock(spec['spawn_time'])
  clock.mark('imports_done')
  result = {'engine': engine, 'startup': None, 'workloads': []}
  for i, row in enumerate(spec['rows']):
    workload = workloads_lib.Workload.from_json(row['workload'])
    load_before = load_average()
    measured = run_workload(workload)
    if i == 0:
      result['startup'] = {
          'workload':
              workload.name,
          **clock.marks,
          'first_round_done':
              measured['first_round_wall'] - spec['spawn_time'],
      }
    measured['load_average'] = {'before': load_before, 'after': load_average()}
    result['workloads'].append({'workload': workload.to_json(), **measured})
    write_json(args.out, result)
  return 0
