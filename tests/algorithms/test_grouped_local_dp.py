"""Local DP on the grouped path against the reference's `LocalDpFactory`.

The reference (TFF's FedAvg with `tff_dp.mechanisms.local_dp`'s factory and
`no_client_metrics`) randomizes each client's update in its own TFF call;
the grouped path runs the same randomizer per simulated client inside the
group (`tff_dp.algorithms.grouped_local_dp`). At zero noise (the clips
reached) the model and state equal the reference's, for local DP alone
(Laplace: L1 clip, sum over the fixed count) and for local plus central
noise (Gaussian: L2 clip, then the central factory's sanitize and clip); no
training metric is released. With noise and zero updates, the step is the
sum of the clients' independent noises (plus the central noise) over n: a
group of two clients sharing a seed would show as a std sqrt(5/3) times too
large. Flake rates: ~2e-9 per check (6 standard errors of the sample std,
whose relative SE is sqrt((2 + excess kurtosis) / 4N) over N draws).
"""

import functools
import math

import numpy as np
import pytest

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import learning_process
from tff_dp.config import ClientWeighting
from tff_dp.mechanisms import local_dp

pytestmark = pytest.mark.tff

_GAUSSIAN = local_dp.LocalMechanism.GAUSSIAN
_LAPLACE = local_dp.LocalMechanism.LAPLACE


def _local(mechanism,
           *,
           clip,
           noise_scale=0.0,
           clients_per_round=7,
           central=None):
  return local_dp.LocalDpFactory(mechanism=mechanism,
                                 clip=clip,
                                 noise_scale=noise_scale,
                                 clients_per_round=clients_per_round,
                                 central_factory=central,
                                 _allow_zero_noise=noise_scale == 0)


def _reference(local):
  return g.reference(learning_process.build_model_aggregator(
      dp=None, client_weighting=ClientWeighting.UNIFORM, unweighted=local),
                     metrics_aggregator=learning_process.no_client_metrics)


@functools.lru_cache(maxsize=None)
def _noise_process(mechanism, noise_scale, central_z=None, central_clip=10.0):
  """A grouped process on the 784-128-3 MLP whose updates are all zero."""
  n = 40
  dp = None if central_z is None else central_dp.settings(
      noise_multiplier=central_z, clients_per_round=n, clip=central_clip)
  local = _local(mechanism,
                 clip=1.0,
                 noise_scale=noise_scale,
                 clients_per_round=n)
  return g.build_grouped(
      None if dp is None else learning_process.build_dp_aggregator(dp),
      input_dim=784,
      hidden=128,
      client_lr=0.0,
      server_momentum=0.0,
      local_dp_factory=local), n


def _assert_no_metrics(outputs):
  for output in outputs:
    assert not output.metrics['client_work']['train']


def test_zero_noise_grouped_local_laplace_equals_reference(
    tff_runtime, monkeypatch):
  del tff_runtime
  xs, ys = g.population()
  # An L1 clip that binds (the updates' L1 norms are ~0.1-1).
  reference = _reference(_local(_LAPLACE, clip=0.05))
  traced = g.count_vectorized(monkeypatch)
  grouped = g.build_grouped(None, local_dp_factory=_local(_LAPLACE, clip=0.05))
  # The helper's default is the program's MLP path (the while loop).
  g.assert_path(traced, None)
  _, ref_outputs = g.assert_equivalent(reference, grouped, xs, ys)
  _assert_no_metrics(ref_outputs)
  _, outputs = g.run(grouped, lambda r, c: g.groups(xs, ys, r, c, group_size=3))
  _assert_no_metrics(outputs)


@g.PATHS
def test_zero_noise_grouped_client_plus_server_equals_reference(
    tff_runtime, monkeypatch, max_client_size):
  del tff_runtime
  xs, ys = g.population()
  dp = central_dp.settings(clients_per_round=7, clip=0.03)
  reference = _reference(
      _local(_GAUSSIAN,
             clip=0.05,
             central=learning_process.sanitizing_dp_aggregator(dp)))
  traced = g.count_vectorized(monkeypatch)
  grouped = g.build_grouped(learning_process.build_dp_aggregator(dp),
                            local_dp_factory=_local(_GAUSSIAN, clip=0.05),
                            max_client_size=max_client_size)
  g.assert_path(traced, max_client_size)
  g.assert_equivalent(reference, grouped, xs, ys)


def test_grouped_local_gaussian_noise_is_independent_per_client(tff_runtime):
  del tff_runtime
  sigma = 0.5
  process, n = _noise_process(_GAUSSIAN, sigma)
  # Clients 0 and 1 share a group (zero_update_steps: groups of 2).
  steps = g.zero_update_steps(process, input_dim=784)
  g.assert_std(steps[0], math.sqrt(3) * sigma / n)
  assert not np.allclose(steps[0][:1000], steps[1][:1000])


def test_grouped_local_laplace_noise_std(tff_runtime):
  del tff_runtime
  b = 0.4
  process, n = _noise_process(_LAPLACE, b)
  step = g.zero_update_steps(process, input_dim=784, rounds=1)[0]
  # Sum of 3 Laplace(b): variance 6 b^2, excess kurtosis 3 / 3 = 1.
  expected = math.sqrt(6) * b / n
  band = 6.0 * math.sqrt((2 + 1) / (4 * step.size))
  assert abs(float(np.std(step)) / expected - 1.0) < band
  assert abs(float(np.mean(step))) < 6.0 * expected / math.sqrt(step.size)


def test_grouped_client_plus_server_noise_std(tff_runtime):
  del tff_runtime
  # Local noise of norm ~0.01 * sqrt(d) ~ 3 < the central clip 10, so the
  # central clip does not bind; the central std is 0.001 * 10.
  sigma, central_z, central_clip = 0.01, 0.001, 10.0
  process, n = _noise_process(_GAUSSIAN, sigma, central_z, central_clip)
  step = g.zero_update_steps(process, input_dim=784, rounds=1)[0]
  g.assert_std(step,
               math.sqrt(3 * sigma**2 + (central_z * central_clip)**2) / n)
