"""Experiments: where a tff-dp round spends its time, and what would help.

  .venv/bin/python -m benchmarks.where_time_goes [--quick] [--perf]
      [--output_dir=DIR]

Not part of `run_all`: this is the evidence behind the optimization candidates
of issue 7. Every case runs W1's MLP with tff-dp's DP aggregator
(`gaussian_fixed`, clients_per_round = the cohort) on a worker started by
`tff_dp.execution.runtime.local_runtime`, in this one process, one case after the
other. The cases change ONE thing against the baseline (W1, 50 clients x 64
examples, tff-dp's process as `tff_dp.algorithms.learning_process` builds it, datasets
built in Python each round):

* shape: the same 3,200 examples split over 200/50/10/5 clients, and 50
  clients with 16/64/256 examples: per-client overhead vs per-example compute.
  Grouping g clients' data into one client is also an upper bound of the gain
  of "several simulated clients per executor call" (the clipping that would
  have to stay per client is a few vector operations; see the floor).
* reduce / iterator: tff-dp's aggregator with TFF's client loop set
  explicitly to `LoopImplementation.DATASET_REDUCE` (TFF's default) or
  DATASET_ITERATOR; the shape sweep runs with tff-dp's process and with
  DATASET_REDUCE. The loop tff-dp itself uses is recorded
  (`tff_dp.algorithms.learning_process.LOOP` if it sets one).
* no-dp: TFF's unweighted mean instead of the DP aggregator (same client
  loop as tff-dp).
* ids: the datasets are built INSIDE the worker from client ids
  (`tff.simulation.compose_dataset_computation_with_learning_process` over
  tff-dp's process, per-client TFRecord files written once); Python sends
  strings, not dataset graphs holding the examples.
* max_concurrent_N: the worker started with
  `--max_concurrent_computation_calls=N`.
* baseline (again): the baseline once more at the end, on a fresh worker, to
  show how much the shared machine drifted during the experiments.

It also measures, outside any timed round, what serializing one round's
datasets costs in Python (`tff.framework.serialize_value`) and how many bytes
that is, and with `--perf` samples the worker with Linux perf during extra
baseline rounds and groups the samples by symbol (a heuristic grouping; the
top symbols are kept raw in the JSON).
"""

import argparse
import dataclasses
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import harness
from benchmarks import rounds as rounds_lib
from benchmarks import workloads as workloads_lib
from tff_dp.algorithms import learning_process
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime
from tff_dp.execution import worker_process
from tff_dp.program import assembly
from tff_dp.program import client_data

_DEFAULT_OUTPUT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
    'results')


@dataclasses.dataclass(frozen=True)
class Case:
  """One experiment: W1's MLP with one thing changed."""
  name: str
  clients: int = 50
  examples_per_client: int = 64
  variant: str = 'tff-dp'  # tff-dp, reduce, iterator, no-dp, ids
  max_concurrent: int = -1


_SHAPES = ((200, 16), (50, 64), (10, 320), (5, 640), (50, 16), (50, 256))

CASES = (
    Case('baseline'),
    Case('reduce', variant='reduce'),
    Case('iterator', variant='iterator'),
    Case('no-dp', variant='no-dp'),
    Case('ids', variant='ids'),
) + tuple(
    Case(f'{prefix}{k}x{n}', clients=k, examples_per_client=n, variant=variant)
    for prefix, variant in (('', 'tff-dp'), ('reduce ', 'reduce'))
    for k, n in _SHAPES
    if (k, n) != (50, 64)) + (
        Case('max_concurrent_1', max_concurrent=1),
        Case('max_concurrent_2', max_concurrent=2),
        # A control: the baseline again, on a fresh default worker, last.
        Case('baseline (again)'),
    )

# Cases profiled with --perf.
_PERF_CASES = ('baseline', 'reduce')


def _same_loop_as_tff_dp() -> tff.learning.LoopImplementation:
  return getattr(learning_process, 'LOOP',
                 tff.learning.LoopImplementation.DATASET_REDUCE)


def _workload(case: Case, quick: bool) -> workloads_lib.Workload:
  return workloads_lib.Workload(family='W1',
                                model=workloads_lib.ModelName.MLP,
                                clients=case.clients,
                                examples_per_client=case.examples_per_client,
                                batch_size=16,
                                epochs=1,
                                warmup_rounds=1 if quick else 2,
                                timed_rounds=2 if quick else 10)


def _process(case: Case, workload: workloads_lib.Workload):
  """tff-dp's process, or the variant the case asks for."""
  hyper = workloads_lib.HYPERPARAMETERS
  if case.variant in ('tff-dp', 'ids'):
    # TFF's one-client-per-call path: the one whose time this study splits.
    return rounds_lib.prepare(workload,
                              DpMechanism.GAUSSIAN_FIXED,
                              hyper,
                              requested_per_call=1).process
  config = rounds_lib.train_config(workload, DpMechanism.GAUSSIAN_FIXED, hyper)
  kwargs = dict(model_fn=assembly.build_model_fn(
      config, rounds_lib.federated_data(workload)),
                client_optimizer_fn=tff.learning.optimizers.build_sgdm(
                    learning_rate=config.client_learning_rate),
                server_optimizer_fn=assembly.server_optimizer(config))
  if case.variant == 'no-dp':
    return tff.learning.algorithms.build_unweighted_fed_avg(
        loop_implementation=_same_loop_as_tff_dp(), **kwargs)
  loops = {
      'reduce': tff.learning.LoopImplementation.DATASET_REDUCE,
      'iterator': tff.learning.LoopImplementation.DATASET_ITERATOR
  }
  if case.variant in loops:
    return tff.learning.algorithms.build_unweighted_fed_avg(
        model_aggregator=learning_process.build_model_aggregator(
            dp=assembly.dp_settings(config),
            client_weighting=config.client_weighting),
        loop_implementation=loops[case.variant],
        **kwargs)
  raise ValueError(f'unknown variant {case.variant!r}')


def _write_client_files(workload: workloads_lib.Workload,
                        data_dir: str) -> None:
  """One TFRecord file per client: its x and y as serialized tensors."""
  data = workloads_lib.synthetic_data(workload)
  for i in range(workload.clients):
    example = tf.train.Example(features=tf.train.Features(
        feature={
            'x':
                tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.serialize_tensor(data.x[i]).numpy()])),
            'y':
                tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.serialize_tensor(data.y[i]).numpy()])),
        }))
    with tf.io.TFRecordWriter(os.path.join(data_dir, f'{i}.tfrecord')) as w:
      w.write(example.SerializeToString())


def _dataset_computation(workload: workloads_lib.Workload, data_dir: str):
  """client id -> that client's shuffled, batched dataset, built in TFF."""
  n = workload.examples_per_client
  spec = {
      'x': tf.io.FixedLenFeature([], tf.string),
      'y': tf.io.FixedLenFeature([], tf.string)
  }

  @tff.tensorflow.computation(tf.string)
  def dataset_from_id(client_id):
    path = tf.strings.join([data_dir, '/', client_id, '.tfrecord'])

    def to_examples(record):
      parsed = tf.io.parse_single_example(record, spec)
      x = tf.ensure_shape(tf.io.parse_tensor(parsed['x'], tf.float32),
                          [n, workloads_lib.INPUT_DIM])
      y = tf.ensure_shape(tf.io.parse_tensor(parsed['y'], tf.int32), [n])
      return tf.data.Dataset.from_tensor_slices((x, y))

    return (tf.data.TFRecordDataset(path).flat_map(to_examples).repeat(
        workload.epochs).shuffle(n).batch(workload.batch_size))

  return dataset_from_id


def _serialization_cost(workload: workloads_lib.Workload, process,
                        datasets) -> dict[str, Any]:
  """Python-side cost of serializing one round's datasets, as TFF does."""
  type_spec = process.next.type_signature.parameter[1]
  start = time.perf_counter()
  value_pb, _ = tff.framework.serialize_value(datasets, type_spec)
  seconds = time.perf_counter() - start
  size = value_pb.ByteSize()
  return {
      'seconds':
          seconds,
      'bytes':
          size,
      'bytes_per_client':
          size / workload.clients,
      'raw_example_bytes_per_client':
          workload.examples_per_client * (workloads_lib.INPUT_DIM + 1) * 4
  }


def run_case(
    case: Case, quick: bool, worker: worker_process.Worker,
    tmp_dir: str) -> tuple[dict[str, Any], Callable[[int], dict[str, float]]]:
  """Builds and times one case on `worker`.

  Returns:
    The case's record, and its run_round(r) for more rounds (--perf).
  """
  workload = _workload(case, quick)
  start = time.perf_counter()
  process = _process(case, workload)
  result: dict[str, Any] = {
      'case': dataclasses.asdict(case),
      'workload': workload.to_json()
  }
  cohort = np.arange(workload.clients)
  if case.variant.startswith('ids'):
    data_dir = os.path.join(tmp_dir, f'{case.name}-data')
    os.makedirs(data_dir)
    _write_client_files(workload, data_dir)
    process = tff.simulation.compose_dataset_computation_with_learning_process(
        _dataset_computation(workload, data_dir), process)
    ids = [str(i) for i in cohort]

    def round_args(r):
      del r
      return ids
  else:
    round_datasets = client_data.RoundDatasets(
        rounds_lib.federated_data(workload),
        batch_size=workload.batch_size,
        epochs=workload.epochs,
        seed=0)

    def round_args(r):
      return round_datasets(r, cohort)

    if case.name.startswith('baseline'):
      result['serialization'] = _serialization_cost(workload, process,
                                                    round_datasets(0, cohort))
  result['build_s'] = time.perf_counter() - start
  state_box = [process.initialize()]

  def run_round(r: int) -> dict[str, float]:
    state_box[0] = process.next(state_box[0], round_args(r)).state
    return {}

  timing = harness.time_rounds(workload, run_round, worker_pid=worker.pid)
  result.update({
      k: timing[k] for k in ('seconds', 'first_round_s', 'cpu_self_s',
                            'cpu_worker_s', 'load_average')
  })
  return result, run_round


_PERF_GROUPS = (
    ('threads, scheduling, kernel',
     r'\[k\]|futex|WorkerLoop|ThreadPool|sched|pthread|__lll_'),
    ('math kernels (Eigen, oneDNN, JIT)',
     r'Eigen::|dnnl|mkl|gemm|sgemm|functor|Philox|\[JIT\]|jit_|Conv|MatMul'),
    ('memory allocation and copies',
     r'malloc|free|_int_|unlink_chunk|memmove|memcpy|memset|memcmp|'
     r'operator new|operator delete|clear_page|consolidate'),
    ('graph/function construction, protobuf, op lookup',
     r'protobuf|Graph|NodeDef|AttrValue|AttrSlice|Kernel|FunctionLibrary|'
     r'grappler|Grappler|Placer|Mkl|Optimiz|Hash|hash|string|Edge|Node|'
     r'OpDef|OpRegistry|Status|absl'),
)


def perf_profile(worker_pid: int, seconds: float, run_rounds) -> dict:
  """Samples the worker with `perf record` while `run_rounds()` runs."""
  if shutil.which('perf') is None:
    return {'error': 'perf not found'}
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'perf.data')
    perf = subprocess.Popen([
        'perf', 'record', '-e', 'cpu-clock', '-F', '499', '-g', '-p',
        str(worker_pid), '-o', data, '--', 'sleep',
        str(seconds)
    ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    rounds_run = 0
    while perf.poll() is None:
      run_rounds()
      rounds_run += 1
    report = subprocess.run([
        'perf', 'report', '-i', data, '--stdio', '--no-children', '--sort',
        'dso,sym', '-g', 'none'
    ],
                            capture_output=True,
                            text=True,
                            check=False).stdout
  symbols = []
  for line in report.splitlines():
    match = re.match(r'\s*([\d.]+)%\s+(\S+)\s+(.*)$', line)
    if match:
      symbols.append(
          (float(match.group(1)), match.group(2), match.group(3).strip()))
  groups = {name: 0.0 for name, _ in _PERF_GROUPS}
  groups['other'] = 0.0
  for percent, dso, sym in symbols:
    text = f'{dso} {sym}'
    for name, pattern in _PERF_GROUPS:
      if re.search(pattern, text):
        groups[name] += percent
        break
    else:
      groups['other'] += percent
  return {
      'seconds':
          seconds,
      'rounds_during_profile':
          rounds_run,
      'groups_percent':
          groups,
      'top_symbols': [{
          'percent': p,
          'dso': d,
          'symbol': s[:160]
      } for p, d, s in symbols[:30]]
  }


def cost_model(cases: list[dict[str, Any]]) -> dict[str, Any]:
  """Least-squares fit: round s = fixed + per-client * K + per-batch * B.

  One fit per loop implementation, over that implementation's shape cases
  (baseline and the sweep), where K is the clients of the round and B their
  batches in total.
  """
  fits = {}
  labels = (('tff-dp', f'tff-dp as built ({rounds_lib.tff_dp_loop()})'),
            ('reduce', 'DATASET_REDUCE'))
  for variant, label in labels:
    rows = [
        r for r in cases if r['case']['variant'] == variant and r['case']
        ['max_concurrent'] == -1 and r['case']['name'] != 'baseline (again)'
    ]
    if len(rows) < 3:
      continue
    design, target = [], []
    for r in rows:
      w = r['workload']
      batches = w['clients'] * -(-w['examples_per_client'] * w['epochs'] //
                                 w['batch_size'])
      design.append([1.0, w['clients'], batches])
      target.append(r['seconds']['median'])
    coef, *_ = np.linalg.lstsq(np.array(design), np.array(target), rcond=None)
    fits[label] = {
        'fixed_s': float(coef[0]),
        'per_client_ms': 1e3 * coef[1],
        'per_batch_ms': 1e3 * coef[2],
        'cases': len(rows)
    }
  return fits


def format_report(report: dict[str, Any]) -> str:
  """The experiments as a table."""
  base = next(r for r in report['cases'] if r['case']['name'] == 'baseline')
  base_median = base['seconds']['median']
  lines = [
      f"where_time_goes ({report['mode']}), {report['started_utc']} UTC, "
      'SHARED 2-core machine; W1 MLP, gaussian_fixed, synthetic data; '
      f"tff-dp's client loop: {report['tff_dp_loop_implementation']}",
      f"{'case':<18} {'clients x ex':>12} {'median s':>9} {'p10':>7} "
      f"{'p90':>7} {'vs base':>8} {'CPU py':>7} {'CPU wkr':>8} "
      f"{'ms/client':>9}",
  ]
  for r in report['cases']:
    s = r['seconds']
    w = r['workload']
    lines.append(f"{r['case']['name']:<18} "
                 f"{w['clients']:>5} x {w['examples_per_client']:<4} "
                 f"{s['median']:>9.3f} {s['p10']:>7.3f} {s['p90']:>7.3f} "
                 f"{s['median'] / base_median:>7.2f}x {r['cpu_self_s']:>7.2f} "
                 f"{r['cpu_worker_s']:>8.2f} "
                 f"{1000 * s['median'] / w['clients']:>9.1f}")
  ser = base.get('serialization')
  if ser:
    lines.append(
        f"Python-side serialization of one baseline round's datasets: "
        f"{ser['seconds']:.3f} s, {ser['bytes'] / 1e6:.2f} MB "
        f"({ser['bytes_per_client'] / 1e3:.1f} kB per client; the examples "
        f"are {ser['raw_example_bytes_per_client'] / 1e3:.1f} kB)")
  for label, fit in report['cost_model'].items():
    lines.append(
        f"Fit {label} over {fit['cases']} shapes: round = "
        f"{fit['fixed_s']:.3f} s + {fit['per_client_ms']:.1f} ms/client + "
        f"{fit['per_batch_ms']:.2f} ms/batch")
  for name, perf in report.get('perf', {}).items():
    if 'groups_percent' in perf:
      groups = ', '.join(
          f'{k} {v:.0f}%' for k, v in perf['groups_percent'].items())
      lines.append(f"Worker CPU samples, {name} (perf, {perf['seconds']} s, "
                   f"{perf['rounds_during_profile']} rounds): {groups}")
    else:
      lines.append(f"perf {name}: {perf.get('error')}")
  lines.append(f"Wrote {report['path']}")
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.where_time_goes',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--quick',
                      action='store_true',
                      help='1 warm-up + 2 timed rounds per case')
  parser.add_argument('--perf',
                      action='store_true',
                      help='also profile the worker with Linux perf')
  parser.add_argument('--output_dir', default=_DEFAULT_OUTPUT_DIR)
  args = parser.parse_args(argv[1:])
  started = datetime.datetime.now(datetime.timezone.utc)
  stamp = started.strftime('%Y%m%d-%H%M%S')
  os.makedirs(args.output_dir, exist_ok=True)
  path = os.path.join(args.output_dir, f'where-time-goes-{stamp}.json')
  report: dict[str, Any] = {
      'mode':
          'quick' if args.quick else 'full',
      'started_utc':
          started.strftime('%Y-%m-%d %H:%M:%S'),
      'command':
          ' '.join([sys.executable, '-m', 'benchmarks.where_time_goes'] +
                   argv[1:]),
      'tff_dp_loop_implementation':
          rounds_lib.tff_dp_loop(),
      'cases': [],
      'workers': [],
      'path':
          path
  }
  wall_start = time.perf_counter()
  # Consecutive cases with the same max_concurrent share one worker.
  groups: list[list[Case]] = []
  for case in CASES:
    if groups and groups[-1][0].max_concurrent == case.max_concurrent:
      groups[-1].append(case)
    else:
      groups.append([case])
  with tempfile.TemporaryDirectory() as tmp_dir:
    for i, cases in enumerate(groups):
      max_concurrent = cases[0].max_concurrent
      log_path = os.path.join(tmp_dir, f'worker-{i}.log')
      with runtime.local_runtime(
          log_path=log_path,
          max_concurrent_computation_calls=max_concurrent) as worker:
        report['workers'].append({
            'pid': worker.pid,
            'max_concurrent': max_concurrent
        })
        for case in cases:
          print(f'where_time_goes: {case.name} ...', flush=True)
          result, next_round = run_case(case, args.quick, worker, tmp_dir)
          if args.perf and case.name in _PERF_CASES:
            counter = [1000]

            def more_rounds(next_round=next_round, counter=counter):
              next_round(counter[0])
              counter[0] += 1

            report.setdefault('perf', {})[case.name] = perf_profile(
                worker.pid, 5 if args.quick else 20, more_rounds)
          report['cases'].append(result)
          harness.write_json(path, report)
      report['workers'][-1]['alive_after_exit'] = harness.is_running_worker(
          worker.pid)
  report['cost_model'] = cost_model(report['cases'])
  report['wall_s'] = time.perf_counter() - wall_start
  harness.write_json(path, report)
  print(format_report(report), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
