"""FedSGD on the grouped path against TFF's `build_fed_sgd`.

Each simulated client sends its mean gradient over all its examples at the
broadcast weights (summed batch by batch, weighted by the batch size, as
TFF's client does); the DP factory, wrapped by TFF's
`as_weighted_aggregator` in the reference, ignores the weights. At zero
noise the model, metrics and state equal the reference's over three rounds.
Noise: FedSGD's updates are gradients, never zero, so the test subtracts the
zero-noise process's step on the same clients from the noised one; what
remains is the noise, std z C / n (flake rate ~2e-9,
`tests.helpers.grouped.assert_std`).
"""

import functools

import numpy as np
import pytest

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import learning_process
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting

pytestmark = pytest.mark.tff

_FEDSGD = grouped_client_options.ClientOptions(full_gradient=True,
                                               stateless_client_work=True)


@functools.lru_cache(maxsize=None)
def _grouped(*,
             noise_multiplier=0.0,
             clients_per_round=7,
             clip=0.05,
             input_dim=g.D,
             hidden=g.HIDDEN):
  dp = central_dp.settings(noise_multiplier=noise_multiplier,
                           clients_per_round=clients_per_round,
                           clip=clip)
  return g.build_grouped(learning_process.build_dp_aggregator(dp),
                         _FEDSGD,
                         input_dim=input_dim,
                         hidden=hidden,
                         server_momentum=0.0)


def test_zero_noise_grouped_fedsgd_equals_reference(tff_runtime):
  del tff_runtime
  xs, ys = g.population()
  # Clipping reached for some clients (gradients of norm ~0.1-1).
  dp = central_dp.settings(clients_per_round=7, clip=0.3)
  reference = g.reference(learning_process.build_model_aggregator(
      dp=dp, client_weighting=ClientWeighting.UNIFORM),
                          algorithm=Algorithm.FEDSGD)
  grouped = g.build_grouped(learning_process.build_dp_aggregator(dp), _FEDSGD)
  g.assert_equivalent(reference, grouped, xs, ys)


@pytest.mark.slow  # ~11 s (two processes); the shared query's noise std
# is tested on grouped DP-FedAvg in the default tier.
def test_grouped_fedsgd_noise_std(tff_runtime):
  del tff_runtime
  z, n, clip, input_dim = 1.0, 40, 0.5, 784
  noised = g.zero_update_steps(_grouped(noise_multiplier=z,
                                        clients_per_round=n,
                                        clip=clip,
                                        input_dim=input_dim,
                                        hidden=128),
                               input_dim=input_dim,
                               rounds=1)[0]
  exact = g.zero_update_steps(_grouped(clients_per_round=n,
                                       clip=clip,
                                       input_dim=input_dim,
                                       hidden=128),
                              input_dim=input_dim,
                              rounds=1)[0]
  # The clients' gradients are not zero: the difference is the noise alone.
  assert np.max(np.abs(exact)) > 1e-4
  g.assert_std(noised - exact, z * clip / n)
