"""Engine (c): plain TFF usage, as TFF's tutorials write it. No tff_dp import.

`tff.learning.algorithms.build_unweighted_fed_avg` with
`tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed`, a Keras model
wrapped by `tff.learning.models.from_keras_model`, TFF's SGD optimizers, and
a Python list of `tf.data` datasets (`from_tensor_slices(...).shuffle(...)
.batch(...)`, built once per workload and passed to every round, as the
tutorials do), executed on TFF's DEFAULT execution context: the local C++
context that `import tensorflow_federated` installs, which starts its own
`worker_binary` on first use.

That worker inherits our stdout/stderr and is only stopped by a `__del__`;
we have seen it outlive the Python process. This engine therefore finds the
worker it started (a direct child of this process running worker_binary),
records its pid, and stops THAT pid (SIGINT, then SIGKILL) before exiting.

  python -m benchmarks.plain_tff --spec=SPEC.json --out=RESULT.json
"""

import sys
import time
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import harness
from benchmarks import models as bench_models
from benchmarks import workloads as workloads_lib


def client_datasets(workload: workloads_lib.Workload,
                    data: workloads_lib.SyntheticData) -> list[tf.data.Dataset]:
  """One dataset per client, as the tutorials' preprocess() builds them."""
  return [
      tf.data.Dataset.from_tensor_slices((data.x[i], data.y[i])).repeat(
          workload.epochs).shuffle(workload.examples_per_client,
                                   seed=i).batch(workload.batch_size)
      for i in range(workload.clients)
  ]


def build_process(workload: workloads_lib.Workload,
                  hyper: workloads_lib.Hyperparameters,
                  element_spec) -> tff.learning.templates.LearningProcess:
  """DP-FedAvg as TFF's DP tutorial builds it (with a fixed clip)."""

  def model_fn():
    return tff.learning.models.from_keras_model(
        bench_models.build_keras_model(workload.model, seed=hyper.model_seed),
        input_spec=element_spec,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  aggregator = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
      noise_multiplier=hyper.noise_multiplier,
      clients_per_round=workload.clients,
      clip=hyper.clip)
  return tff.learning.algorithms.build_unweighted_fed_avg(
      model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          learning_rate=hyper.client_learning_rate),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(
          learning_rate=hyper.server_learning_rate,
          momentum=hyper.server_momentum),
      model_aggregator=aggregator)


class WorkerTracker:
  """Finds the default context's worker once it exists; stops it by pid."""

  def __init__(self, result: dict[str, Any], out_path: str):
    self._result = result
    self._out_path = out_path
    self.pid = None

  def find(self) -> None:
    if self.pid is not None:
      return
    workers = harness.worker_children()
    if workers:
      self.pid = workers[0].pid
      self._result['workers'].append({
          'pid': self.pid,
          'started_by': 'TFF default local C++ execution context'
      })
      # Recorded at once, so the orchestrator can stop it if we die.
      harness.write_json(self._out_path, self._result)

  def stop(self) -> None:
    if self.pid is None:
      return
    how = harness.stop_worker_pid(self.pid)
    self._result['workers'][0]['stopped_by_benchmark'] = how
    self._result['workers'][0]['alive_after_exit'] = (harness.is_running_worker(
        self.pid))


def run_workload(workload: workloads_lib.Workload,
                 hyper: workloads_lib.Hyperparameters,
                 tracker: WorkerTracker,
                 clock: Optional[harness.Clock] = None) -> dict[str, Any]:
  """Builds and times one workload on the default context."""
  data = workloads_lib.synthetic_data(workload)
  datasets = client_datasets(workload, data)
  start = time.perf_counter()
  process = build_process(workload, hyper, datasets[0].element_spec)
  build_s = time.perf_counter() - start
  if clock is not None:
    clock.mark('process_built')
  start = time.perf_counter()
  state_box = [process.initialize()]
  initialize_s = time.perf_counter() - start
  tracker.find()
  if clock is not None:
    clock.mark('initialized')

  def run_round(r: int) -> dict[str, float]:
    del r  # The same datasets every round; shuffle() reshuffles.
    output = process.next(state_box[0], datasets)
    state_box[0] = output.state
    return {}

  def on_round(r):
    if clock is not None and r == 0:
      clock.mark('first_round_done')

  result = harness.time_rounds(workload,
                               run_round,
                               worker_pid=tracker.pid,
                               on_round=on_round)
  result['build_s'] = build_s
  result['initialize_s'] = initialize_s
  return result


def main(argv: list[str]) -> int:
  """Runs the spec's workloads; always stops the worker it started."""
  args = harness.parse_args(argv)
  spec = harness.read_json(args.spec)
  clock = harness.Clock(spec['spawn_time'])
  clock.mark('imports_done')
  hyper = workloads_lib.HYPERPARAMETERS
  result = {
      'engine': 'plain-tff',
      'loop_implementation': 'DATASET_REDUCE (TFF default)',
      'startup': None,
      'workloads': [],
      'workers': []
  }
  tracker = WorkerTracker(result, args.out)
  try:
    for i, row in enumerate(spec['rows']):
      workload = workloads_lib.Workload.from_json(row['workload'])
      timing = run_workload(workload, hyper, tracker, clock if i == 0 else None)
      if i == 0:
        # TFF starts its worker lazily, inside initialize().
        result['startup'] = {'workload': workload.name, **clock.marks}
      result['workloads'].append({'workload': workload.to_json(), **timing})
      harness.write_json(args.out, result)
  finally:
    tracker.stop()
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
