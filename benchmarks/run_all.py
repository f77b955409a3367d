"""Runs every benchmark of issue 7 side by side and prints one table.

  .venv/bin/python -m benchmarks.run_all [--quick] [--output_dir=DIR]

From the repository root. Each engine runs in its own fresh subprocess, one
after the other (never two at once: the machine has 2 cores), on the same
synthetic workloads:

  floor      one plain TensorFlow program per round (benchmarks.floor)
  tff-dp     tff_dp's learning process on tff_dp's runtime (benchmarks.rounds)
  plain-tff  TFF as its tutorials use it, default context (benchmarks.plain_tff)
  memory     RSS over many rounds of W1 (benchmarks.memory)

Results go to DIR/<UTC time>.json and DIR/latest.json (DIR defaults to
benchmarks/results/, which git ignores); the engines' logs, specs, raw results
and the memory run's tff-dp run directory go to DIR/<UTC time>/. The exit code
is 0 only if every engine succeeded and no TFF worker was left running.

While an engine runs, this process polls the engine's children every second
and remembers every `worker_binary` among them; after the engine exits, any
of those pids still running as a worker is reported and stopped by pid.
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from typing import Any, Optional

import psutil

from benchmarks import harness
from benchmarks import language_model
from benchmarks import stats
from benchmarks import workloads as workloads_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, 'benchmarks', 'results')
# 2: the timing rows' 'floor' is the floor timed in turn with tff-dp; the
# floor's own subprocess is 'floor-alone'.
SCHEMA_VERSION = 2
ENGINES = ('floor', 'tff-dp', 'plain-tff')
_ENGINE_MODULES = {
    'floor': 'benchmarks.floor',
    'tff-dp': 'benchmarks.rounds',
    'plain-tff': 'benchmarks.plain_tff',
    'memory': 'benchmarks.memory'
}
_QUICK_TIMEOUT_SECONDS = 300
_FULL_TIMEOUT_SECONDS = 4 * 3600
_POLL_SECONDS = 1.0


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.run_all',
      description='Benchmarks tff-dp against the compute floor and plain TFF.')
  parser.add_argument(
      '--quick',
      action='store_true',
      help='a few small rounds per engine, to prove the machinery '
      '(well under 2 minutes on 2 cores); numbers are not meaningful')
  parser.add_argument(
      '--workers',
      action='store_true',
      help='instead: seconds per round with 1, 2 and 3 TLS workers reading '
      'their own shards and the local grouped path (benchmarks.workers)')
  parser.add_argument('--output_dir',
                      default=DEFAULT_OUTPUT_DIR,
                      help='where <UTC time>.json and latest.json go')
  return parser.parse_args(argv[1:])


def plan(quick: bool) -> list[dict[str, Any]]:
  """The jobs of a run, in the order they run: one fresh subprocess each."""
  timing = workloads_lib.timing_workloads(quick)
  floor_rows = [
      {
          'workload':
              w.to_json(),
          # vectorized_map falls back to a while_loop for Conv2DBackpropFilter
          # and stateless dropout: slower than the loop for the CNN.
          'implementations': (['loop', 'vectorized'] if w.model
                              is workloads_lib.ModelName.MLP else ['loop']),
      } for w in timing
  ]
  # The table's floor is timed in the tff-dp engine, its rounds in turn with
  # tff-dp's; the floor's own subprocess gives its startup and its speed alone.
  tff_dp_rows = [{
      'workload': row['workload'],
      'mechanism': 'gaussian_fixed',
      'paired_floor': row['implementations']
  } for row in floor_rows]
  if not quick:
    tff_dp_rows.append({
        'workload': timing[0].to_json(),
        'mechanism': 'gaussian_adaptive'
    })
    # TFF's one-client-per-call algorithm, which --clients_per_call=1 runs:
    # what the grouped path saves.
    tff_dp_rows.append({
        'workload': timing[0].to_json(),
        'mechanism': 'gaussian_fixed',
        'clients_per_call': 1
    })
  memory_workload, memory_rounds = workloads_lib.memory_workload(quick)
  jobs = [
      {
          'name': 'floor',
          'module': _ENGINE_MODULES['floor'],
          'spec': {
              'rows': floor_rows
          }
      },
      {
          'name': 'tff-dp',
          'module': _ENGINE_MODULES['tff-dp'],
          'spec': {
              'rows': tff_dp_rows
          }
      },
      {
          'name': 'plain-tff',
          'module': _ENGINE_MODULES['plain-tff'],
          'spec': {
              'rows': [{
                  'workload': w.to_json()
              } for w in timing]
          }
      },
      {
          # One row per mechanism of configs/, its floor in turn with it.
          'name': 'mechanisms',
          'module': _ENGINE_MODULES['tff-dp'],
          'spec': {
              'rows': mechanism_plan(quick)
          }
      },
  ]
  w3 = language_model.plan_job(quick, _ENGINE_MODULES['tff-dp'])
  if w3 is not None:
    jobs.append(w3)
  variants = ['tff-dp'] if quick else ['tff-dp', 'plain-tff']
  for variant in variants:
    jobs.append({
        'name': f'memory-{variant}',
        'module': 'benchmarks.memory',
        'spec': {
            'variant': variant,
            'workload': memory_workload.to_json(),
            'rounds': memory_rounds
        }
    })
  return jobs


# Mechanism rows not run, with why: {(workload family, mechanism): reason}.
# Empty since 2026-12-05: example-level DP-SGD on W2's CNN failed on the
# worker until then (`tff_dp.algorithms.grouped_example_dp.vectorizes`).
NOT_RUN: dict[tuple[str, str], str] = {}


def mechanism_plan(quick: bool) -> list[dict[str, Any]]:
  """The mechanism rows (`workloads.MECHANISMS`) on each of
  `workloads.mechanism_workloads`: tff-dp as --clients_per_call resolves
  (the grouped path), the floor of the same mechanism in turn with it; in
  full mode also TFF's one client per call on the first workload (no
  floor)."""
  rows = []
  for k, workload in enumerate(workloads_lib.mechanism_workloads(quick)):
    mlp = workload.model is workloads_lib.ModelName.MLP
    for mechanism in workloads_lib.MECHANISMS:
      if (workload.family, mechanism.name) in NOT_RUN:
        continue
      rows.append({
          'workload':
              workload.to_json(),
          'mechanism':
              'gaussian_fixed',
          'variant':
              mechanism.to_json(),
          # Example-level DP-SGD's batches have data-dependent sizes; the
          # CNN's vectorized_map falls back to a while loop (slower).
          'paired_floor': (['loop', 'vectorized']
                           if mlp and not mechanism.example_dp else ['loop']),
      })
      if not quick and k == 0:
        rows.append({
            'workload': workload.to_json(),
            'mechanism': 'gaussian_fixed',
            'variant': mechanism.to_json(),
            'clients_per_call': 1,
        })
  return rows


def _engine_env() -> dict[str, str]:
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO_ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env


def _child_workers(pid: int) -> set[int]:
  """Pids of worker_binary processes among `pid`'s descendants."""
  found = set()
  try:
    children = psutil.Process(pid).children(recursive=True)
  except psutil.NoSuchProcess:
    return found
  for child in children:
    try:
      if any(harness.WORKER_BINARY_NAME in part for part in child.cmdline()):
        found.add(child.pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  return found


def _tree_memory_mb(pid: int,
                    hwm: Optional[dict[int,
                                       float]] = None) -> tuple[float, float]:
  """RSS and PSS (MiB) summed over `pid` and all its descendants.

  RSS counts a page shared by several processes (a library mapped by every
  Ray worker, say) once per process; PSS splits it among them, so the PSS sum
  is what the tree really holds. Processes that vanish mid-poll are skipped.
  A poll can miss a short peak (reading PSS costs ~10 ms per TensorFlow
  process, so polls are 0.2-1 s apart); `hwm`, if given, keeps each
  process's kernel high-water mark of RSS (VmHWM), which misses nothing
  before the process's last poll: their sum bounds the tree's peak RSS from
  above (the processes need not peak together).
  """
  rss = pss = 0.0
  try:
    tree = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
  except psutil.NoSuchProcess:
    return rss, pss
  for proc in tree:
    try:
      info = proc.memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
    rss += info.rss / 2.0**20
    pss += getattr(info, 'pss', info.rss) / 2.0**20
    peak = harness.peak_rss_mb(proc.pid) if hwm is not None else None
    if peak is not None:
      hwm[proc.pid] = max(hwm.get(proc.pid, 0.0), peak)
  return rss, pss


def run_job(job: dict[str, Any], work_dir: str,
            timeout_s: float) -> dict[str, Any]:
  """Runs one engine subprocess to completion; returns its record.

  The record holds the engine's result (or the error), its wall time, the
  peak memory of its process tree (RSS and PSS sums, polled every
  `job['poll_s']` seconds, default 1), and the TFF workers seen under it with
  what became of them. `job['python']` runs the engine with another
  interpreter (a peer's environment).
  """
  name = job['name']
  spec_path = os.path.join(work_dir, f'{name}.spec.json')
  out_path = os.path.join(work_dir, f'{name}.result.json')
  log_path = os.path.join(work_dir, f'{name}.log')
  log_dir = os.path.join(work_dir, name)
  os.makedirs(log_dir, exist_ok=True)
  cmd = [
      job.get('python', sys.executable), '-m', job['module'],
      f'--spec={spec_path}', f'--out={out_path}'
  ]
  poll_s = job.get('poll_s', _POLL_SECONDS)
  peak = {'rss_mb': 0.0, 'pss_mb': 0.0, 'hwm_sum_mb': 0.0}
  hwm: dict[int, float] = {}
  record: dict[str, Any] = {
      'name': name,
      'command': ' '.join(cmd),
      'log': log_path,
      'result_path': out_path
  }
  seen_workers: set[int] = set()
  with open(log_path, 'wb') as log:
    spawn_time = time.time()
    harness.write_json(spec_path, {
        **job['spec'], 'spawn_time': spawn_time,
        'log_dir': log_dir
    })
    start = time.perf_counter()
    # The spec's spawn_time is taken just before the process starts.
    process = subprocess.Popen(cmd,
                               cwd=REPO_ROOT,
                               env=_engine_env(),
                               stdin=subprocess.DEVNULL,
                               stdout=log,
                               stderr=subprocess.STDOUT)
    try:
      while process.poll() is None:
        seen_workers |= _child_workers(process.pid)
        rss, pss = _tree_memory_mb(process.pid, hwm)
        peak['rss_mb'] = max(peak['rss_mb'], rss)
        peak['pss_mb'] = max(peak['pss_mb'], pss)
        peak['hwm_sum_mb'] = sum(hwm.values())
        if time.perf_counter() - start > timeout_s:
          record['error'] = f'timed out after {timeout_s:.0f} s'
          harness.stop_subprocess(process)
          break
        time.sleep(poll_s)
    except BaseException:
      harness.stop_subprocess(process)
      raise
    finally:
      record['wall_s'] = time.perf_counter() - start
  record['returncode'] = process.returncode
  record['peak_tree_memory'] = peak
  result = None
  if os.path.exists(out_path):
    result = harness.read_json(out_path)
  record['result'] = result
  if process.returncode != 0 and 'error' not in record:
    record['error'] = f'exit code {process.returncode}; see {log_path}'
  for worker in (result or {}).get('workers', []):
    if worker.get('pid'):
      seen_workers.add(worker['pid'])
  logged = set()
  for root, _, files in os.walk(log_dir):
    for file_name in files:
      if file_name.endswith('.log'):
        logged.update(harness.logged_worker_pids(os.path.join(root, file_name)))
  record['workers'] = []
  for pid in sorted(seen_workers | logged):
    left = harness.is_running_worker(pid)
    action = harness.stop_worker_pid(pid) if left else 'none needed'
    record['workers'].append({
        'pid': pid,
        'left_running': left,
        'stopped_by_run_all': action,
        'started_by_tff_dp_runtime': pid in logged
    })
  return record


def _entry(result: Optional[dict[str, Any]],
           name: str,
           mechanism: str = 'gaussian_fixed',
           requested_per_call: int = 0,
           variant: Optional[str] = None) -> Optional[dict[str, Any]]:
  """The timing entry of workload `name` in an engine's result."""
  for entry in (result or {}).get('workloads', []):
    if (entry['workload']['name'] == name and
        entry.get('mechanism', 'gaussian_fixed') == mechanism and
        entry.get('requested_clients_per_call', 0) == requested_per_call and
        entry.get('variant') == variant):
      return entry
  return None


def _row(engine: str, entry: Optional[dict[str, Any]]) -> dict[str, Any]:
  if entry is None:
    return {'engine': engine, 'ok': False}
  row = {
      'engine': engine,
      'ok': True,
      'median_s': entry['seconds']['median'],
      'p10_s': entry['seconds']['p10'],
      'p90_s': entry['seconds']['p90'],
      'timed_rounds': entry['seconds']['n'],
      'warmup_rounds': entry['workload']['warmup_rounds'],
      'first_round_s': entry['first_round_s'],
      'build_s': entry.get('build_s'),
      'cpu_self_s_per_round': entry['cpu_self_s'],
      'load_average': entry['load_average']
  }
  if 'clients_per_call' in entry:
    row['clients_per_call'] = entry['clients_per_call']
  if 'cpu_worker_s' in entry:
    row['cpu_worker_s_per_round'] = entry['cpu_worker_s']
  if entry.get('parts'):
    row['parts_median_s'] = {k: v['median'] for k, v in entry['parts'].items()}
  if 'best' in entry:
    row['implementation'] = entry['best']
    row['implementations_median_s'] = {
        k: v['seconds']['median'] for k, v in entry['implementations'].items()
    }
  return row


def _paired_floor_entry(
    tff_dp_entry: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
  """The floor timed in turn with tff-dp, shaped as an engine's entry."""
  paired = (tff_dp_entry or {}).get('paired_floor')
  if not paired:
    return None
  best = paired['best']
  return {
      **paired['implementations'][best], 'workload': tff_dp_entry['workload'],
      'best': best,
      'implementations': paired['implementations']
  }


def timing_table(jobs: dict[str, dict[str, Any]],
                 quick: bool) -> list[dict[str, Any]]:
  """One row per workload: the three engines and the ratios.

  'floor' is the floor timed in turn with tff-dp in one process (the ratios
  use it); 'floor-alone' is the floor's own subprocess.
  """
  table = []
  for workload in workloads_lib.timing_workloads(quick):
    entries = {
        engine:
            _row(engine,
                 _entry(jobs.get(engine, {}).get('result'), workload.name))
        for engine in ENGINES
    }
    floor_entry = _entry(jobs.get('floor', {}).get('result'), workload.name)
    entries['floor-alone'] = dict(entries['floor'], engine='floor-alone')
    entries['floor'] = _row(
        'floor',
        _paired_floor_entry(
            _entry(jobs.get('tff-dp', {}).get('result'), workload.name)))
    med = {e: r.get('median_s') for e, r in entries.items()}
    table.append({
        'workload': workload.to_json(),
        'parameters': (floor_entry or {}).get('parameters'),
        'engines': entries,
        'ratios': {
            'tff_dp_over_floor':
                stats.ratio(med['tff-dp'], med['floor']),
            'plain_tff_over_tff_dp':
                stats.ratio(med['plain-tff'], med['tff-dp']),
            'plain_tff_over_floor':
                stats.ratio(med['plain-tff'], med['floor']),
        },
    })
  return table


def cohort_scaling(table: list[dict[str, Any]]) -> dict[str, Any]:
  """Per engine: least-squares seconds per extra client over W1's cohorts."""
  scaling = {}
  for engine in ENGINES:
    points = [(row['workload']['clients'], row['engines'][engine]['median_s'])
              for row in table
              if row['workload']['family'] == 'W1' and
              row['engines'][engine].get('ok')]
    if len(points) < 2:
      continue
    xs, ys = zip(*points)
    slope = stats.least_squares_slope(xs, ys)
    scaling[engine] = {
        'clients': list(xs),
        'ms_per_client': None if slope is None else 1e3 * slope
    }
  return scaling


def extra_rows(jobs: dict[str, dict[str, Any]],
               quick: bool) -> list[dict[str, Any]]:
  """tff-dp rows of W1-c50 with gaussian_adaptive, and with TFF's
  one-client-per-call path (--clients_per_call=1); full mode only."""
  if quick:
    return []
  first = workloads_lib.timing_workloads(quick)[0]
  result = jobs.get('tff-dp', {}).get('result')
  rows = []
  for mechanism, per_call, label in (
      ('gaussian_adaptive', 0, 'gaussian_adaptive'),
      ('gaussian_fixed', 1, '--clients_per_call=1 (one client per TFF call)')):
    entry = _entry(result, first.name, mechanism, per_call)
    rows.append({
        'workload': first.to_json(),
        'mechanism': mechanism,
        'label': label,
        **_row('tff-dp', entry)
    })
  return rows


def mechanism_rows(jobs: dict[str, dict[str, Any]],
                   quick: bool) -> list[dict[str, Any]]:
  """Per workload and mechanism: tff-dp (grouped), its floor in turn, the
  ratio, and (full mode, first workload) TFF's one client per call."""
  result = jobs.get('mechanisms', {}).get('result')
  rows = []
  for k, workload in enumerate(workloads_lib.mechanism_workloads(quick)):
    name = workload.name
    for mechanism in workloads_lib.MECHANISMS:
      entry = _entry(result, name, variant=mechanism.name)
      grouped = _row('tff-dp', entry)
      floor = _row('floor', _paired_floor_entry(entry))
      per_call = (None if quick or k > 0 else _row(
          'tff-dp',
          _entry(result, name, requested_per_call=1, variant=mechanism.name)))
      not_run = NOT_RUN.get((workload.family, mechanism.name))
      if not_run:
        grouped = {'engine': 'tff-dp', 'ok': False, 'not_run': not_run}
      rows.append({
          'workload': name,
          'mechanism': mechanism.name,
          'config': mechanism.config,
          'floor_includes': mechanism.floor,
          'tff-dp': grouped,
          'floor': floor,
          'one_client_per_call': per_call,
          'ratios': {
              'tff_dp_over_floor':
                  stats.ratio(grouped.get('median_s'), floor.get('median_s')),
              'per_call_over_grouped':
                  stats.ratio((per_call or {}).get('median_s'),
                              grouped.get('median_s')),
          },
      })
  return rows


_PHASES = (('imports_done', 'start+imports'), ('process_built', 'build'),
           ('worker_ready', 'worker start'), ('initialized', 'initialize'),
           ('first_round_done', 'first round'))


def startup_table(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
  """Time to the first round of each fresh engine subprocess, by phase."""
  rows = []
  for name in ENGINES + ('memory-tff-dp',):
    result = (jobs.get(name) or {}).get('result') or {}
    marks = result.get('startup')
    if not marks or 'first_round_done' not in marks:
      continue
    phases = {}
    previous = 0.0
    for key, label in _PHASES:
      if key in marks:
        phases[label] = marks[key] - previous
        previous = marks[key]
    rows.append({
        'engine': name,
        'workload': marks.get('workload', 'W1-c50 (program)'),
        'phases_s': phases,
        'time_to_first_round_s': marks['first_round_done']
    })
  return rows


def memory_table(jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
  table = {}
  for name, job in jobs.items():
    if not name.startswith('memory-') or not job.get('result'):
      continue
    result = job['result']
    if 'process' not in result:
      continue
    table[name[len('memory-'):]] = {
        'rounds': result['rounds_completed'],
        'wall_s': result['wall_s'],
        'process': result['process'],
        'worker': result['worker'],
        'loop_seconds_median': result['loop_seconds']['median'],
        'round_seconds_median': result.get('round_seconds', {}).get('median'),
        'loop_overhead_s': result.get('loop_overhead_s'),
        'samples': result['samples'],
        'workers': result['workers'],
    }
  return table


def _fmt(value: Optional[float], digits: int = 3) -> str:
  return 'n/a' if value is None else f'{value:.{digits}f}'


def _fmt_ratio(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value:.1f}x'


def _cell(row: dict[str, Any]) -> str:
  if row.get('not_run'):
    return 'not run'
  if not row.get('ok'):
    return 'failed'
  return (f"{row['median_s']:.3f} [{row['p10_s']:.3f}, {row['p90_s']:.3f}]")


def _format_mechanism_rows(rows: list[dict[str, Any]]) -> list[str]:
  """One table per workload of the mechanism rows."""
  lines = []
  for name in dict.fromkeys(row['workload'] for row in rows):
    lines += [
        '', f'Mechanisms of configs/ ({name}; seconds per round, median '
        '[p10, p90]; floor of the same mechanism in turn with tff-dp)',
        f"{'mechanism':<15} {'floor':<22} {'tff-dp':<22} {'tff-dp/floor':>12}"
        f"  {'one client per call':<22} {'per-call/tff-dp':>15}"
    ]
    these = [row for row in rows if row['workload'] == name]
    for row in these:
      per_call = row['one_client_per_call']
      lines.append(f"{row['mechanism']:<15} {_cell(row['floor']):<22} "
                   f"{_cell(row['tff-dp']):<22} "
                   f"{_fmt_ratio(row['ratios']['tff_dp_over_floor']):>12}  "
                   f"{(_cell(per_call) if per_call else 'not run'):<22} "
                   f"{_fmt_ratio(row['ratios']['per_call_over_grouped']):>15}")
    lines += [
        f"  {row['mechanism']} not run: {row['tff-dp']['not_run']}"
        for row in these
        if row['tff-dp'].get('not_run')
    ]
    lines.append('  clients per TFF call: ' + ', '.join(
        f"{row['mechanism']} {row['tff-dp'].get('clients_per_call', '?')}"
        for row in these))
  return lines


def format_report(report: dict[str, Any]) -> str:
  """The human-readable table of a report."""
  lines = [
      f"tff-dp benchmarks ({report['mode']} mode), {report['started_utc']} "
      f"UTC, {report['machine']['cpus']} CPUs, SHARED machine "
      f"(load average at start {report['load_average']['start']})",
      f"Data: synthetic (uniform random features and labels). "
      f"{report['command']}",
      f"Code: commit {str(report['git']['commit'])[:12]}, "
      f"{len(report['git']['changed_paths'] or [])} changed paths. TFF client "
      f"loop: tff-dp {report['client_loops']['tff-dp']}, plain TFF "
      f"{report['client_loops']['plain-tff']}",
      '',
      'Seconds per round: median [p10, p90] over the timed rounds after '
      'warm-up. The floor ran in the tff-dp engine, round by round in turn '
      'with tff-dp (its own process: under "Where the time goes").',
  ]
  header = (f"{'workload':<9} {'params':>9} {'rounds':>8}  {'floor':<22} "
            f"{'tff-dp':<22} {'plain TFF':<22} {'tff-dp/floor':>12} "
            f"{'plainTFF/tff-dp':>15}")
  lines += [header, '-' * len(header)]
  for row in report['timing']:
    w = row['workload']
    engines = row['engines']
    tffdp = engines['tff-dp']
    rounds = (f"{tffdp['warmup_rounds']}+{tffdp['timed_rounds']}"
              if tffdp.get('ok') else '')
    lines.append(f"{w['name']:<9} {row['parameters'] or 0:>9,} {rounds:>8}  "
                 f"{_cell(engines['floor']):<22} {_cell(tffdp):<22} "
                 f"{_cell(engines['plain-tff']):<22} "
                 f"{_fmt_ratio(row['ratios']['tff_dp_over_floor']):>12} "
                 f"{_fmt_ratio(row['ratios']['plain_tff_over_tff_dp']):>15}")
  per_call = [(row['workload']['name'],
               row['engines']['tff-dp'].get('clients_per_call', '?'))
              for row in report['timing']]
  lines.append('tff-dp simulated clients per TFF call: ' +
               ', '.join(f'{name} {n}' for name, n in per_call))
  for row in report['extra_rows']:
    lines.append(f"{row['workload']['name']:<9} tff-dp with "
                 f"{row.get('label', row['mechanism'])}: {_cell(row)}")
  lines += _format_mechanism_rows(report.get('mechanism_rows', []))
  lines += language_model.format_rows(report.get('transformer_rows', []), _cell)
  if report['cohort_scaling']:
    lines.append('W1 seconds per extra client (least squares over cohorts '
                 f"{next(iter(report['cohort_scaling'].values()))['clients']}"
                 '): ' +
                 ', '.join(f"{engine} {_fmt(v['ms_per_client'], 2)} ms"
                           for engine, v in report['cohort_scaling'].items()))
  lines += ['', 'Where the time goes (medians per timed round)']
  for row in report['timing']:
    tffdp = row['engines']['tff-dp']
    floor = row['engines']['floor']
    plain = row['engines']['plain-tff']
    if tffdp.get('ok'):
      parts = tffdp.get('parts_median_s', {})
      lines.append(
          f"  {row['workload']['name']:<9} tff-dp: datasets "
          f"{_fmt(parts.get('datasets_s'))} s + next "
          f"{_fmt(parts.get('next_s'))} s; CPU python "
          f"{_fmt(tffdp['cpu_self_s_per_round'], 2)} s, worker "
          f"{_fmt(tffdp.get('cpu_worker_s_per_round'), 2)} s; first round "
          f"{_fmt(tffdp['first_round_s'], 2)} s")
    if plain.get('ok'):
      lines.append(
          f"  {'':<9} plain TFF: CPU python "
          f"{_fmt(plain['cpu_self_s_per_round'], 2)} s, worker "
          f"{_fmt(plain.get('cpu_worker_s_per_round'), 2)} s; first round "
          f"{_fmt(plain['first_round_s'], 2)} s")
    for label, row_ in (('floor, in turn with tff-dp', floor),
                        ('floor alone, own process',
                         row['engines']['floor-alone'])):
      if row_.get('ok'):
        impl = ', '.join(f'{k} {v:.4f} s'
                         for k, v in row_['implementations_median_s'].items())
        lines.append(f"  {'':<9} {label}: {impl}; CPU "
                     f"{_fmt(row_['cpu_self_s_per_round'], 2)} s")
  lines += [
      '', 'Time to the first round (fresh subprocess; seconds since '
      'spawn, by phase)'
  ]
  for row in report['startup']:
    phases = ', '.join(f'{k} {v:.2f}' for k, v in row['phases_s'].items())
    lines.append(f"  {row['engine']:<14} {row['workload']:<18} total "
                 f"{row['time_to_first_round_s']:6.2f}: {phases}")
  lines += [
      '', 'Memory (RSS, MiB; slope = least squares over the second '
      'half, MiB/round)'
  ]
  for variant, mem in report['memory'].items():
    for who in ('process', 'worker'):
      m = mem[who]
      lines.append(
          f"  {variant:<10} {who:<8} rounds {mem['rounds']:>4}: first "
          f"{_fmt(m.get('first_mb'), 1)}, last {_fmt(m.get('last_mb'), 1)}, "
          f"peak sampled {_fmt(m.get('peak_sampled_mb'), 1)}, peak (VmHWM) "
          f"{_fmt(m.get('peak_hwm_mb'), 1)}, slope "
          f"{_fmt(m.get('slope_mb_per_round'), 3)}")
    overhead = mem.get('loop_overhead_s') or {}
    lines.append(
        f"  {variant:<10} whole loop {mem['loop_seconds_median']:.3f} s/round "
        f"(round itself {_fmt(mem['round_seconds_median'])} s; outside the "
        f"round: first quarter {_fmt(overhead.get('first_quarter'))} s, last "
        f"quarter {_fmt(overhead.get('last_quarter'))} s), wall "
        f"{mem['wall_s']:.0f} s")
  lines += ['', 'TFF workers started by the engines']
  for job in report['jobs']:
    for worker in job['workers']:
      owner = ('tff_dp.execution.runtime' if worker['started_by_tff_dp_runtime']
               else 'TFF default context')
      lines.append(f"  {job['name']:<16} pid {worker['pid']} ({owner}): left "
                   f"running after the engine exited: "
                   f"{worker['left_running']} "
                   f"(action: {worker['stopped_by_run_all']})")
  errors = [job for job in report['jobs'] if job.get('error')]
  for job in errors:
    lines.append(f"ERROR {job['name']}: {job['error']}")
  lines.append(f"\nWall time {report['wall_s']:.0f} s. Wrote "
               f"{report['paths']['json']}")
  return '\n'.join(lines)


def _git_state() -> dict[str, Any]:
  """The commit and the changed paths of the tree that was measured.

  Read-only: `--no-optional-locks` keeps `git status` from refreshing the
  index.
  """

  def git(*args):
    try:
      return subprocess.run(['git', '--no-optional-locks', *args],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True,
                            timeout=30,
                            check=True).stdout
    except (OSError, subprocess.SubprocessError):
      return None

  commit = git('rev-parse', 'HEAD')
  status = git('status', '--porcelain')
  return {
      'commit':
          commit.strip() if commit else None,
      'changed_paths': ([line[3:] for line in status.splitlines()]
                        if status is not None else None)
  }


def _versions() -> dict[str, str]:
  versions = {'python': platform.python_version()}
  for package in ('tensorflow', 'tensorflow-federated', 'tensorflow-privacy',
                  'dp-accounting', 'psutil'):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = 'not installed'
  return versions


def main(argv: list[str]) -> int:
  """Runs the jobs one after the other, prints and writes the report."""
  args = parse_args(argv)
  if args.workers:
    # Its own process: it starts worker programs and several runtimes.
    return subprocess.call([sys.executable, '-m', 'benchmarks.workers'] +
                           (['--quick'] if args.quick else []),
                           cwd=REPO_ROOT)
  started = datetime.datetime.now(datetime.timezone.utc)
  stamp = started.strftime('%Y%m%d-%H%M%S')
  git_state = _git_state()
  output_dir = os.path.abspath(args.output_dir)
  work_dir = os.path.join(output_dir, stamp)
  os.makedirs(work_dir, exist_ok=False)
  timeout_s = _QUICK_TIMEOUT_SECONDS if args.quick else _FULL_TIMEOUT_SECONDS
  wall_start = time.perf_counter()
  load_start = harness.load_average()
  jobs: dict[str, dict[str, Any]] = {}
  for job in plan(args.quick):
    print(f"run_all: {job['name']} ...", flush=True)
    jobs[job['name']] = run_job(job, work_dir, timeout_s)
    status = jobs[job['name']].get('error', 'ok')
    print(
        f"run_all: {job['name']} {status} "
        f"({jobs[job['name']]['wall_s']:.0f} s)",
        flush=True)
  json_path = os.path.join(output_dir, f'{stamp}.json')
  report = {
      'schema_version':
          SCHEMA_VERSION,
      'mode':
          'quick' if args.quick else 'full',
      'command': (f'{sys.executable} -m benchmarks.run_all' +
                  (' --quick' if args.quick else '') +
                  (f' --output_dir={args.output_dir}'
                   if args.output_dir != DEFAULT_OUTPUT_DIR else '')),
      'started_utc':
          started.strftime('%Y-%m-%d %H:%M:%S'),
      'machine': {
          'cpus': os.cpu_count(),
          'platform': platform.platform(),
          'shared': True,
          **_versions()
      },
      'load_average': {
          'start': load_start,
          'end': harness.load_average()
      },
      'git':
          git_state,
      'client_loops': {
          name: (
              jobs.get(name, {}).get('result') or
              {}).get('loop_implementation') for name in ('tff-dp', 'plain-tff')
      },
      'data':
          'synthetic: features uniform in [0, 1), labels uniform in '
          '[0, 10); shapes of (E)MNIST',
      'hyperparameters':
          dataclasses.asdict(workloads_lib.HYPERPARAMETERS),
      'timing':
          timing_table(jobs, args.quick),
      'cohort_scaling':
          None,
      'extra_rows':
          extra_rows(jobs, args.quick),
      'mechanism_rows':
          mechanism_rows(jobs, args.quick),
      'transformer_rows':
          language_model.rows(jobs, args.quick, _row, _paired_floor_entry),
      'startup':
          startup_table(jobs),
      'memory':
          memory_table(jobs),
      'jobs': [{
          k: v for k, v in job.items() if k != 'result'
      } for job in jobs.values()],
      'raw': {
          name: job.get('result') for name, job in jobs.items()
      },
      'paths': {
          'json': json_path,
          'latest': os.path.join(output_dir, 'latest.json'),
          'work_dir': work_dir
      },
  }
  report['cohort_scaling'] = cohort_scaling(report['timing'])
  report['wall_s'] = time.perf_counter() - wall_start
  harness.write_json(json_path, report)
  harness.write_json(report['paths']['latest'], report)
  print(format_report(report), flush=True)
  failed = any(job.get('error') for job in jobs.values())
  left = any(w['left_running'] for job in jobs.values() for w in job['workers'])
  return 1 if failed or left else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
