"""Peer engine: pfl (Apple's pfl-research 0.6, PyTorch) on the benchmark's workloads.

Runs inside pfl's own environment (`benchmarks.peer_envs`):

  <pfl env>/bin/python -m benchmarks.peer_pfl --spec=SPEC.json --out=RESULT.json

A round is one pfl central iteration of `FederatedAveraging` with its
`SimulatedBackend` (one process, no distributed workers): every client of the
workload (the cohort is the population, as in the other engines) trains its
own copy of the model with pfl's local SGD (`NNTrainHyperParams`: the
workload's epochs and batch size, the benchmark's client learning rate), its
update is weighted by user (`WeightByUser`: the average divides by the cohort
size, as tff-dp divides by the fixed clients_per_round), clipped to L2 norm C
and, after the sum, Gaussian noise of std z*C is added
(`CentrallyAppliedPrivacyMechanism(GaussianMechanism(C, z))`), then the
central optimizer (SGD with the benchmark's server learning rate and
momentum) applies the average. No evaluation runs.

Differences from tff-dp's round that the report states: pfl iterates a
client's examples in their stored order each epoch (no local shuffle), and it
noises in float32 PyTorch on the CPU as tff-dp does in TensorFlow. Seconds per
round are the times between pfl's `after_central_iteration` callbacks.
"""

import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks import harness
from benchmarks import peer_torch
from benchmarks import stats
from benchmarks import workloads as workloads_lib


class _RoundClock:
  """A pfl callback recording when each central iteration ends."""

  def __init__(self):
    from pfl.callback import base  # pylint: disable=g-import-not-at-top
    outer = self

    class Callback(base.TrainingProcessCallback):

      def on_train_begin(self, *, model):
        outer.ends.append(time.perf_counter())
        from pfl.metrics import Metrics  # pylint: disable=g-import-not-at-top
        return Metrics()

      def after_central_iteration(self, aggregate_metrics, model, *,
                                  central_iteration):
        outer.ends.append(time.perf_counter())
        if outer.first_round_wall is None:
          outer.first_round_wall = time.time()
        from pfl.metrics import Metrics  # pylint: disable=g-import-not-at-top
        return False, Metrics()

    self.ends: list[float] = []
    self.first_round_wall = None
    self.callback = Callback()


def run_workload(workload: workloads_lib.Workload) -> dict[str, Any]:
  """Trains the workload's rounds with pfl; returns per-round times."""
  # pylint: disable=g-import-not-at-top
  from pfl.aggregate.simulate import SimulatedBackend
  from pfl.aggregate.weighting import WeightByUser
  from pfl.algorithm import FederatedAveraging
  from pfl.algorithm import NNAlgorithmParams
  from pfl.data.federated_dataset import FederatedDataset
  from pfl.data.sampling import get_user_sampler
  from pfl.hyperparam import NNTrainHyperParams
  from pfl.model.pytorch import PyTorchModel
  from pfl.privacy import CentrallyAppliedPrivacyMechanism
  from pfl.privacy import GaussianMechanism
  # pylint: enable=g-import-not-at-top
  hp = workloads_lib.HYPERPARAMETERS
  data = workloads_lib.synthetic_data(workload)
  users = {
      i: [data.x[i], data.y[i].astype(np.int64)] for i in range(workload.clients)
  }
  sampler = get_user_sampler('minimize_reuse', list(users))
  training = FederatedDataset.from_slices(users, sampler)
  module = peer_torch.build_model(workload.model.value)
  model = PyTorchModel(model=module,
                       local_optimizer_create=torch.optim.SGD,
                       central_optimizer=torch.optim.SGD(
                           module.parameters(),
                           lr=hp.server_learning_rate,
                           momentum=hp.server_momentum))
  privacy = CentrallyAppliedPrivacyMechanism(
      GaussianMechanism(clipping_bound=hp.clip,
                        relative_noise_stddev=hp.noise_multiplier))
  backend = SimulatedBackend(training_data=training,
                             val_data=training,
                             postprocessors=[WeightByUser(), privacy])
  rounds = workload.warmup_rounds + workload.timed_rounds
  clock = _RoundClock()
  FederatedAveraging().run(
      algorithm_params=NNAlgorithmParams(central_num_iterations=rounds,
                                         evaluation_frequency=rounds + 1,
                                         train_cohort_size=workload.clients,
                                         val_cohort_size=None),
      backend=backend,
      model=model,
      model_train_params=NNTrainHyperParams(
          local_learning_rate=hp.client_learning_rate,
          local_num_epochs=workload.epochs,
          local_batch_size=workload.batch_size),
      callbacks=[clock.callback],
      # The console platform prints every metric each round; tff-dp's timed
      # round releases nothing either.
      send_metrics_to_platform=False)
  seconds = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
  return {
      'parameters': peer_torch.parameter_count(module),
      'first_round_s': seconds[0],
      'first_round_wall': clock.first_round_wall,
      'seconds': stats.summarize(seconds[workload.warmup_rounds:]),
  }


def main(argv: list[str]) -> int:
  return harness.run_peer_engine(argv, 'pfl', run_workload)


if __name__ == '__main__':
  sys.exit(main(sys.argv))
