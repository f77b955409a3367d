"""Where the TFF worker's time goes in a round that stays on the worker.

Issue 21's target "W1-c10 at most 1.5x the floor": with K rounds unrolled in
one federated computation (the state stays on the worker between rounds,
Keras' `steps_per_execution` idea) W1-c10 still took ~1.9x the floor
(benchmarks/README.md, "W1 with 10 clients"). This module splits such a
fused round into its parts, all in ONE process on ONE worker, each variant
timed in turn with the others (`harness.time_interleaved`), every variant
running K rounds per timed call so that each has the same weight:

* on the worker, K rounds per federated call (`fused_*`): `full` (the real
  `next`, as the lead's experiment), `merged` (the same rounds with the
  server step and the next round's `prepare` in one TF call: one call and one
  map fewer per round), `no_server` (the server step replaced
  by an identity on the state that waits for the sums), `no_group` (the
  groups replaced by a TF call that returns zeros of the sums' type),
  `skeleton` (both replaced: the round's TF calls and intrinsics with no
  work in them), and `empty` (one call that returns the state: the call's
  own cost, split over K rounds);
* in this process, the same TF blocks as TFF's compiler sends them to the
  worker, in a `tf.compat.v1.Session` with the worker's session options
  (`benchmarks.tff_session`), on the real round's values: `group_session`,
  `server_session`, `prepare_session`;
* the floor's round (`benchmarks.floor`, `vectorized` and `loop`).

The three TF computations of a round (`prepare`, `group_step`,
`server_step`, `tff_dp.algorithms.grouped_server`) are captured while
`benchmarks.rounds.prepare` builds the process (a wrapper around
`grouped_fedavg._build_next_fn` that records its arguments; the process is
unchanged).

  PYTHONPATH=. .venv/bin/python -m benchmarks.fused_breakdown \\
      [--workload=W1-c10] [--k=10] [--timed=15] [--out=OUT.json]
"""

import argparse
import collections
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure

from benchmarks import floor
from benchmarks import harness
from benchmarks import rounds
from benchmarks import tff_session
from benchmarks import worker_graph
from benchmarks import workloads as workloads_lib
from tff_dp.algorithms import grouped_fedavg
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime

WORKER_VARIANTS = ('full', 'merged', 'no_server', 'no_group', 'skeleton',
                   'one_call', 'empty')
SESSION_VARIANTS = ('group_session', 'server_session', 'prepare_session')
FLOOR_VARIANTS = ('floor_vectorized', 'floor_loop')
# The worker variants whose result is the state alone (no metrics).
_STATE_ONLY = ('no_server', 'skeleton', 'one_call', 'empty')


def capture_round_parts(
    workload: workloads_lib.Workload,
    hyper: workloads_lib.Hyperparameters = workloads_lib.HYPERPARAMETERS):
  """Builds the workload's process; returns it with its round's three TF
  computations (`prepare`, `group_step`, `server_step`)."""
  parts = {}
  build_next_fn = grouped_fedavg._build_next_fn  # pylint: disable=protected-access

  def recording(*args, **kwargs):
    parts.update(kwargs)
    return build_next_fn(*args, **kwargs)

  grouped_fedavg._build_next_fn = recording  # pylint: disable=protected-access
  try:
    prepared = rounds.prepare(workload, DpMechanism.GAUSSIAN_FIXED, hyper)
  finally:
    grouped_fedavg._build_next_fn = build_next_fn  # pylint: disable=protected-access
  return prepared, parts


def zeros_of(type_spec: tff.Type) -> Any:
  """Zeros with the structure, names and dtypes of a TFF (tensor) type."""
  if isinstance(type_spec, tff.TensorType):
    return tf.zeros(type_spec.shape, type_spec.dtype)
  elements = structure.to_elements(type_spec)
  if elements and all(name for name, _ in elements):
    return collections.OrderedDict((name, zeros_of(t)) for name, t in elements)
  return [zeros_of(t) for _, t in elements]


def stand_ins(parts, state_type, groups_type):
  """TF computations with the real ones' types and no work inside, and the
  server step fused with the next `prepare` (`merged`)."""
  server_values_type = parts['prepare'].type_signature.result
  sums_type = parts['group_step'].type_signature.result

  @tff.tensorflow.computation(server_values_type, groups_type)
  def zero_sums(server, group):
    del server, group
    return zeros_of(sums_type)

  @tff.tensorflow.computation(state_type.member, sums_type)
  def state_after_sums(state, sums):
    # The sums are waited for (control dependencies), so the groups run.
    with tf.control_dependencies(tf.nest.flatten(sums)):
      return tf.nest.map_structure(tf.identity, state)

  @tff.tensorflow.computation(state_type.member)
  def same_state(state):
    return tf.nest.map_structure(tf.identity, state)

  @tff.tensorflow.computation(state_type.member, sums_type)
  def step_then_prepare(state, sums):
    # The server step and the next round's `prepare` in one TF call.
    new_state, metrics = parts['server_step'](state, sums)
    return new_state, metrics, parts['prepare'](new_state)

  return zero_sums, state_after_sums, same_state, step_then_prepare


def fused_variant(name: str, k: int, parts, stand_in, state_type, groups_type):
  """K rounds of one variant of the round in one federated computation."""
  zero_sums, state_after_sums, same_state, step_then_prepare = stand_in
  group_step = zero_sums if name in ('no_group',
                                     'skeleton') else parts['group_step']
  with_server = name in ('full', 'no_group')
  clients_type = tff.FederatedType(groups_type, tff.CLIENTS)

  @tff.federated_computation(state_type, [clients_type] * k)
  def fused(state, groups_list):
    if name == 'empty':
      return state
    if name == 'one_call':
      for _ in range(k):
        state = tff.federated_map(same_state, state)
      return state
    metrics = []
    if name == 'merged':
      server_values = tff.federated_broadcast(
          tff.federated_map(parts['prepare'], state))
      for i in range(k):
        sums = tff.federated_sum(
            tff.federated_map(group_step, (server_values, groups_list[i])))
        state, round_metrics, next_values = tff.federated_map(
            step_then_prepare, (state, sums))
        metrics.append(round_metrics)
        server_values = tff.federated_broadcast(next_values)
      return state, metrics
    for i in range(k):
      server_values = tff.federated_broadcast(
          tff.federated_map(parts['prepare'], state))
      sums = tff.federated_sum(
          tff.federated_map(group_step, (server_values, groups_list[i])))
      if with_server:
        state, round_metrics = tff.federated_map(parts['server_step'],
                                                 (state, sums))
        metrics.append(round_metrics)
      else:
        state = tff.federated_map(state_after_sums, (state, sums))
    return (state, metrics) if metrics else state

  return fused


def flat_values(value) -> list[np.ndarray]:
  """A TFF value's tensors in binding order."""
  return [
      np.asarray(v) for v in structure.flatten(
          structure.from_container(value, recursive=True))
  ]


def session_runner(comp, argument) -> Any:
  """Runs `comp`'s compiled block in-process on `argument` (one call)."""
  call, session = tff_session.session_runner(
      tff_session.compiled_block(comp),
      tff_session.tff_session_config(grappler=False))
  values = flat_values(argument)
  return (lambda: call(list(values))), session


def _worker_runners(fused, process, inputs, contexts) -> dict[str, Any]:
  """Runners of the fused variants: each on the main worker ('' in
  `contexts`), and `full` also on every other worker (as `full@WAY`)."""
  runners = {}
  for way, (context, pid) in contexts.items():
    for v in (WORKER_VARIANTS if not way else ('full',)):
      name = f'{v}@{way}' if way else v
      state = [process.initialize()]

      def run_fused(r, v=v, context=context, state=state):
        del r
        with tff.framework.get_context_stack().install(context):
          result = fused[v](state[0], inputs)
        state[0] = result if v in _STATE_ONLY else result[0]
        return {}

      runners[name] = (run_fused, pid)
  return runners


def _session_runners(parts, process, group, k: int,
                     stack: contextlib.ExitStack) -> dict[str, Any]:
  """Runners of the round's TF blocks in this process, on real values."""
  state = process.initialize()
  server_values = parts['prepare'](state)
  sums = parts['group_step'](server_values, group)
  arguments = {
      'group_session': ('group_step', [server_values, group]),
      'server_session': ('server_step', [state, sums]),
      'prepare_session': ('prepare', state),
  }
  runners = {}
  for name, (part, argument) in arguments.items():
    call, session = session_runner(parts[part], argument)
    stack.callback(session.close)

    def run_session(r, call=call):
      del r
      for _ in range(k):
        call()
      return {}

    runners[name] = (run_session, None)
  return runners


def _floor_runners(workload: workloads_lib.Workload, k: int) -> dict[str, Any]:
  """The floor's two implementations, K rounds per call."""
  runners = {}
  for implementation in ('vectorized', 'loop'):
    floor_round, _ = floor.round_runner(workload, workloads_lib.HYPERPARAMETERS,
                                        implementation)

    def run_floor(r, floor_round=floor_round):
      for i in range(k):
        floor_round(r * k + i)
      return {}

    runners[f'floor_{implementation}'] = (run_floor, None)
  return runners


def _per_round(results: dict[str, Any], k: int) -> dict[str, Any]:
  """Seconds and CPU seconds per ROUND (a timed call runs K rounds)."""
  rows = {}
  for v, result in results.items():
    rows[v] = {
        key: result['seconds'][key] / k for key in ('median', 'p10', 'p90')
    }
    rows[v]['cpu_self_s'] = result['cpu_self_s'] / k
    if result.get('cpu_worker_s') is not None:
      rows[v]['cpu_worker_s'] = result['cpu_worker_s'] / k
  return rows


def run(
    workload_name: str,
    k: int,
    timed: int,
    worker_ways: Sequence[str] = (),
    variants: Sequence[str] = WORKER_VARIANTS + SESSION_VARIANTS +
    FLOOR_VARIANTS
) -> dict[str, Any]:
  """Times every variant in turn; returns seconds per ROUND per variant.

  `worker_ways` (`benchmarks.worker_graph`'s 'worker:VAR=VALUE,...'): each
  starts one more worker with that environment, on which the `full` variant
  runs too (as `full@WAY`).
  """
  workload = {
      w.name: w for w in workloads_lib.timing_workloads(False)
  }[workload_name]
  log_dir = tempfile.mkdtemp(prefix='fused_breakdown_')
  with contextlib.ExitStack() as stack:
    worker = stack.enter_context(
        runtime.local_runtime(log_path=os.path.join(log_dir, 'worker.log')))
    # Each worker started installs its context: the variants name theirs.
    contexts = {'': (tff.framework.get_context_stack().current, worker.pid)}
    contexts.update({
        way: worker_graph.start_worker(stack, way, log_dir)
        for way in worker_ways
    })
    prepared, parts = capture_round_parts(workload)
    stack.callback(prepared.close)
    process = prepared.process
    state_type, groups_type = process.next.type_signature.parameter
    stand_in = stand_ins(parts, state_type, groups_type.member)
    fused = {
        v: fused_variant(v, k, parts, stand_in, state_type, groups_type.member)
        for v in WORKER_VARIANTS
    }
    inputs = [
        prepared.round_inputs(r, np.arange(workload.clients)) for r in range(k)
    ]
    runners = _worker_runners(fused, process, inputs, contexts)
    runners.update(_session_runners(parts, process, inputs[0][0], k, stack))
    runners.update(_floor_runners(workload, k))
    runners = {
        v: runner
        for v, runner in runners.items()
        if v.split('@')[0] in variants
    }
    timing = dataclasses.replace(workload, warmup_rounds=2, timed_rounds=timed)
    results = harness.time_interleaved(timing, runners)
  return {
      'workload': workload_name,
      'k': k,
      'timed': timed,
      'load': next(iter(results.values()))['load_average'],
      'per_round': _per_round(results, k)
  }


def _check_arguments(args, ways: Sequence[str], variants: Sequence[str]):
  names = [w.name for w in workloads_lib.timing_workloads(False)]
  if args.workload not in names:
    raise ValueError(f'--workload must be one of {names}, got '
                     f'{args.workload!r}')
  for flag in ('k', 'timed'):
    if getattr(args, flag) < 1:
      raise ValueError(f'--{flag} must be at least 1, got '
                       f'{getattr(args, flag)}')
  known = WORKER_VARIANTS + SESSION_VARIANTS + FLOOR_VARIANTS
  for variant in variants:
    if variant not in known:
      raise ValueError(f'unknown variant {variant!r} (known: {known})')
  for way in ways:
    worker_graph.worker_environment(way)


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workload', default='W1-c10')
  parser.add_argument('--k', type=int, default=10, help='rounds per call')
  parser.add_argument('--timed', type=int, default=15, help='timed calls')
  parser.add_argument('--worker_ways',
                      default='',
                      help="';'-separated 'worker:VAR=VALUE,...': extra "
                      'workers that run the full variant')
  parser.add_argument('--variants',
                      default=','.join(WORKER_VARIANTS + SESSION_VARIANTS +
                                       FLOOR_VARIANTS),
                      help='comma-separated variants to time')
  parser.add_argument('--out', default=None, help='JSON result file')
  args = parser.parse_args(argv[1:])
  ways = [w for w in args.worker_ways.split(';') if w]
  variants = [v for v in args.variants.split(',') if v]
  try:
    _check_arguments(args, ways, variants)
  except ValueError as e:
    print(f'fused_breakdown: {e}', file=sys.stderr)
    return 2
  start = time.time()
  result = run(args.workload, args.k, args.timed, ways, variants)
  print(f'load {result["load"]["before"]} -> {result["load"]["after"]}')
  first = ('floor_vectorized' if 'floor_vectorized' in result['per_round'] else
           next(iter(result['per_round'])))
  base = result['per_round'][first]['median']
  for v, row in result['per_round'].items():
    cpu = row.get('cpu_worker_s')
    print(f'{v:18s} {row["median"]:.4f} s/round [{row["p10"]:.4f}, '
          f'{row["p90"]:.4f}] x{row["median"] / base:.2f} of {first}; CPU '
          f'ours {row["cpu_self_s"]:.4f}' +
          ('' if cpu is None else f', worker {cpu:.4f}'))
  print(f'({time.time() - start:.0f} s)')
  if args.out:
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
