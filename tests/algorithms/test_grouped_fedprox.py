"""FedProx on the grouped path against TFF's `build_unweighted_fed_prox`.

Each simulated client adds TFF's proximal term to every batch gradient
(`tff_dp.algorithms.grouped_client_options.proximal_gradients`) and its
client work has no state, as TFF's; clipping and noise are DP-FedAvg's. At
zero noise the model, metrics and state equal the reference's over three
rounds; with noise and zero updates the step's std is z C / n (flake rate
~2e-9, `tests.helpers.grouped.assert_std`).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import learning_process
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting

pytestmark = pytest.mark.tff

# Large enough that the proximal term changes the result well beyond the
# tolerance (TFF 0.87's term: see `proximal_gradients`).
_MU = 1.0


def _options(mu=_MU):
  return grouped_client_options.ClientOptions(proximal_strength=mu,
                                              stateless_client_work=True)


def test_proximal_term_is_tffs():
  # TFF 0.87's proximal_client_work: gradient + mu * (initial - current).
  grads = [tf.constant([1.0, -2.0])]
  out = grouped_client_options.proximal_gradients(grads,
                                                  [tf.constant([3.0, 0.0])],
                                                  [tf.constant([1.0, 1.0])],
                                                  strength=0.5)
  np.testing.assert_allclose(out[0], [0.0, -1.5])
  assert grouped_client_options.proximal_gradients(grads,
                                                   grads,
                                                   grads,
                                                   strength=0.0) is grads


@g.PATHS
def test_zero_noise_grouped_fedprox_equals_reference(tff_runtime, monkeypatch,
                                                     max_client_size):
  del tff_runtime
  xs, ys = g.population()
  dp = central_dp.settings(clients_per_round=7, clip=0.05)
  reference = g.reference(learning_process.build_model_aggregator(
      dp=dp, client_weighting=ClientWeighting.UNIFORM),
                          algorithm=Algorithm.FEDPROX,
                          proximal_strength=_MU)
  traced = g.count_vectorized(monkeypatch)
  grouped = g.build_grouped(learning_process.build_dp_aggregator(dp),
                            _options(),
                            max_client_size=max_client_size)
  g.assert_path(traced, max_client_size)
  g.assert_equivalent(reference, grouped, xs, ys)


# With zero updates (client lr 0) the proximal term cannot act: this is the
# shared query's noise std, tested in the default tier on grouped DP-FedAvg
# (test_grouped_fedavg.py::test_noise_std_on_zero_updates).
@pytest.mark.slow
def test_grouped_fedprox_noise_std(tff_runtime):
  del tff_runtime
  z, n, clip, input_dim = 1.0, 40, 0.5, 784
  dp = central_dp.settings(noise_multiplier=z, clients_per_round=n, clip=clip)
  process = g.build_grouped(learning_process.build_dp_aggregator(dp),
                            _options(),
                            input_dim=input_dim,
                            hidden=128,
                            client_lr=0.0,
                            server_momentum=0.0)
  steps = g.zero_update_steps(process, input_dim=input_dim)
  g.assert_std(steps[0], z * clip / n)
  assert not np.allclose(steps[0][:1000], steps[1][:1000])
