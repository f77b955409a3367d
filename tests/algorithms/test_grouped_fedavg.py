"""Grouped DP-FedAvg against the reference process, exactly and statistically.

The reference is `tff_dp.algorithms.learning_process.build_learning_process` (TFF's
`build_unweighted_fed_avg`, one TFF client per simulated client) with the
sanitizing DP aggregator; the grouped process (`tff_dp.algorithms.grouped_fedavg`) runs
many simulated clients per TFF client. With zero noise both must give the
same model, clip estimate and training metrics; the tolerance is float32
round-off from summing the clipped updates in a different order (groups, then
groups of groups): absolute 1e-6 on weights of order 1, relative 1e-5 on the
metrics.

Noise is checked as in tests/mechanisms/test_dp_aggregator.py: the sample std
of d i.i.d. normal draws has relative standard error ~1/sqrt(2d); with the
101,770 parameters of the 784-128-10 MLP a 6-standard-error band is +-1.33%
(two-sided flake rate ~2e-9 per check).
"""

import csv
import functools
import math
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import REPO_ROOT
from tests.helpers import central_dp
from tests.helpers import flag_configs
from tests.helpers import grouped as g
from tests.helpers import grouped_server as server_checks
from tests.helpers import programs
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import grouped_vectorized
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.checks import ConfigError
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer
from tff_dp.program import client_data

pytestmark = pytest.mark.tff

_D, _C, _HIDDEN, _SEED, _DATA_SEED = 5, 3, 4, 7, 11
_CLIENT_LR, _CLIENT_MOMENTUM = 0.3, 0.5
# Client sizes chosen so that batches of 3 over 2 epochs leave partial last
# batches, and a client of one example.
_SIZES = (5, 1, 7, 3, 4, 6, 2)
_MAX_SIZE = max(_SIZES)
_COHORTS = ((1, (0, 1, 2, 3, 4, 5, 6)), (2, (6, 2, 4, 1, 0)))
_WEIGHTS_ATOL = 1e-6


def _keras_model_fn(input_dim=_D, hidden=_HIDDEN):
  return lambda: models.build_keras_model(ModelKind.MLP,
                                          input_dim=input_dim,
                                          num_classes=_C,
                                          hidden_units=hidden,
                                          seed=_SEED)


def _dp(mechanism=DpMechanism.GAUSSIAN_FIXED,
        *,
        noise_multiplier=0.0,
        clients_per_round=len(_SIZES),
        clip=1e6,
        initial_clip=0.1):
  return central_dp.settings(mechanism,
                             noise_multiplier=noise_multiplier,
                             clients_per_round=clients_per_round,
                             clip=clip,
                             initial_clip=initial_clip)


def _server_optimizer(momentum=0.9, learning_rate=1.0):
  return learning_process.build_server_optimizer(ServerOptimizer.SGD,
                                                 learning_rate=learning_rate,
                                                 momentum=momentum)


# Processes are cached: building one traces TFF computations (seconds), and
# they hold no state between calls.
@functools.lru_cache(maxsize=None)
def _reference(dp, *, client_lr=_CLIENT_LR):
  return learning_process.build_learning_process(
      model_fn=models.build_model_fn(ModelKind.MLP,
                                     input_dim=_D,
                                     num_classes=_C,
                                     hidden_units=_HIDDEN,
                                     seed=_SEED),
      model_aggregator=learning_process.build_model_aggregator(
          dp=dp, client_weighting=ClientWeighting.UNIFORM),
      client_learning_rate=client_lr,
      client_momentum=_CLIENT_MOMENTUM,
      server_optimizer=_server_optimizer())


@functools.lru_cache(maxsize=None)
def _grouped(dp,
             *,
             batch_size=3,
             epochs=2,
             input_dim=_D,
             hidden=_HIDDEN,
             client_lr=_CLIENT_LR,
             server_momentum=0.9,
             max_client_size=None):
  # By default the local steps run in a while loop, as the program builds the
  # MLP (`assembly._unroll_bound`); `_MAX_SIZE` unrolls them, which
  # vectorizes the group's clients (`grouped_vectorized`, never run by the
  # program: slow tier only).
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=_keras_model_fn(input_dim, hidden),
      input_dim=input_dim,
      num_classes=_C,
      dp_factory=learning_process.build_dp_aggregator(dp),
      client_learning_rate=client_lr,
      client_momentum=_CLIENT_MOMENTUM,
      server_optimizer=_server_optimizer(momentum=server_momentum),
      batch_size=batch_size,
      epochs=epochs,
      max_client_size=max_client_size)


def _population(sizes=_SIZES, input_dim=_D):
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(n, input_dim)).astype(np.float32) for n in sizes]
  ys = [rng.integers(0, _C, size=n).astype(np.int32) for n in sizes]
  return xs, ys


def _reference_datasets(xs, ys, round_num, cohort, *, batch_size=3, epochs=2):
  # What tff_dp.program.client_data.RoundDatasets builds for FederatedData.
  return [
      client_data.client_dataset(
          xs[i],
          ys[i],
          batch_size=batch_size,
          epochs=epochs,
          rng=np.random.default_rng([_DATA_SEED, round_num, i])) for i in cohort
  ]


def _groups(xs, ys, round_num, cohort, *, group_size, epochs=2, **kwargs):
  return grouped_data.make_groups(xs,
                                  ys,
                                  cohort,
                                  round_num=round_num,
                                  seed=_DATA_SEED,
                                  epochs=epochs,
                                  group_size=group_size,
                                  **kwargs)


def _weights(process, state):
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def _max_abs_diff(a, b):
  return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def _run_reference(process, xs, ys, cohorts=_COHORTS, **kwargs):
  state = process.initialize()
  outputs = []
  for round_num, cohort in cohorts:
    output = process.next(
        state, _reference_datasets(xs, ys, round_num, cohort, **kwargs))
    state = output.state
    outputs.append(output)
  return state, outputs


def _run_grouped(process, xs, ys, cohorts=_COHORTS, **kwargs):
  state = process.initialize()
  outputs = []
  for round_num, cohort in cohorts:
    output = process.next(state, _groups(xs, ys, round_num, cohort, **kwargs))
    state = output.state
    outputs.append(output)
  return state, outputs


def _assert_same_train_metrics(reference_metrics, grouped_metrics):
  expected = reference_metrics['client_work']['train']
  actual = grouped_metrics['client_work']['train']
  assert list(actual) == list(expected)
  assert actual['num_examples'] == expected['num_examples']
  assert actual['num_batches'] == expected['num_batches']
  np.testing.assert_allclose(actual['loss'], expected['loss'], rtol=1e-5)
  np.testing.assert_allclose(actual['sparse_categorical_accuracy'],
                             expected['sparse_categorical_accuracy'],
                             rtol=1e-5)


# --- make_groups (host side). ------------------------------------------------


def test_make_groups_uses_the_reference_example_order():
  xs, ys = _population()
  cohort = (6, 2, 4, 1, 0)
  groups = _groups(xs, ys, 3, cohort, group_size=2, pad_to_group_size=True)
  assert [g['valid'].tolist() for g in groups] == [[True, True], [True, True],
                                                   [True, False]]
  assert groups[-1]['length'].tolist() == [len(ys[0]), 0]
  datasets = iter(_reference_datasets(xs, ys, 3, cohort))
  clients = iter(cohort)
  for group in groups:
    first_row = 0
    for n, valid in zip(group['length'], group['valid']):
      if not valid:
        continue
      client = next(clients)
      assert n == len(ys[client])
      rows = first_row + group['order'][2 * first_row:2 * (first_row + n)]
      batches = list(next(datasets).as_numpy_iterator())
      np.testing.assert_array_equal(group['x'][rows],
                                    np.concatenate([b[0] for b in batches]))
      np.testing.assert_array_equal(group['y'][rows],
                                    np.concatenate([b[1] for b in batches]))
      first_row += n
    assert first_row == len(group['y'])


def test_make_groups_of_an_empty_cohort_is_empty():
  xs, ys = _population()
  assert _groups(xs, ys, 1, [], group_size=3) == []


# --- Exactness with zero noise. ----------------------------------------------


@pytest.fixture(scope='module')
def population():
  return _population()


# Clipping reached on the program's path (while loop, 6-8 s) in the default
# tier; no clipping at all (4 s) and the vectorized study path (10 s) in the
# slow tier (2026-12-05, load 1.3-4 on 2 cores).
@pytest.mark.parametrize(
    'clip, max_client_size', [
        (0.05, None),
        pytest.param(1e6, None, marks=pytest.mark.slow),
        pytest.param(0.05, _MAX_SIZE, marks=pytest.mark.slow),
    ],
    ids=['clip_reached', 'clip_not_reached', 'clip_reached-vectorized'])
def test_zero_noise_grouped_equals_reference(tff_runtime, population,
                                             monkeypatch, clip,
                                             max_client_size):
  del tff_runtime
  xs, ys = population
  dp = _dp(clip=clip)
  reference = _reference(dp)
  traced = g.count_vectorized(monkeypatch)
  grouped = _grouped(dp, max_client_size=max_client_size)
  # The case's path ran (no other test builds the vectorized case's process,
  # so the cache cannot hide its trace).
  assert bool(traced) == (max_client_size is not None)
  ref_state, ref_outputs = _run_reference(reference, xs, ys)
  expected = _weights(reference, ref_state)
  # Same seeded initializers: identical initial models.
  assert _max_abs_diff(_weights(grouped, grouped.initialize()),
                       _weights(reference, reference.initialize())) == 0.0

  # 1 per group, 3 per group with a partial last group (padded or not), and
  # the whole cohort in one group.
  for group_size, pad in ((1, False), (3, False), (3, True), (7, False)):
    state, outputs = _run_grouped(grouped,
                                  xs,
                                  ys,
                                  group_size=group_size,
                                  pad_to_group_size=pad)
    diff = _max_abs_diff(_weights(grouped, state), expected)
    assert diff <= _WEIGHTS_ATOL, (group_size, pad, diff)
    for ref_output, output in zip(ref_outputs, outputs):
      _assert_same_train_metrics(ref_output.metrics, output.metrics)
    # Same state leaves (tff_dp.program.checkpoint's format): checkpoints are
    # interchangeable.
    assert [
        (np.shape(t), np.asarray(t).dtype) for t in tf.nest.flatten(state)
    ] == [(np.shape(t), np.asarray(t).dtype) for t in tf.nest.flatten(ref_state)
         ]

  if clip < 1.0:
    # The clip is reached: round 1's server step (lr 1, fresh momentum) is the
    # clipped mean, of norm <= clip * clients / clients_per_round = clip,
    # while the unclipped clients' updates are longer than that.
    initial = _weights(grouped, grouped.initialize())
    state, _ = _run_grouped(grouped, xs, ys, cohorts=_COHORTS[:1], group_size=3)
    step = np.sqrt(
        sum(
            np.sum((a - b)**2)
            for a, b in zip(_weights(grouped, state), initial)))
    assert step <= clip * (1 + 1e-5)
    unclipped = _grouped(_dp(clip=1e6))
    state, _ = _run_grouped(unclipped,
                            xs,
                            ys,
                            cohorts=_COHORTS[:1],
                            group_size=3)
    unclipped_step = np.sqrt(
        sum(
            np.sum((a - b)**2)
            for a, b in zip(_weights(unclipped, state), initial)))
    assert unclipped_step > 2 * clip


def test_client_files_mode_equals_reference(tff_runtime, population, tmp_path):
  del tff_runtime
  xs, ys = population
  dp = _dp(clip=0.05)
  reference = _reference(dp)
  ref_state, ref_outputs = _run_reference(reference, xs, ys)
  directory = str(tmp_path / 'clients')
  grouped_data.write_client_files(xs, ys, directory=directory)
  with pytest.raises(ValueError, match='not empty'):
    grouped_data.write_client_files(xs, ys, directory=directory)
  process = grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=_keras_model_fn(),
      input_dim=_D,
      num_classes=_C,
      dp_factory=learning_process.build_dp_aggregator(dp),
      client_learning_rate=_CLIENT_LR,
      client_momentum=_CLIENT_MOMENTUM,
      server_optimizer=_server_optimizer(),
      batch_size=3,
      epochs=2,
      client_files_dir=directory)
  state, outputs = _run_grouped(process,
                                xs,
                                ys,
                                group_size=3,
                                pad_to_group_size=True,
                                with_examples=False)
  diff = _max_abs_diff(_weights(process, state), _weights(reference, ref_state))
  assert diff <= _WEIGHTS_ATOL
  for ref_output, output in zip(ref_outputs, outputs):
    _assert_same_train_metrics(ref_output.metrics, output.metrics)


def test_adaptive_clip_estimate_equals_reference_padding_not_counted(
    tff_runtime, population):
  del tff_runtime
  xs, ys = population
  dp = _dp(DpMechanism.GAUSSIAN_ADAPTIVE, initial_clip=0.5)
  ref_state, ref_outputs = _run_reference(_reference(dp), xs, ys)
  grouped = _grouped(dp)
  # Groups of 3 padded to 3: round 1 has 7 clients in 3 groups (2 padding
  # slots), round 2 has 5 (1 padding slot). A padding slot counted as an
  # "unclipped" record would move the estimate by a factor exp(-0.2/7) per
  # slot.
  assert not _groups(
      xs, ys, 1, _COHORTS[0][1], group_size=3,
      pad_to_group_size=True)[-1]['valid'].all()
  state, outputs = _run_grouped(grouped,
                                xs,
                                ys,
                                group_size=3,
                                pad_to_group_size=True)
  for ref_output, output in zip(ref_outputs, outputs):
    expected = ref_output.metrics['aggregator']['dp_query_metrics']['clip']
    actual = output.metrics['aggregator']['dp_query_metrics']['clip']
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
  # The fused server side: state type, DP event, query and optimizer state.
  server_checks.assert_same_server_side(_reference(dp), grouped, ref_state,
                                        state, ref_outputs, outputs)


@pytest.mark.parametrize(
    'max_client_size, epochs, batch_size, expected',
    [
        (None, 1, 16, None),
        (0, 1, 16, 0),
        (100, 1, 16, 7),  # W2: six batches of 16 and one of 4.
        (7, 2, 3, 5),
        (16 * grouped_fedavg.MAX_UNROLLED_BATCHES, 1, 16,
         grouped_fedavg.MAX_UNROLLED_BATCHES),
        # One batch too many to unroll.
        (16 * grouped_fedavg.MAX_UNROLLED_BATCHES + 1, 1, 16, None),
    ])
def test_unrolled_batches(max_client_size, epochs, batch_size, expected):
  assert grouped_fedavg.unrolled_batches(max_client_size,
                                         epochs=epochs,
                                         batch_size=batch_size) == expected


@pytest.mark.parametrize('bad', [-1, 2.0, True, '7'])
def test_unrolled_batches_rejects_bad_sizes(bad):
  with pytest.raises(ValueError, match='max_client_size'):
    grouped_fedavg.unrolled_batches(bad, epochs=1, batch_size=16)


def test_client_larger_than_the_unrolled_steps_fails_loudly(
    tff_runtime, population, monkeypatch):
  """A client with more batches than unrolled must not be cut short."""
  del tff_runtime
  xs, ys = population
  # The unrolled steps the program builds (for the CNN and the language
  # models): one client after another, as for a model pfor refuses.
  monkeypatch.setattr(grouped_vectorized, 'vectorizes', lambda *a, **k: False)
  traced = g.count_vectorized(monkeypatch)
  # Built for clients of at most 3 examples (2 batches of 3 over 2 epochs);
  # the cohort's client of 7 examples has 5.
  process = _grouped(_dp(), max_client_size=3)
  assert not traced
  groups = _groups(xs, ys, 1, (0, 2), group_size=2)
  # The worker's TF error reaches the caller as TFF's failed RPC.
  with pytest.raises(grpc.RpcError, match='more local batches than'):
    process.next(process.initialize(), groups)


# --- Noise. ------------------------------------------------------------------


def _assert_std(sample: np.ndarray, expected: float) -> None:
  n = sample.size
  std = float(np.std(sample))
  band = 6.0 / math.sqrt(2 * n)
  assert abs(std / expected - 1.0) < band, (std, expected, band)
  assert abs(float(np.mean(sample))) < 6.0 * expected / math.sqrt(n)


@pytest.mark.parametrize(
    'mechanism', [DpMechanism.GAUSSIAN_FIXED, DpMechanism.GAUSSIAN_ADAPTIVE])
def test_noise_std_on_zero_updates(tff_runtime, mechanism):
  del tff_runtime
  z, n, clip = 1.0, 40, 0.5
  dp = _dp(mechanism,
           noise_multiplier=z,
           clients_per_round=n,
           clip=clip,
           initial_clip=clip)
  if mechanism is DpMechanism.GAUSSIAN_ADAPTIVE:
    # TFF's split of z (design notes, section 2): the clipped-count query
    # has std 0.05 n; the value noise is raised so that both compose to z.
    z = (z**-2 - (2 * 0.05 * n)**-2)**-0.5
  input_dim = 784
  # Zero client learning rate: every update is exactly zero, so the server
  # step (SGD, lr 1, no momentum) is minus the noise / clients_per_round.
  process = _grouped(dp,
                     input_dim=input_dim,
                     hidden=128,
                     client_lr=0.0,
                     server_momentum=0.0)
  xs, ys = _population(sizes=(3, 2, 4), input_dim=input_dim)
  state = process.initialize()
  before = np.concatenate([w.ravel() for w in _weights(process, state)])
  steps = []
  for round_num in (1, 2):
    state = process.next(state,
                         _groups(xs, ys, round_num, [0, 1, 2],
                                 group_size=2)).state
    after = np.concatenate([w.ravel() for w in _weights(process, state)])
    steps.append(after.astype(np.float64) - before)
    before = after
  assert steps[0].size >= 100_000
  _assert_std(steps[0], z * clip / n)
  # Fresh noise every round.
  assert not np.allclose(steps[0][:1000], steps[1][:1000])


# --- Robustness. -------------------------------------------------------------


def test_non_finite_and_absurd_updates_are_neutralized(tff_runtime):
  # Client 1 has an infinite feature (its update is NaN: zeroed, and its
  # metrics dropped); client 3's features are 1e25 (a finite update whose
  # squared norm overflows float32: rescaled before clipping). Client 3 has
  # one local step (its update stays finite) on two examples of different
  # labels (the saturated softmax then cannot fit both: a non-zero gradient).
  del tff_runtime
  xs, ys = _population(sizes=(4, 1, 3, 2, 2))
  xs[1] = np.full_like(xs[1], np.inf)
  xs[3] = np.full_like(xs[3], 1e25)
  ys[3] = np.array([0, 1], np.int32)
  cohorts = ((1, (0, 1, 2, 3, 4)),)
  dp = _dp(clip=1.0, clients_per_round=5)
  settings = dict(batch_size=4, epochs=1)
  reference = _reference(dp)
  ref_state, ref_outputs = _run_reference(reference, xs, ys, cohorts,
                                          **settings)
  grouped = _grouped(dp, **settings)
  state, outputs = _run_grouped(grouped,
                                xs,
                                ys,
                                cohorts,
                                group_size=2,
                                epochs=1)
  weights = _weights(grouped, state)
  assert all(np.all(np.isfinite(w)) for w in weights)
  assert _max_abs_diff(weights, _weights(reference,
                                         ref_state)) <= (_WEIGHTS_ATOL)
  _assert_same_train_metrics(ref_outputs[0].metrics, outputs[0].metrics)
  assert outputs[0].metrics['client_work']['train']['num_examples'] == 11
  # The NaN client contributes exactly what an absent client does.
  without, _ = _run_grouped(grouped,
                            xs,
                            ys, ((1, (0, 2, 3, 4)),),
                            group_size=2,
                            epochs=1)
  assert _max_abs_diff(weights, _weights(grouped, without)) <= _WEIGHTS_ATOL
  # The absurd client was rescaled and clipped, not zeroed: it moved the
  # model (its clipped update has norm 1, divided by clients_per_round 5).
  without, _ = _run_grouped(grouped,
                            xs,
                            ys, ((1, (0, 1, 2, 4)),),
                            group_size=2,
                            epochs=1)
  assert _max_abs_diff(weights, _weights(grouped, without)) > 1e-3


def test_empty_cohort_round_runs_and_adds_noise(tff_runtime):
  # Poisson sampling can draw nobody: the round must run with zero TFF
  # clients and still release the noise.
  del tff_runtime
  process = _grouped(
      _dp(DpMechanism.GAUSSIAN_ADAPTIVE,
          noise_multiplier=1.0,
          clients_per_round=40))
  state = process.initialize()
  before = _weights(process, state)
  output = process.next(state, [])
  assert _max_abs_diff(_weights(process, output.state), before) > 0
  train = output.metrics['client_work']['train']
  assert train['num_examples'] == 0 and train['loss'] == 0.0
  clip = float(output.metrics['aggregator']['dp_query_metrics']['clip'])
  assert np.isfinite(clip) and clip > 0


def test_rejects_factories_it_cannot_reproduce():
  with pytest.raises(TypeError, match='DifferentiallyPrivateFactory'):
    grouped_fedavg.build_grouped_dp_fedavg(
        keras_model_fn=_keras_model_fn(),
        input_dim=_D,
        num_classes=_C,
        dp_factory=learning_process.sanitizing_dp_aggregator(_dp()),
        client_learning_rate=0.1,
        client_momentum=0.0,
        server_optimizer=_server_optimizer(),
        batch_size=3,
        epochs=1)


# --- Through the program. -----------------------------------------------------


def _train(tmp_path, name, *flags):
  result = programs.run_train(
      f'--flagfile={os.path.join(REPO_ROOT, "configs", "smoke.cfg")}',
      f'--output_dir={tmp_path / "runs"}',
      f'--run_name={name}',
      '--rounds=2',
      '--noise_multiplier=0',
      '--allow_zero_noise',
      # The same cohorts in both runs, so that their releases can be equal.
      '--insecure_sampling_seed=1',
      *flags,
      env_extra={'TMPDIR': str(tmp_path)},
      timeout=600)
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'runs' / name / 'metrics.csv', newline='') as f:
    return result.stdout, list(csv.DictReader(f))


@pytest.mark.e2e
@pytest.mark.slow  # ~35 s; the same equality in-process: tests above.
def test_program_grouped_by_default_and_same_release_as_per_client(tmp_path):
  """The smoke config runs grouped unless told not to, with the same values."""
  grouped_out, grouped = _train(tmp_path, 'grouped')
  reference_out, reference = _train(tmp_path, 'reference',
                                    '--clients_per_call=1')
  assert 'clients per TFF call (the grouped path, --algorithm=fedavg)' in (
      grouped_out)
  assert 'clients per TFF call' not in reference_out
  assert [row.keys() for row in grouped] == [row.keys() for row in reference]
  for row, expected in zip(grouped, reference):
    for key in row:
      if key == 'nonprivate/round_seconds':
        continue
      np.testing.assert_allclose(float(row[key]),
                                 float(expected[key]),
                                 rtol=1e-5,
                                 err_msg=key)
  # The client files live only while the run does.
  assert not [p for p in os.listdir(tmp_path) if p.startswith('tff-dp-')]


# --- Choosing the path (pure Python). -----------------------------------------

_config = flag_configs.smoke_config


@pytest.mark.parametrize('overrides, in_memory, expected', [
    ({}, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({}, False, 1),
    ({
        'clients_per_call': 1
    }, True, 1),
    ({
        'clients_per_call': 7
    }, True, 7),
    ({
        'algorithm': 'fedsgd'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'algorithm': 'fedprox',
        'proximal_strength': 0.01
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'algorithm': 'dp_ftrl',
        'client_sampling': 'shuffled_epochs',
        'dp_mechanism': 'tree_aggregation',
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'dp_mechanism': 'none'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'dp_mechanism': 'gaussian_fixed'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'client_weighting': 'capped',
        'weight_cap': 10
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'client_weighting': 'num_examples',
        'dp_mechanism': 'none'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'local_dp': 'laplace',
        'local_epsilon': 1
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'local_dp': 'gaussian',
        'local_noise_multiplier': 1,
        'dp_mechanism': 'none'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'example_dp': True,
        'dp_mechanism': 'none'
    }, True, simulation_path.AUTO_CLIENTS_PER_CALL),
    ({
        'example_dp': True,
        'dp_mechanism': 'none',
        'client_epochs': 2
    }, True, 1),
])
def test_resolve_clients_per_call(overrides, in_memory, expected):
  assert simulation_path.resolve_clients_per_call(
      _config(**overrides), in_memory=in_memory) == expected


def test_explicit_grouping_of_streamed_data_is_refused():
  with pytest.raises(ConfigError, match='clients_per_call=8'):
    simulation_path.resolve_clients_per_call(_config(clients_per_call=8),
                                             in_memory=False)


def test_explicit_grouping_of_an_unsupported_config_is_refused():
  with pytest.raises(ConfigError, match='--example_dp=True with'):
    config_checks.check_config(
        _config(clients_per_call=8,
                dp_mechanism='none',
                example_dp=True,
                client_epochs=2))


def test_grouped_rounds_files_are_private_and_removed(tmp_path):
  xs, ys = _population()
  with grouped_data.GroupedRounds(xs,
                                  ys,
                                  seed=_DATA_SEED,
                                  epochs=2,
                                  group_size=3,
                                  directory=str(tmp_path)) as rounds:
    assert os.stat(rounds.files_dir).st_mode & 0o777 == 0o700
    assert len(os.listdir(rounds.files_dir)) == 2 * len(xs)
    groups = rounds(4, [5, 0, 2, 6])
    assert [list(g['client']) for g in groups] == [[5, 0, 2], [6]]
    assert all('x' not in g for g in groups)
  assert os.listdir(tmp_path) == []


# --- A CNN (convolutions, reshapes, dropout). ---------------------------------

_IMAGE = (6, 6, 1)  # The smallest image tff_dp's CNN takes.


def _cnn_fn(*, dropout):
  """tff_dp's CNN on 6x6 images, or the same network without its dropout."""

  def keras_model_fn():
    model = models.build_keras_model(ModelKind.CNN,
                                     input_dim=36,
                                     num_classes=_C,
                                     hidden_units=_HIDDEN,
                                     seed=_SEED,
                                     image_shape=_IMAGE)
    if dropout:
      return model
    return tf.keras.Sequential([tf.keras.Input((36,))] + [
        layer for layer in model.layers
        if not isinstance(layer, tf.keras.layers.Dropout)
    ])

  return keras_model_fn


@functools.lru_cache(maxsize=None)
def _grouped_cnn(*, dropout):
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=_cnn_fn(dropout=dropout),
      input_dim=36,
      num_classes=_C,
      dp_factory=learning_process.build_dp_aggregator(_dp(clip=0.05)),
      client_learning_rate=_CLIENT_LR,
      client_momentum=_CLIENT_MOMENTUM,
      server_optimizer=_server_optimizer(),
      batch_size=3,
      epochs=2,
      max_client_size=_MAX_SIZE)


def test_zero_noise_grouped_cnn_equals_reference(tff_runtime):
  """Convolutions and reshapes go through the grouped path unchanged.

  Dropout draws differ between the paths by nature, so the exact comparison
  uses the CNN without its dropout layers.
  """
  del tff_runtime
  xs, ys = _population(input_dim=36)
  keras_model_fn = _cnn_fn(dropout=False)
  reference = learning_process.build_learning_process(
      model_fn=lambda: tff.learning.models.from_keras_model(
          keras_model_fn(),
          loss=models.loss_fn(),
          input_spec=models.input_spec(36),
          metrics=[tf.keras.metrics.SparseCategoricalAccuracy()]),
      model_aggregator=learning_process.build_model_aggregator(
          dp=_dp(clip=0.05), client_weighting=ClientWeighting.UNIFORM),
      client_learning_rate=_CLIENT_LR,
      client_momentum=_CLIENT_MOMENTUM,
      server_optimizer=_server_optimizer())
  ref_state, ref_outputs = _run_reference(reference, xs, ys)
  grouped = _grouped_cnn(dropout=False)
  state, outputs = _run_grouped(grouped, xs, ys, group_size=3)
  assert _max_abs_diff(_weights(grouped, state), _weights(reference,
                                                          ref_state)) <= 1e-5
  for ref_output, output in zip(ref_outputs, outputs):
    _assert_same_train_metrics(ref_output.metrics, output.metrics)


@pytest.mark.slow  # ~14 s; the CNN's equality with the reference stays.
def test_grouped_cnn_dropout_is_live(tff_runtime):
  """The same round from the same state differs only through dropout.

  Without dropout the grouped round is deterministic (zero noise); with it,
  fresh masks make two runs differ (all masks equal by chance: ~2^-100).
  """
  del tff_runtime
  xs, ys = _population(input_dim=36)
  groups = _groups(xs, ys, 1, range(len(xs)), group_size=3)
  for dropout in (False, True):
    process = _grouped_cnn(dropout=dropout)
    state = process.initialize()
    first = _weights(process, process.next(state, groups).state)
    second = _weights(process, process.next(state, groups).state)
    assert (_max_abs_diff(first, second) > 0) == dropout


def test_client_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True,
                        text=True,
                        check=True)
  orphan = tmp_path / f'tff-dp-clients-{int(dead.stdout)}-abc'
  orphan.mkdir()
  (orphan / 'x0.bin').write_bytes(b'data')
  live = tmp_path / f'tff-dp-clients-{os.getpid()}-def'
  live.mkdir()
  other = tmp_path / 'tff-dp-clients-notapid'
  other.mkdir()
  xs, ys = _population()
  with grouped_data.GroupedRounds(xs,
                                  ys,
                                  seed=0,
                                  epochs=1,
                                  group_size=2,
                                  directory=str(tmp_path)) as rounds:
    assert not orphan.exists()
    assert live.exists() and other.exists()
    assert os.path.basename(
        rounds.files_dir).startswith(f'tff-dp-clients-{os.getpid()}-')
