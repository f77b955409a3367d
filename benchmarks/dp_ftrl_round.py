"""Where DP-FTRL's grouped round spends more than DP-FedAvg's (issue 21).

DP-FTRL (Kairouz et al. 2021, "Practical and Private (Deep) Learning without
Sampling or Shuffling") differs from DP-FedAvg on the grouped path only in
its central query (TF Privacy's tree, restarted every epoch) and hence in
its aggregator state (the tree's node buffer and previous prefix noise, two
more copies of the model); the server optimizer (heavy-ball SGD) and the
clients' work are the same. This script builds, in one process and on one
worker, as `benchmarks.rounds.prepare` does:

* `ftrl_tfp_restart`: DP-FTRL with TF Privacy's `RestartQuery` (the tree
  as it was before `tff_dp.mechanisms.epoch_tree`);
* `ftrl`: DP-FTRL as tff-dp builds it now;
* `dp_fedavg`: DP-FedAvg with `gaussian_fixed`;

times their rounds in turn (`harness.time_interleaved`), then times moving
each one's state to the worker and back (a federated identity on the state,
which every `process.next` pays as well), and prints JSON with the state
sizes and the load averages.

  python -m benchmarks.dp_ftrl_round [--workload=W1-c50] [--rounds=30]
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from benchmarks import harness
from benchmarks import rounds
from benchmarks import workloads as workloads_lib
from tff_dp.config import DpMechanism
from tff_dp.execution import runtime
from tff_dp.mechanisms import epoch_tree

_WORKLOAD = flags.DEFINE_string('workload', 'W1-c50',
                                'A workload of the mechanism rows.')
_ROUNDS = flags.DEFINE_integer('rounds',
                               30,
                               'Timed rounds per variant.',
                               lower_bound=1)


def _prepare(workload, variant, *, tfp_restart=False):
  mechanism = DpMechanism.GAUSSIAN_FIXED
  hyper = workloads_lib.HYPERPARAMETERS
  if not tfp_restart:
    return rounds.prepare(workload, mechanism, hyper, variant=variant)
  ours = epoch_tree.EpochTreeQuery
  epoch_tree.EpochTreeQuery = tfp.RestartQuery  # What it replaced.
  try:
    return rounds.prepare(workload, mechanism, hyper, variant=variant)
  finally:
    epoch_tree.EpochTreeQuery = ours


def _state_round_trip(process, state, repeats=12):
  """Median seconds to send `state` to the worker and get it back."""
  identity = tff.federated_computation(lambda s: s,
                                       process.initialize.type_signature.result)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    identity(state)
    times.append(time.perf_counter() - start)
  return float(np.median(times[2:]))


def main(argv):
  del argv
  workload = {
      w.name: w for w in workloads_lib.mechanism_workloads(False)
  }[_WORKLOAD.value]
  workload = dataclasses.replace(workload, timed_rounds=_ROUNDS.value)
  ftrl = {m.name: m for m in workloads_lib.MECHANISMS}['dp_ftrl']
  result = {'workload': workload.name, 'load_before': os.getloadavg()}
  prepared = {
      'ftrl_tfp_restart': _prepare(workload, ftrl, tfp_restart=True),
      'ftrl': _prepare(workload, ftrl),
      'dp_fedavg': _prepare(workload, None),
  }
  log_path = os.path.join('/tmp', f'dp-ftrl-round-{os.getpid()}.log')
  try:
    with runtime.local_runtime(log_path=log_path) as worker:
      cohort = np.arange(workload.clients)
      boxes, runners = {}, {}
      for name, p in prepared.items():
        boxes[name] = [p.process.initialize()]
        runners[name] = (rounds.round_runner(p.process, p.round_inputs, cohort,
                                             boxes[name]), worker.pid)
      timed = harness.time_interleaved(workload, runners)
      for name, p in prepared.items():
        state = boxes[name][0]
        result[name] = {
            'seconds':
                timed[name]['seconds'],
            'state_bytes':
                sum(np.asarray(x).nbytes for x in tf.nest.flatten(state)),
            'state_round_trip_s':
                _state_round_trip(p.process, state),
        }
  finally:
    for p in prepared.values():
      p.close()
  result['load_after'] = os.getloadavg()
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  app.run(main, sys.argv)
