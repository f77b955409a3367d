"""--trainable selects what it says (`tff_dp.models.trainable`), and bad
values end the program with one line and exit 2.

Selections are checked by the names of the trainable weights on the MLP, the
rnn and a small functional model with a transformer's layer names
(`block{i}_*`, `final_ln`, `lm_head`).
"""

import json
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import models
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.config import ModelKind
from tff_dp.config import Trainable
from tff_dp.models import trainable as trainable_lib

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _settings(kind, **kwargs):
  return trainable_lib.TrainableSettings(trainable=kind, **kwargs)


def _mlp(hidden_layers=3):
  return models.build_keras_model(ModelKind.MLP,
                                  input_dim=4,
                                  num_classes=3,
                                  hidden_units=5,
                                  hidden_layers=hidden_layers,
                                  seed=0)


def _tiny_transformer_names(blocks=3):
  """A functional model with the transformer's layer names."""
  x = tf.keras.Input(shape=(4,))
  h = tf.keras.layers.Dense(6, name='token_embedding')(x)
  for i in range(blocks):
    h = tf.keras.layers.LayerNormalization(name=f'block{i}_ln1')(h)
    h = tf.keras.layers.Dense(6, name=f'block{i}_q')(h)
    h = tf.keras.layers.Dense(6, name=f'block{i}_ff1')(h)
  h = tf.keras.layers.LayerNormalization(name='final_ln')(h)
  return tf.keras.Model(x, tf.keras.layers.Dense(3, name='lm_head')(h))


def _trained(model):
  return sorted({w.name.split('/')[0] for w in model.trainable_weights})


def test_all_changes_nothing():
  model = _mlp()
  assert trainable_lib.configure(model, _settings(Trainable.ALL)) is model
  assert not model.non_trainable_weights


def test_head_is_lm_head_or_the_last_dense():
  model = trainable_lib.configure(_tiny_transformer_names(),
                                  _settings(Trainable.HEAD))
  assert _trained(model) == ['lm_head']
  mlp = trainable_lib.configure(_mlp(), _settings(Trainable.HEAD))
  assert [w.shape for w in mlp.trainable_weights] == [(5, 3), (3,)]


def test_last_k_trains_the_last_blocks_final_norm_and_head():
  model = trainable_lib.configure(_tiny_transformer_names(),
                                  _settings(Trainable.LAST_K, last_k=2))
  assert _trained(model) == [
      'block1_ff1', 'block1_ln1', 'block1_q', 'block2_ff1', 'block2_ln1',
      'block2_q', 'final_ln', 'lm_head'
  ]
  mlp = trainable_lib.configure(_mlp(), _settings(Trainable.LAST_K, last_k=1))
  assert [w.shape for w in mlp.trainable_weights] == [(5, 5), (5,), (5, 3),
                                                      (3,)]


def test_last_k_counts_the_blocks_config_checks_counts():
  for kind, kwargs in ((ModelKind.MLP, {}), (ModelKind.RNN, {
      'vocab_size': 3
  }), (ModelKind.LOGISTIC_REGRESSION, {})):
    model = models.build_keras_model(kind,
                                     input_dim=4,
                                     num_classes=3,
                                     hidden_units=5,
                                     hidden_layers=2,
                                     seed=0,
                                     **kwargs)
    config = _config(f'--model={kind.value}', '--hidden_layers=2')
    assert len(
        trainable_lib.blocks(model)) == config_checks.model_blocks(config), kind
  with pytest.raises(ValueError, match='has 3 blocks'):
    trainable_lib.configure(_tiny_transformer_names(),
                            _settings(Trainable.LAST_K, last_k=4))


def test_lora_trains_only_adapters_of_every_dense_layer():
  model = trainable_lib.configure(
      _tiny_transformer_names(blocks=1),
      _settings(Trainable.LORA, lora_rank=2, lora_alpha=2.0))
  names = sorted(w.name.split('/')[-1] for w in model.trainable_weights)
  # token_embedding (a Dense here), block0_q, block0_ff1, lm_head.
  assert names == ['lora_a:0'] * 4 + ['lora_b:0'] * 4
  frozen = {w.name.split('/')[0] for w in model.non_trainable_weights}
  assert {'block0_ln1', 'final_ln', 'lm_head'} <= frozen


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', f'--flagfile={_SMOKE}', *argv])
  return cli_flags.config_from_flags(fv)


@pytest.mark.parametrize('argv,blocks', [
    (['--model=mlp', '--hidden_layers=2', '--trainable_last_k=3'], 2),
    (['--model=logistic_regression', '--trainable_last_k=1'], 0),
])
def test_last_k_above_the_models_blocks_is_refused(argv, blocks):
  with pytest.raises(ConfigError) as e:
    config_checks.check_config(_config('--trainable=last_k', *argv))
  assert e.value.flag == 'trainable_last_k'
  assert f'exceeds the {blocks} blocks' in str(e.value)


def test_grouped_path_runs_trainable_and_is_chosen_automatically():
  # `tff_dp.algorithms.grouped_model` creates the frozen weights frozen.
  config_checks.check_config(_config('--trainable=lora',
                                     '--clients_per_call=4'))
  for trainable in ('head', 'lora', 'ffa_lora', 'last_k'):
    auto = _config(f'--trainable={trainable}', '--clients_per_call=0')
    assert simulation_path.grouped_unsupported_reason(auto) is None
    assert simulation_path.resolve_clients_per_call(
        auto, in_memory=True) == simulation_path.AUTO_CLIENTS_PER_CALL


@pytest.mark.e2e
@pytest.mark.parametrize('argv,names', [
    (['--trainable=lora', '--lora_rank=0'], '--lora_rank=0'),
    (['--trainable=lora', '--lora_alpha=-1'], '--lora_alpha=-1'),
    (['--trainable=everything'], '--trainable'),
    (['--trainable=last_k', '--model=mlp', '--trainable_last_k=2'
     ], '--trainable_last_k=2'),
])
def test_bad_values_end_the_program_with_one_line(argv, names):
  result = programs.run_train(f'--flagfile={_SMOKE}',
                              '--output_dir=/nonexistent', *argv)
  assert result.returncode == 2, result.stderr[-2000:]
  # One error line (a bad flag's adds the program's "Pass --help" hint).
  error = result.stderr.strip().splitlines()[0]
  assert error.startswith('tff-dp: error: ') and names in error, result.stderr
  assert 'Traceback' not in result.stderr


def _transformer():
  return models.build_keras_model(ModelKind.TRANSFORMER,
                                  input_dim=6,
                                  num_classes=11,
                                  hidden_units=1,
                                  vocab_size=11,
                                  seed=0,
                                  transformer_layers=2,
                                  transformer_width=8,
                                  transformer_heads=2,
                                  transformer_ff_width=12)


def test_transformer_selections_reach_its_nested_layers():
  head = trainable_lib.configure(_transformer(), _settings(Trainable.HEAD))
  assert _trained(head) == ['lm_head']
  last = trainable_lib.configure(_transformer(),
                                 _settings(Trainable.LAST_K, last_k=1))
  assert _trained(last) == [
      'block1_ff1', 'block1_ff2', 'block1_k', 'block1_ln1', 'block1_ln2',
      'block1_o', 'block1_q', 'block1_v', 'final_ln', 'lm_head'
  ]
  adapted = trainable_lib.configure(
      _transformer(), _settings(Trainable.LORA, lora_rank=2, lora_alpha=2.0))
  # Six projections per block and the head; embeddings and norms frozen.
  assert len(adapted.trainable_weights) == 2 * (2 * 6 + 1)
  assert all('lora_' in w.name for w in adapted.trainable_weights)


def test_pretrained_weights_fill_the_adapted_model():
  # --init_from saves the whole model; a LoRA run starts from its values.
  base = _transformer()
  rng = np.random.default_rng(0)
  base.set_weights([rng.normal(size=w.shape) for w in base.get_weights()])
  adapted = trainable_lib.configure(
      _transformer(), _settings(Trainable.LORA, lora_rank=2, lora_alpha=2.0))
  trainable_lib.copy_base_weights(base, adapted)
  tokens = rng.integers(0, 11, size=(3, 6)).astype(np.float32)
  np.testing.assert_allclose(adapted(tokens).numpy(),
                             base(tokens).numpy(),
                             atol=1e-5)


@pytest.mark.e2e
@pytest.mark.slow
def test_transformer_lora_run_reports_what_it_trained_and_sent(tmp_path):
  # ~40 s: the offline code-completion data and a 2-block transformer.
  programs.run_train('--dataset=python_stdlib',
                     '--model=transformer',
                     '--transformer_layers=2',
                     '--transformer_width=16',
                     '--transformer_heads=2',
                     '--transformer_ff_width=32',
                     '--trainable=lora',
                     '--lora_rank=2',
                     '--lora_alpha=2',
                     '--rounds=2',
                     '--clients_per_round=5',
                     '--dp_mechanism=gaussian_fixed',
                     '--noise_multiplier=0.5',
                     '--clip=0.5',
                     '--clients_per_call=1',
                     f'--output_dir={tmp_path}',
                     '--run_name=r',
                     check=True)
  with open(tmp_path / 'r' / 'summary.json', encoding='utf-8') as f:
    model = json.load(f)['model']
  # Per block: q, k, v, o (16 -> 16), ff1 (16 -> 32), ff2 (32 -> 16) at
  # rank 2; the head 16 -> 100 (the vocabulary).
  adapters = 2 * (4 * (16 * 2 + 2 * 16) + 2 *
                  (16 * 2 + 2 * 32)) + (16 * 2 + 2 * 100)
  assert model['trainable'] == 'lora'
  assert model['noise_dimension'] == model['trainable_parameters'] == adapters
  assert model['upload_bytes_per_client_round'] == 4 * adapters
  # One client per call too, the frozen tensors reach each client once.
  frozen_bytes = 4 * model['frozen_parameters']
  assert model['download_bytes_per_client_round'] == 4 * adapters
  assert model['frozen_sent'] == 'once'
  assert model['one_time_download_bytes_per_client'] == frozen_bytes > 0
  statement = (tmp_path / 'r' / 'privacy_statement.txt').read_text()
  assert f'Noise dimension: {adapters:,}' in statement
  assert (f'upload {4 * adapters:,} bytes (the trained tensors, float32); '
          f'download {4 * adapters:,} bytes') in statement
  assert f'{frozen_bytes:,} bytes, reach each client once' in statement


def test_lora_on_a_callers_model_without_dense_layers_names_the_flag():
  # The Python API's own Keras model: refused before TFF traces it.
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top

  def no_dense():
    x = tf.keras.Input(shape=(4,))
    return tf.keras.Model(x, tf.keras.layers.Embedding(5, 3)(x))

  with pytest.raises(ConfigError, match=r'^--trainable=lora: .* has none'):
    assembly.check_trainable_model(_config('--trainable=lora'),
                                   None,
                                   keras_model_fn=no_dense)
  assembly.check_trainable_model(_config('--trainable=all'),
                                 None,
                                 keras_model_fn=no_dense)


def test_ffa_lora_trains_only_b():
  model = trainable_lib.configure(
      _mlp(hidden_layers=1),
      _settings(Trainable.FFA_LORA, lora_rank=2, lora_alpha=2.0))
  assert [w.shape for w in model.trainable_weights] == [(2, 5), (2, 3)]
