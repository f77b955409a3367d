"""Peer engine: Flower 1.42 (Ray simulation, server-side DP wrapper) on the benchmark's workloads.

Runs inside Flower's own environment (`benchmarks.peer_envs`):

  <flower env>/bin/python -m benchmarks.peer_flower --spec=SPEC.json --out=RESULT.json

A round is one Flower server round of `flwr.simulation.run_simulation` on its
Ray backend (2 CPUs, one CPU per client, so two clients train at a time; each
client process uses one PyTorch thread): every client of the workload (the
cohort is the population; `fraction_fit=1`) receives the global weights,
trains them with the benchmark's local SGD (`benchmarks.peer_torch.local_sgd`:
shuffled mini-batches, the workload's epochs and batch size) and returns them;
the server's `DifferentialPrivacyServerSideFixedClipping` clips each update to
L2 norm C, the wrapped `FedAvgM` averages them and applies server SGD with
momentum, and then the wrapper adds Gaussian noise of std z*C/m to the new
weights. That is the one difference in what the round computes: Flower's
wrapper noises AFTER the server optimizer (tff-dp, pfl and the floor noise the
average update before it). Seconds per round are the times between the
server-side `evaluate_fn` calls Flower makes after each round (the function
evaluates nothing).
"""

import functools
import sys
import time
from typing import Any

from benchmarks import harness
from benchmarks import peer_torch
from benchmarks import stats
from benchmarks import workloads as workloads_lib


@functools.lru_cache(maxsize=2)
def _data(workload: workloads_lib.Workload) -> workloads_lib.SyntheticData:
  # Each Ray actor builds the workload's data once.
  return workloads_lib.synthetic_data(workload)


def _client_app(workload: workloads_lib.Workload):
  """A ClientApp whose clients train the workload's model on their slice."""
  # pylint: disable=g-import-not-at-top
  from flwr.client import ClientApp
  from flwr.client import NumPyClient
  import torch

  # pylint: enable=g-import-not-at-top

  class Client(NumPyClient):

    def __init__(self, client: int):
      self.client = client

    def fit(self, parameters, config):
      torch.set_num_threads(1)
      module = peer_torch.build_model(workload.model.value)
      peer_torch.set_weights(module, parameters)
      data = _data(workload)
      peer_torch.local_sgd(module,
                           data.x[self.client],
                           data.y[self.client],
                           workload=workload,
                           round_num=int(config['round']),
                           client=self.client)
      return peer_torch.get_weights(module), workload.examples_per_client, {}

  def client_fn(context):
    return Client(int(context.node_config['partition-id'])).to_client()

  return ClientApp(client_fn=client_fn)


def _server_app(workload: workloads_lib.Workload, ends: list[float]):
  """A ServerApp running the workload's rounds; appends each round's end."""
  # pylint: disable=g-import-not-at-top
  from flwr.common import ndarrays_to_parameters
  from flwr.server import ServerAppComponents
  from flwr.server import ServerConfig
  from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping
  from flwr.server.strategy import FedAvgM
  from flwr.serverapp import ServerApp
  # pylint: enable=g-import-not-at-top
  hp = workloads_lib.HYPERPARAMETERS
  initial = peer_torch.get_weights(peer_torch.build_model(workload.model.value))

  def evaluate_fn(server_round, parameters, config):
    del server_round, parameters, config
    ends.append((time.perf_counter(), time.time()))
    return None

  strategy = FedAvgM(
      fraction_fit=1.0,
      fraction_evaluate=0.0,
      min_fit_clients=workload.clients,
      min_available_clients=workload.clients,
      evaluate_fn=evaluate_fn,
      on_fit_config_fn=lambda server_round: {'round': server_round},
      initial_parameters=ndarrays_to_parameters(initial),
      server_learning_rate=hp.server_learning_rate,
      server_momentum=hp.server_momentum)
  dp_strategy = DifferentialPrivacyServerSideFixedClipping(
      strategy,
      noise_multiplier=hp.noise_multiplier,
      clipping_norm=hp.clip,
      num_sampled_clients=workload.clients)
  rounds = workload.warmup_rounds + workload.timed_rounds

  def server_fn(context):
    del context
    return ServerAppComponents(strategy=dp_strategy,
                               config=ServerConfig(num_rounds=rounds))

  return ServerApp(server_fn=server_fn)


def run_workload(workload: workloads_lib.Workload) -> dict[str, Any]:
  """Runs the workload's rounds in Flower's simulation; per-round times."""
  from flwr.simulation import run_simulation  # pylint: disable=g-import-not-at-top
  ends: list[tuple[float, float]] = []
  run_simulation(server_app=_server_app(workload, ends),
                 client_app=_client_app(workload),
                 num_supernodes=workload.clients,
                 backend_config={
                     'client_resources': {
                         'num_cpus': 1,
                         'num_gpus': 0.0
                     },
                     'init_args': {
                         'num_cpus': 2,
                         'include_dashboard': False
                     },
                 })
  # ends[0] is evaluate_fn on the initial weights (round 0), before round 1.
  seconds = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
  return {
      'parameters':
          peer_torch.parameter_count(
              peer_torch.build_model(workload.model.value)),
      'first_round_s':
          seconds[0],
      'first_round_wall':
          ends[1][1],
      'seconds':
          stats.summarize(seconds[workload.warmup_rounds:]),
  }


def main(argv: list[str]) -> int:
  return harness.run_peer_engine(argv, 'flower', run_workload)


if __name__ == '__main__':
  # Ray pickles the client app's functions by module name; run them from the
  # importable module, not from __main__, so the actors can load them.
  from benchmarks import peer_flower  # pylint: disable=g-import-not-at-top
  sys.exit(peer_flower.main(sys.argv))
