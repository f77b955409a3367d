"""Example-level DP-SGD on the grouped path against `example_dp`'s process.

Each simulated client runs the reference's Poisson-sampled DP-SGD
(`tff_dp.algorithms.grouped_example_dp`). The sampling is secret, so the
zero-noise equivalence uses an expected batch size above every client's
size (q = 1: every example in every step), one local epoch of data (the
reference's dataset; the grouped client uses its distinct examples), with
the per-example clip reached, alone and under central DP. Noise: one
DP-SGD step at q = 1 is (lr / B) (clipped sum + noise), so the noised step
minus the zero-noise step on the same clients is the clients' summed noise:
std (lr / B) sigma C sqrt(3) / n for 3 clients, two of them in one group
(a shared seed would show as sqrt(5/3) too large). Flake rate ~2e-9 per
check (`tests.helpers.grouped.assert_std`).
"""

import functools
import math

import pytest

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import example_dp
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models

pytestmark = pytest.mark.tff

# Above every client's size (at most 7): q = 1.
_BATCH = 8


def _settings(*, noise_multiplier=0.0, clip=0.1, local_steps=3, lr=g.CLIENT_LR):
  return example_dp.DpSgdSettings(learning_rate=lr,
                                  noise_multiplier=noise_multiplier,
                                  clip=clip,
                                  expected_batch_size=_BATCH,
                                  local_steps=local_steps)


def _reference(settings, central=None):
  return example_dp.build_example_dp_fed_avg(
      model_fn=g.model_fn(),
      loss_fn=models.loss_fn,
      client_learning_rate=settings.learning_rate,
      server_optimizer=g.server_optimizer(),
      noise_multiplier=settings.noise_multiplier,
      clip=settings.clip,
      expected_batch_size=settings.expected_batch_size,
      local_steps=settings.local_steps,
      model_aggregator=central,
      clients_per_round=None if central else 7,
      metrics_aggregator=learning_process.no_client_metrics)


# ~11 s each; the central factory under client noise is also in
# test_grouped_local_dp.py's default tier.
@pytest.mark.parametrize(
    'central_clip', [None, pytest.param(0.05, marks=pytest.mark.slow)],
    ids=['example_dp_alone', 'with_central_dp'])
def test_zero_noise_grouped_example_dp_equals_reference(tff_runtime,
                                                        central_clip):
  del tff_runtime
  xs, ys = g.population()
  settings = _settings()
  dp = (None if central_clip is None else central_dp.settings(
      clients_per_round=7, clip=central_clip))
  reference = _reference(
      settings,
      None if dp is None else learning_process.sanitizing_dp_aggregator(dp))
  grouped = g.build_grouped(
      None if dp is None else learning_process.build_dp_aggregator(dp),
      example_dp_settings=settings,
      clients_per_round=None if dp else 7)
  _, outputs = g.assert_equivalent(reference,
                                   grouped,
                                   xs,
                                   ys,
                                   reference_epochs=1)
  assert not outputs[0].metrics['client_work']['train']


@functools.lru_cache(maxsize=None)
def _one_step_process(noise_multiplier, n):
  settings = _settings(noise_multiplier=noise_multiplier,
                       clip=0.5,
                       local_steps=1,
                       lr=1.0)
  return g.build_grouped(None,
                         input_dim=784,
                         hidden=128,
                         server_momentum=0.0,
                         example_dp_settings=settings,
                         clients_per_round=n)


def test_grouped_example_dp_noise_is_independent_per_client(tff_runtime):
  del tff_runtime
  sigma, n = 1.0, 40
  noised = g.zero_update_steps(_one_step_process(sigma, n),
                               input_dim=784,
                               rounds=1)[0]
  exact = g.zero_update_steps(_one_step_process(0.0, n),
                              input_dim=784,
                              rounds=1)[0]
  g.assert_std(noised - exact, (1.0 / _BATCH) * sigma * 0.5 * math.sqrt(3) / n)
