"""Capped client weights on the grouped path against TFF's weighted FedAvg.

The reference is `build_weighted_fed_avg` with tff-dp's capped-weights
factory around the sanitizing DP factory (`tff_dp.mechanisms.weighting`):
client k's update times min(n_k / n_cap, 1), n_k the examples it processed
(TFF's NUM_EXAMPLES weight, over all local epochs), then sanitized, clipped
and summed. The grouped path scales each simulated client's update the same
way before its sanitizing and clipping, so the sensitivity is still one
clipped update. Cap 6 over 2 epochs: the clients of 1 and 2 examples weigh
1/3 and 2/3, the others 1. Noise: zero updates, step std z C / n (flake
rate ~2e-9, `tests.helpers.grouped.assert_std`).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import learning_process
from tff_dp.config import ClientWeighting

pytestmark = pytest.mark.tff

_CAP = 6.0


def test_capped_weight_scale():
  update = [tf.constant([3.0, -6.0])]
  for examples, factor in ((3, 0.5), (12, 1.0), (0, 0.0)):
    out = grouped_client_options.capped_weight_scale(
        update, tf.constant(examples, tf.int64), _CAP)
    np.testing.assert_allclose(out[0], factor * np.array([3.0, -6.0]))
  assert grouped_client_options.capped_weight_scale(update, 3, None) is update


@g.PATHS
def test_zero_noise_grouped_capped_weights_equal_reference(
    tff_runtime, monkeypatch, max_client_size):
  del tff_runtime
  xs, ys = g.population()
  # Clip not reached, so that the weights show in the result.
  dp = central_dp.settings(clients_per_round=7, clip=1e6)
  reference = g.reference(
      learning_process.build_model_aggregator(
          dp=dp, client_weighting=ClientWeighting.CAPPED, weight_cap=_CAP))
  traced = g.count_vectorized(monkeypatch)
  grouped = g.build_grouped(
      learning_process.build_dp_aggregator(dp),
      grouped_client_options.ClientOptions(weight_cap=_CAP),
      max_client_size=max_client_size)
  g.assert_path(traced, max_client_size)
  g.assert_equivalent(reference, grouped, xs, ys)


# With zero updates (client lr 0) the weights cannot act: this is the
# shared query's noise std, tested in the default tier on grouped DP-FedAvg
# (test_grouped_fedavg.py::test_noise_std_on_zero_updates).
@pytest.mark.slow
def test_grouped_capped_weights_noise_std(tff_runtime):
  del tff_runtime
  z, n, clip, input_dim = 1.0, 40, 0.5, 784
  dp = central_dp.settings(noise_multiplier=z, clients_per_round=n, clip=clip)
  process = g.build_grouped(
      learning_process.build_dp_aggregator(dp),
      grouped_client_options.ClientOptions(weight_cap=_CAP),
      input_dim=input_dim,
      hidden=128,
      client_lr=0.0,
      server_momentum=0.0)
  steps = g.zero_update_steps(process, input_dim=input_dim)
  g.assert_std(steps[0], z * clip / n)
  assert not np.allclose(steps[0][:1000], steps[1][:1000])
