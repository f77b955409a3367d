"""Tests for tff_dp.cohorts.sampling.

The statistical tests run with fixed seeds, so they are deterministic; the
stated flake rates are the probability that a correct sampler fails for a
random seed (normal approximation, two-sided 6-sigma bound, P ~ 2e-9 per
comparison, union bound over all comparisons of a test).
"""

import numpy as np
import pytest

from tff_dp.cohorts import sampling

ClientSampler = sampling.ClientSampler
ClientSampling = sampling.ClientSampling

# Shuffled epochs are drawn by EpochSampler and accounted with tree events.
_DRAWN_BY_CLIENT_SAMPLER = [
    m for m in ClientSampling if m is not ClientSampling.SHUFFLED_EPOCHS
]

_ROUNDS = 10_000


def _inclusion_matrix(sampler, rounds=_ROUNDS, first_round=0):
  """Bool matrix [round, client]: was the client in that round's cohort."""
  x = np.zeros((rounds, sampler.population), dtype=bool)
  for r in range(rounds):
    x[r, sampler.sample(first_round + r)] = True
  return x


def _assert_within_6_se(observed, p, rounds, what):
  se = np.sqrt(p * (1 - p) / rounds)
  worst = np.max(np.abs(np.asarray(observed) - p))
  assert worst <= 6 * se, f'{what}: max |{worst:.5f}| > 6 SE = {6 * se:.5f}'


def _off_diagonal(matrix):
  return matrix[~np.eye(matrix.shape[0], dtype=bool)]


# --- Validation. -------------------------------------------------------------


@pytest.mark.parametrize('kwargs, field, value', [
    (dict(population=0, clients_per_round=1), 'population', '0'),
    (dict(population=-5, clients_per_round=1), 'population', '-5'),
    (dict(population=10, clients_per_round=0), 'clients_per_round', '0'),
    (dict(population=10, clients_per_round=11), 'clients_per_round', '11'),
    (dict(population=10, clients_per_round=2, seed=-1), 'seed', '-1'),
    (dict(population=10, clients_per_round=2, seed=2**128), 'seed', str(2**
                                                                        128)),
])
def test_invalid_values_raise_value_error_naming_field(kwargs, field, value):
  kwargs = dict(sampling=ClientSampling.POISSON, seed=0) | kwargs
  with pytest.raises(ValueError, match=field) as info:
    ClientSampler(**kwargs)
  assert value in str(info.value)


def test_full_requires_all_clients():
  with pytest.raises(ValueError, match=r'clients_per_round.*FULL.*9'):
    ClientSampler(ClientSampling.FULL,
                  population=10,
                  clients_per_round=9,
                  seed=0)


@pytest.mark.parametrize('kwargs', [
    dict(sampling='poisson'),
    dict(population=10.0),
    dict(clients_per_round=True),
    dict(seed=1.5),
])
def test_wrong_types_raise_type_error(kwargs):
  kwargs = dict(sampling=ClientSampling.POISSON,
                population=10,
                clients_per_round=2,
                seed=0) | kwargs
  with pytest.raises(TypeError):
    ClientSampler(**kwargs)


def test_sample_rejects_negative_round():
  sampler = ClientSampler(ClientSampling.POISSON, 10, 2, seed=0)
  with pytest.raises(ValueError, match='round_num'):
    sampler.sample(-1)


def test_sampling_probability():
  assert ClientSampler(ClientSampling.POISSON, 3383, 120,
                       seed=0).sampling_probability == 120 / 3383
  assert ClientSampler(ClientSampling.FIXED_SIZE, 100, 10,
                       seed=0).sampling_probability == 0.1
  assert ClientSampler(ClientSampling.FULL, 7, 7,
                       seed=0).sampling_probability == 1.0


# --- Determinism. ------------------------------------------------------------


@pytest.mark.parametrize('mode', _DRAWN_BY_CLIENT_SAMPLER)
def test_same_seed_and_round_reproduce_across_instances(mode):
  n = 30 if mode is ClientSampling.FULL else 5
  a = ClientSampler(mode, population=30, clients_per_round=n, seed=7)
  b = ClientSampler(mode, population=30, clients_per_round=n, seed=7)
  for r in (0, 1, 2, 999, 2**40):
    np.testing.assert_array_equal(a.sample(r), b.sample(r))


@pytest.mark.parametrize('mode',
                         [ClientSampling.POISSON, ClientSampling.FIXED_SIZE])
def test_different_rounds_and_seeds_differ(mode):
  a = ClientSampler(mode, population=1000, clients_per_round=50, seed=1)
  b = ClientSampler(mode, population=1000, clients_per_round=50, seed=2)
  cohorts = [a.sample(r).tolist() for r in range(20)]
  cohorts += [b.sample(r).tolist() for r in range(20)]
  # Collisions of two 50-of-1000 subsets have probability ~1e-85.
  assert len({tuple(c) for c in cohorts}) == len(cohorts)


def test_pinned_cohort():
  # Resumed runs must redraw the original cohorts. This pins the algorithm
  # (SeedSequence(seed, spawn_key=(stream, round)) -> binomial -> choice);
  # if a numpy upgrade changes it, runs resumed across the upgrade would draw
  # different (still correctly distributed) cohorts: decide knowingly.
  # Values recorded with numpy 1.25.
  sampler = ClientSampler(ClientSampling.POISSON, 100, 10, seed=0)
  np.testing.assert_array_equal(
      sampler.sample(1), [12, 13, 16, 26, 29, 32, 50, 57, 62, 72, 79, 87])
  sampler = ClientSampler(ClientSampling.FIXED_SIZE, 100, 5, seed=0)
  np.testing.assert_array_equal(sampler.sample(1), [14, 15, 18, 69, 71])


# --- Shapes. -----------------------------------------------------------------


def test_full_returns_everyone():
  sampler = ClientSampler(ClientSampling.FULL, 13, 13, seed=3)
  for r in range(5):
    cohort = sampler.sample(r)
    assert cohort.dtype == np.int64
    np.testing.assert_array_equal(cohort, np.arange(13))


def test_fixed_size_exact_distinct_sorted_in_range():
  sampler = ClientSampler(ClientSampling.FIXED_SIZE, 50, 7, seed=11)
  for r in range(500):
    cohort = sampler.sample(r)
    assert cohort.dtype == np.int64
    assert cohort.shape == (7,)
    assert np.all(np.diff(cohort) > 0)  # Sorted and distinct.
    assert cohort[0] >= 0 and cohort[-1] < 50


def test_poisson_sorted_in_range_and_may_be_empty():
  sampler = ClientSampler(ClientSampling.POISSON, 10, 1, seed=5)
  cohorts = [sampler.sample(r) for r in range(200)]
  for cohort in cohorts:
    assert cohort.dtype == np.int64
    assert np.all(np.diff(cohort) > 0)
    assert np.all((cohort >= 0) & (cohort < 10))
  sizes = [len(c) for c in cohorts]
  # P(empty) = 0.9**10 ~ 0.35 per round, so both cases occur.
  assert 0 in sizes and max(sizes) >= 2


# --- Distributions. ----------------------------------------------------------


def test_poisson_inclusion_and_independence():
  # 40 marginals + 780 pairs + 40 consecutive-round pairs + 1600 cross-seed
  # pairs + 2 size moments ~ 2.5e3 comparisons: flake rate ~5e-6.
  n_clients, n = 40, 8
  q = n / n_clients
  sampler = ClientSampler(ClientSampling.POISSON, n_clients, n, seed=123)
  x = _inclusion_matrix(sampler).astype(np.float64)
  _assert_within_6_se(x.mean(axis=0), q, _ROUNDS, 'inclusion rate')
  co = x.T @ x / _ROUNDS
  _assert_within_6_se(_off_diagonal(co), q * q, _ROUNDS, 'co-inclusion')
  # Independence across rounds (a reused stream would give ~q here).
  across = (x[:-1] * x[1:]).mean(axis=0)
  _assert_within_6_se(across, q * q, _ROUNDS - 1, 'consecutive rounds')
  # Independence across seeds.
  other = _inclusion_matrix(
      ClientSampler(ClientSampling.POISSON, n_clients, n, seed=124))
  cross = x.T @ other.astype(np.float64) / _ROUNDS
  _assert_within_6_se(cross.ravel(), q * q, _ROUNDS, 'cross-seed')
  # Cohort size is Binomial(N, q), not fixed: mean N q, variance N q (1 - q).
  sizes = x.sum(axis=1)
  var = n_clients * q * (1 - q)
  assert abs(sizes.mean() - n) <= 6 * np.sqrt(var / _ROUNDS)
  # SE of a sample variance ~ var * sqrt(2 / R) (near-normal sizes).
  assert abs(sizes.var(ddof=1) - var) <= 6 * var * np.sqrt(2 / _ROUNDS)


def test_fixed_size_uniform_marginals_and_pairs():
  # 30 marginals + 435 pairs: flake rate ~1e-6.
  n_clients, n = 30, 6
  sampler = ClientSampler(ClientSampling.FIXED_SIZE, n_clients, n, seed=99)
  x = _inclusion_matrix(sampler).astype(np.float64)
  assert np.all(x.sum(axis=1) == n)
  _assert_within_6_se(x.mean(axis=0), n / n_clients, _ROUNDS, 'marginal')
  pair = n * (n - 1) / (n_clients * (n_clients - 1))
  co = x.T @ x / _ROUNDS
  _assert_within_6_se(_off_diagonal(co), pair, _ROUNDS, 'co-inclusion')


def test_shuffled_epochs_are_not_drawn_by_client_sampler():
  with pytest.raises(ValueError, match='EpochSampler'):
    sampling.ClientSampler(ClientSampling.SHUFFLED_EPOCHS,
                           population=10,
                           clients_per_round=2,
                           seed=0)
