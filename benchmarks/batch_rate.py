"""A round's arithmetic at larger batches: how far below the floor can any engine go?

The compute floor (`benchmarks.floor`) runs a round's clients one after the
other, each on its own copy of the model, in the workload's batches (16).
No engine computing the same round can batch examples of different clients
together: after its first local step each client holds a different model.
What is left is the floor's own efficiency at its batch size. This module
measures it: the same number of examples (clients x examples per client x
epochs) through the same forward pass, gradient and SGD step, as ONE client
holding all of them, at batch sizes up to the whole round, timed round by
round in turn with the floor's own round (`harness.time_interleaved`, 2
warm-up rounds), in one process. A variant's ratio to the floor bounds what
any rearrangement of the round's arithmetic could buy on this machine in
TensorFlow (it is not a round of the mechanism: one client, one clip, one
noise draw).

  python -m benchmarks.batch_rate --workload=W2-c20 --batches=16,64,256 \\
      --timed=10

benchmarks/README.md ("W2 against pfl: the floor is the bound") quotes it
beside the peers' rows: for tff-dp's W2 round to take half of pfl's, the
round's arithmetic would have to run faster than this.
"""

import argparse
import dataclasses
import sys
from typing import Any, Sequence

from benchmarks import floor
from benchmarks import harness
from benchmarks import workloads as workloads_lib

WARMUP_ROUNDS = 2


def one_client(workload: workloads_lib.Workload,
               batch_size: int) -> workloads_lib.Workload:
  """The workload's round as one client holding every example of the round."""
  return dataclasses.replace(workload,
                             clients=1,
                             examples_per_client=workload.clients *
                             workload.examples_per_client,
                             batch_size=batch_size)


def runners(workload: workloads_lib.Workload,
            batches: Sequence[int]) -> dict[str, Any]:
  """'floor' (the workload's own floor round, `loop`) and one one-client
  round per batch size, as `harness.time_interleaved` runners."""
  hyper = workloads_lib.HYPERPARAMETERS
  result = {'floor': (floor.round_runner(workload, hyper, 'loop')[0], None)}
  for batch in batches:
    run_round, _ = floor.round_runner(one_client(workload, batch), hyper,
                                      'loop')
    result[f'one_client_b{batch}'] = (run_round, None)
  return result


def run(workload_name: str, batches: Sequence[int],
        timed: int) -> dict[str, Any]:
  """Times the floor and the one-client rounds in turn; seconds per round."""
  workload = _workload(workload_name)
  timing = dataclasses.replace(workload,
                               warmup_rounds=WARMUP_ROUNDS,
                               timed_rounds=timed)
  results = harness.time_interleaved(timing, runners(workload, batches))
  base = results['floor']['seconds']['median']
  rows = {
      name: {
          'median': r['seconds']['median'],
          'p10': r['seconds']['p10'],
          'p90': r['seconds']['p90'],
          'against_floor': r['seconds']['median'] / base,
      } for name, r in results.items()
  }
  return {
      'workload':
          workload.name,
      'examples_per_round':
          workload.clients * workload.examples_per_client * workload.epochs,
      'timed':
          timed,
      'load':
          results['floor']['load_average'],
      'rows':
          rows,
  }


def _workload(name: str) -> workloads_lib.Workload:
  known = {w.name: w for w in workloads_lib.timing_workloads(False)}
  if name not in known:
    raise ValueError(f'--workload must be one of {sorted(known)}, got '
                     f'{name!r}')
  return known[name]


def _batches(text: str) -> list[int]:
  try:
    batches = [int(b) for b in text.split(',') if b]
  except ValueError:
    batches = []
  if not batches or any(b < 1 for b in batches):
    raise ValueError(f'--batches must be positive integers separated by '
                     f'commas, got {text!r}')
  return batches


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workload', default='W2-c20')
  parser.add_argument('--batches', default='16,64,256')
  parser.add_argument('--timed', type=int, default=10, help='timed rounds')
  parser.add_argument('--out', default=None, help='JSON result file')
  args = parser.parse_args(argv[1:])
  try:
    _workload(args.workload)
    batches = _batches(args.batches)
    if args.timed < 1:
      raise ValueError(f'--timed must be at least 1, got {args.timed}')
  except ValueError as e:
    print(f'batch_rate: {e}', file=sys.stderr)
    return 2
  result = run(args.workload, batches, args.timed)
  print(f'{result["workload"]}: {result["examples_per_round"]} examples per '
        f'round; load {result["load"]["before"]} -> {result["load"]["after"]}')
  for name, row in result['rows'].items():
    print(f'{name:18s} {row["median"]:.4f} s/round [{row["p10"]:.4f}, '
          f'{row["p90"]:.4f}] x{row["against_floor"]:.2f} of floor')
  if args.out:
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
