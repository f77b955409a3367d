"""Frozen weights in the program's learning processes (`--trainable`).

Built as the program builds them (`tff_dp.program.assembly` from flags, on
the smoke config's digits): the client update and the DP aggregator see the
trainable tensors only (type signatures); with zero noise the frozen
weights leave a few rounds of DP-FedAvg (fixed and adaptive clipping) and
DP-FTRL bit-identical while the adapters move; with noise and an empty
cohort the trainable tensors move by N(0, (z C / m)^2) per coordinate and
the frozen ones not at all.
"""

import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.helpers import REPO_ROOT
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


def test_client_update_and_aggregator_see_only_trainable_tensors(tff_runtime):
  del tff_runtime
  prepared = _prepared(*_LORA)
  model_fn = assembly.build_model_fn(prepared.config, prepared.data)
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  seen = []

  class Spy(tff.aggregators.UnweightedAggregationFactory):
    """Records the value type the process gives its aggregator."""

    def create(self, value_type):
      seen.append(value_type)
      return tff.aggregators.UnweightedMeanFactory().create(value_type)

  process = tff.learning.algorithms.build_unweighted_fed_avg(
      model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      model_aggregator=Spy())
  del process
  # rank 2 adapters of 64 -> 16 -> 10: A (64,2), B (2,16), A (16,2), B (2,10).
  shapes = [(64, 2), (2, 16), (16, 2), (2, 10)]
  assert [tuple(t.shape) for t in seen[0]] == shapes
  assert seen[0] == weights_type.trainable
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn,
      tff.learning.optimizers.build_sgdm(0.1),
      client_weighting=tff.learning.ClientWeighting.UNIFORM)
  update_type = client_work.next.type_signature.result.result.member.update
  assert [tuple(t.shape) for t in update_type] == shapes
  size = model_size.of_process(_process(prepared), trainable='lora')
  assert (size.trainable_parameters,
          size.frozen_parameters) == (64 * 2 + 2 * 16 + 16 * 2 + 2 * 10,
                                      64 * 16 + 16 + 16 * 10 + 10)
  assert size.upload_bytes == 4 * size.noise_dimension == 4 * 212


@pytest.mark.parametrize('argv', [
    ['--dp_mechanism=gaussian_fixed', '--clip=0.5'],
    ['--dp_mechanism=gaussian_adaptive'],
    [
        '--algorithm=dp_ftrl', '--client_sampling=shuffled_epochs',
        '--dp_mechanism=tree_aggregation', '--clip=0.5'
    ],
])
def test_frozen_weights_are_bit_identical_after_rounds(tff_runtime, argv):
  del tff_runtime
  prepared = _prepared(*_LORA, *argv, '--noise_multiplier=0',
                       '--allow_zero_noise', '--client_learning_rate=0.5',
                       '--server_learning_rate=1')
  process = _process(prepared)
  state = process.initialize()
  trainable, frozen = _weights(process, state)
  datasets = client_data.round_datasets_for(prepared.data,
                                            batch_size=5,
                                            epochs=1,
                                            seed=0)
  for round_num in (1, 2, 3):
    state = process.next(state, datasets(round_num, list(range(10)))).state
  after, frozen_after = _weights(process, state)
  for before, now in zip(frozen, frozen_after):
    np.testing.assert_array_equal(now, before)
  # B starts at zero and moved: the adapters trained.
  assert np.any(after[1]) and not np.any(trainable[1])


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
