"""Faults during training: non-finite or absurd updates, and client dropout."""

import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tests.helpers import central_dp
from tff_dp.algorithms import learning_process
from tff_dp.cohorts import sampling
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism


def _aggregator(*,
                noise_multiplier=0.0,
                clients_per_round=4,
                clip=1.0,
                mechanism=DpMechanism.GAUSSIAN_FIXED):
  dp = central_dp.settings(mechanism,
                           noise_multiplier=noise_multiplier,
                           clients_per_round=clients_per_round,
                           clip=clip,
                           initial_clip=clip)
  return learning_process.build_model_aggregator(
      dp=dp, client_weighting=ClientWeighting.UNIFORM)


@pytest.mark.tff
@pytest.mark.parametrize(
    'mechanism', [DpMechanism.GAUSSIAN_FIXED, DpMechanism.GAUSSIAN_ADAPTIVE])
def test_non_finite_and_absurd_updates_are_neutralized(tff_runtime, mechanism):
  del tff_runtime
  process = _aggregator(mechanism=mechanism).create(
      tff.TensorType(np.float32, [3]))
  good = np.array([0.3, 0.0, 0.4], np.float32)  # norm 0.5 < clip 1
  huge = np.array([1e20, 0.0, 0.0], np.float32)  # norm^2 overflows
  clients = [
      good,
      np.array([np.nan, 1.0, 1.0], np.float32),
      np.array([np.inf, 0.0, 0.0], np.float32),
      np.array([-np.inf, 0.0, 0.0], np.float32),
      huge,
  ]
  result = process.next(process.initialize(), clients).result
  assert np.all(np.isfinite(result))
  # Non-finite clients contribute zero; the absurd one is clipped to norm 1
  # in its own direction, exactly as an infinitely precise clip would.
  np.testing.assert_allclose(result, (good + [1.0, 0.0, 0.0]) / 4, atol=1e-6)


@pytest.mark.tff
def test_round_where_every_client_dropped_still_adds_planned_noise(tff_runtime):
  # All sampled clients dropped: the round releases noise with the planned
  # std z * C / clients_per_round (6 SE band at d = 1e6: +-0.42%, flake rate
  # ~2e-9), and it is charged like any other round.
  del tff_runtime
  z, clip, n, d = 1.1, 0.8, 5, 1_000_000
  process = _aggregator(noise_multiplier=z, clients_per_round=n,
                        clip=clip).create(tff.TensorType(np.float32, [d]))
  result = process.next(process.initialize(), []).result
  expected = z * clip / n
  assert abs(np.std(result) / expected - 1) < 6 / math.sqrt(2 * d)


def test_dropout_rate_and_reproducibility():
  cohort = np.arange(1000, dtype=np.int64)
  kept = [
      len(
          sampling.reporting_clients(cohort,
                                     dropout_rate=0.3,
                                     seed=1,
                                     round_num=r)) for r in range(200)
  ]
  # Mean kept fraction 0.7; 6 SE over 200 rounds of 1000 Bernoulli draws.
  se = math.sqrt(0.3 * 0.7 / (200 * 1000))
  assert abs(np.mean(kept) / 1000 - 0.7) < 6 * se
  first = sampling.reporting_clients(cohort,
                                     dropout_rate=0.3,
                                     seed=1,
                                     round_num=5)
  again = sampling.reporting_clients(cohort,
                                     dropout_rate=0.3,
                                     seed=1,
                                     round_num=5)
  np.testing.assert_array_equal(first, again)
  assert set(first) <= set(cohort)
  np.testing.assert_array_equal(
      sampling.reporting_clients(cohort, dropout_rate=0.0, seed=1, round_num=5),
      cohort)
  with pytest.raises(ValueError):
    sampling.reporting_clients(cohort, dropout_rate=1.0, seed=1, round_num=1)
