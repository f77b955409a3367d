"""Engine (a): tff-dp's rounds, as tff_dp.program.experiment builds and runs them.

The process is the one the program runs for the same flags: `tff_dp.program.assembly.
build_process` with TF Privacy's DP aggregator (`gaussian_fixed`, or
`gaussian_adaptive` for the rows that ask for it) and the simulated clients per
TFF call that `--clients_per_call` resolves to (the grouped path,
`tff_dp.algorithms.grouped_fedavg`; a row may ask for 1, TFF's one-client-per-call
algorithm). The round inputs come from
`tff_dp.algorithms.grouped_data.GroupedRounds` or `tff_dp.program.client_data.RoundDatasets`, and
everything executes on the worker of `tff_dp.execution.runtime.local_runtime`. A round
is what `tff_dp.program.training_loop` times: building the cohort's inputs plus
`process.next`, or on the grouped path as many rounds per TFF call as
`--rounds_per_call` resolves to (`tff_dp.algorithms.fused_rounds`; one timed
"round" of the harness is then one call, reported per round). Accounting,
evaluation and
releases are outside the learning process and outside this timing (the memory
run, `benchmarks.memory`, runs the whole program loop).

A row may also name floor implementations (`paired_floor`): the compute
floor of `benchmarks.floor` then runs in this process, its rounds in turn with
tff-dp's (`harness.time_interleaved`), so that the ratio of the two is measured
under the same machine conditions. The floor's own subprocess still gives its
time to the first round and its speed alone.

The models are tff_dp.algorithms.models' own: the MLP, and for W2 `--model=cnn`, the
same network as the benchmark's CNN (conv 32, conv 64, max-pool, dropout 0.25,
dense 128, dropout 0.5, dense 10; 1,199,882 parameters), with its own seeded
initial weights; for W3 `--model=transformer` at tff-dp's default sizes, on
next-token windows held in memory (`FederatedData` with next-token labels,
as the program holds the offline task; `--trainable` as the workload says), with the resident memory of the worker and of this process
recorded after every round.

  python -m benchmarks.rounds --spec=SPEC.json --out=RESULT.json
"""

import dataclasses
import math
import os
import sys
import time
from typing import Any, Optional, Sequence

from absl import flags
import numpy as np
import tensorflow_federated as tff

from benchmarks import floor
from benchmarks import harness
from benchmarks import models as bench_models
from benchmarks import workloads as workloads_lib
from tff_dp import config as config_lib
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import learning_process
from tff_dp.cli import cli_flags
from tff_dp.config import DpMechanism
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.execution import runtime
from tff_dp.execution import worker_process
from tff_dp.program import assembly
from tff_dp.program import client_data
from tff_dp.program import prepare as prepare_lib
from tff_dp.program import run_privacy


def federated_data(workload: workloads_lib.Workload) -> FederatedData:
  """The workload's synthetic clients as tff-dp's validated container (W3:
  next-token windows of the offline task's vocabulary)."""
  data = workloads_lib.synthetic_data(workload)
  tokens = workload.model is workloads_lib.ModelName.TRANSFORMER
  return FederatedData(
      name=f'synthetic-{workload.name}',
      client_ids=tuple(str(i) for i in range(workload.clients)),
      client_x=tuple(data.x),
      client_y=tuple(data.y),
      test_x=data.test_x,
      test_y=data.test_y,
      num_classes=(workloads_lib.TOKEN_VOCAB_SIZE
                   if tokens else workloads_lib.NUM_CLASSES),
      provenance=('benchmark: uniform random token ids'
                  if tokens else 'benchmark: uniform random features and '
                  'labels'),
      image_shape=(workloads_lib.IMAGE_SHAPE
                   if workload.model is workloads_lib.ModelName.CNN else None),
      vocab_size=workloads_lib.TOKEN_VOCAB_SIZE if tokens else None,
      label_kind=LabelKind.NEXT_TOKENS if tokens else LabelKind.SINGLE)


def train_config(
    workload: workloads_lib.Workload,
    mechanism: DpMechanism,
    hyper: workloads_lib.Hyperparameters,
    *,
    rounds: int = 1,
    output_dir: str = '.',
    run_name: str = 'benchmark',
    extra_flags: Sequence[str] = ()
) -> config_lib.TrainConfig:
  """The TrainConfig of a workload, parsed by tff_dp's own flag definitions.

  Every client takes part in every round (`--client_sampling=full`); flags
  not set here keep tff_dp's defaults, as they would for a user.
  `extra_flags` (a mechanism row's, `workloads.Mechanism.flags`) come last,
  so they win where they set a flag again.
  """
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  model_flags = [f'--model={workload.model.value}']
  if workload.model is workloads_lib.ModelName.TRANSFORMER:
    # The offline task's flag, for the config checks only: the windows are
    # `federated_data`'s synthetic ones (`prepare`).
    model_flags += ['--dataset=python_stdlib'] + [
        f'--{name}={value}' for name, value in workloads_lib.TRANSFORMER_SIZES
    ] + [f'--trainable={workload.trainable}']
  fv([
      'benchmarks',
      *model_flags,
      f'--hidden_units={bench_models.MLP_HIDDEN_UNITS}',
      f'--num_clients={workload.clients}',
      f'--clients_per_round={workload.clients}',
      '--client_sampling=full',
      f'--rounds={rounds}',
      f'--client_batch_size={workload.batch_size}',
      f'--client_epochs={workload.epochs}',
      f'--client_learning_rate={hyper.client_learning_rate}',
      '--server_optimizer=sgd',
      f'--server_learning_rate={hyper.server_learning_rate}',
      f'--server_momentum={hyper.server_momentum}',
      f'--dp_mechanism={mechanism.value}',
      f'--noise_multiplier={hyper.noise_multiplier}',
      f'--clip={hyper.clip}',
      f'--initial_clip={hyper.initial_clip}',
      f'--target_unclipped_quantile={hyper.target_unclipped_quantile}',
      f'--clip_learning_rate={hyper.clip_learning_rate}',
      f'--seed={hyper.model_seed}',
      f'--output_dir={output_dir}',
      f'--run_name={run_name}',
  ] + (['--allow_zero_noise'] if hyper.noise_multiplier == 0 else []) +
     list(extra_flags))
  config = cli_flags.config_from_flags(fv)
  config_checks.check_config(config)
  return config


@dataclasses.dataclass
class Prepared:
  """A workload's process and round inputs, as tff_dp.program.experiment makes them."""
  process: tff.learning.templates.LearningProcess
  clients_per_call: int
  round_inputs: Any  # (round, cohort) -> the process's client values.
  close: Any
  # Rounds per TFF call, as the program resolves --rounds_per_call.
  rounds_per_call: int = 1


def prepare(workload: workloads_lib.Workload,
            mechanism: DpMechanism,
            hyper: workloads_lib.Hyperparameters,
            *,
            requested_per_call: int = 0,
            variant: Optional[workloads_lib.Mechanism] = None) -> Prepared:
  """Writes the client files (grouped path) and builds the process.

  Args:
    workload: Gives the model and clients_per_round.
    mechanism: GAUSSIAN_FIXED or GAUSSIAN_ADAPTIVE.
    hyper: The shared hyperparameters.
    requested_per_call: `--clients_per_call` (0: automatic, the default).
    variant: A mechanism row whose flags are added (None: DP-FedAvg).
  """
  config = dataclasses.replace(train_config(
      workload, mechanism, hyper, extra_flags=variant.flags if variant else ()),
                               clients_per_call=requested_per_call,
                               rounds_per_call=workload.rounds_per_call)
  prepared = prepare_lib.prepare_data(config,
                                      federated_data(workload),
                                      calibrate_noise=False)
  data, per_call = prepared.data, prepared.clients_per_call
  # DP-FTRL's tree restarts with the sampler's epochs; its secret only
  # orders the clients, and every client takes part in every round here.
  sampler = (run_privacy.build_sampler(config, data.population, secret=0)
             if config.algorithm is config_lib.Algorithm.DP_FTRL else None)
  if per_call > 1:
    grouped = grouped_data.GroupedRounds(data.client_x,
                                         data.client_y,
                                         seed=0,
                                         epochs=workload.epochs,
                                         group_size=per_call)
    process = assembly.build_process(config,
                                     data,
                                     sampler=sampler,
                                     group_size=per_call,
                                     client_files_dir=grouped.files_dir)
    return Prepared(process,
                    per_call,
                    grouped,
                    grouped.close,
                    rounds_per_call=simulation_path.resolve_rounds_per_call(
                        config, clients_per_call=per_call))
  process = assembly.build_process(config, data, sampler=sampler)
  round_datasets = client_data.RoundDatasets(data,
                                             batch_size=workload.batch_size,
                                             epochs=workload.epochs,
                                             seed=0)
  return Prepared(process, 1, round_datasets, lambda: None)


def tff_dp_loop() -> str:
  """The client loop tff_dp.algorithms.learning_process asks TFF for."""
  loop = getattr(learning_process, 'LOOP', None)
  return loop.name if loop is not None else 'DATASET_REDUCE (TFF default)'


def round_runner(process,
                 round_datasets,
                 cohort,
                 state_box,
                 rounds_per_call: int = 1):
  """Returns run_round(r) for `harness.time_rounds`: datasets + next, or
  with `rounds_per_call` > 1 that many rounds in one TFF call, as the
  program's training loop runs them (`tff_dp.algorithms.fused_rounds`)."""
  if rounds_per_call > 1:
    return _block_runner(process, round_datasets, cohort, state_box,
                         rounds_per_call)

  def run_round(r: int) -> dict[str, float]:
    start = time.perf_counter()
    datasets = round_datasets(r, cohort)
    built = time.perf_counter()
    output = process.next(state_box[0], datasets)
    state_box[0] = output.state
    return {'datasets_s': built - start, 'next_s': time.perf_counter() - built}

  return run_round


def _block_runner(process, round_datasets, cohort, state_box, per_call):
  """run_round(r): rounds r*per_call .. (r+1)*per_call - 1 in one call."""
  run_block = assembly.block_runner(process)

  def run_round(r: int) -> dict[str, float]:
    start = time.perf_counter()
    inputs = [round_datasets(r * per_call + i, cohort) for i in range(per_call)]
    built = time.perf_counter()
    state_box[0], _ = run_block(state_box[0], inputs)
    return {
        'datasets_s': built - start,
        'next_s': time.perf_counter() - built,
        'rounds': per_call
    }

  return run_round


def run_workload(
    workload: workloads_lib.Workload,
    worker: worker_process.Worker,
    prepared: Prepared,
    clock: Optional[harness.Clock] = None,
    paired_floor: Sequence[str] = (),
    hyper: workloads_lib.Hyperparameters = (workloads_lib.HYPERPARAMETERS),
    variant: workloads_lib.Mechanism = workloads_lib.DP_FEDAVG,
) -> dict[str, Any]:
  """Times one workload on a running worker; its process is already built.

  Args:
    workload: The workload `prepared` was built for.
    worker: The running worker (its CPU time is recorded per round).
    prepared: The process and its round inputs.
    clock: If given, marks 'initialized' and 'first_round_done' on it.
    paired_floor: Floor implementations (`benchmarks.floor.IMPLEMENTATIONS`)
      to time in this process, round by round in turn with tff-dp
      (`harness.time_interleaved`); their results go under 'paired_floor'.
    hyper: The floor's hyperparameters (those `prepared` was built with).
    variant: The mechanism row the floor computes.
  """
  process = prepared.process
  cohort = np.arange(workload.clients)
  start = time.perf_counter()
  state_box = [process.initialize()]
  initialize_s = time.perf_counter() - start
  if clock is not None:
    clock.mark('initialized')

  run_tff_dp_round = round_runner(process, prepared.round_inputs, cohort,
                                  state_box, prepared.rounds_per_call)
  # W3: memory after each round (issue 20: flat), resident set sizes in MB.
  track_memory = workload.family == 'W3'

  def run_round(r):
    parts = run_tff_dp_round(r)
    if track_memory:
      parts['worker_rss_mb'] = harness.rss_mb(worker.pid)
      parts['python_rss_mb'] = harness.rss_mb()
    # Here, not after the round of every runner: the time to the first round
    # is tff-dp's own, without the paired floor's first (tracing) rounds.
    if clock is not None and r == 0:
      clock.mark('first_round_done')
    return parts

  runners = {'tff-dp': (run_round, worker.pid)}
  norms = {}
  for implementation in paired_floor:
    run_floor_round, norms[implementation] = floor.round_runner(
        workload, hyper, implementation, mechanism=variant)
    runners[f'floor-{implementation}'] = (run_floor_round, None)
  results = harness.time_interleaved(workload, runners)
  result = results.pop('tff-dp')
  result['initialize_s'] = initialize_s
  if paired_floor:
    paired = {}
    for implementation in paired_floor:
      paired[implementation] = results[f'floor-{implementation}']
      paired[implementation]['update_norms_finite'] = all(
          math.isfinite(n) for n in norms[implementation])
    result['paired_floor'] = {
        'best': min(paired, key=lambda k: paired[k]['seconds']['median']),
        'implementations': paired
    }
  return result


def _variant(row) -> Optional[workloads_lib.Mechanism]:
  return (workloads_lib.Mechanism.from_json(row['variant'])
          if row.get('variant') else None)


def main(argv: list[str]) -> int:
  """Runs the spec's workloads; see the module docstring."""
  args = harness.parse_args(argv)
  spec = harness.read_json(args.spec)
  clock = harness.Clock(spec['spawn_time'])
  clock.mark('imports_done')
  hyper = workloads_lib.HYPERPARAMETERS
  rows = spec['rows']
  result = {
      'engine': 'tff-dp',
      'loop_implementation': tff_dp_loop(),
      'startup': None,
      'workloads': [],
      'workers': []
  }
  log_path = os.path.join(spec['log_dir'], 'tff-dp-worker.log')

  # As tff_dp.program.experiment: write the client files and build the first
  # process, then start the worker.
  first = workloads_lib.Workload.from_json(rows[0]['workload'])
  start = time.perf_counter()
  prepared = prepare(first,
                     DpMechanism(rows[0]['mechanism']),
                     hyper,
                     requested_per_call=rows[0].get('clients_per_call', 0),
                     variant=_variant(rows[0]))
  build_s = time.perf_counter() - start
  clock.mark('process_built')
  try:
    with runtime.local_runtime(log_path=log_path) as worker:
      clock.mark('worker_ready')
      result['workers'].append({
          'pid': worker.pid,
          'log': log_path,
          'started_by': 'tff_dp.execution.runtime.local_runtime'
      })
      harness.write_json(args.out, result)
      for i, row in enumerate(rows):
        workload = workloads_lib.Workload.from_json(row['workload'])
        mechanism = DpMechanism(row['mechanism'])
        if i > 0:
          prepared.close()
          start = time.perf_counter()
          prepared = prepare(workload,
                             mechanism,
                             hyper,
                             requested_per_call=row.get('clients_per_call', 0),
                             variant=_variant(row))
          build_s = time.perf_counter() - start
        timing = run_workload(workload,
                              worker,
                              prepared,
                              clock if i == 0 else None,
                              paired_floor=row.get('paired_floor', ()),
                              hyper=hyper,
                              variant=(_variant(row) or
                                       workloads_lib.DP_FEDAVG))
        timing['build_s'] = build_s
        if i == 0:
          result['startup'] = {'workload': workload.name, **clock.marks}
        result['workloads'].append({
            'workload': workload.to_json(),
            'mechanism': mechanism.value,
            'requested_clients_per_call': row.get('clients_per_call', 0),
            'variant': row['variant']['name'] if row.get('variant') else None,
            'clients_per_call': prepared.clients_per_call,
            **timing
        })
        harness.write_json(args.out, result)
  finally:
    prepared.close()
  result['workers'][0]['alive_after_exit'] = harness.is_running_worker(
      worker.pid)
  harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
