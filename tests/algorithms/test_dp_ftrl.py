"""DP-FTRL: exact with zero or reproduced noise, the tree's noise otherwise.

* Zero noise: FTRL on exact prefix sums is SGD, so K rounds equal K rounds of
  TFF's plain unweighted FedAvg with server SGD on the same cohorts (the
  cohorts are exactly clients_per_round, so the mean over the cohort and the
  division by clients_per_round agree), across a tree restart.
* Seeded noise: the model equals a numpy FTRLM (w_t = w_0 - lr m_t, m_t =
  momentum m_{t-1} + noisy prefix sum / n) on the noise of an independently
  driven TF Privacy tree restarted every epoch.
* Unseeded noise on zero updates: after round t the model has moved by the
  tree's cumulative noise, whose variance with restarts is predicted exactly.
  The sample std of d i.i.d. normal draws has relative standard error
  1/sqrt(2d); with d = 100,100 a 6-SE band is +-1.34% (two-sided flake rate
  ~2e-9 per check, < 2e-8 for the test), while the nearest wrong hypothesis
  (no restart) is off by a factor > 2 in variance.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_dp.algorithms import dp_ftrl
from tff_dp.algorithms import models
from tff_dp.cohorts import epoch_sampling
from tff_dp.config import ModelKind
from tff_dp.mechanisms import dp_queries

pytestmark = pytest.mark.tff

_D, _C = 3, 3
_CLIENT_LR = 0.5


def _model_fn(input_dim=_D, num_classes=_C):
  return models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                               input_dim=input_dim,
                               num_classes=num_classes,
                               hidden_units=1,
                               seed=7)


def _process(*,
             noise_multiplier,
             clip=1e6,
             clients_per_round=2,
             rounds_per_epoch=3,
             server_learning_rate=0.7,
             server_momentum=0.0,
             model_fn=None,
             client_momentum=0.0,
             **tree_kwargs):
  model_fn = model_fn or _model_fn()
  return dp_ftrl.build_dp_ftrl_process(
      model_fn=model_fn,
      client_learning_rate=_CLIENT_LR,
      server_learning_rate=server_learning_rate,
      server_momentum=server_momentum,
      model_aggregator=dp_queries.build_tree_aggregator(
          noise_multiplier=noise_multiplier,
          clip=clip,
          clients_per_round=clients_per_round,
          rounds_per_epoch=rounds_per_epoch,
          record_specs=dp_ftrl.model_update_specs(model_fn),
          **tree_kwargs),
      client_momentum=client_momentum)


def _weights(process, state):
  return [
      np.array(w, np.float64)
      for w in process.get_model_weights(state).trainable
  ]


def _population(size, seed=0):
  rng = np.random.default_rng(seed)
  data = []
  for k in range(size):
    m = 2 + k % 3
    data.append((rng.normal(size=(m, _D)).astype(np.float32),
                 rng.integers(0, _C, size=m).astype(np.int32)))
  return data


def _datasets(data, cohort):
  # One batch per client: one local SGD step, which numpy can replay.
  return [tf.data.Dataset.from_tensor_slices(data[k]).batch(16) for k in cohort]


def _numpy_delta(weights, x, y):
  """One SGD step on the mean softmax cross-entropy of the whole batch."""
  kernel, bias = weights
  logits = x @ kernel + bias
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  p[np.arange(len(y)), y] -= 1.0
  return [-_CLIENT_LR * x.T @ p / len(y), -_CLIENT_LR * p.mean(axis=0)]


def _clipped(delta, clip):
  norm = math.sqrt(sum(float(np.sum(d**2)) for d in delta))
  return [d * min(1.0, clip / norm) for d in delta]


def test_process_is_a_learning_process_with_a_restarting_tree(tff_runtime):
  del tff_runtime
  process = _process(noise_multiplier=1.0, clip=1.0)
  assert isinstance(process, tff.learning.templates.LearningProcess)
  state = process.initialize()
  assert dp_ftrl.tree_rounds_completed(state) == 0
  assert dp_ftrl.tree_leaf_index(state) == 0


def test_zero_noise_equals_fedavg_with_server_sgd(tff_runtime):
  del tff_runtime
  sampler = epoch_sampling.EpochSampler(population=7,
                                        clients_per_round=2,
                                        seed=3)
  assert sampler.rounds_per_epoch == 3
  data = _population(sampler.population)
  ftrl = _process(noise_multiplier=0.0,
                  rounds_per_epoch=sampler.rounds_per_epoch)
  fedavg = tff.learning.algorithms.build_unweighted_fed_avg(
      model_fn=_model_fn(),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          learning_rate=_CLIENT_LR),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.7))
  ftrl_state, fedavg_state = ftrl.initialize(), fedavg.initialize()
  for a, b in zip(_weights(ftrl, ftrl_state), _weights(fedavg, fedavg_state)):
    np.testing.assert_array_equal(a, b)
  moved = False
  for round_num in range(1, 6):  # The tree restarts after round 3.
    datasets = _datasets(data, sampler.sample(round_num))
    before = _weights(ftrl, ftrl_state)
    ftrl_state = ftrl.next(ftrl_state, datasets).state
    fedavg_state = fedavg.next(fedavg_state, datasets).state
    after = _weights(ftrl, ftrl_state)
    moved |= not np.allclose(before[0], after[0])
    for a, b in zip(after, _weights(fedavg, fedavg_state)):
      np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f'round {round_num}')
  assert moved


def _tree_noise_prefix_sums(specs, *, stddev, seed, rounds, rounds_per_epoch):
  """Noise in the released prefix sums: completed trees' totals + current."""
  tree = tfp.tree_aggregation.EfficientTreeAggregator(
      tfp.tree_aggregation.GaussianNoiseGenerator(stddev, specs, seed))
  state = tree.init_state()
  completed = [np.zeros(s.shape) for s in specs]
  sums = []
  for round_num in range(1, rounds + 1):
    noise, next_state = tree.get_cumsum_and_update(state)
    noise = [np.array(n, np.float64) for n in noise]
    sums.append([c + n for c, n in zip(completed, noise)])
    if round_num % rounds_per_epoch == 0:
      completed = sums[-1]
      # `epoch_tree.EpochTreeQuery`: the fresh tree continues the seeds of
      # the tree's state before the update, whose draws it would discard
      # (TF Privacy's `RestartQuery` resets `next_state`).
      next_state = tree.reset_state(state)
    state = next_state
  return sums


def test_seeded_noise_matches_numpy_ftrlm_with_restarts(tff_runtime):
  del tff_runtime
  z, clip, lr, momentum, seed = 0.5, 0.3, 0.8, 0.9, 1234
  sampler = epoch_sampling.EpochSampler(population=6,
                                        clients_per_round=3,
                                        seed=5)
  n, per_epoch, rounds = 3, sampler.rounds_per_epoch, 5
  data = _population(sampler.population, seed=1)
  process = _process(noise_multiplier=z,
                     clip=clip,
                     clients_per_round=n,
                     rounds_per_epoch=per_epoch,
                     server_learning_rate=lr,
                     server_momentum=momentum,
                     noise_seed=seed)
  specs = dp_ftrl.model_update_specs(_model_fn())
  noise = _tree_noise_prefix_sums(specs,
                                  stddev=z * clip,
                                  seed=seed,
                                  rounds=rounds,
                                  rounds_per_epoch=per_epoch)
  state = process.initialize()
  w0 = _weights(process, state)
  weights = w0
  clipped_sum = [np.zeros_like(w) for w in w0]  # Exact prefix sum, all rounds.
  m = [np.zeros_like(w) for w in w0]
  any_clipped = False
  for round_num in range(1, rounds + 1):
    cohort = sampler.sample(round_num)
    state = process.next(state, _datasets(data, cohort)).state
    for k in cohort:
      delta = _numpy_delta(weights, *data[k])
      clipped = _clipped(delta, clip)
      any_clipped |= not np.allclose(delta[0], clipped[0])
      clipped_sum = [s + c for s, c in zip(clipped_sum, clipped)]
    # TFF's clients send w_start - w_end = -delta (a pseudo-gradient); the
    # tree noises the prefix sum of those. FTRLM on that noisy prefix sum:
    m = [
        momentum * mi + (e - s) / n
        for mi, s, e in zip(m, clipped_sum, noise[round_num - 1])
    ]
    weights = [w - lr * mi for w, mi in zip(w0, m)]
    for got, want in zip(_weights(process, state), weights):
      np.testing.assert_allclose(got,
                                 want,
                                 atol=2e-5,
                                 err_msg=f'round {round_num}')
  assert any_clipped  # The clip was exercised, not only the noise.


def test_tree_restarts_after_the_last_round_of_each_epoch(tff_runtime):
  del tff_runtime
  per_epoch = 3
  process = _process(noise_multiplier=1.0, clip=1.0, rounds_per_epoch=per_epoch)
  state = process.initialize()
  for round_num in range(1, 8):
    state = process.next(state, []).state
    assert dp_ftrl.tree_rounds_completed(state) == round_num
    assert dp_ftrl.tree_leaf_index(state) == round_num % per_epoch
    dp_ftrl.check_tree_alignment(state,
                                 rounds_completed=round_num,
                                 rounds_per_epoch=per_epoch)
    previous_noise = (state.aggregator.query_state.numerator_state.
                      inner_query_state.previous_tree_noise)
    # A restart zeroes the tree's cumulative noise that the next residual
    # subtracts; otherwise it holds this round's (non-zero) noise.
    is_zero = all(not np.any(np.asarray(x)) for x in previous_noise)
    assert is_zero == (round_num % per_epoch == 0), round_num
  with pytest.raises(ValueError, match='out of step'):
    dp_ftrl.check_tree_alignment(state,
                                 rounds_completed=6,
                                 rounds_per_epoch=per_epoch)


def _assert_std(sample, expected, what):
  n = sample.size
  std = float(np.std(sample))
  band = 6.0 / math.sqrt(2 * n)
  assert abs(std / expected - 1.0) < band, (what, std, expected, band)
  assert abs(float(np.mean(sample))) < 6.0 * expected / math.sqrt(n), what


def test_noise_follows_the_restarted_tree(tff_runtime):
  del tff_runtime
  z, clip, n, lr, per_epoch = 1.3, 0.7, 4, 0.5, 3
  model_fn = _model_fn(input_dim=1000, num_classes=100)  # 100,100 weights.
  process = _process(noise_multiplier=z,
                     clip=clip,
                     clients_per_round=n,
                     rounds_per_epoch=per_epoch,
                     server_learning_rate=lr,
                     model_fn=model_fn)
  sigma = lr * z * clip / n  # One tree node's noise, in model units.
  # Honaker's estimator on the tree of each epoch: a leaf has variance 1, the
  # level-1 node (1 + (1 + 1) / 4) / 1.5**2 = 2/3; round 3 = leaf + node; round
  # 4 = tree 1's total (5/3) + tree 2's first leaf (1). Without the restart
  # round 4 would be a level-2 node alone: 4/7.
  variances = [1.0, 2 / 3, 5 / 3, 8 / 3]
  state = process.initialize()
  w0 = np.concatenate([w.ravel() for w in _weights(process, state)])
  previous = w0
  steps = []
  for round_num, variance in enumerate(variances, start=1):
    state = process.next(state, []).state  # Zero updates: noise only.
    w = np.concatenate([x.ravel() for x in _weights(process, state)])
    assert w.size >= 100_000
    _assert_std(w - w0, sigma * math.sqrt(variance), f'round {round_num}')
    steps.append(w - previous)
    previous = w
  # Fresh noise each round, and from each initialization (clock-seeded).
  assert not np.allclose(steps[0][:1000], steps[1][:1000])
  other = process.next(process.initialize(), []).state
  w_other = np.concatenate([x.ravel() for x in _weights(process, other)])
  assert not np.allclose((w_other - w0)[:1000], steps[0][:1000])


@pytest.mark.parametrize('kwargs, message', [
    (dict(noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(noise_multiplier=float('nan')), 'noise_multiplier'),
    (dict(noise_multiplier=1.0, clip=0.0), 'clip'),
    (dict(noise_multiplier=1.0, clients_per_round=0), 'clients_per_round'),
    (dict(noise_multiplier=1.0, rounds_per_epoch=0), 'rounds_per_epoch'),
    (dict(noise_multiplier=1.0, server_momentum=1.0), 'server_momentum'),
])
def test_invalid_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _process(**kwargs)
