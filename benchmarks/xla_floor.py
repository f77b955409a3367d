"""Does XLA make the compute floor faster? The floor with `jit_compile`.

Issue 21 asks whether XLA (`tf.function(jit_compile=True)`) could bring
tff-dp's grouped round below today's plain-TensorFlow floor on W2. Two
facts decide it, and this module measures the second one:

* TFF 0.87's worker binary, where every TFF computation of tff-dp runs, does
  not honour `jit_compile`: a function that XLA must compile runs there as
  ordinary graph ops (tests/execution/test_worker_xla.py pins this). So XLA
  cannot speed up tff-dp's group step as shipped;
* the floor (`benchmarks.floor.FloorRound`, in-process TensorFlow, where
  XLA works) with `jit_compile` on the whole round (`*_xla_round`) or on
  each client's local update (`*_xla_client`), timed round by round in
  turn with the plain implementations in ONE process (`harness`'s rotation:
  the shared machine's drift falls on all alike). If a variant were faster,
  the floor would have to include it to stay the best plain-TF program.

Prints each variant's first round (tracing, and XLA's compilation) and the
median, quartiles and ratio to the first variant of the timed rounds, with
the load average; `--out` also writes them as JSON.

  python -m benchmarks.xla_floor --workload=W2 --rounds=30 \\
      --variants=loop,loop_xla_client
"""

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from benchmarks import floor
from benchmarks import harness
from benchmarks import workloads as workloads_lib

VARIANTS = ('loop', 'vectorized', 'loop_xla_round', 'loop_xla_client',
            'vectorized_xla_round')
# Rounds run before timing (tracing, XLA's compilation, allocator).
WARMUP_ROUNDS = 2


class XlaFloorRound(floor.FloorRound):
  """`floor.FloorRound` with XLA on the whole round or on each client."""

  def __init__(self, workload, hyper, implementation: str, scope: str):
    """Builds the round; `scope` is 'round' or 'client'."""
    super().__init__(workload, hyper, implementation)
    if scope == 'client':
      # Each client's local SGD and clip as one XLA cluster, called from the
      # plain graph's loop over the clients.
      self._local_update = tf.function(self._local_update, jit_compile=True)
    elif scope != 'round':
      raise ValueError(f'scope must be round or client, got {scope!r}')
    per_client = (self._client_deltas_loop if implementation == 'loop' else
                  self._client_deltas_vectorized)
    self._round = tf.function(self._make_round(per_client),
                              jit_compile=scope == 'round')


def build_round(workload: workloads_lib.Workload, variant: str):
  """A floor round for one of `VARIANTS`."""
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
  hyper = workloads_lib.HYPERPARAMETERS
  implementation, _, scope = variant.partition('_xla_')
  if not scope:
    return floor.FloorRound(workload, hyper, implementation)
  return XlaFloorRound(workload, hyper, implementation, scope)


def run(workload: workloads_lib.Workload, variants: Sequence[str],
        rounds: int) -> dict[str, Any]:
  """Times the variants round by round in turn (`harness.time_interleaved`)."""
  data = workloads_lib.synthetic_data(workload)
  timing = dataclasses.replace(workload,
                               warmup_rounds=WARMUP_ROUNDS,
                               timed_rounds=rounds)

  def runner(variant):
    round_fn = build_round(workload, variant)

    def run_round(r):
      x, y = floor.round_inputs(data, workload, r)
      start = time.perf_counter()
      norm = round_fn(x, y, r)
      call_s = time.perf_counter() - start
      if not np.isfinite(norm):
        raise RuntimeError(f'{variant}: round {r} gave a non-finite update')
      return {'call_s': call_s}

    return run_round, None

  results = harness.time_interleaved(timing, {v: runner(v) for v in variants})
  load = next(iter(results.values()))['load_average']
  return {
      'workload': workload.to_json(),
      'load_before': load['before'],
      'load_after': load['after'],
      'variants': harness.against_first(results),
  }


def _workload(name: str) -> workloads_lib.Workload:
  if name == 'W1':
    return workloads_lib.timing_workloads(quick=False)[0]
  if name == 'W2':
    return workloads_lib.timing_workloads(quick=False)[-1]
  raise ValueError(f'--workload must be W1 or W2, got {name!r}')


def main(argv: Sequence[str]) -> int:
  """Parses the arguments, runs, prints (and writes) the table."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workload', default='W2', help='W1 or W2')
  parser.add_argument('--rounds', type=int, default=30, help='timed rounds')
  parser.add_argument('--variants',
                      default='loop,loop_xla_client,loop_xla_round',
                      help=f'comma-separated, of {",".join(VARIANTS)}')
  parser.add_argument('--out', default=None, help='JSON result file')
  args = parser.parse_args(argv[1:])
  try:
    workload = _workload(args.workload)
    variants = [v for v in args.variants.split(',') if v]
    for v in variants:
      if v not in VARIANTS:
        raise ValueError(f'--variants: {v!r} is not one of {VARIANTS}')
    if args.rounds < 1:
      raise ValueError(f'--rounds must be at least 1, got {args.rounds}')
  except ValueError as e:
    print(f'xla_floor: {e}', file=sys.stderr)
    return 2
  result = run(workload, variants, args.rounds)
  print(f'{workload.name}: load {result["load_before"]} -> '
        f'{result["load_after"]} (pid {os.getpid()})')
  harness.print_against_first(result['variants'])
  if args.out:
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
