"""Several grouped rounds in one TFF call (`tff_dp.algorithms.fused_rounds`).

A block of k fused rounds must be k calls of `process.next`: at zero noise
the same state and every metric, bit for bit (the same graphs run on the
same inputs in the same order; an empty group adds exact zeros to the sums),
for a block whose rounds have different numbers of groups (padding) and a
round with nobody (which must be `next(state, [])`). With noise, every round
of a block draws its own noise: the fused form holds `next`'s TensorFlow
once and nothing else, so there is no second set of keys, and two rounds of
one block on identical inputs give different steps, each of the noise's std
(6 standard errors of the sample std over ~100,000 draws: flake rate ~2e-9
per check, `tests.helpers.grouped.assert_std`). Compiling a block does not
call TFF's compiler again, whatever its length.
"""

import functools
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.python.core.impl.computation import computation_impl

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import dp_ftrl
from tff_dp.algorithms import example_dp
from tff_dp.algorithms import fused_rounds
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import grouped_mean
from tff_dp.algorithms import learning_process
from tff_dp.config import DpMechanism
from tff_dp.execution import compiled_forms
from tff_dp.mechanisms import dp_queries
from tff_dp.mechanisms import local_dp

pytestmark = pytest.mark.tff

# A block of three rounds: 3 groups (of 3), nobody, 1 group: both paddings.
_BLOCK = ((1, (0, 1, 2, 3, 4, 5, 6)), (2, ()), (3, (3, 5)))
_NEXT_BLOCK = ((4, (6, 2, 4, 1, 0)), (5, (2,)), (6, ()))


def _runner(process):
  return fused_rounds.FusedRounds(process,
                                  compile_fn=compiled_forms.compile,
                                  register_fn=compiled_forms.register)


def _dp(mechanism=DpMechanism.GAUSSIAN_FIXED, **kwargs):
  settings = dict(clients_per_round=7, clip=0.05)
  settings.update(kwargs)
  return learning_process.build_dp_aggregator(
      central_dp.settings(mechanism, **settings))


def _dp_ftrl():
  return g.build_grouped(dp_queries.build_tree_aggregator(
      noise_multiplier=0.0,
      clip=0.05,
      clients_per_round=7,
      rounds_per_epoch=2,
      record_specs=dp_ftrl.model_update_specs(g.model_fn())),
                         client_momentum=0.0,
                         server=dp_ftrl.build_server_optimizer(
                             server_learning_rate=1.0, server_momentum=0.9))


def _local_dp(central):
  return g.build_grouped(
      _dp(clip=10.0) if central else None,
      local_dp_factory=local_dp.LocalDpFactory(
          mechanism=(local_dp.LocalMechanism.GAUSSIAN
                     if central else local_dp.LocalMechanism.LAPLACE),
          clip=0.05,
          noise_scale=0.0,
          clients_per_round=7,
          central_factory=_dp(clip=10.0) if central else None,
          _allow_zero_noise=True))


def _example_dp():
  return g.build_grouped(None,
                         example_dp_settings=example_dp.DpSgdSettings(
                             learning_rate=g.CLIENT_LR,
                             noise_multiplier=0.0,
                             clip=0.1,
                             expected_batch_size=8,
                             local_steps=3),
                         clients_per_round=7)


def _while_loop(dp_factory, **kwargs):
  """The helper's process with the local steps in a while loop, as the
  program builds the MLP (`tff_dp.program.assembly`): no vectorized group
  computation, and a build and compile ~5 s of CPU shorter."""
  settings = dict(keras_model_fn=g.keras_model_fn(),
                  input_dim=g.D,
                  num_classes=g.C,
                  dp_factory=dp_factory,
                  client_learning_rate=g.CLIENT_LR,
                  client_momentum=g.CLIENT_MOMENTUM,
                  server_optimizer=g.server_optimizer(),
                  batch_size=g.BATCH_SIZE,
                  epochs=g.EPOCHS)
  settings.update(kwargs)
  return grouped_fedavg.build_grouped_dp_fedavg(**settings)


# The program's layout for the MLP (while loop, also the helpers' default)
# and the vectorized study (unrolled steps, vectorized over a group's
# clients).
_BUILDERS = {
    'adaptive':
        lambda: _while_loop(_dp(DpMechanism.GAUSSIAN_ADAPTIVE)),
    'adaptive_vectorized':
        lambda: g.build_grouped(_dp(DpMechanism.GAUSSIAN_ADAPTIVE),
                                max_client_size=g.MAX_SIZE),
    'fixed':
        lambda: g.build_grouped(_dp()),
    'dp_ftrl':
        _dp_ftrl,
    'fedprox':
        lambda: g.build_grouped(
            _dp(),
            grouped_client_options.ClientOptions(proximal_strength=1.0,
                                                 stateless_client_work=True)),
    'fedsgd':
        lambda: g.build_grouped(
            _dp(clip=0.3),
            grouped_client_options.ClientOptions(full_gradient=True,
                                                 stateless_client_work=True)),
    'capped_weights':
        lambda: g.build_grouped(
            _dp(clip=1e6), grouped_client_options.ClientOptions(weight_cap=3)),
    'local_dp':
        lambda: _local_dp(central=False),
    'local_and_central':
        lambda: _local_dp(central=True),
    'example_dp':
        _example_dp,
    'nonprivate':
        lambda: g.build_grouped(None,
                                mean_query=grouped_mean.ClientMeanQuery(
                                    by_num_examples=True)),
}


@functools.lru_cache(maxsize=None)
def _process(name):
  return _BUILDERS[name]()


def _round_groups(block, *, xs, ys, **kwargs):
  return [
      g.groups(xs, ys, round_num, list(cohort), group_size=3, **kwargs)
      for round_num, cohort in block
  ]


def _sequential(process, state, round_groups):
  metrics = []
  for groups in round_groups:
    output = process.next(state, groups)
    state = output.state
    metrics.append(output.metrics)
  return state, metrics


def _assert_identical(actual, expected):
  tf.nest.assert_same_structure(actual, expected)
  for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
    np.testing.assert_array_equal(a, e)


def _assert_fused_is_sequential(process, **group_kwargs):
  xs, ys = g.population()
  runner = _runner(process)
  state = fused_state = process.initialize()
  # First, so that `next` is compiled once (and registered) for both ways.
  runner.fused(len(_BLOCK))
  for block in (_BLOCK, _NEXT_BLOCK):
    round_groups = _round_groups(block, xs=xs, ys=ys, **group_kwargs)
    state, metrics = _sequential(process, state, round_groups)
    fused_state, fused_metrics = runner.run(fused_state, round_groups)
    _assert_identical(fused_state, state)
    _assert_identical(fused_metrics, metrics)
  # The model moved: the comparison is not of two untrained states.
  assert g.max_abs_diff(g.weights(process, state),
                        g.weights(process, process.initialize())) > 1e-3


# 3-12 s each (a process build and its compile): DP-FedAvg with adaptive
# clipping (padding must not reach the clip's count), as the program builds
# it, in the default tier.
@pytest.mark.parametrize('name', [
    'adaptive',
    *(pytest.param(name, marks=pytest.mark.slow)
      for name in ('adaptive_vectorized', 'fixed', 'dp_ftrl', 'fedprox',
                   'fedsgd', 'capped_weights', 'local_dp', 'local_and_central',
                   'example_dp', 'nonprivate'))
])
def test_zero_noise_fused_rounds_equal_sequential_calls(tff_runtime, name):
  del tff_runtime
  _assert_fused_is_sequential(_process(name))


@pytest.mark.slow
def test_client_files_mode_fused_equals_sequential(tff_runtime, tmp_path):
  del tff_runtime
  xs, ys = g.population()
  grouped_data.write_client_files(xs, ys, directory=str(tmp_path))
  process = g.build_grouped(_dp(DpMechanism.GAUSSIAN_ADAPTIVE),
                            client_files_dir=str(tmp_path))
  _assert_fused_is_sequential(process, with_examples=False)


def test_padding_groups_change_nothing(tff_runtime):
  # Adaptive clipping: a padding slot counted as a client would move the
  # clip estimate; the training metrics count examples and clients.
  del tff_runtime
  process = _process('adaptive')
  xs, ys = g.population()
  padding = grouped_data.padding_group(
      process.next.type_signature.parameter[1].member)
  state = process.initialize()
  groups = g.groups(xs, ys, 1, [0, 1, 2, 3], group_size=3)
  _assert_identical(process.next(state, groups + [padding, padding]),
                    process.next(state, groups))
  nobody = process.next(state, [])
  _assert_identical(process.next(state, [padding] * 3), nobody)
  assert nobody.metrics['client_work']['train']['num_examples'] == 0
  # A block in which nobody takes part: zero TFF clients, as next's.
  _assert_identical(
      _runner(process).run(state, [[], []]),
      _sequential(process, state, [[], []]))


def test_padding_group_is_one_slot_without_examples():
  files = grouped_data.padding_group(
      grouped_data.group_type(5, with_examples=False))
  assert list(files) == ['order', 'length', 'valid', 'client']
  _assert_identical(
      dict(files),
      dict(order=np.zeros([0], np.int32),
           length=np.zeros([1], np.int32),
           valid=np.zeros([1], np.bool_),
           client=np.full([1], -1, np.int32)))
  dense = grouped_data.padding_group(
      grouped_data.group_type(5, label_shape=(5,)))
  assert dense['x'].shape == (0, 5) and dense['x'].dtype == np.float32
  assert dense['y'].shape == (0, 5) and dense['y'].dtype == np.int32
  assert dense['valid'].tolist() == [False]


@functools.lru_cache(maxsize=None)
def _noise_process():
  # Zero client learning rate and no server momentum: each round's step is
  # minus the noise over n (clients_per_round).
  return _while_loop(_dp(noise_multiplier=1.0, clients_per_round=40, clip=0.5),
                     keras_model_fn=g.keras_model_fn(784, 128),
                     input_dim=784,
                     client_learning_rate=0.0,
                     client_momentum=0.0,
                     server_optimizer=g.server_optimizer(momentum=0.0))


def _flat(process, state):
  return np.concatenate([w.ravel() for w in g.weights(process, state)
                        ]).astype(np.float64)


def test_each_fused_round_draws_its_own_noise(tff_runtime):
  del tff_runtime
  process = _noise_process()
  sigma = 1.0 * 0.5 / 40  # z * clip / n.
  xs, ys = g.population(sizes=(3, 2, 4), input_dim=784)
  groups = g.groups(xs, ys, 1, [0, 1, 2], group_size=2)
  state = process.initialize()
  runner = _runner(process)
  start = _flat(process, state)
  one = _flat(process, runner.run(state, [groups])[0]) - start
  # Two blocks of two rounds from the same state on identical inputs.
  two = _flat(process, runner.run(state, [groups, groups])[0]) - start
  again = _flat(process, runner.run(state, [groups, groups])[0]) - start
  assert one.size >= 100_000
  g.assert_std(one, sigma)
  # Independent noise in the two rounds: std sqrt(2) sigma (the same noise
  # twice would give 2 sigma).
  g.assert_std(two, np.sqrt(2) * sigma)
  # Independent blocks: std 2 sigma (the same noise would give 0).
  g.assert_std(two - again, 2 * sigma)


def _tensorflow_graphs(computation) -> list[bytes]:
  """The graph of every TensorFlow computation in `computation`, in order."""
  graphs = []

  def visit(message):
    if (isinstance(message, computation_pb2.Computation) and
        message.WhichOneof('computation') == 'tensorflow'):
      graphs.append(message.tensorflow.graph_def.value)
      return
    for field, value in message.ListFields():
      if field.type != field.TYPE_MESSAGE:
        continue
      for item in (value if field.label == field.LABEL_REPEATED else [value]):
        visit(item)

  visit(computation_impl.ConcreteComputation.get_proto(computation))
  return graphs


def test_compiled_once_whatever_the_block_length(tff_runtime, monkeypatch):
  del tff_runtime
  process = _noise_process()
  state = process.initialize()
  calls = []
  compile_native = tff.backends.native.desugar_and_transform_to_native

  def counted(computation):
    calls.append(computation)
    return compile_native(computation)

  monkeypatch.setattr(tff.backends.native, 'desugar_and_transform_to_native',
                      counted)
  xs, ys = g.population(sizes=(3, 2, 4), input_dim=784)
  groups = g.groups(xs, ys, 1, [0, 1, 2], group_size=2)
  runner = _runner(process)
  for rounds in (2, 7):
    state, metrics = runner.run(state, [groups] * rounds)
    assert len(metrics) == rounds
  # At most `next`'s compile (none if another test compiled it already),
  # whatever the block length: never the fused computations'.
  assert len(calls) <= 1 and all(c is process.next for c in calls), calls
  # A single round afterwards reuses `next`'s compiled form.
  process.next(state, groups)
  assert len(calls) <= 1
  # The fused forms' TensorFlow is exactly `next`'s compiled graphs, once:
  # the run's own noise keys, and no copy of the graphs per round.
  native_graphs = _tensorflow_graphs(compiled_forms.compile(process.next))
  assert native_graphs
  for rounds in (2, 7):
    assert _tensorflow_graphs(compiled_forms.compile(
        runner.fused(rounds))) == native_graphs


def _fake_process(client_type):
  """A process whose `next` has the given client type (never executed)."""
  state = tff.FederatedType(np.float32, tff.SERVER)
  next_type = tff.FunctionType(
      tff.StructType([state, tff.FederatedType(client_type, tff.CLIENTS)]),
      tff.StructType([('state', state), ('metrics', state)]))
  return types.SimpleNamespace(next=types.SimpleNamespace(
      type_signature=next_type))


def test_refuses_processes_off_the_grouped_path():
  # TFF's one client per call: padding with an empty dataset would add a
  # client.
  with pytest.raises(TypeError, match='grouped path'):
    _runner(_fake_process(tff.SequenceType(np.float32)))
  runner = _runner(_fake_process(grouped_data.group_type(3)))
  with pytest.raises(ValueError, match='at least one round'):
    runner.run(None, [])


def test_rejects_bad_block_lengths():
  for rounds in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match='rounds must be a positive int'):
      fused_rounds.build_fused_next(_fake_process(grouped_data.group_type(3)),
                                    rounds,
                                    compile_fn=compiled_forms.compile,
                                    register_fn=compiled_forms.register)
