"""tff-dp beside its peers: Flower and pfl on W1 and W2, alternating with tff-dp and the floor.

  ./run.sh bench --peers [--quick] [--alternations=N] [--output_dir=DIR]
  (= .venv/bin/python -m benchmarks.peers ...)

Makes (once, cached: `benchmarks.peer_envs`) the pinned environments of
Flower 1.42 and pfl 0.6, then runs five engines, each in its own fresh
subprocess, one after the other, N times (default 2) in rotating order:

  tff-dp   tff-dp's process on its runtime (`benchmarks.rounds`, gaussian_fixed,
           the grouped path the program picks)
  program  the training program itself (`python -m tff_dp.cli.train`, as
           `benchmarks.startup` runs it: W1, one round, its computation cache
           filled by an untimed run first, its worker prestarted): time to
           the first round and peak memory only
  floor    one plain TensorFlow program per round (`benchmarks.floor`)
  flower   Flower's Ray simulation with its server-side DP wrapper
           (`benchmarks.peer_flower`)
  pfl      pfl's simulated backend with its central Gaussian mechanism
           (`benchmarks.peer_pfl`)

Every engine runs the same workloads (`benchmarks.workloads`: W1, the MLP
784-128-10 with 50 clients x 64 examples; W2, the EMNIST CNN with 20 clients
x 100; quick mode: W1 with 10 clients and W2 with 2, 1 warm-up and 3 timed
rounds) with the same hyperparameters. Reported per engine and alternation:
seconds per round (median over the timed rounds), time to the first round
(from just before the subprocess starts to the end of its first round of W1)
and the peak memory of the engine's process tree (RSS and PSS summed over the
process and its children: tff-dp's TFF worker, Flower's Ray processes),
polled every 0.5 s. Ratios: each peer's seconds per round over tff-dp's, and
the program's time to the first round over pfl's (the issue's target: what a
user waits for is `./run.sh train`, not the benchmark's engine, which
imports its harness and skips the cache; the engine's is printed beside it),
and the engine's peak PSS over pfl's (both ran W1 and W2; the program's
W1-only memory against pfl's W1-only memory is `benchmarks.startup`'s). What each framework's round includes differs in small ways, stated
in each engine's docstring and in benchmarks/README.md.

The report goes to DIR/peers-<UTC time>.json (DIR defaults to
benchmarks/results/, git-ignored) and is printed. Exit code 0 only if every
engine run succeeded.
"""

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import time
from typing import Any, Optional

from benchmarks import harness
from benchmarks import peer_envs
from benchmarks import run_all
from benchmarks import startup
from benchmarks import stats
from benchmarks import workloads as workloads_lib

ENGINES = ('tff-dp', 'program', 'floor', 'flower', 'pfl')
_TIMEOUT_SECONDS = 3600
_POLL_SECONDS = 0.5


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.peers',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--quick',
                      action='store_true',
                      help='tiny workloads to prove the machinery')
  parser.add_argument('--alternations',
                      type=int,
                      default=2,
                      help='how many times every engine runs (>= 1)')
  parser.add_argument('--output_dir', default=run_all.DEFAULT_OUTPUT_DIR)
  args = parser.parse_args(argv[1:])
  if args.alternations < 1:
    parser.error(f'--alternations must be >= 1, got {args.alternations}')
  return args


def peer_workloads(quick: bool) -> list[workloads_lib.Workload]:
  """W1 and W2 of the main benchmark: its first and last timing workloads.

  The first (W1) gives the time to the first round. In full mode W2 runs 1
  warm-up and 5 timed rounds (not 2 + 15): pfl and Flower take 3-30 s per W2
  round here, and two alternations of 17 rounds would take most of an hour.
  """
  timing = workloads_lib.timing_workloads(quick)
  w2 = timing[-1]
  if not quick:
    w2 = dataclasses.replace(w2, warmup_rounds=1, timed_rounds=5)
  return [timing[0], w2]


def engine_job(engine: str, workloads: list[workloads_lib.Workload],
               pythons: dict[str, str]) -> dict[str, Any]:
  """The run_all job that runs `engine` (not 'program') on `workloads`."""
  rows = [{'workload': w.to_json()} for w in workloads]
  if engine == 'tff-dp':
    rows = [dict(row, mechanism='gaussian_fixed') for row in rows]
    job = {'module': 'benchmarks.rounds'}
  elif engine == 'floor':
    rows = [
        dict(row,
             implementations=(['loop', 'vectorized'] if w.model
                              is workloads_lib.ModelName.MLP else ['loop']))
        for row, w in zip(rows, workloads)
    ]
    job = {'module': 'benchmarks.floor'}
  else:
    peer = {p.name: p for p in peer_envs.PEERS}[engine]
    job = {'module': peer.module, 'python': pythons[engine]}
  return {
      **job, 'name': engine,
      'spec': {
          'rows': rows
      },
      'poll_s': _POLL_SECONDS
  }


def prepare_program(work_dir: str) -> dict[str, str]:
  """W1's data for the program and its computation cache, filled untimed."""
  program = {
      'manifest': startup.write_w1_data(work_dir),
      'cache': os.path.join(work_dir, 'computations'),
      'runs_dir': os.path.join(work_dir, 'program-runs'),
  }
  startup.run_train(
      startup.train_command(program['manifest'], program['runs_dir'],
                            program['cache']),
      os.path.join(work_dir, 'program-fill-cache.log'))
  return program


def run_program(program: dict[str, str], work_dir: str,
                name: str) -> dict[str, Any]:
  """One timed start of the program, summarized as `summarize_run` does."""
  started = time.perf_counter()
  result = startup.run_train(
      startup.train_command(program['manifest'], program['runs_dir'],
                            program['cache']),
      os.path.join(work_dir, f'{name}.log'))
  return {
      'ok': result['ok'],
      'error': None if result['ok'] else f"failed, see {result['log']}",
      'seconds_per_round': {},
      'time_to_first_round_s': result['time_to_first_round_s'],
      'peak_rss_mb': result['peak_rss_mb'],
      'peak_pss_mb': result['peak_pss_mb'],
      'wall_s': time.perf_counter() - started,
  }


def order(alternation: int) -> list[str]:
  """The engines' order in an alternation: rotated by one each time."""
  shift = alternation % len(ENGINES)
  return list(ENGINES[shift:] + ENGINES[:shift])


def summarize_run(record: dict[str, Any]) -> dict[str, Any]:
  """One engine run: per-workload median seconds, startup, peak memory."""
  result = record.get('result') or {}
  seconds = {
      entry['workload']['name']: entry['seconds']['median']
      for entry in result.get('workloads', [])
  }
  return {
      'ok':
          not record.get('error'),
      'error':
          record.get('error'),
      'seconds_per_round':
          seconds,
      'time_to_first_round_s': (result.get('startup') or
                                {}).get('first_round_done'),
      'peak_rss_mb':
          record['peak_tree_memory']['rss_mb'],
      'peak_pss_mb':
          record['peak_tree_memory']['pss_mb'],
      'wall_s':
          record['wall_s'],
  }


def ratios(runs: dict[str, list[dict[str, Any]]],
           workloads: list[workloads_lib.Workload]) -> dict[str, Any]:
  """The issue's ratios, per alternation (same index = same alternation)."""
  out: dict[str, Any] = {}
  count = min(len(v) for v in runs.values())
  for i in range(count):
    row: dict[str, Optional[float]] = {}
    tff = runs['tff-dp'][i]
    for w in workloads:
      for engine in ('flower', 'pfl', 'floor'):
        row[f'{engine}/tff-dp {w.name}'] = stats.ratio(
            runs[engine][i]['seconds_per_round'].get(w.name),
            tff['seconds_per_round'].get(w.name))
    pfl = runs['pfl'][i]
    for engine in ('program', 'tff-dp'):
      row[f'{engine}/pfl time to first round'] = stats.ratio(
          runs[engine][i]['time_to_first_round_s'],
          pfl['time_to_first_round_s'])
    # Same work only for the engines: pfl's peak covers W1 and W2 (the CNN),
    # the program's W1 alone (W1 against W1: `benchmarks.startup`).
    row['tff-dp/pfl peak PSS'] = stats.ratio(runs['tff-dp'][i]['peak_pss_mb'],
                                             pfl['peak_pss_mb'])
    out[f'alternation {i + 1}'] = row
  return out


def _fmt(value: Optional[float], digits: int = 3) -> str:
  return 'n/a' if value is None else f'{value:.{digits}f}'


def format_report(report: dict[str, Any]) -> str:
  """The printed table: one line per engine, values per alternation."""
  names = [w['name'] for w in report['workloads']]
  lines = [
      f"tff-dp and its peers ({report['mode']} mode), {report['started_utc']}"
      f" UTC, {report['cpus']} CPUs, SHARED machine (load average at start "
      f"{report['load_average']['start']}, end {report['load_average']['end']})",
      'Values per alternation, separated by " / ". Seconds per round: median '
      'over the timed rounds. Start: seconds from spawn to the end of the '
      'first W1 round. Memory: peak PSS (RSS) of the process tree, MiB.',
      '',
  ]
  header = (f"{'engine':<8} " +
            ' '.join(f'{n + " s/round":<24}' for n in names) +
            f" {'start s':<16} {'peak PSS (RSS) MiB':<30}")
  lines += [header, '-' * len(header)]
  for engine in ENGINES:
    runs = report['runs'][engine]
    cells = [
        ' / '.join(_fmt(r['seconds_per_round'].get(n))
                   for r in runs)
        for n in names
    ]
    start = ' / '.join(_fmt(r['time_to_first_round_s'], 1) for r in runs)
    memory = ' / '.join(
        f"{r['peak_pss_mb']:.0f} ({r['peak_rss_mb']:.0f})" for r in runs)
    lines.append(f'{engine:<8} ' + ' '.join(f'{c:<24}' for c in cells) +
                 f' {start:<16} {memory:<30}')
  lines += ['', 'Ratios:']
  for name, row in report['ratios'].items():
    lines.append(f'  {name}: ' +
                 ', '.join(f'{k} {_fmt(v, 2)}' for k, v in row.items()))
  errors = [
      (e, r['error']) for e in ENGINES for r in report['runs'][e] if r['error']
  ]
  lines += [f'FAILED {e}: {err}' for e, err in errors]
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  started = datetime.datetime.now(datetime.timezone.utc)
  stamp = started.strftime('%Y%m%d-%H%M%S')
  work_dir = os.path.join(os.path.abspath(args.output_dir), f'peers-{stamp}')
  os.makedirs(work_dir, exist_ok=False)
  pythons = {}
  for peer in peer_envs.PEERS:
    print(f'peers: {peer.name} environment ...', flush=True)
    try:
      pythons[peer.name] = peer_envs.ensure_env(peer,
                                                log_path=os.path.join(
                                                    work_dir,
                                                    f'{peer.name}-env.log'))
    except peer_envs.PeerEnvError as e:
      print(f'peers: {e}', file=sys.stderr)
      return 1
  workloads = peer_workloads(args.quick)
  program = prepare_program(work_dir)
  load_start = harness.load_average()
  runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
  for alternation in range(args.alternations):
    for engine in order(alternation):
      name = f'{engine}-{alternation + 1}'
      print(f'peers: {name} ...', flush=True)
      if engine == 'program':
        summary = run_program(program, work_dir, name)
      else:
        job = dict(engine_job(engine, workloads, pythons), name=name)
        summary = summarize_run(run_all.run_job(job, work_dir,
                                                _TIMEOUT_SECONDS))
      runs[engine].append(summary)
      print(
          f"peers: {name} {summary['error'] or 'ok'} "
          f"({summary['wall_s']:.0f} s)",
          flush=True)
  report = {
      'mode': 'quick' if args.quick else 'full',
      'started_utc': started.strftime('%Y-%m-%d %H:%M:%S'),
      'cpus': os.cpu_count(),
      'load_average': {
          'start': load_start,
          'end': harness.load_average()
      },
      'versions': {
          p.name: p.version for p in peer_envs.PEERS
      },
      'workloads': [w.to_json() for w in workloads],
      'runs': runs,
      'ratios': ratios(runs, workloads),
      'work_dir': work_dir,
  }
  harness.write_json(os.path.join(args.output_dir, f'peers-{stamp}.json'),
                     report)
  print(format_report(report), flush=True)
  shutil.rmtree(program['runs_dir'], ignore_errors=True)
  return 0 if all(r['ok'] for v in runs.values() for r in v) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
