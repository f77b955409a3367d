"""Where the TFF worker's extra time goes: one TF graph, worker against in-process.

tff-dp runs W2's round at 1.1-1.3x the plain-TF floor (benchmarks/README.md,
"The TFF worker against the same graph in-process" has the findings), and an
earlier probe ran a fixed graph at 0.067 s on the worker against 0.025 s
in-process. This module separates the suspects by running the SAME
graph several ways, each call in turn with the others
(`harness.time_interleaved`), so the ratios are measured under the same
machine conditions:

* the cases (`benchmarks.worker_graph_cases`): graphs whose input is made
  inside them (`chain`, `cnn`, `cnn_x5`, `tiny`: nothing to transfer),
  `chain_io` (4 MB each way) and `identity_MB` (transfer only); and
  `w2_fedavg` / `w2_ftrl`, tff-dp's real W2-c20 grouped round
  (`benchmarks.rounds.prepare`), on the worker ways only;
* the ways: `tf_function` (in-process, TF's eager runtime, runtime Grappler
  on), `worker` (a TFF computation on tff-dp's worker, `runtime.local_runtime`),
  `worker:VAR=VALUE,...` (a worker started with that environment, e.g.
  `TF_ENABLE_ONEDNN_OPTS=0` or glibc's `MALLOC_TRIM_THRESHOLD_`), and
  `session_tff` / `session_grappler` (the graph exactly as TFF's compiler
  sends it to the worker, run in-process in a `tf.compat.v1.Session` with the
  worker's session options or TF's defaults: `benchmarks.tff_session`).

Per way it prints the median, p10, p90 and ratio to the first way, and per
call the CPU seconds and minor page faults of this process and the worker
(fresh memory touched: load-independent evidence), and for the round cases
the worker's peak RSS.

`session_tff` against `worker` isolates the worker binary (its TF build,
allocator, threads, gRPC); `session_grappler` against `session_tff` isolates
the session options.

  python -m benchmarks.worker_graph --rounds=20 \\
      --graphs=tiny,chain,chain_io,cnn,cnn_x5,identity_9.6,identity_19.2 \\
      --ways='tf_function;worker;session_tff;session_grappler'
  python -m benchmarks.worker_graph --graphs=w2_fedavg,w2_ftrl --rounds=10 \\
      --ways='worker;worker:MALLOC_MMAP_THRESHOLD_=67108864,...'
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import harness
from benchmarks import tff_session
from benchmarks import worker_graph_cases as graph_cases
from benchmarks import workloads as workloads_lib
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime

WARMUP_ROUNDS = 2
# The real W2-c20 round of tff-dp (`benchmarks.rounds.prepare`, the grouped
# path), on the worker ways only.
ROUND_CASES = ('w2_fedavg', 'w2_ftrl')


def minor_faults(pid: int) -> int:
  """Minor page faults of a process so far (/proc/PID/stat, field 10)."""
  with open(f'/proc/{pid}/stat') as f:
    return int(f.read().rsplit(')', 1)[1].split()[7])


def worker_environment(way: str) -> dict[str, str]:
  """'worker' -> {}; 'worker:A=1,B=2' -> {'A': '1', 'B': '2'}."""
  if way == 'worker':
    return {}
  body = way[len('worker:'):]
  pairs = [p.split('=', 1) for p in body.split(',') if p]
  if not body or any(len(p) != 2 or not p[0] for p in pairs):
    raise ValueError(f"a worker way is 'worker' or 'worker:VAR=VALUE,...', "
                     f'got {way!r}')
  return dict(pairs)


def check_ways(ways: Sequence[str]) -> None:
  for way in ways:
    if way.startswith('worker'):
      worker_environment(way)
    elif way not in ('tf_function', 'session_tff', 'session_grappler'):
      raise ValueError(f'unknown way {way!r}')


def start_worker(stack: contextlib.ExitStack, way: str, log_dir: str):
  """A worker started with the way's extra environment; returns its context."""
  saved = dict(os.environ)
  os.environ.update(worker_environment(way))
  try:
    safe = ''.join(c if c.isalnum() else '_' for c in way)
    worker = stack.enter_context(
        runtime.local_runtime(log_path=os.path.join(log_dir, f'{safe}.log')))
  finally:
    os.environ.clear()
    os.environ.update(saved)
  return tff.framework.get_context_stack().current, worker.pid


def _caller(case: graph_cases.Case, way: str, comp, contexts,
            stack) -> Callable[[Any], Any]:
  """A function that runs `case` one way on an argument."""
  if way == 'tf_function':
    fn = tf.function(case.fn)

    def call(argument):
      if isinstance(argument, list):
        return [t.numpy() for t in fn([tf.constant(a) for a in argument])]
      return fn(tf.constant(argument)).numpy()

    return call
  if way.startswith('session_'):
    call, session = tff_session.session_runner(
        tff_session.compiled_block(comp),
        tff_session.tff_session_config(way == 'session_grappler'))
    stack.callback(session.close)
    return call
  context = contexts[way][0]

  def on_worker(argument):
    with tff.framework.get_context_stack().install(context):
      return comp(argument)

  return on_worker


def run_case(case: graph_cases.Case, ways: Sequence[str], rounds_: int,
             contexts, stack) -> dict[str, Any]:
  """Times `case` each way, the ways in turn (`harness.time_interleaved`)."""
  comp = tff.tensorflow.computation(case.fn, case.spec)
  callers = {w: _caller(case, w, comp, contexts, stack) for w in ways}
  reference = None

  def runner(way):
    pid = contexts[way][1] if way.startswith('worker') else None

    def run_round(r):
      nonlocal reference
      faults = minor_faults(os.getpid()), pid and minor_faults(pid)
      result = callers[way](case.argument(r))
      parts = {'faults_self': minor_faults(os.getpid()) - faults[0]}
      if pid:
        parts['faults_worker'] = minor_faults(pid) - faults[1]
      if r == 0 and case.name in graph_cases.GRAPHS:
        # Every way computes the same graph: the same value, up to float32
        # rounding (oneDNN's kernels against Eigen's: 0.3% on `cnn` after 7
        # SGD steps, measured).
        value = float(np.asarray(result))
        reference = value if reference is None else reference
        if not np.isclose(value, reference, rtol=1e-2):
          raise AssertionError(f'{case.name}: {way} gave {value}, '
                               f'another way {reference}')
      return parts

    return run_round, pid

  # Only the numbers of rounds matter to the harness.
  timing = dataclasses.replace(workloads_lib.timing_workloads(quick=True)[0],
                               warmup_rounds=WARMUP_ROUNDS,
                               timed_rounds=rounds_)
  results = harness.time_interleaved(timing, {w: runner(w) for w in ways})
  load = next(iter(results.values()))['load_average']
  rows = harness.against_first(results)
  for way, result in results.items():
    # CPU seconds per call (medians): ours, and the worker's (worker ways).
    rows[way]['cpu_self_s'] = result['cpu_self_s']
    rows[way]['cpu_worker_s'] = result.get('cpu_worker_s')
    # Minor page faults per call (medians): fresh memory touched.
    for part, summary in result['parts'].items():
      rows[way][part] = summary['median']
  return {
      'load_before': load['before'],
      'load_after': load['after'],
      'ways': rows
  }


def _round_runner(prepared, clients: int, context):
  """A round of the prepared process on one worker, as `benchmarks.rounds`
  times it (its inputs plus `next`); the state stays per worker."""
  cohort = np.arange(clients)
  state = []

  def run_round(r):
    with tff.framework.get_context_stack().install(context[0]):
      if not state:
        state.append(prepared.process.initialize())
      state[0] = prepared.process.next(state[0],
                                       prepared.round_inputs(r, cohort)).state
    return {}

  return run_round, context[1]


def run_rounds_case(name: str, ways: Sequence[str], rounds_: int,
                    contexts) -> dict[str, Any]:
  """W2's grouped round (DP-FedAvg or DP-FTRL) on each worker way, in turn."""
  # pylint: disable-next=g-import-not-at-top
  from benchmarks import rounds  # Builds tff-dp's process: seconds.
  workload = workloads_lib.timing_workloads(quick=False)[-1]
  variant = None if name == 'w2_fedavg' else workloads_lib.MECHANISMS[0]
  prepared = rounds.prepare(workload,
                            DpMechanism.GAUSSIAN_FIXED,
                            workloads_lib.HYPERPARAMETERS,
                            variant=variant)
  timing = dataclasses.replace(workload,
                               warmup_rounds=WARMUP_ROUNDS,
                               timed_rounds=rounds_)
  try:
    results = harness.time_interleaved(timing, {
        w: _round_runner(prepared, workload.clients, contexts[w]) for w in ways
    })
  finally:
    prepared.close()
  load = next(iter(results.values()))['load_average']
  rows = harness.against_first(results)
  for way, result in results.items():
    # The worker's peak RSS so far (VmHWM): what an allocator setting costs.
    rows[way].update(cpu_self_s=result['cpu_self_s'],
                     cpu_worker_s=result.get('cpu_worker_s'),
                     worker_peak_rss_mb=harness.peak_rss_mb(contexts[way][1]))
  return {
      'load_before': load['before'],
      'load_after': load['after'],
      'ways': rows
  }


def run(case_names: Sequence[str], ways: Sequence[str], rounds_: int,
        log_dir: str) -> dict[str, Any]:
  """Runs every case; one worker per distinct worker way, shared by cases."""
  results = {}
  with contextlib.ExitStack() as stack:
    contexts = {
        w: start_worker(stack, w, log_dir)
        for w in ways
        if w.startswith('worker')
    }
    for name in case_names:
      if name in ROUND_CASES:
        results[name] = run_rounds_case(
            name, [w for w in ways if w.startswith('worker')], rounds_,
            contexts)
      else:
        results[name] = run_case(
            graph_cases.cases([name])[0], ways, rounds_, contexts, stack)
  return results


def main(argv: Sequence[str]) -> int:
  """Parses the arguments, runs, prints (and writes) the tables."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--graphs',
                      default=('tiny,chain,chain_io,cnn,cnn_x5,identity_9.6,'
                               'identity_19.2'),
                      help='comma-separated cases')
  parser.add_argument('--ways',
                      default='tf_function;worker;session_tff;session_grappler',
                      help="';'-separated ways (see the module docstring)")
  parser.add_argument('--rounds', type=int, default=20, help='timed calls')
  parser.add_argument('--log_dir', default='.', help="the workers' logs")
  parser.add_argument('--out', default=None, help='JSON result file')
  args = parser.parse_args(argv[1:])
  ways = [w for w in args.ways.split(';') if w]
  try:
    check_ways(ways)
    names = [n for n in args.graphs.split(',') if n]
    graph_cases.cases([n for n in names if n not in ROUND_CASES])
    if (set(names) & set(ROUND_CASES) and
        not any(w.startswith('worker') for w in ways)):
      raise ValueError(f'{sorted(ROUND_CASES)} run on worker ways only: '
                       f'--ways={args.ways!r} has none')
    if args.rounds < 1:
      raise ValueError(f'--rounds must be at least 1, got {args.rounds}')
  except ValueError as e:
    print(f'worker_graph: {e}', file=sys.stderr)
    return 2
  start = time.time()
  results = run(names, ways, args.rounds, args.log_dir)
  for name, result in results.items():
    print(f'{name}: load {result["load_before"]} -> {result["load_after"]}')
    harness.print_against_first(result['ways'])
    for way, row in result['ways'].items():
      worker = row['cpu_worker_s']
      print(f'  {way}: per call: CPU s ours {row["cpu_self_s"]:.3f}' +
            ('' if worker is None else f', worker {worker:.3f}') +
            ('' if 'faults_self' not in
             row else f'; page faults ours {row["faults_self"]:.0f}') +
            ('' if 'faults_worker' not in
             row else f', worker {row["faults_worker"]:.0f}') +
            ('' if 'worker_peak_rss_mb' not in
             row else f'; worker peak RSS {row["worker_peak_rss_mb"]:.0f} MiB'))
  print(f'({time.time() - start:.0f} s)')
  if args.out:
    harness.write_json(args.out, results)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
