"""Time to the first round and peak memory of `./run.sh train` on W1, beside pfl's (issue 21).

  .venv/bin/python -m benchmarks.startup [--alternations=N] [--output_dir=DIR]
      [--variants=no_cache,cache,...] [--no_pfl]

Runs, N times (default 3) in an order rotated by one each alternation, each
in a fresh process:

  no_cache     the training program (`python -m tff_dp.cli.train`) on W1
               for one round, --computation_cache= (every computation traced)
  cache        the same with a computation cache that an untimed run of the
               same command filled first (`tff_dp.program.computation_cache`)
  cache_compile `cache` with TFF_DP_NO_NATIVE_CACHE=1: the entry's compiled
               forms unused, TFF compiles `initialize` and `next` on their
               first call (as before they were cached)
  cache_arena2 `cache` with MALLOC_ARENA_MAX=2 (glibc's malloc arenas; memory)
  cache_eager  `cache` with TFF_DP_EAGER_IMPORTS=1: jax, TF Probability and
               scikit-learn imported as TensorFlow, TFF and TF Privacy ask
               (`tff_dp.lazy_imports` off; the A/B of the deferral)
  cache_eager_h5py `cache` with TFF_DP_EAGER_IMPORTS=h5py: all deferred but
               h5py (what deferring h5py alone buys)
  pfl          pfl's W1 (`benchmarks.peer_pfl`, its pinned environment from
               `benchmarks.peer_envs`), as in `benchmarks.peers`

W1 for the program: the benchmark's synthetic data (`benchmarks.workloads`,
50 clients x 64 examples, 784 features, 10 classes) imported with
`./run.sh import-data --shards=1` (in memory, so the program takes the
grouped path as `benchmarks.rounds` does), the MLP 784-128-10, every client
in every round, gaussian_fixed z=1 C=0.5, the benchmark's hyperparameters.

Per run: seconds from just before the subprocess starts to the end of the
first round (the program's `round 1/1` line; pfl's first
`after_central_iteration`), the program's start-up phases (its `[t s] phase`
lines), and the peak RSS and PSS summed over the process tree (the TFF worker
included), polled every 0.2 s, which can miss a short peak; also the sum of
each process's kernel high-water mark of RSS (VmHWM, as of its last poll),
an upper bound of the tree's peak RSS that misses nothing. The report (medians, ratios to pfl per
alternation, load averages) is printed and written to
DIR/startup-<UTC time>.json.
"""

import argparse
import dataclasses
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np

from benchmarks import harness
from benchmarks import peer_envs
from benchmarks import run_all
from benchmarks import workloads as workloads_lib

VARIANTS = ('no_cache', 'cache', 'cache_compile', 'cache_arena2', 'cache_eager',
            'cache_eager_h5py', 'pfl')
# Environment of the program's variants beyond `cache`'s.
_VARIANT_ENV = {
    'cache_compile': {
        'TFF_DP_NO_NATIVE_CACHE': '1'
    },
    'cache_arena2': {
        'MALLOC_ARENA_MAX': '2'
    },
    'cache_eager': {
        'TFF_DP_EAGER_IMPORTS': '1'
    },
    'cache_eager_h5py': {
        'TFF_DP_EAGER_IMPORTS': 'h5py'
    },
}
_POLL_S = 0.2
_TIMEOUT_S = 900
_PHASE = re.compile(r'^\[(\d+\.\d) s\] (.*)$')


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.startup',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--alternations', type=int, default=3)
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--output_dir', default=run_all.DEFAULT_OUTPUT_DIR)
  args = parser.parse_args(argv[1:])
  args.variants = args.variants.split(',')
  unknown = set(args.variants) - set(VARIANTS)
  if unknown or args.alternations < 1:
    parser.error(f'unknown variants {sorted(unknown)} or alternations < 1')
  return args


def w1() -> workloads_lib.Workload:
  return workloads_lib.timing_workloads(False)[0]


def write_w1_data(work_dir: str) -> str:
  """W1's clients as a one-shard manifest; returns the manifest path."""
  data = workloads_lib.synthetic_data(w1())
  clients, per_client = data.y.shape
  npz = os.path.join(work_dir, 'w1.npz')
  # 25% more rows per client, held out as the test split (rows): 64 train.
  extra = per_client // 4
  rng = np.random.default_rng(0)
  x = np.concatenate(
      [data.x,
       rng.random((clients, extra, data.x.shape[-1]), np.float32)],
      axis=1)
  y = np.concatenate(
      [data.y, rng.integers(0, 10, (clients, extra)).astype(np.int32)], axis=1)
  np.savez(npz,
           client=np.repeat(np.arange(clients), per_client + extra),
           label=y.reshape(-1),
           x=x.reshape(clients * (per_client + extra), -1))
  out = os.path.join(work_dir, 'w1-shards')
  subprocess.run([
      sys.executable, '-m', 'tff_dp.cli.import_data', f'--input={npz}',
      f'--output={out}', '--client_column=client', '--label_column=label',
      '--num_classes=10', '--test_split=rows', '--shards=1'
  ],
                 cwd=run_all.REPO_ROOT,
                 check=True,
                 stdout=subprocess.DEVNULL)
  return os.path.join(out, 'manifest.json')


def train_command(manifest: str, run_dir: str, cache: str) -> list[str]:
  hyper = workloads_lib.HYPERPARAMETERS
  workload = w1()
  return [
      sys.executable, '-u', '-m', 'tff_dp.cli.train', '--dataset=sqlite',
      f'--client_data={manifest}', '--model=mlp', '--hidden_units=128',
      f'--clients_per_round={workload.clients}', '--client_sampling=full',
      '--rounds=1', f'--client_batch_size={workload.batch_size}',
      f'--client_epochs={workload.epochs}',
      f'--client_learning_rate={hyper.client_learning_rate}',
      '--server_optimizer=sgd',
      f'--server_learning_rate={hyper.server_learning_rate}',
      f'--server_momentum={hyper.server_momentum}',
      '--dp_mechanism=gaussian_fixed',
      f'--noise_multiplier={hyper.noise_multiplier}', f'--clip={hyper.clip}',
      f'--output_dir={run_dir}', f'--computation_cache={cache}'
  ]


def run_train(cmd: list[str],
              log_path: str,
              env: Optional[dict[str, str]] = None) -> dict[str, Any]:
  """Runs the program; spawn-to-first-round time, phases, peak memory."""
  peak = {'rss_mb': 0.0, 'pss_mb': 0.0}
  hwm: dict[int, float] = {}
  phases, first_round = {}, None
  with open(log_path, 'w') as log, open(log_path) as reader:
    start = time.perf_counter()
    process = subprocess.Popen(cmd,
                               cwd=run_all.REPO_ROOT,
                               env={
                                   **os.environ,
                                   **(env or {})
                               },
                               stdin=subprocess.DEVNULL,
                               stdout=log,
                               stderr=subprocess.STDOUT)
    pending = ''
    while True:
      finished = process.poll() is not None
      pending += reader.read()
      *lines, pending = pending.split('\n')
      for line in lines:
        match = _PHASE.match(line)
        if match:
          phases[match.group(2).split(' (')[0]] = float(match.group(1))
        if first_round is None and line.startswith('round 1/'):
          first_round = time.perf_counter() - start
      rss, pss = run_all._tree_memory_mb(process.pid, hwm)  # pylint: disable=protected-access
      peak = {
          'rss_mb': max(peak['rss_mb'], rss),
          'pss_mb': max(peak['pss_mb'], pss)
      }
      if finished:
        break
      if time.perf_counter() - start > _TIMEOUT_S:
        harness.stop_subprocess(process)
        break
      time.sleep(_POLL_S)
  return {
      'ok': process.returncode == 0 and first_round is not None,
      'time_to_first_round_s': first_round,
      'phases_s': phases,
      'peak_rss_mb': peak['rss_mb'],
      'peak_pss_mb': peak['pss_mb'],
      'hwm_sum_mb': sum(hwm.values()),
      'log': log_path,
  }


def run_pfl(python: str, work_dir: str, name: str) -> dict[str, Any]:
  """pfl on W1 only, as `benchmarks.peers` runs it, for one round (its
  start-up is the same; under load its rounds take up to 20 s)."""
  workload = dataclasses.replace(w1(), warmup_rounds=0, timed_rounds=1)
  job = {
      'module': 'benchmarks.peer_pfl',
      'python': python,
      'name': name,
      'spec': {
          'rows': [{
              'workload': workload.to_json()
          }]
      },
      'poll_s': _POLL_S
  }
  record = run_all.run_job(job, work_dir, _TIMEOUT_S)
  result = record.get('result') or {}
  first = (result.get('startup') or {}).get('first_round_done')
  return {
      'ok': not record.get('error') and first is not None,
      'time_to_first_round_s': first,
      'phases_s': {},
      'peak_rss_mb': record['peak_tree_memory']['rss_mb'],
      'peak_pss_mb': record['peak_tree_memory']['pss_mb'],
      'hwm_sum_mb': record['peak_tree_memory']['hwm_sum_mb'],
      'log': record['log'],
  }


def _median(runs, key) -> Optional[float]:
  values = [r[key] for r in runs if r[key] is not None]
  return statistics.median(values) if values else None


def format_report(report: dict[str, Any]) -> str:
  lines = [
      f"start-up on W1, {report['started_utc']} UTC, load average "
      f"{report['load_average']['start']} at the start, "
      f"{report['load_average']['end']} at the end",
      f"{'variant':<14} {'first round s (runs; median)':<44} "
      f"{'peak PSS MiB (median)':<22} phases (median s since start)"
  ]
  for variant, runs in report['runs'].items():
    starts = ', '.join(
        f"{r['time_to_first_round_s'] or float('nan'):.1f}" for r in runs)
    phases = {}
    for r in runs:
      for phase, t in r['phases_s'].items():
        phases.setdefault(phase, []).append(t)
    phase_text = '; '.join(
        f'{p} {statistics.median(v):.1f}' for p, v in phases.items())
    lines.append(
        f"{variant:<14} {starts + '; ' + str(round(report['medians'][variant]['start'] or 0, 1)):<44} "
        f"{report['medians'][variant]['pss'] or 0:<22.0f} {phase_text}")
  for name, values in report['ratios'].items():
    lines.append(f'{name}: ' +
                 ' / '.join('n/a' if v is None else f'{v:.2f}' for v in values))
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  started = datetime.datetime.now(datetime.timezone.utc)
  stamp = started.strftime('%Y%m%d-%H%M%S')
  work_dir = os.path.join(os.path.abspath(args.output_dir), f'startup-{stamp}')
  os.makedirs(work_dir)
  pfl_python = None
  if 'pfl' in args.variants:
    peer = {p.name: p for p in peer_envs.PEERS}['pfl']
    pfl_python = peer_envs.ensure_env(peer,
                                      log_path=os.path.join(
                                          work_dir, 'pfl-env.log'))
  manifest = write_w1_data(work_dir)
  cache = os.path.join(work_dir, 'computations')
  runs_dir = os.path.join(work_dir, 'runs')
  # Untimed: fills the cache (and warms the page cache for every variant).
  run_train(train_command(manifest, runs_dir, cache),
            os.path.join(work_dir, 'fill-cache.log'))
  load_start = harness.load_average()
  runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
  for alternation in range(args.alternations):
    shift = alternation % len(args.variants)
    for variant in args.variants[shift:] + args.variants[:shift]:
      name = f'{variant}-{alternation + 1}'
      print(f'startup: {name} ...', flush=True)
      if variant == 'pfl':
        result = run_pfl(pfl_python, work_dir, name)
      else:
        result = run_train(train_command(
            manifest, runs_dir, '' if variant == 'no_cache' else cache),
                           os.path.join(work_dir, f'{name}.log'),
                           env=_VARIANT_ENV.get(variant))
      print(
          f"startup: {name} {'ok' if result['ok'] else 'FAILED'} "
          f"{result['time_to_first_round_s']}",
          flush=True)
      runs[variant].append(result)
  medians = {
      v: {
          'start': _median(r, 'time_to_first_round_s'),
          'pss': _median(r, 'peak_pss_mb')
      } for v, r in runs.items()
  }
  ratios = {}
  if 'pfl' in runs:
    for variant in runs:
      if variant == 'pfl':
        continue
      for key, label in (('time_to_first_round_s', 'start'),
                         ('peak_pss_mb', 'peak PSS'), ('hwm_sum_mb',
                                                       'summed VmHWM')):
        ratios[f'{variant}/pfl {label} per alternation'] = [
            None if not (a[key] and b[key]) else a[key] / b[key]
            for a, b in zip(runs[variant], runs['pfl'])
        ]
  report = {
      'started_utc': started.strftime('%Y-%m-%d %H:%M:%S'),
      'load_average': {
          'start': load_start,
          'end': harness.load_average()
      },
      'runs': runs,
      'medians': medians,
      'ratios': ratios,
      'work_dir': work_dir,
  }
  harness.write_json(os.path.join(args.output_dir, f'startup-{stamp}.json'),
                     report)
  print(format_report(report), flush=True)
  shutil.rmtree(runs_dir, ignore_errors=True)
  return 0 if all(r['ok'] for v in runs.values() for r in v) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
