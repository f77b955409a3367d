"""Tests for tff_dp.mechanisms.local_dp: exact with zero noise, the right noise otherwise.

Statistical checks use a 6-standard-error band on d >= 1e5 i.i.d. draws (each
two-sided check flakes with probability ~2e-9):

* Gaussian sample std: relative SE 1/sqrt(2d).
* Laplace sample std: relative SE sqrt((kurtosis - 1) / (4d)) = sqrt(5/(4d)),
  since a Laplace variable has kurtosis 6 (the Gaussian 1/sqrt(2d) would be
  too narrow and flake).
* Laplace mean absolute deviation: |X| ~ Exp(mean b) has variance b^2, so the
  SE of the sample MAD is b/sqrt(d).
* Correlation of two independent noise vectors: SE 1/sqrt(d); identical noise
  (repeated between clients or rounds) has correlation 1.
With d = 1e6 these bands are +-0.42% (Gaussian std), +-0.67% (Laplace std) and
+-0.6% (MAD): noise x0.5 (Laplace scale C/epsilon instead of 2C/epsilon), a
per-layer clip or a wrong divisor all fail.
"""

import collections
import math

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

# Not exported under tff.aggregators in TFF 0.87.
from tensorflow_federated.python.aggregators import differential_privacy

from tff_dp.mechanisms import local_dp

pytestmark = pytest.mark.tff

LAPLACE = local_dp.LocalMechanism.LAPLACE
GAUSSIAN = local_dp.LocalMechanism.GAUSSIAN
_DIM = 1_000_000
_SMALL_DIM = 100_000


def _zero_noise_factory(mechanism,
                        *,
                        clip,
                        clients_per_round,
                        central_factory=None):
  return local_dp.LocalDpFactory(mechanism=mechanism,
                                 clip=clip,
                                 noise_scale=0.0,
                                 clients_per_round=clients_per_round,
                                 central_factory=central_factory,
                                 _allow_zero_noise=True)


def _pair_type(container):
  tensor = tff.TensorType(np.float32, [2])
  if container is list:
    return tff.to_type([tensor, tensor])
  return tff.to_type(collections.OrderedDict(a=tensor, b=tensor))


def _pair(first, second, container):
  first, second = (np.array(first, np.float32), np.array(second, np.float32))
  if container is list:
    return [first, second]
  return collections.OrderedDict(a=first, b=second)


def _flat(value):
  return list(value.values()) if isinstance(value, dict) else list(value)


# --- Exactness with zero noise. ----------------------------------------------


# Client "big" is [3, 0] and [0, 1] in two tensors. Its global L1 norm is 4
# (scale 1/4) and its global L2 norm sqrt(10); a per-tensor clip would give
# [1, 0] and [0, 1] for both norms. Client "small" is inside the ball.
@pytest.mark.parametrize('mechanism,container,big_clipped', [
    (LAPLACE, dict, ([0.75, 0.0], [0.0, 0.25])),
    (GAUSSIAN, list, ([3 / math.sqrt(10), 0.0], [0.0, 1 / math.sqrt(10)])),
])
def test_zero_noise_is_global_clip_over_clients_per_round(
    tff_runtime, mechanism, container, big_clipped):
  del tff_runtime
  process = _zero_noise_factory(mechanism, clip=1.0,
                                clients_per_round=3).create(
                                    _pair_type(container))
  big = _pair([3.0, 0.0], [0.0, 1.0], container)
  small = _pair([0.1, 0.0], [0.0, -0.2], container)
  output = process.next(process.initialize(), [big, small])
  # Divided by clients_per_round = 3, not by the 2 clients that reported.
  expected = [(np.array(big_clipped[0]) + [0.1, 0.0]) / 3,
              (np.array(big_clipped[1]) + [0.0, -0.2]) / 3]
  for got, want in zip(_flat(output.result), expected):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert not output.measurements  # Nothing about clipping is released.


@pytest.mark.parametrize('mechanism', [LAPLACE, GAUSSIAN])
def test_non_finite_update_is_zeroed_without_touching_others(
    tff_runtime, mechanism):
  del tff_runtime
  value_type = _pair_type(dict)
  other = _pair([0.2, 0.0], [0.0, 0.1], dict)
  process = _zero_noise_factory(mechanism, clip=1.0,
                                clients_per_round=2).create(value_type)
  state = process.initialize()
  for bad in (np.nan, np.inf, -np.inf):
    client = _pair([bad, 1.0], [0.0, 2.0], dict)
    result = process.next(state, [client, other]).result
    for got, want in zip(_flat(result), _flat(other)):
      np.testing.assert_allclose(got, want / 2, rtol=1e-6)
  # 1e20 is finite but its square overflows float32 (tf.clip_by_global_norm
  # gives NaN): it must be clipped like any other large update.
  huge = _pair([1e20, 0.0], [0.0, -1e20], dict)
  result = process.next(state, [huge, other]).result
  clipped = (([0.5, 0.0], [0.0, -0.5]) if mechanism is LAPLACE else
             ([1 / math.sqrt(2), 0.0], [0.0, -1 / math.sqrt(2)]))
  for got, want, add in zip(_flat(result), clipped, _flat(other)):
    np.testing.assert_allclose(got, (np.array(want) + add) / 2, rtol=1e-6)

  noisy = local_dp.build_local_dp_factory(mechanism=mechanism,
                                          clip=1.0,
                                          clients_per_round=2,
                                          **({
                                              'epsilon_local': 1.0
                                          } if mechanism is LAPLACE else {
                                              'noise_multiplier': 1.0
                                          })).create(value_type)
  bad_clients = [_pair([np.nan, np.inf], [-np.inf, 1e20], dict), huge]
  result = noisy.next(noisy.initialize(), bad_clients).result
  assert all(np.all(np.isfinite(t)) for t in _flat(result))


def test_central_factory_receives_the_locally_clipped_updates(tff_runtime):
  del tff_runtime
  central = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
      noise_multiplier=0.0, clients_per_round=4, clip=0.5)
  process = _zero_noise_factory(GAUSSIAN,
                                clip=1.0,
                                clients_per_round=4,
                                central_factory=central).create(
                                    _pair_type(dict))
  big = _pair([3.0, 0.0], [0.0, 4.0], dict)  # L2 norm 5 -> 1 -> 0.5.
  output = process.next(process.initialize(), [big])
  np.testing.assert_allclose(output.result['a'], [0.3 / 4, 0.0], rtol=1e-6)
  np.testing.assert_allclose(output.result['b'], [0.0, 0.4 / 4], rtol=1e-6)
  # The state is the central factory's, so its DP event is still reachable.
  event = differential_privacy.extract_dp_event_from_state(output.state)
  assert isinstance(event, dp_accounting.DpEvent)


# --- Noise distribution and freshness. ---------------------------------------


def _noise_of_one_client(mechanism, noise_kwargs, *, clip, clients_per_round):
  factory = local_dp.build_local_dp_factory(mechanism=mechanism,
                                            clip=clip,
                                            clients_per_round=clients_per_round,
                                            **noise_kwargs)
  process = factory.create(tff.TensorType(np.float32, [_DIM]))
  zeros = np.zeros(_DIM, np.float32)
  return process.next(process.initialize(), [zeros]).result, factory


def _assert_within(value, expected, se, what):
  assert abs(value - expected) < 6 * se, (what, value, expected, se)


def test_laplace_noise_scale_is_two_clip_over_epsilon(tff_runtime):
  del tff_runtime
  clip, epsilon, n = 0.3, 2.0, 4
  result, factory = _noise_of_one_client(LAPLACE, {'epsilon_local': epsilon},
                                         clip=clip,
                                         clients_per_round=n)
  b = 2 * clip / epsilon / n  # Delta_1 = 2 C; divided by clients_per_round.
  assert factory.noise_scale == pytest.approx(2 * clip / epsilon)
  d = result.size
  sample = result.astype(np.float64)
  _assert_within(np.mean(sample), 0.0, math.sqrt(2) * b / math.sqrt(d), 'mean')
  _assert_within(np.mean(np.abs(sample)), b, b / math.sqrt(d), 'MAD')
  std = math.sqrt(2) * b
  _assert_within(np.std(sample), std, std * math.sqrt(5 / (4 * d)), 'std')


def test_gaussian_noise_std_is_z_clip(tff_runtime):
  del tff_runtime
  clip, z, n = 0.7, 1.3, 4
  result, factory = _noise_of_one_client(GAUSSIAN, {'noise_multiplier': z},
                                         clip=clip,
                                         clients_per_round=n)
  std = z * clip / n
  assert factory.noise_scale == pytest.approx(z * clip)
  d = result.size
  sample = result.astype(np.float64)
  _assert_within(np.mean(sample), 0.0, std / math.sqrt(d), 'mean')
  _assert_within(np.std(sample), std, std / math.sqrt(2 * d), 'std')


def _assert_uncorrelated(x, y):
  corr = float(np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1])
  assert abs(corr) < 6 / math.sqrt(x.size), corr


@pytest.mark.parametrize('mechanism,noise_kwargs', [(LAPLACE, {
    'epsilon_local': 1.0
}), (GAUSSIAN, {
    'noise_multiplier': 1.0
})])
def test_noise_is_fresh_per_client_and_per_round(tff_runtime, mechanism,
                                                 noise_kwargs):
  del tff_runtime
  factory = local_dp.build_local_dp_factory(mechanism=mechanism,
                                            clip=1.0,
                                            clients_per_round=2,
                                            **noise_kwargs)
  value_type = tff.TensorType(np.float32, [_SMALL_DIM])
  client_fn = factory.client_computation(value_type)

  @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
  def noised_at_clients(value):
    return tff.federated_map(client_fn, value)

  zeros = np.zeros(_SMALL_DIM, np.float32)
  first_a, first_b = noised_at_clients([zeros, zeros])
  (second_a,) = noised_at_clients([zeros])
  _assert_uncorrelated(first_a, first_b)  # Two clients of one round.
  _assert_uncorrelated(first_a, second_a)  # The same client, next round.

  # Through the process: the noise of two clients adds in variance (std
  # sqrt(2) sigma / n); identical noise would give 2 sigma / n.
  process = factory.create(value_type)
  state = process.initialize()
  one = process.next(state, [zeros, zeros])
  two = process.next(one.state, [zeros, zeros])
  _assert_uncorrelated(one.result, two.result)
  sigma = factory.noise_scale * (math.sqrt(2) if mechanism is LAPLACE else 1)
  std = math.sqrt(2) * sigma / 2
  # Relative SE of a sample std: sqrt((kurtosis - 1) / (4d)); the sum of two
  # Laplace variables has kurtosis 4.5 (excess 3/2), a Gaussian 3.
  kurtosis = 4.5 if mechanism is LAPLACE else 3.0
  d = one.result.size
  _assert_within(float(np.std(one.result.astype(np.float64))), std,
                 std * math.sqrt((kurtosis - 1) / (4 * d)),
                 'std of two clients')


# --- Arguments. --------------------------------------------------------------


@pytest.mark.parametrize('kwargs,name', [
    (dict(mechanism='laplace', epsilon_local=1.0), 'mechanism'),
    (dict(mechanism=LAPLACE), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=math.inf), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=math.nan), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=0.0), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=1.0,
          noise_multiplier=1.0), 'noise_multiplier'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=0.0), 'noise_multiplier'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0,
          epsilon_local=1.0), 'epsilon_local'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0, clip=math.nan), 'clip'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0, clip=0.0), 'clip'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0,
          clients_per_round=0), 'clients_per_round'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0,
          clients_per_round=2.0), 'clients_per_round'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0,
          central_factory='sum'), 'central_factory'),
])
def test_builder_refuses_bad_arguments(kwargs, name):
  kwargs = dict(dict(clip=1.0, clients_per_round=10), **kwargs)
  with pytest.raises(ValueError, match=name) as info:
    local_dp.build_local_dp_factory(**kwargs)
  if name in kwargs and kwargs[name] is not None:
    assert repr(kwargs[name]) in str(info.value) or str(kwargs[name]) in str(
        info.value)


def test_zero_noise_needs_the_private_test_switch():
  with pytest.raises(ValueError, match='noise_scale'):
    local_dp.LocalDpFactory(mechanism=LAPLACE,
                            clip=1.0,
                            noise_scale=0.0,
                            clients_per_round=1)


def test_refuses_non_float_values():
  factory = local_dp.build_local_dp_factory(mechanism=GAUSSIAN,
                                            clip=1.0,
                                            noise_multiplier=1.0,
                                            clients_per_round=1)
  with pytest.raises(TypeError, match='float'):
    factory.create(tff.TensorType(np.int32, [3]))
