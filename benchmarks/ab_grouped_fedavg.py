"""A/B of the grouped process: another checkout's `grouped_fedavg.py` against this one's.

  PYTHONPATH=. .venv/bin/python -m benchmarks.ab_grouped_fedavg BASE_DIR OUT.json
      [--timed=40] [--repetitions=1] [--workloads=W1-c10,W1-c50]

Builds W1-c10 and W1-c50 (`benchmarks.workloads`, gaussian_fixed, the
program's grouped path via `benchmarks.rounds.prepare`; `--workloads` picks
others) twice in ONE process on ONE TFF worker: once with BASE_DIR's
`tff_dp/algorithms/grouped_fedavg.py` and `grouped_client_work.py` (loaded
as modules and swapped into `tff_dp.program.assembly` while it builds) and
once with this tree's, and times them round by round in turn with
the floor's two implementations (`harness.time_interleaved`: `--warmup`
rounds, then `--timed`, order rotating). The base module must still import
against this tree's other modules. Each row (medians, p10/p90, CPU, load
averages, the ratios to the better floor and new/old) is printed as JSON and
OUT.json is rewritten after every row. Used for the W1-c10 section of
benchmarks/README.md.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time

import numpy as np

from benchmarks import floor
from benchmarks import harness
from benchmarks import rounds
from benchmarks import workloads as workloads_lib
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime
from tff_dp.program import assembly


def _load(base_dir: str, name: str):
  spec = importlib.util.spec_from_file_location(
      f'tff_dp.algorithms.{name}_base',
      os.path.join(base_dir, 'tff_dp', 'algorithms', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _load_base(base_dir: str):
  """The base's grouped_fedavg, building its groups with the base's
  grouped_client_work (both loaded from BASE_DIR)."""
  module = _load(base_dir, 'grouped_fedavg')
  module.grouped_client_work = _load(base_dir, 'grouped_client_work')
  return module


def _row(name, timed, results):
  row = {'workload': name, 'timed': timed}
  for label, value in results.items():
    row[label] = {k: value['seconds'][k] for k in ('median', 'p10', 'p90')}
    row[label].update(build_s=value.get('build_s'),
                      cpu_self_s=value.get('cpu_self_s'),
                      cpu_worker_s=value.get('cpu_worker_s'),
                      load=[
                          value.get('load_average_before'),
                          value.get('load_average_after')
                      ])
  best = min(row['floor-loop']['median'], row['floor-vectorized']['median'])
  row.update(floor_best=best,
             old_over_floor=row['old']['median'] / best,
             new_over_floor=row['new']['median'] / best,
             new_over_old=row['new']['median'] / row['old']['median'])
  return row


def run_workload(workload, modules, worker_pid):
  """One interleaved timing of the base, this tree and the floors."""
  hyper = workloads_lib.HYPERPARAMETERS
  new = assembly.grouped_fedavg
  prepared, build_s = {}, {}
  try:
    for label, module in modules.items():
      assembly.grouped_fedavg = module
      start = time.perf_counter()
      prepared[label] = rounds.prepare(workload, DpMechanism.GAUSSIAN_FIXED,
                                       hyper)
      # Building the process (and tracing its computations); the worker's
      # first call, which compiles, falls in the warm-up rounds.
      build_s[label] = time.perf_counter() - start
  finally:
    assembly.grouped_fedavg = new
  cohort = np.arange(workload.clients)
  runners = {}
  for label, p in prepared.items():
    box = [p.process.initialize()]
    runners[label] = (rounds.round_runner(p.process, p.round_inputs, cohort,
                                          box), worker_pid)
  for implementation in ('loop', 'vectorized'):
    runners[f'floor-{implementation}'] = (floor.round_runner(
        workload, hyper, implementation)[0], None)
  results = harness.time_interleaved(workload, runners)
  for p in prepared.values():
    p.close()
  for label, seconds in build_s.items():
    results[label]['build_s'] = seconds
  return results


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.ab_grouped_fedavg',
      description=__doc__.splitlines()[0])
  parser.add_argument('base_dir')
  parser.add_argument('out')
  parser.add_argument('--timed', type=int, default=40)
  parser.add_argument('--repetitions', type=int, default=1)
  parser.add_argument('--workloads', default='W1-c10,W1-c50')
  parser.add_argument('--warmup', type=int, default=5)
  args = parser.parse_args(argv[1:])
  modules = {'old': _load_base(args.base_dir), 'new': assembly.grouped_fedavg}
  full = {w.name: w for w in workloads_lib.timing_workloads(False)}
  report = {'load_start': os.getloadavg(), 'runs': []}
  log = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                     'ab-worker.log')
  with runtime.local_runtime(log_path=log) as worker:
    for repetition in range(args.repetitions):
      for name in args.workloads.split(','):
        workload = dataclasses.replace(full[name],
                                       warmup_rounds=args.warmup,
                                       timed_rounds=args.timed)
        row = _row(name, args.timed, run_workload(workload, modules,
                                                  worker.pid))
        row.update(repetition=repetition, load_after=os.getloadavg())
        report['runs'].append(row)
        print(json.dumps(row), flush=True)
        harness.write_json(args.out, report)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
