"""Canaries inside the DP query: exactly one more clipped client each.

With zero noise every assertion is exact: the wrapped query's result is the
clipped sum of the real clients plus each inserted canary's direction
clipped to the round's clip, over the fixed denominator; a non-inserted
canary adds nothing (add/remove) or a zero update (which still counts for
the adaptive clip's quantile estimate).
"""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tests.helpers import central_dp
from tff_dp.algorithms import learning_process
from tff_dp.audit import canary_plan
from tff_dp.config import DpMechanism
from tff_dp.mechanisms import canaries
from tff_dp.privacy import run_secrets

pytestmark = pytest.mark.tff

_KEY = (12345, -678)


def _factory(mechanism, schedule, *, clip=1.0, n=4, norm=1e3):
  settings = central_dp.settings(mechanism, clients_per_round=n, clip=clip)
  return canaries.with_canaries(learning_process.build_dp_aggregator(settings),
                                key=_KEY,
                                schedule=schedule,
                                norm=norm)


def _type():
  return tff.to_type(
      collections.OrderedDict(a=tff.TensorType(np.float32, [3]),
                              b=tff.TensorType(np.float32, [2, 2])))


def _flat(value):
  return np.concatenate([np.ravel(value['a']), np.ravel(value['b'])])


def _client(values):
  values = np.asarray(values, np.float32)
  return collections.OrderedDict(a=values[:3], b=values[3:].reshape(2, 2))


def test_directions_are_unit_secret_keyed_and_those_of_the_computation(
    tff_runtime):
  del tff_runtime
  d = canaries.directions(_KEY, 3, 7)
  assert d.shape == (3, 7)
  np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-6)
  assert not np.allclose(d[0], d[1])
  other = canaries.directions(run_secrets.new_noise_key(), 3, 7)
  assert not np.allclose(d, other)
  # Round 1 inserts canary 2 alone, no real client: the result is its
  # direction clipped to norm 1 over n = 4.
  schedule = np.array([[2], [canary_plan.PADDING]], np.int32)
  process = _factory(DpMechanism.GAUSSIAN_FIXED, schedule).create(_type())
  zero = _client(np.zeros(7))
  result = _flat(process.next(process.initialize(), [zero]).result)
  np.testing.assert_allclose(result, d[2] / 4, atol=1e-6)


def test_fixed_clip_sum_includes_inserted_canaries_only_in_their_rounds(
    tff_runtime):
  del tff_runtime
  schedule = np.array([[0, 1], [1, canary_plan.ZERO_UPDATE],
                       [canary_plan.PADDING, canary_plan.PADDING]], np.int32)
  process = _factory(DpMechanism.GAUSSIAN_FIXED, schedule).create(_type())
  d = canaries.directions(_KEY, 2, 7)
  real = [_client(np.full(7, 3.0)), _client(np.arange(7) * 0.01)]
  clipped = [
      np.full(7, 3.0) / np.linalg.norm(np.full(7, 3.0)),
      np.arange(7) * 0.01
  ]
  state = process.initialize()
  expected = [(clipped[0] + clipped[1] + d[0] + d[1]) / 4,
              (clipped[0] + clipped[1] + d[1]) / 4,
              (clipped[0] + clipped[1]) / 4, (clipped[0] + clipped[1]) / 4]
  for want in expected:
    output = process.next(state, real)
    state = output.state
    np.testing.assert_allclose(_flat(output.result), want, atol=1e-5)


def test_adaptive_clip_counts_canaries_as_clients(tff_runtime):
  """Inserted canaries are above the clip, zero updates below: the clip's
  quantile estimate moves as with real clients of those norms."""
  del tff_runtime
  settings = central_dp.settings(DpMechanism.GAUSSIAN_ADAPTIVE,
                                 clients_per_round=4,
                                 clip=1.0,
                                 initial_clip=0.5)
  plain = learning_process.build_dp_aggregator(settings).create(_type())
  schedule = np.array([[0, canary_plan.ZERO_UPDATE], [canary_plan.PADDING] * 2],
                      np.int32)
  wrapped = canaries.with_canaries(
      learning_process.build_dp_aggregator(settings),
      key=_KEY,
      schedule=schedule,
      norm=1e3).create(_type())
  d = canaries.directions(_KEY, 1, 7)[0]
  small = _client(np.full(7, 0.01))
  # The same round as real clients: the small one, a huge one along d, and
  # a zero update.
  want = plain.next(
      plain.initialize(),
      [small, _client(1e3 * d), _client(np.zeros(7))])
  got = wrapped.next(wrapped.initialize(), [small])
  np.testing.assert_allclose(_flat(got.result), _flat(want.result), atol=1e-6)
  assert np.isclose(float(got.measurements['dp_query_metrics']['clip']),
                    float(want.measurements['dp_query_metrics']['clip']))


def test_the_codes_agree_with_the_plan():
  assert canaries.PADDING == canary_plan.PADDING
  # Any other negative code is a zero update.
  assert canary_plan.ZERO_UPDATE < 0 and canary_plan.ZERO_UPDATE != (
      canaries.PADDING)
