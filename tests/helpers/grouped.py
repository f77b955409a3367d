"""A tiny population and runners for the grouped path against its reference.

The grouped mechanism tests (tests/algorithms/test_grouped_*.py) compare a
grouped process (`tff_dp.algorithms.grouped_fedavg`) with TFF's
one-client-per-call reference on the same clients, seeds and example
orders. Sizes as in test_grouped_fedavg.py: batches of 3 over 2 epochs leave
partial last batches, and one client has a single example.

`build_grouped` builds the MLP as the program does (`tff_dp.program.assembly.
_unroll_bound` is None for it): each client's local steps in a graph-mode
while loop. `max_client_size=MAX_SIZE` unrolls them instead, which for the MLP
takes `tff_dp.algorithms.grouped_vectorized`, a study no program
configuration reaches: the tests that pass it are in the slow tier.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer
from tff_dp.program import client_data

D, C, HIDDEN, SEED, DATA_SEED = 5, 3, 4, 7, 11
CLIENT_LR, CLIENT_MOMENTUM = 0.3, 0.5
SIZES = (5, 1, 7, 3, 4, 6, 2)
# `build_grouped(max_client_size=MAX_SIZE)`: unrolled (vectorized) steps.
MAX_SIZE = max(SIZES)
# A mechanism's equivalence on the program's path (default tier) and on the
# vectorized study path (slow tier: one case per mechanism family).
PATHS = pytest.mark.parametrize(
    'max_client_size',
    [None, pytest.param(MAX_SIZE, marks=pytest.mark.slow)],
    ids=['while_loop', 'vectorized'])
# Three rounds, so that DP-FTRL's tree restarts (every 2 rounds) once.
COHORTS = ((1, (0, 1, 2, 3, 4, 5, 6)), (2, (6, 2, 4, 1, 0)), (3, (3, 5)))
WEIGHTS_ATOL = 1e-6
BATCH_SIZE, EPOCHS = 3, 2


def keras_model_fn(input_dim=D, hidden=HIDDEN):
  return lambda: models.build_keras_model(ModelKind.MLP,
                                          input_dim=input_dim,
                                          num_classes=C,
                                          hidden_units=hidden,
                                          seed=SEED)


def model_fn(input_dim=D, hidden=HIDDEN):
  """The reference's TFF model: the same Keras model, same initializers."""
  return models.build_model_fn(ModelKind.MLP,
                               input_dim=input_dim,
                               num_classes=C,
                               hidden_units=hidden,
                               seed=SEED)


def server_optimizer(momentum=0.9, learning_rate=1.0):
  return learning_process.build_server_optimizer(ServerOptimizer.SGD,
                                                 learning_rate=learning_rate,
                                                 momentum=momentum)


def population(sizes=SIZES, input_dim=D):
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(n, input_dim)).astype(np.float32) for n in sizes]
  ys = [rng.integers(0, C, size=n).astype(np.int32) for n in sizes]
  return xs, ys


def reference_datasets(xs, ys, round_num, cohort, *, epochs=EPOCHS):
  # What tff_dp.program.client_data.RoundDatasets builds for FederatedData.
  return [
      client_data.client_dataset(xs[i],
                                 ys[i],
                                 batch_size=BATCH_SIZE,
                                 epochs=epochs,
                                 rng=np.random.default_rng(
                                     [DATA_SEED, round_num, i])) for i in cohort
  ]


def groups(xs, ys, round_num, cohort, *, group_size, epochs=EPOCHS, **kwargs):
  return grouped_data.make_groups(xs,
                                  ys,
                                  cohort,
                                  round_num=round_num,
                                  seed=DATA_SEED,
                                  epochs=epochs,
                                  group_size=group_size,
                                  **kwargs)


def weights(process, state):
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def max_abs_diff(a, b):
  return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def run(process, round_inputs, cohorts=COHORTS):
  """(final state, outputs) of `process.next` on `round_inputs(round,
  cohort)` for each round."""
  state = process.initialize()
  outputs = []
  for round_num, cohort in cohorts:
    output = process.next(state, round_inputs(round_num, cohort))
    state = output.state
    outputs.append(output)
  return state, outputs


def assert_equivalent(reference,
                      grouped,
                      xs,
                      ys,
                      *,
                      cohorts=COHORTS,
                      group_sizes=((3, True),),
                      reference_epochs=EPOCHS):
  """Grouped == reference at zero noise: weights, metrics, state layout.

  Returns the reference's final state and outputs.
  """
  ref_state, ref_outputs = run(
      reference,
      lambda r, c: reference_datasets(xs, ys, r, c, epochs=reference_epochs),
      cohorts)
  expected = weights(reference, ref_state)
  assert max_abs_diff(weights(grouped, grouped.initialize()),
                      weights(reference, reference.initialize())) == 0.0
  assert max_abs_diff(expected, weights(reference,
                                        reference.initialize())) > 1e-3
  for group_size, pad in group_sizes:
    state, outputs = run(grouped,
                         lambda r, c, g=group_size, p=pad: groups(
                             xs, ys, r, c, group_size=g, pad_to_group_size=p),
                         cohorts)
    diff = max_abs_diff(weights(grouped, state), expected)
    assert diff <= WEIGHTS_ATOL, (group_size, pad, diff)
    for ref_output, output in zip(ref_outputs, outputs):
      assert_same_metrics(ref_output.metrics, output.metrics)
    assert leaves(state) == leaves(ref_state)
  return ref_state, ref_outputs


def leaves(state):
  """(shape, dtype) of every leaf: checkpoints are interchangeable."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [(np.shape(t), np.asarray(t).dtype) for t in tf.nest.flatten(state)]


def assert_same_metrics(reference_metrics, grouped_metrics):
  """Same metric structure; same training metrics and DP query metrics."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.nest.assert_same_structure(reference_metrics, grouped_metrics)
  expected = reference_metrics['client_work']['train']
  actual = grouped_metrics['client_work']['train']
  assert list(actual) == list(expected)
  for key in expected:
    if key.startswith('num_'):
      assert actual[key] == expected[key], key
    else:
      np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5)
  np.testing.assert_allclose(tf.nest.flatten(grouped_metrics['aggregator']),
                             tf.nest.flatten(reference_metrics['aggregator']),
                             rtol=1e-6)


def assert_std(sample: np.ndarray, expected: float) -> None:
  """Sample std within 6 standard errors (~1/sqrt(2n)) of `expected`, mean
  within 6 of 0: two-sided flake rate ~2e-9 per check."""
  n = sample.size
  std = float(np.std(sample))
  band = 6.0 / math.sqrt(2 * n)
  assert abs(std / expected - 1.0) < band, (std, expected, band)
  assert abs(float(np.mean(sample))) < 6.0 * expected / math.sqrt(n)


def zero_update_steps(process, *, input_dim, rounds=2, cohort=(0, 1, 2)):
  """The server's model steps over `rounds` rounds on a process whose
  clients' updates are all zero (client learning rate 0): float64 vectors."""
  xs, ys = population(sizes=(3, 2, 4), input_dim=input_dim)
  state = process.initialize()
  before = np.concatenate([w.ravel() for w in weights(process, state)])
  steps = []
  for round_num in range(1, rounds + 1):
    state = process.next(state,
                         groups(xs, ys, round_num, list(cohort),
                                group_size=2)).state
    after = np.concatenate([w.ravel() for w in weights(process, state)])
    steps.append(after.astype(np.float64) - before)
    before = after
  return steps


def build_grouped(dp_factory,
                  options=None,
                  *,
                  input_dim=D,
                  hidden=HIDDEN,
                  client_lr=CLIENT_LR,
                  client_momentum=CLIENT_MOMENTUM,
                  server_momentum=0.9,
                  server=None,
                  max_client_size=None,
                  **kwargs):
  """A grouped process on this module's model and sizes.

  `max_client_size` None (the default): the local steps in a while loop, as
  the program builds the MLP; MAX_SIZE: unrolled, which vectorizes the
  group's clients (module docstring).
  """
  # pylint: disable-next=g-import-not-at-top
  from tff_dp.algorithms import grouped_client_options
  from tff_dp.algorithms import grouped_fedavg  # pylint: disable=g-import-not-at-top
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=keras_model_fn(input_dim, hidden),
      input_dim=input_dim,
      num_classes=C,
      dp_factory=dp_factory,
      client_learning_rate=client_lr,
      client_momentum=client_momentum,
      server_optimizer=server or server_optimizer(momentum=server_momentum),
      batch_size=BATCH_SIZE,
      epochs=EPOCHS,
      max_client_size=max_client_size,
      options=options or grouped_client_options.ClientOptions(),
      **kwargs)


def reference(model_aggregator,
              *,
              algorithm=None,
              proximal_strength=0.0,
              metrics_aggregator=None):
  """TFF's one-client-per-call process on the same model and optimizers."""
  from tff_dp.config import Algorithm  # pylint: disable=g-import-not-at-top
  return learning_process.build_learning_process(
      model_fn=model_fn(),
      algorithm=algorithm or Algorithm.FEDAVG,
      model_aggregator=model_aggregator,
      client_learning_rate=CLIENT_LR,
      client_momentum=CLIENT_MOMENTUM,
      server_optimizer=server_optimizer(),
      proximal_strength=proximal_strength,
      metrics_aggregator=metrics_aggregator)


def group_fn_arguments(model, optimizer, query):
  """(weights, hparams, params): a group function's first three arguments
  (`grouped_client_work.build_group_fn`) for `model`'s initial weights."""
  weights = tff.learning.models.ModelWeights(
      trainable=[tf.constant(t) for t in model.initial_weights[0]],
      non_trainable=[tf.constant(t) for t in model.initial_weights[1]])
  hparams = optimizer.get_hparams(
      optimizer.initialize(tf.TensorSpec([], tf.float32)))
  params = query.derive_sample_params(query.initial_global_state())
  return weights, hparams, params


def assert_path(traced, max_client_size) -> None:
  """The group computation `PATHS`' case names is the one traced."""
  assert bool(traced) == (max_client_size
                          is not None), (traced, max_client_size)


def count_vectorized(monkeypatch) -> list:
  """Records each trace of a group's clients trained together
  (`grouped_vectorized.train_clients`, traced when a process is built): empty
  on the program's MLP path (the while loop)."""
  # pylint: disable-next=g-import-not-at-top
  from tff_dp.algorithms import grouped_vectorized
  traced = []
  real = grouped_vectorized.train_clients
  monkeypatch.setattr(grouped_vectorized, 'train_clients',
                      lambda *a, **k: traced.append(1) or real(*a, **k))
  return traced
