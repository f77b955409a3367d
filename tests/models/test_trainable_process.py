"""Frozen weights in the program's learning processes (`--trainable`).

Built as the program builds them (`tff_dp.program.assembly` from flags, on
the smoke config's digits, one client per call): the round's broadcast, the
client update and the DP aggregator hold the trainable tensors only (type
signatures), the frozen ones being constants of the client computation
(`tff_dp.algorithms.grouped_frozen`), equal to the initial model's; with
zero noise the frozen weights leave a few rounds of DP-FedAvg (fixed and
adaptive clipping) and DP-FTRL bit-identical while the adapters move, and
the trained weights equal those of TFF's own processes, which broadcast the
whole model (the reference before the frozen weights were sent once); with
noise and an empty cohort the trainable tensors move by N(0, (z C / m)^2)
per coordinate and the frozen ones not at all.
"""

import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import REPO_ROOT
from tff_dp.algorithms import learning_process
from tff_dp.cli import cli_flags
from tff_dp.program import assembly
from tff_dp.program import client_data
from tff_dp.program import model_size
from tff_dp.program import prepare
from tff_dp.program import run_privacy

pytestmark = pytest.mark.tff

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_LORA = [
    '--model=mlp', '--hidden_units=16', '--trainable=lora', '--lora_rank=2',
    '--lora_alpha=2', '--clients_per_call=1'
]


def _prepared(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['x', f'--flagfile={_SMOKE}', *argv])
  return prepare.prepare_run(cli_flags.config_from_flags(fv))


def _process(prepared):
  sampler = run_privacy.build_sampler(prepared.config,
                                      prepared.data.population,
                                      secret=0)
  return assembly.build_process(prepared.config, prepared.data, sampler)


def _weights(process, state):
  weights = process.get_model_weights(state)
  return ([np.array(w) for w in weights.trainable],
          [np.array(w) for w in weights.non_trainable])


def _model_broadcasts(process):
  """The round's broadcasts of model tensors (trainable or whole)."""
  weights_type = process.get_model_weights.type_signature.result
  return [
      t for t in model_size._broadcast_types(process.next)  # pylint: disable=protected-access
      if t.is_equivalent_to(weights_type.trainable) or
      t.is_equivalent_to(weights_type)
  ]


def test_broadcast_client_update_and_aggregator_hold_only_trainable_tensors(
    tff_runtime, monkeypatch):
  """The program's process (one client per call): the round broadcasts,
  trains and aggregates the trainable tensors only; the clients' frozen
  constants are the seeded initial model's (built here independently),
  never a function of client data: the initial state holds them and
  `set_model_weights` refuses others."""
  del tff_runtime
  prepared = _prepared(*_LORA, '--dp_mechanism=gaussian_fixed', '--clip=0.5')
  model_fn = assembly.build_model_fn(prepared.config, prepared.data)
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  seen = []

  class Spy(tff.aggregators.UnweightedAggregationFactory):
    """Records the value type the process gives its aggregator."""

    def create(self, value_type):
      seen.append(value_type)
      return tff.aggregators.UnweightedMeanFactory().create(value_type)

  with monkeypatch.context() as patch:
    patch.setattr(assembly, '_central_factory', lambda dp, wrap: Spy())
    process = _process(prepared)
  # rank 2 adapters of 64 -> 16 -> 10: A (64,2), B (2,16), A (16,2), B (2,10).
  shapes = [(64, 2), (2, 16), (16, 2), (2, 10)]
  assert [tuple(t.shape) for t in seen[-1]] == shapes
  assert seen[-1] == weights_type.trainable
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn,
      tff.learning.optimizers.build_sgdm(0.1),
      client_weighting=tff.learning.ClientWeighting.UNIFORM)
  update_type = client_work.next.type_signature.result.result.member.update
  assert [tuple(t.shape) for t in update_type] == shapes
  # One broadcast of model tensors per round: the trainable ones.
  broadcasts = _model_broadcasts(process)
  assert len(broadcasts) == 1
  assert broadcasts[0].is_equivalent_to(weights_type.trainable)
  assert not broadcasts[0].is_equivalent_to(weights_type)
  size = model_size.of_process(process, trainable='lora')
  assert (size.trainable_parameters,
          size.frozen_parameters) == (64 * 2 + 2 * 16 + 16 * 2 + 2 * 10,
                                      64 * 16 + 16 + 16 * 10 + 10)
  assert size.upload_bytes == 4 * size.noise_dimension == 4 * 212
  assert not size.frozen_every_round
  assert size.download_bytes == size.upload_bytes
  assert size.one_time_download_bytes == 4 * size.frozen_parameters

  state = process.initialize()
  trainable, frozen = _weights(process, state)
  keras_model = assembly.build_keras_model_fn(prepared.config, prepared.data)()
  expected = [v.numpy() for v in keras_model.non_trainable_variables]
  assert len(frozen) == len(expected) == 4
  for got, want in zip(frozen, expected):
    np.testing.assert_array_equal(got, want)
  other = tff.learning.models.ModelWeights(
      trainable=trainable, non_trainable=[w + 1.0 for w in frozen])
  with pytest.raises(Exception, match='frozen weights differ'):
    process.set_model_weights(state, other)

  # TFF's own process (the previous reference) broadcasts the whole model.
  monkeypatch.setattr(learning_process, 'frozen_distributor',
                      lambda *args, **kwargs: (None, None))
  whole = _process(prepared)
  assert [t.is_equivalent_to(weights_type) for t in _model_broadcasts(whole)
         ] == [True]
  assert model_size.of_process(whole, trainable='lora').frozen_every_round


_FIXED = ('--dp_mechanism=gaussian_fixed', '--clip=0.5')
_ADAPTIVE = ('--dp_mechanism=gaussian_adaptive',)
_DP_FTRL = ('--algorithm=dp_ftrl', '--client_sampling=shuffled_epochs',
            '--dp_mechanism=tree_aggregation', '--clip=0.5')


def _rounds(process, prepared):
  """(initial, final) weights after 3 rounds of 10 clients."""
  state = process.initialize()
  initial = _weights(process, state)
  datasets = client_data.round_datasets_for(prepared.data,
                                            batch_size=5,
                                            epochs=1,
                                            seed=0)
  for round_num in (1, 2, 3):
    state = process.next(state, datasets(round_num, list(range(10)))).state
  return initial, _weights(process, state)


# Every selection and mechanism against TFF's whole-model broadcast in the
# slow tier; the default tier keeps one comparison (LoRA, fixed clip) and
# LoRA's bit-identical frozen weights under each mechanism.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize('trainable, argv, against_whole', [
    ('lora', _FIXED, True),
    ('lora', _ADAPTIVE, False),
    ('lora', _DP_FTRL, False),
    pytest.param('lora', _ADAPTIVE, True, marks=_SLOW),
    pytest.param('lora', _DP_FTRL, True, marks=_SLOW),
    pytest.param('head', _FIXED, True, marks=_SLOW),
    pytest.param('head', _ADAPTIVE, True, marks=_SLOW),
    pytest.param('head', _DP_FTRL, True, marks=_SLOW),
])
def test_frozen_weights_are_bit_identical_after_rounds(tff_runtime, monkeypatch,
                                                       trainable, argv,
                                                       against_whole):
  """Frozen constants at the clients train as TFF's whole-model broadcast
  did: the same trained weights, the frozen ones untouched."""
  del tff_runtime
  prepared = _prepared(*_LORA, f'--trainable={trainable}', *argv,
                       '--noise_multiplier=0', '--allow_zero_noise',
                       '--client_learning_rate=0.5', '--server_learning_rate=1')
  (trainable_before,
   frozen), (after, frozen_after) = _rounds(_process(prepared), prepared)
  for before, now in zip(frozen, frozen_after):
    np.testing.assert_array_equal(now, before)
  if trainable == 'lora':
    # B starts at zero and moved: the adapters trained.
    assert np.any(after[1]) and not np.any(trainable_before[1])
  else:
    assert not np.array_equal(after[0], trainable_before[0])
  if not against_whole:
    return
  # The previous reference: TFF's process broadcasting the whole model.
  monkeypatch.setattr(learning_process, 'frozen_distributor',
                      lambda *args, **kwargs: (None, None))
  whole = _process(prepared)
  assert model_size.of_process(whole, trainable=trainable).frozen_every_round
  (_, whole_frozen), (whole_after,
                      whole_frozen_after) = _rounds(whole, prepared)
  for want, got in zip(whole_after, after):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  for want, got in zip(whole_frozen + whole_frozen_after,
                       frozen + frozen_after):
    np.testing.assert_array_equal(got, want)


def test_noise_std_on_trainable_tensors_is_z_c_over_m(tff_runtime):
  # One round on an empty cohort: the update is the noise alone,
  # N(0, (z C)^2) on the sum, divided by the fixed m = clients_per_round.
  # d = 70,272 draws pin the sample std within 6 standard errors of
  # 1/sqrt(2 d) (= 1.6%): flake rate ~2e-9 (two-sided normal tail at 6).
  del tff_runtime
  z, clip, m = 1.5, 0.5, 10
  prepared = _prepared('--model=mlp', '--hidden_units=512', '--trainable=lora',
                       '--lora_rank=64', '--clients_per_call=1',
                       '--dp_mechanism=gaussian_fixed', f'--clip={clip}',
                       f'--noise_multiplier={z}', f'--clients_per_round={m}',
                       '--server_optimizer=sgd', '--server_learning_rate=1',
                       '--server_momentum=0')
  process = _process(prepared)
  state = process.initialize()
  trainable, frozen = _weights(process, state)
  after, frozen_after = _weights(process, process.next(state, []).state)
  noise = np.concatenate([(a - b).ravel() for a, b in zip(after, trainable)])
  assert noise.size == 70_272
  expected = z * clip / m
  assert abs(noise.std() / expected -
             1) < 6 / np.sqrt(2 * noise.size), (noise.std(), expected)
  assert abs(noise.mean()) < 6 * expected / np.sqrt(noise.size)
  for before, now in zip(frozen, frozen_after):
    np.testing.assert_array_equal(now, before)


def test_evaluator_twin_holds_the_adapters(tff_runtime):
  # The server's evaluation model must take the process's ModelWeights.
  del tff_runtime
  prepared = _prepared(*_LORA, '--trainable=head')
  process = _process(prepared)
  weights = process.get_model_weights(process.initialize())
  twin = assembly.build_keras_model_fn(prepared.config, prepared.data)()
  weights.assign_weights_to(twin)
  assert [w.shape for w in twin.trainable_weights] == [(16, 10), (10,)]
  assert isinstance(twin(tf.zeros([1, 64])), tf.Tensor)
