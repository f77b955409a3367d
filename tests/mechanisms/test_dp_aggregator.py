"""The DP model aggregator: exact with zero noise, the right noise otherwise.

Statistical checks follow TF Privacy's gaussian_query_test idiom with a stated
flake rate: the sample std of d i.i.d. normal draws has relative standard error
~1/sqrt(2d); with d = 10^6 a 6-standard-error band is +-0.42% (two-sided flake
rate ~2e-9), tight enough to catch noise scaled by 0.9 or 0.5, or a noise std
computed per layer or divided by the wrong count.
"""

import collections
import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tests.helpers import central_dp
from tff_dp.algorithms import learning_process
from tff_dp.config import DpMechanism

pytestmark = pytest.mark.tff

_DIM = 1_000_000


def _process(settings, value_type):
  factory = learning_process.build_dp_aggregator(settings)
  return factory.create(value_type)


def _assert_std(sample: np.ndarray, expected: float) -> None:
  n = sample.size
  std = float(np.std(sample))
  band = 6.0 / math.sqrt(2 * n)
  assert abs(std / expected - 1.0) < band, (std, expected, band)
  assert abs(float(np.mean(sample))) < 6.0 * expected / math.sqrt(n)


def test_zero_noise_is_exact_clipped_sum_over_clients_per_round(tff_runtime):
  del tff_runtime
  settings = central_dp.settings(DpMechanism.GAUSSIAN_FIXED,
                                 noise_multiplier=0.0,
                                 clients_per_round=3,
                                 clip=1.0)
  value_type = tff.to_type(
      collections.OrderedDict(a=tff.TensorType(np.float32, [2]),
                              b=tff.TensorType(np.float32, [2])))
  process = _process(settings, value_type)
  # Client 1: global L2 norm 5 across BOTH tensors -> scaled by 1/5. A per-
  # tensor clip would give [1, 0] and [0, 1] instead.
  big = {
      'a': np.array([3.0, 0.0], np.float32),
      'b': np.array([0.0, 4.0], np.float32)
  }
  # Client 2: norm 0.5 < clip -> unchanged.
  small = {
      'a': np.array([0.3, 0.0], np.float32),
      'b': np.array([0.0, 0.4], np.float32)
  }
  result = process.next(process.initialize(), [big, small]).result
  # Divided by clients_per_round = 3, not by the 2 clients that reported.
  np.testing.assert_allclose(result['a'], [(0.6 + 0.3) / 3, 0.0], rtol=1e-6)
  np.testing.assert_allclose(result['b'], [0.0, (0.8 + 0.4) / 3], rtol=1e-6)


def test_fixed_noise_std_is_z_clip_over_clients_per_round(tff_runtime):
  del tff_runtime
  z, clip, n = 1.3, 0.7, 4
  settings = central_dp.settings(DpMechanism.GAUSSIAN_FIXED,
                                 noise_multiplier=z,
                                 clients_per_round=n,
                                 clip=clip)
  process = _process(settings, tff.TensorType(np.float32, [_DIM]))
  zeros = np.zeros(_DIM, np.float32)
  state = process.initialize()
  first = process.next(state, [zeros, zeros])
  _assert_std(first.result, z * clip / n)
  # Fresh noise every round (TF Privacy draws unseeded): identical draws
  # across rounds would average out nothing and break the analysis.
  second = process.next(first.state, [zeros, zeros])
  assert not np.allclose(first.result[:1000], second.result[:1000])


def test_adaptive_noise_std_uses_tff_split_of_nominal_z(tff_runtime):
  del tff_runtime
  z, n, initial_clip = 1.0, 40, 0.25
  settings = central_dp.settings(DpMechanism.GAUSSIAN_ADAPTIVE,
                                 noise_multiplier=z,
                                 clients_per_round=n,
                                 clip=1.0,
                                 initial_clip=initial_clip)
  process = _process(settings, tff.TensorType(np.float32, [_DIM]))
  zeros = np.zeros(_DIM, np.float32)
  result = process.next(process.initialize(), [zeros]).result
  # TFF spends part of z on the clipped-count query (std 0.05 n per count,
  # records in {-1/2, 1/2}) and raises the value noise so that the two
  # Gaussians compose to one with multiplier z (design notes, section 2).
  sigma_b = 0.05 * n
  value_z = (z**-2 - (2 * sigma_b)**-2)**-0.5
  _assert_std(result, value_z * initial_clip / n)
