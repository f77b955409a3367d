"""Does the TFF worker's TF thread setting change tff-dp's round time?

The worker (`tff_dp.execution.worker_launch`) inherits our environment, and
TensorFlow's runtime sizes its thread pools from `TF_NUM_INTRAOP_THREADS`
and `TF_NUM_INTEROP_THREADS` when they are set (else from the cores). This
module starts one worker per setting, each with its own TFF context, builds
the benchmark's grouped process once (`benchmarks.rounds.prepare`, DP-FedAvg
with `gaussian_fixed`) and runs its rounds on the workers in turn, the order
rotating each round (as `harness.time_interleaved`), so that the settings'
ratios are measured under the same machine conditions. Prints each
setting's median, quartiles and ratio to the first setting, with the load
average; `--out` also writes them as JSON.

  python -m benchmarks.worker_threads --workload=W2 --rounds=30 \\
      --settings='default;1,2;2,1;4,4'

A setting is 'default' (neither variable set) or 'INTRA,INTER'.
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Sequence

import numpy as np
import tensorflow_federated as tff

from benchmarks import harness
from benchmarks import rounds
from benchmarks import workloads as workloads_lib
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime

# Rounds run before timing (tracing on each worker, allocator).
WARMUP_ROUNDS = 2


def thread_environment(setting: str) -> dict[str, str]:
  """The worker's extra environment for 'default' or 'INTRA,INTER'."""
  if setting == 'default':
    return {}
  parts = setting.split(',')
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"a setting is 'default' or 'INTRA,INTER' (positive "
                     f'ints), got {setting!r}')
  return {
      'TF_NUM_INTRAOP_THREADS': parts[0],
      'TF_NUM_INTEROP_THREADS': parts[1]
  }


def _start_worker(stack: contextlib.ExitStack, setting: str, log_dir: str):
  """Starts a worker with the setting's environment; returns its context."""
  saved = dict(os.environ)
  os.environ.update(thread_environment(setting))
  try:
    stack.enter_context(
        runtime.local_runtime(
            log_path=os.path.join(log_dir, f'worker-{setting}.log')))
  finally:
    os.environ.clear()
    os.environ.update(saved)
  return tff.framework.get_context_stack().current


def run(workload: workloads_lib.Workload, settings: Sequence[str], rounds_: int,
        log_dir: str) -> dict[str, Any]:
  """Times the grouped process's rounds on one worker per setting, in turn
  (`harness.time_interleaved`)."""
  prepared = rounds.prepare(workload, DpMechanism.GAUSSIAN_FIXED,
                            workloads_lib.HYPERPARAMETERS)
  cohort = np.arange(workload.clients)
  timing = dataclasses.replace(workload,
                               warmup_rounds=WARMUP_ROUNDS,
                               timed_rounds=rounds_)
  try:
    with contextlib.ExitStack() as stack:
      contexts = {s: _start_worker(stack, s, log_dir) for s in settings}
      states = {}

      def runner(setting):

        def run_round(r):
          with tff.framework.get_context_stack().install(contexts[setting]):
            if setting not in states:
              states[setting] = prepared.process.initialize()
            # A round as `benchmarks.rounds` times it: inputs plus next.
            start = time.perf_counter()
            output = prepared.process.next(states[setting],
                                           prepared.round_inputs(r, cohort))
            next_s = time.perf_counter() - start
            states[setting] = output.state
          return {'next_s': next_s}

        return run_round, None

      results = harness.time_interleaved(timing,
                                         {s: runner(s) for s in settings})
  finally:
    prepared.close()
  load = next(iter(results.values()))['load_average']
  return {
      'workload': workload.to_json(),
      'clients_per_call': prepared.clients_per_call,
      'load_before': load['before'],
      'load_after': load['after'],
      'settings': harness.against_first(results),
  }


def main(argv: Sequence[str]) -> int:
  """Parses the arguments, runs, prints (and writes) the table."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workload', default='W2', help='W1 or W2')
  parser.add_argument('--rounds', type=int, default=30, help='timed rounds')
  parser.add_argument('--settings',
                      default='default;1,2;2,1',
                      help="';'-separated: 'default' or 'INTRA,INTER'")
  parser.add_argument('--log_dir', default='.', help='the workers\' logs')
  parser.add_argument('--out', default=None, help='JSON result file')
  args = parser.parse_args(argv[1:])
  full = workloads_lib.timing_workloads(quick=False)
  try:
    workload = {'W1': full[0], 'W2': full[-1]}.get(args.workload)
    if workload is None:
      raise ValueError(f'--workload must be W1 or W2, got {args.workload!r}')
    settings = [s for s in args.settings.split(';') if s]
    for s in settings:
      thread_environment(s)
    if args.rounds < 1:
      raise ValueError(f'--rounds must be at least 1, got {args.rounds}')
  except ValueError as e:
    print(f'worker_threads: {e}', file=sys.stderr)
    return 2
  result = run(workload, settings, args.rounds, args.log_dir)
  print(f'{workload.name}: load {result["load_before"]} -> '
        f'{result["load_after"]}')
  harness.print_against_first(result['settings'])
  if args.out:
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
