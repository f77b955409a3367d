"""Seconds per round with 1, 2 and 3 TLS workers reading their own shards, and the local grouped path.

  ./run.sh bench --workers [--quick]   (python -m benchmarks.workers)

For W1 (MLP 784-128-10, 50 clients x 64) and W2 (the EMNIST CNN, 20 x 100),
with the data of `benchmarks.rounds` (synthetic, every client every round,
gaussian_fixed, z = 1.0): the workload's clients are written as one
client-data file and sharded (`tff_dp.data.shard_writer`) into 1, 2 and 3
shards; one worker program per shard (`python -m tff_dp.cli.worker --tls
--data_dir=...`, its TFF worker behind stunnel on loopback) serves it; the
driver runs the grouped process the program builds (`--clients_per_call`
automatic) on `tff_dp.execution.runtime.split_runtime` with the sampled
clients routed to their shard's worker (`tff_dp.algorithms.shard_routing`),
and on the local worker without TLS (`local_runtime`, the grouped path's
client files). The four configurations run in one process, round by round
in turn (`harness.time_interleaved`), each through its own execution
context.

A split round's time = the workers' part (`up_to_merge`, in parallel; the
context records it) + the rest on the driver (the merges, the noise, the
server update, the TLS hops). The paper estimate for K hosts, each as fast
as the 1-worker run's worker, is

    T(K) = S1 + m * (K - 1) + U1 / K

with U1 the workers' part and S1 the rest of the 1-worker rounds (medians),
and m the extra driver time per additional worker, (S3 - S1) / 2. On this
machine every worker shares the same 2 cores, so no speed-up is expected
from the measured rows themselves.

Prints a table and writes benchmarks/results/workers-<UTC time>.json.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
import portpicker
import tensorflow_federated as tff

from benchmarks import harness
from benchmarks import rounds as rounds_lib
from benchmarks import workloads as workloads_lib
from tests.helpers import workers as served_workers
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import shard_routing
from tff_dp.config import DpMechanism
from tff_dp.data import client_data_writer
from tff_dp.data import example_encoding
from tff_dp.data import shard_manifest
from tff_dp.data import shard_writer
from tff_dp.data import table_checks
from tff_dp.execution import certs
from tff_dp.execution import runtime
from tff_dp.program import assembly
from tff_dp.program import prepare as prepare_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_COUNTS = (1, 2, 3)


def _workloads(quick: bool) -> list[workloads_lib.Workload]:
  # pylint: disable=protected-access
  if quick:
    return [
        workloads_lib._w1(50, warmup=1, timed=3),
        workloads_lib._w2(20, warmup=1, timed=3)
    ]
  return [
      workloads_lib._w1(50, warmup=3, timed=20),
      workloads_lib._w2(20, warmup=2, timed=15)
  ]


def _write_client_data(data, path: str) -> None:
  """The workload's clients (ids c000...: sorted = index order) as a
  client-data file, its test set held out as one test client."""
  writer = client_data_writer.ClientDataWriter(path)
  dim = data.client_x[0].shape[1]
  for i, (x, y) in enumerate(zip(data.client_x, data.client_y)):
    writer.add(
        table_checks.Batch(positions=list(range(len(y))),
                           client_ids=[f'c{i:03d}'] * len(y),
                           x=np.asarray(x, np.float32),
                           y=np.asarray(y, np.int64)))
  encoder = example_encoding.ExampleEncoder(dim)
  writer.add_encoded('zz-test',
                     [(0, encoder.encode(x.tobytes(), int(y)), int(y))
                      for x, y in zip(data.test_x, data.test_y)],
                     split=client_data_writer.TEST_SPLIT)
  writer.finish({
      'format_version': 1,
      'source': 'benchmark',
      'source_format': 'npz',
      'client_column': 'client',
      'label_column': 'y',
      'feature_names': [f'f{j}' for j in range(dim)],
      'input_dim': dim,
      'example_features': {},
      'num_classes': workloads_lib.NUM_CLASSES,
      'num_classes_inferred': False,
      'test_split': 'clients',
      'test_fraction': 0.5,
      'seed': 0,
      'rows': writer.rows
  })
  writer.close()


def _split_runner(process, routed, context, cohort):
  state = [None]

  def run_round(r):
    with tff.framework.get_context_stack().install(context):
      if state[0] is None:
        state[0] = process.initialize()
      start = time.perf_counter()
      groups = routed(r, cohort)
      built = time.perf_counter()
      state[0] = process.next(state[0], groups).state
      end = time.perf_counter()
    return {
        'datasets_s': built - start,
        'next_s': end - built,
        'up_to_merge_s': getattr(context, 'last_up_to_merge_seconds', 0.0)
    }

  return run_round


def _run_workload(workload, base: str, pki: str) -> dict[str, Any]:
  """Times the local path and 1, 2, 3 workers on one workload."""
  config = rounds_lib.train_config(workload, DpMechanism.GAUSSIAN_FIXED,
                                   workloads_lib.HYPERPARAMETERS)
  data = rounds_lib.federated_data(workload)
  prepared = prepare_lib.prepare_data(config, data, calibrate_noise=False)
  per_call = prepared.clients_per_call
  whole = os.path.join(base, 'whole.sqlite')
  _write_client_data(data, whole)
  manifests = {}
  for k in WORKER_COUNTS:
    os.makedirs(os.path.join(base, f'k{k}'))
    manifests[k] = shard_writer.write_shards(whole, os.path.join(base, f'k{k}'),
                                             k)
  cohort = np.arange(workload.clients)
  served, runners = [], {}
  with contextlib.ExitStack() as stack:
    try:
      for k in WORKER_COUNTS:
        for s in range(k):
          served.append(
              served_workers.start_served_worker(
                  pki,
                  os.path.join(base, f'log-k{k}-{s}'),
                  portpicker.pick_unused_port(),
                  data_dir=os.path.join(base, f'k{k}', f'shard-{s}')))
      grouped = grouped_data.GroupedRounds(data.client_x,
                                           data.client_y,
                                           seed=0,
                                           epochs=workload.epochs,
                                           group_size=per_call)
      stack.callback(grouped.close)
      local_process = assembly.build_process(config,
                                             data,
                                             sampler=None,
                                             group_size=per_call,
                                             client_files_dir=grouped.files_dir)
      worker = stack.enter_context(
          runtime.local_runtime(log_path=os.path.join(base, 'local.log')))
      local_context = tff.framework.get_context_stack().current
      runners['local (no TLS)'] = (_split_runner(local_process, grouped,
                                                 local_context,
                                                 cohort), worker.pid)
      routed_process = assembly.build_process(
          config,
          data,
          sampler=None,
          group_size=per_call,
          client_files_dir=shard_routing.CLIENT_FILES_DIR)
      first = 0
      for k in WORKER_COUNTS:
        mine = served[first:first + k]
        first += k
        routed = shard_routing.RoutedGroups(shard_manifest.ShardedClientData(
            manifests[k]),
                                            seed=0,
                                            epochs=workload.epochs,
                                            group_size=per_call)
        stack.enter_context(
            runtime.split_runtime(log_path=os.path.join(base,
                                                        f'driver-k{k}.log'),
                                  workers=','.join(w.address for w in mine),
                                  worker_certs=pki,
                                  tunnel_log_path=os.path.join(
                                      base, f'stunnel-k{k}.log'),
                                  on_connect=routed.assign))
        runners[f'{k} TLS worker{"s" if k > 1 else ""}'] = (_split_runner(
            routed_process, routed,
            tff.framework.get_context_stack().current, cohort), None)
      results = harness.time_interleaved(workload, runners)
    finally:
      for w in served:
        w.stop()
  results['clients_per_call'] = per_call
  return results


def _median_part(result: dict[str, Any], part: str) -> float:
  values = sorted(r['parts'][part] for r in result['rounds'] if r['timed'])
  return float(np.median(values)) if values else float('nan')


def estimate(results: dict[str, Any]) -> dict[str, float]:
  """T(K) = S1 + m (K - 1) + U1 / K (module docstring), K = 1..8."""
  one, three = results['1 TLS worker'], results['3 TLS workers']
  u1 = _median_part(one, 'up_to_merge_s')
  s1 = one['seconds']['median'] - u1
  s3 = three['seconds']['median'] - _median_part(three, 'up_to_merge_s')
  m = (s3 - s1) / 2
  return {
      'U1': u1,
      'S1': s1,
      'm': m,
      **{
          f'T({k})': s1 + m * (k - 1) + u1 / k for k in (1, 2, 3, 4, 8)
      }
  }


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.workers')
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args(argv[1:])
  base = tempfile.mkdtemp(prefix='tff-dp-bench-workers-')
  report = {
      'utc': datetime.datetime.utcnow().isoformat(timespec='seconds'),
      'load_before': harness.load_average(),
      'workloads': {}
  }
  try:
    pki = os.path.join(base, 'certs')
    certs.make_certs(out_dir=pki, hosts=['127.0.0.1', 'localhost'])
    for workload in _workloads(args.quick):
      directory = os.path.join(base, workload.name)
      os.makedirs(directory)
      results = _run_workload(workload, directory, pki)
      entry = {'estimate': estimate(results), 'configs': results}
      report['workloads'][workload.name] = entry
      _print(workload.name, results, entry['estimate'])
  finally:
    shutil.rmtree(base, ignore_errors=True)
  report['load_after'] = harness.load_average()
  out_dir = os.path.join(REPO_ROOT, 'benchmarks', 'results')
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f'workers-{report["utc"]}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1, default=str)
  print(f'load average before {report["load_before"]}, after '
        f'{report["load_after"]}; written {path}')
  return 0


def _print(name: str, results: dict[str, Any], est: dict[str, float]) -> None:
  print(f'\n{name} ({results["clients_per_call"]} clients per TFF call)')
  print('  config              median s/round  p10    p90    workers\' part')
  for config, result in results.items():
    if not isinstance(result, dict) or 'seconds' not in result:
      continue
    s = result['seconds']
    part = _median_part(result, 'up_to_merge_s')
    part_text = f'{part:.3f}' if part else '-'
    print(f'  {config:18s}  {s["median"]:14.3f}  {s["p10"]:.3f}  '
          f'{s["p90"]:.3f}  {part_text}')
  print(f'  paper estimate on K hosts: T(K) = S1 + m (K - 1) + U1 / K with '
        f'U1 = {est["U1"]:.3f} s (workers\' part, 1 worker), S1 = '
        f'{est["S1"]:.3f} s (the rest), m = (S3 - S1) / 2 = {est["m"]:.3f} s')
  print('  ' + ', '.join(
      f'{k} = {v:.3f} s' for k, v in est.items() if k.startswith('T(')))


if __name__ == '__main__':
  sys.exit(main(sys.argv))
