"""The transformer with `--trainable` on the grouped path, against the reference.

The reference is TFF's one-client-per-call FedAvg (`tff_dp.algorithms.
learning_process.build_learning_process`, its frozen weights constants of the
client computation as on the grouped path) over TFF's Keras wrapper of the
same configured model (`tff_dp.models.trainable.configure`, LoRA adapters); the
grouped process (`tff_dp.algorithms.grouped_fedavg`) runs many simulated
clients per TFF call on `tff_dp.algorithms.grouped_model`'s functional model.
With zero noise both must release the same model (float32 round-off of
summing the clipped updates in another order: absolute 1e-6 on weights of
order 1) and the same training metrics (relative 1e-5), and the frozen
weights must not move at all.

Noise, as tests/algorithms/test_grouped_fedavg.py checks it: the sample std
of d i.i.d. normal draws has relative standard error ~1/sqrt(2d); the band is
6 standard errors (two-sided flake rate ~2e-9 per check).

Tests that execute TFF computations of the transformer take 17-65 s each
(tracing the unrolled local steps), hence `slow`.
"""

import functools

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import dp_ftrl
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.cli import cli_flags
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer
from tff_dp.config import Trainable
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.mechanisms import dp_queries
from tff_dp.models import trainable as trainable_lib
from tff_dp.program import assembly
from tff_dp.program import client_data
from tff_dp.program import model_size
from tff_dp.program import run_privacy

pytestmark = pytest.mark.tff

# Vocabulary 11 (0 padding, 8-10 oov/bos/eos), windows of 6 tokens.
_V, _W, _SEED, _DATA_SEED = 11, 6, 3, 5
_TINY = dict(transformer_layers=1,
             transformer_width=8,
             transformer_heads=2,
             transformer_ff_width=16)
_SIZES = (3, 1, 4, 2, 3)
_COHORTS = ((1, (0, 1, 2, 3, 4)), (2, (4, 2, 0)))
_WEIGHTS_ATOL = 1e-6
_LR, _MOMENTUM = 0.5, 0.5


def _keras_model_fn(trainable=Trainable.LORA, sizes=None, rank=2):
  settings = trainable_lib.TrainableSettings(trainable=trainable,
                                             lora_rank=rank,
                                             lora_alpha=float(rank),
                                             seed=_SEED)

  def build():
    model = models.build_keras_model(ModelKind.TRANSFORMER,
                                     input_dim=_W,
                                     num_classes=_V,
                                     hidden_units=1,
                                     seed=_SEED,
                                     vocab_size=_V,
                                     **(sizes or _TINY))
    return trainable_lib.configure(model, settings)

  return build


def _dp(mechanism=DpMechanism.GAUSSIAN_FIXED,
        *,
        noise_multiplier=0.0,
        clients_per_round=len(_SIZES),
        clip=1e6):
  return central_dp.settings(mechanism,
                             noise_multiplier=noise_multiplier,
                             clients_per_round=clients_per_round,
                             clip=clip,
                             initial_clip=clip)


def _server_optimizer(momentum=0.9):
  return learning_process.build_server_optimizer(ServerOptimizer.SGD,
                                                 learning_rate=1.0,
                                                 momentum=momentum)


@functools.lru_cache(maxsize=None)
def _reference(dp, trainable=Trainable.LORA):
  return learning_process.build_learning_process(
      model_fn=models.model_fn_from_keras(_keras_model_fn(trainable),
                                          input_dim=_W,
                                          num_classes=_V,
                                          label_kind=LabelKind.NEXT_TOKENS),
      model_aggregator=learning_process.build_model_aggregator(
          dp=dp, client_weighting=ClientWeighting.UNIFORM),
      client_learning_rate=_LR,
      client_momentum=_MOMENTUM,
      server_optimizer=_server_optimizer())


def _grouped(dp,
             trainable=Trainable.LORA,
             *,
             dp_factory=None,
             sizes=None,
             rank=2,
             client_lr=_LR,
             server_momentum=0.9,
             server=None,
             client_files_dir=None,
             max_client_size=max(_SIZES),
             frozen_weights=None):
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=_keras_model_fn(trainable, sizes, rank),
      input_dim=_W,
      num_classes=_V,
      dp_factory=dp_factory or learning_process.build_dp_aggregator(dp),
      client_learning_rate=client_lr,
      client_momentum=_MOMENTUM,
      server_optimizer=server or _server_optimizer(server_momentum),
      batch_size=2,
      epochs=1,
      max_client_size=max_client_size,
      client_files_dir=client_files_dir,
      label_kind=LabelKind.NEXT_TOKENS,
      frozen_weights=frozen_weights)


def _population(sizes=_SIZES):
  """Windows of token ids and their next tokens, padding (0) at the end of
  some windows and special ids among the labels."""
  rng = np.random.default_rng(0)
  xs, ys = [], []
  for n in sizes:
    stream = rng.integers(1, _V, size=(n, _W + 1))
    stream[:, -2:] *= rng.integers(0, 2, size=(n, 1))  # Padding at the end.
    xs.append(stream[:, :-1].astype(np.float32))
    ys.append(stream[:, 1:].astype(np.int32))
  return xs, ys


def _run_reference(process, xs, ys):
  state, outputs = process.initialize(), []
  for round_num, cohort in _COHORTS:
    datasets = [
        client_data.client_dataset(xs[i],
                                   ys[i],
                                   batch_size=2,
                                   epochs=1,
                                   rng=np.random.default_rng(
                                       [_DATA_SEED, round_num, i]))
        for i in cohort
    ]
    output = process.next(state, datasets)
    state = output.state
    outputs.append(output)
  return state, outputs


def _run_grouped(process, xs, ys, *, group_size, **kwargs):
  state, outputs = process.initialize(), []
  for round_num, cohort in _COHORTS:
    groups = grouped_data.make_groups(xs,
                                      ys,
                                      cohort,
                                      round_num=round_num,
                                      seed=_DATA_SEED,
                                      epochs=1,
                                      group_size=group_size,
                                      **kwargs)
    output = process.next(state, groups)
    state = output.state
    outputs.append(output)
  return state, outputs


def _weights(process, state):
  weights = process.get_model_weights(state)
  return ([np.array(w) for w in weights.trainable],
          [np.array(w) for w in weights.non_trainable])


# --- Pure TF: the accuracy terms, the functional model's weight split. ------


def test_accuracy_terms_count_what_the_reference_metric_counts():
  rng = np.random.default_rng(1)
  logits = tf.constant(rng.normal(size=(4, _W, _V)), tf.float32)
  labels = tf.constant(rng.integers(0, _V, size=(4, _W)), tf.int32)
  metric = models.NextTokenAccuracy()
  metric.update_state(labels, logits)
  correct, counted = grouped_model.accuracy_terms(
      logits, labels, label_kind=LabelKind.NEXT_TOKENS)
  real = (labels.numpy() != 0) & (labels.numpy() < _V - 3)
  assert float(counted) == real.sum() > 0
  np.testing.assert_allclose(float(correct) / float(counted),
                             float(metric.result()),
                             rtol=1e-6)


# 1.6-11 s each (measured at varying load): slow.
@pytest.mark.slow
@pytest.mark.parametrize('trainable', [
    Trainable.LORA, Trainable.FFA_LORA, Trainable.HEAD, Trainable.LAST_K,
    Trainable.ALL
])
def test_functional_model_splits_and_computes_as_keras(trainable):
  """The plan feeds each creation its own tensor: the same logits as the
  Keras model, and the reference's split of the weights (TFF's Keras
  wrapper's trainable / non-trainable variables, in order)."""
  keras_model_fn = _keras_model_fn(trainable)
  model = grouped_model.functional_model(keras_model_fn,
                                         input_dim=_W,
                                         num_classes=_V,
                                         label_kind=LabelKind.NEXT_TOKENS)
  keras_model = keras_model_fn()
  trained, frozen = model.initial_weights
  assert [w.shape for w in trained
         ] == [tuple(v.shape) for v in keras_model.trainable_variables]
  assert [w.shape for w in frozen
         ] == [tuple(v.shape) for v in keras_model.non_trainable_variables]
  # Distinct values, so that a tensor fed to the wrong variable shows.
  rng = np.random.default_rng(2)
  trained = [rng.normal(size=w.shape).astype(np.float32) for w in trained]
  frozen = [rng.normal(size=w.shape).astype(np.float32) for w in frozen]
  for variable, value in zip(
      keras_model.trainable_variables + keras_model.non_trainable_variables,
      trained + frozen):
    variable.assign(value)
  x = np.random.default_rng(3).integers(0, _V, size=(2, _W)).astype(np.float32)
  # Eager first: a Keras model built in a graph invalidates the eager ones.
  expected = keras_model(x).numpy()
  with tf.Graph().as_default():
    logits = model.predict_on_batch((trained, frozen), x, training=False)
    with tf.compat.v1.Session() as session:
      actual = session.run(logits)
  np.testing.assert_allclose(actual, expected, atol=1e-5)


# --- Zero noise: the reference's model, frozen weights untouched. -----------


@pytest.fixture(scope='module')
def population():
  return _population()


@pytest.mark.slow
def test_zero_noise_grouped_transformer_lora_equals_reference(
    tff_runtime, population):
  del tff_runtime
  xs, ys = population
  dp = _dp(clip=0.02)
  reference = _reference(dp)
  ref_state, ref_outputs = _run_reference(reference, xs, ys)
  grouped = _grouped(dp)
  initial = _weights(grouped, grouped.initialize())
  ref_initial = _weights(reference, reference.initialize())
  # The same seeded model: identical adapters and frozen weights.
  assert g.max_abs_diff(initial[0] + initial[1],
                        ref_initial[0] + ref_initial[1]) == 0.0
  expected, ref_frozen = _weights(reference, ref_state)
  for group_size, pad in ((2, True), (5, False)):
    state, outputs = _run_grouped(grouped,
                                  xs,
                                  ys,
                                  group_size=group_size,
                                  pad_to_group_size=pad)
    trained, frozen = _weights(grouped, state)
    assert g.max_abs_diff(trained, expected) <= _WEIGHTS_ATOL
    # The adapters' B moved from zero; the base did not move at all.
    assert np.any(trained[1]) and not np.any(initial[0][1])
    for before, after, ref in zip(initial[1], frozen, ref_frozen):
      np.testing.assert_array_equal(after, before)
      np.testing.assert_array_equal(after, ref)
    for ref_output, output in zip(ref_outputs, outputs):
      want = ref_output.metrics['client_work']['train']
      got = output.metrics['client_work']['train']
      assert list(got) == list(want) == [
          'next_token_accuracy', 'loss', 'num_examples', 'num_batches'
      ]
      assert got['num_examples'] == want['num_examples']
      assert got['num_batches'] == want['num_batches']
      np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5)
      np.testing.assert_allclose(got['next_token_accuracy'],
                                 want['next_token_accuracy'],
                                 rtol=1e-5)
  # The clip was reached: round 1's step (lr 1, fresh momentum) is the
  # clipped mean, of norm at most the clip.
  step = np.sqrt(
      sum(
          np.sum((a - b)**2) for a, b in zip(
              _weights(reference, ref_outputs[0].state)[0], ref_initial[0])))
  assert step <= 0.02 * (1 + 1e-5)


@pytest.mark.slow
def test_client_files_mode_reads_next_token_labels(tff_runtime, population,
                                                   tmp_path):
  del tff_runtime
  xs, ys = population
  dp = _dp(clip=0.02)
  directory = str(tmp_path / 'clients')
  grouped_data.write_client_files(xs, ys, directory=directory)
  dense, _ = _run_grouped(_grouped(dp), xs, ys, group_size=2)
  process = _grouped(dp, client_files_dir=directory)
  state, _ = _run_grouped(process, xs, ys, group_size=2, with_examples=False)
  assert g.max_abs_diff(
      _weights(process, state)[0],
      _weights(process, dense)[0]) == 0.0


# --- What the aggregator sees, and its noise. --------------------------------


class _SpyFactory(tff.aggregators.DifferentiallyPrivateFactory):
  """Records the value type the process gives its DP aggregator."""
  seen = []

  def create(self, value_type):
    self.seen.append(value_type)
    return super().create(value_type)


@pytest.mark.slow
def test_aggregator_sees_exactly_the_trainable_tensors(tff_runtime):
  del tff_runtime
  _SpyFactory.seen.clear()
  factory = _SpyFactory.gaussian_fixed(noise_multiplier=0.0,
                                       clients_per_round=2,
                                       clip=1.0)
  process = _grouped(None, dp_factory=factory)
  weights_type = process.get_model_weights.type_signature.result
  keras_model = _keras_model_fn()()
  shapes = [tuple(v.shape) for v in keras_model.trainable_variables]
  # LoRA rank 2 on q, k, v, o (8 -> 8), ff1 (8 -> 16), ff2 (16 -> 8) and the
  # head (8 -> 11): A and B of each, nothing else.
  assert shapes == [(8, 2), (2, 8)] * 4 + [(8, 2), (2, 16), (16, 2), (2, 8),
                                           (8, 2), (2, 11)]
  assert [tuple(t.shape) for t in _SpyFactory.seen[-1]] == shapes
  assert _SpyFactory.seen[-1] == weights_type.trainable
  assert len(weights_type.non_trainable) == len(
      keras_model.non_trainable_variables)


@pytest.mark.slow
def test_round_broadcasts_exactly_the_trainable_tensors(tff_runtime,
                                                        population):
  """The frozen tensors are constants of the client computation: no
  broadcast carries them, and the reported download says so."""
  del tff_runtime
  dp = _dp(clip=0.02)
  process = _grouped(dp)
  weights_type = process.get_model_weights.type_signature.result
  model_broadcasts = [
      t for t in model_size._broadcast_parts(process.next, weights_type)  # pylint: disable=protected-access
      if t.is_equivalent_to(weights_type.trainable) or
      t.is_equivalent_to(weights_type)
  ]
  assert len(model_broadcasts) == 1
  assert model_broadcasts[0].is_equivalent_to(weights_type.trainable)
  size = model_size.of_process(process, trainable='lora')
  assert not size.frozen_every_round
  assert size.download_bytes == size.upload_bytes == 4 * sum(
      int(np.prod(t.shape)) for t in weights_type.trainable)
  assert size.one_time_download_bytes == 4 * sum(
      int(np.prod(t.shape)) for t in weights_type.non_trainable) > 0
  # The reference (TFF's FedAvg, one client per call) sends them once too
  # (`learning_process.frozen_distributor`); TFF's default distributor
  # broadcast the whole model every round.
  reference = _reference(dp)
  assert [
      t.is_equivalent_to(weights_type.trainable)
      for t in model_size._broadcast_types(reference.next)  # pylint: disable=protected-access
      if t.is_equivalent_to(weights_type.trainable) or
      t.is_equivalent_to(weights_type)
  ] == [True]
  assert model_size.of_process(reference,
                               trainable='lora').to_json() == size.to_json()

  # The server state still holds the frozen weights; setting others than
  # the clients' constants fails, and a process built with them (as for
  # --init_from) takes them.
  state = process.initialize()
  trained, frozen = _weights(process, state)
  other = [w + 1.0 for w in frozen]
  weights = tff.learning.models.ModelWeights(trainable=trained,
                                             non_trainable=other)
  with pytest.raises(Exception, match='frozen weights differ'):
    process.set_model_weights(state, weights)
  built_with = _grouped(dp, max_client_size=None, frozen_weights=other)
  state = built_with.set_model_weights(built_with.initialize(), weights)
  xs, ys = population
  groups = grouped_data.make_groups(xs,
                                    ys, [0, 1],
                                    round_num=1,
                                    seed=_DATA_SEED,
                                    epochs=1,
                                    group_size=2)
  state = built_with.next(state, groups).state
  for want, got in zip(other, _weights(built_with, state)[1]):
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_noise_std_on_the_trainable_tensors_is_z_c_over_m(tff_runtime):
  # A round of zero updates (client learning rate 0): the server step (SGD,
  # lr 1, no momentum) is minus the noise, N(0, (z C / m)^2) per trained
  # coordinate; the frozen ones get none.
  del tff_runtime
  z, clip, m = 1.5, 0.5, 10
  process = _grouped(_dp(noise_multiplier=z, clients_per_round=m, clip=clip),
                     sizes=dict(transformer_layers=1,
                                transformer_width=64,
                                transformer_heads=2,
                                transformer_ff_width=256),
                     rank=32,
                     client_lr=0.0,
                     server_momentum=0.0)
  xs, ys = _population()
  state = process.initialize()
  trained, frozen = _weights(process, state)
  groups = grouped_data.make_groups(xs,
                                    ys, [0, 1, 2],
                                    round_num=1,
                                    seed=_DATA_SEED,
                                    epochs=1,
                                    group_size=2)
  after, frozen_after = _weights(process, process.next(state, groups).state)
  noise = np.concatenate([(a - b).ravel() for a, b in zip(after, trained)])
  # 32 x (4 x (64 + 64) + 2 x (64 + 256) + 64 + 11) adapter parameters.
  assert noise.size == 32 * (4 * 128 + 2 * 320 + 75) == 39_264
  g.assert_std(noise.astype(np.float64), z * clip / m)
  for before, now in zip(frozen, frozen_after):
    np.testing.assert_array_equal(now, before)


# --- Adaptive clipping and DP-FTRL. ------------------------------------------


def _tree_factory():
  return dp_queries.build_tree_aggregator(
      noise_multiplier=0.0,
      clip=0.02,
      clients_per_round=len(_SIZES),
      rounds_per_epoch=2,
      record_specs=dp_ftrl.model_update_specs(
          models.model_fn_from_keras(_keras_model_fn(),
                                     input_dim=_W,
                                     num_classes=_V,
                                     label_kind=LabelKind.NEXT_TOKENS)))


@pytest.mark.slow
@pytest.mark.parametrize('mechanism', ['gaussian_adaptive', 'dp_ftrl'])
def test_zero_noise_adaptive_and_dp_ftrl_equal_reference(
    tff_runtime, population, mechanism):
  """The transformer with LoRA, grouped, as TFF's processes run it: the same
  released model, the frozen weights untouched."""
  del tff_runtime
  xs, ys = population
  if mechanism == 'dp_ftrl':
    server = dp_ftrl.build_server_optimizer(server_learning_rate=1.0,
                                            server_momentum=0.9)
    reference = dp_ftrl.build_dp_ftrl_process(
        model_fn=models.model_fn_from_keras(_keras_model_fn(),
                                            input_dim=_W,
                                            num_classes=_V,
                                            label_kind=LabelKind.NEXT_TOKENS),
        client_learning_rate=_LR,
        server_learning_rate=1.0,
        server_momentum=0.9,
        model_aggregator=_tree_factory(),
        client_momentum=_MOMENTUM)
    factory = _tree_factory()
  else:
    server = _server_optimizer()
    dp = _dp(DpMechanism.GAUSSIAN_ADAPTIVE, clip=0.02)
    reference = _reference(dp)
    factory = learning_process.build_dp_aggregator(dp)
  grouped = _grouped(None, dp_factory=factory, server=server)
  ref_state, _ = _run_reference(reference, xs, ys)
  initial = _weights(grouped, grouped.initialize())
  state, _ = _run_grouped(grouped, xs, ys, group_size=2)
  trained, frozen = _weights(grouped, state)
  expected, _ = _weights(reference, ref_state)
  assert g.max_abs_diff(trained, expected) <= _WEIGHTS_ATOL
  assert np.any(trained[1]) and not np.any(initial[0][1])
  for before, after in zip(initial[1], frozen):
    np.testing.assert_array_equal(after, before)


# --- Through the program's assembly. -----------------------------------------


def _windows(xs, ys):
  """The population as the program holds in-memory token windows."""
  return FederatedData(name='windows',
                       client_ids=tuple(str(i) for i in range(len(xs))),
                       client_x=tuple(xs),
                       client_y=tuple(ys),
                       test_x=xs[0],
                       test_y=ys[0],
                       num_classes=_V,
                       vocab_size=_V,
                       label_kind=LabelKind.NEXT_TOKENS)


@pytest.mark.slow
@pytest.mark.parametrize('argv', [
    ['--dp_mechanism=gaussian_adaptive'],
    [
        '--algorithm=dp_ftrl', '--client_sampling=shuffled_epochs',
        '--dp_mechanism=tree_aggregation', '--clip=0.5'
    ],
])
def test_program_assembly_builds_the_grouped_transformer_with_lora(
    tff_runtime, population, argv):
  """`--model=transformer --trainable=lora` as the program assembles it
  (flags, config checks, `assembly.build_process` on the grouped path)."""
  del tff_runtime
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv([
      'x', '--dataset=python_stdlib', '--model=transformer',
      '--transformer_layers=1', '--transformer_width=8',
      '--transformer_heads=2', '--transformer_ff_width=16', '--trainable=lora',
      '--lora_rank=2', '--lora_alpha=2', '--clients_per_round=5',
      '--client_batch_size=2', '--noise_multiplier=0', '--allow_zero_noise',
      *argv
  ])
  config = cli_flags.config_from_flags(fv)
  config_checks.check_config(config)
  per_call = simulation_path.resolve_clients_per_call(config, in_memory=True)
  assert per_call == simulation_path.AUTO_CLIENTS_PER_CALL
  xs, ys = population
  data = _windows(xs, ys)
  sampler = run_privacy.build_sampler(config, data.population, secret=0)
  with grouped_data.GroupedRounds(data.client_x,
                                  data.client_y,
                                  seed=0,
                                  epochs=1,
                                  group_size=per_call) as rounds:
    process = assembly.build_process(config,
                                     data,
                                     sampler,
                                     group_size=per_call,
                                     client_files_dir=rounds.files_dir)
    size = model_size.of_process(process, trainable='lora')
    assert not size.frozen_every_round and size.one_time_download_bytes > 0
    state = process.initialize()
    _, frozen = _weights(process, state)
    for round_num in (1, 2):
      output = process.next(state, rounds(round_num, list(range(len(xs)))))
      state = output.state
    trained, frozen_after = _weights(process, state)
  assert np.any(trained[1])
  for before, after in zip(frozen, frozen_after):
    np.testing.assert_array_equal(after, before)
  assert 0.0 <= output.metrics['client_work']['train']['next_token_accuracy']
