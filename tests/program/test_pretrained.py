"""Pretraining checkpoints: what is saved is what a run starts from, and a
checkpoint that does not fit the run is refused with one line.

On a small fake standard library (`python_stdlib` reading a temporary
directory) and a tiny transformer; plain TensorFlow, no TFF computation.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from tff_dp import api
from tff_dp.checks import ConfigError
from tff_dp.data import python_stdlib
from tff_dp.data.labels import LabelKind
from tff_dp.program import assembly
from tff_dp.program import pretrained
from tff_dp.program import pretrained_meta
from tff_dp.program import run_privacy

_TINY = dict(transformer_layers=1,
             transformer_width=8,
             transformer_heads=2,
             transformer_ff_width=16)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('stdlib')
  for i in range(60):  # Enough modules for every side of the split.
    with open(root / f'm{i}.py', 'w', encoding='utf-8') as f:
      f.write(f'def f{i}(x):\n    return x + {i}\n' * 30)
  return python_stdlib.PythonStdlibSource(str(root), next_token_labels=True)


def _config(**settings):
  return api.make_config(
      None, **{
          'dataset': 'python_stdlib',
          'model': 'transformer',
          **_TINY,
          **settings
      })


@pytest.fixture(scope='module')
def checkpoint(data, tmp_path_factory):
  config = _config()
  model, final = pretrained.pretrain(config,
                                     data,
                                     steps=3,
                                     batch_size=8,
                                     learning_rate=1e-2)
  output = str(tmp_path_factory.mktemp('pretrained'))
  pretrained.save(output, model, config=config, data=data, training={})
  return output, model, final


def test_loaded_weights_equal_the_saved_ones(data, checkpoint):
  output, model, final = checkpoint
  assert set(final) == {'loss', 'next_token_accuracy'}
  weights = pretrained.load_weights(output, _config(), data)
  saved = [v.numpy() for v in model.trainable_variables]
  assert len(weights.trainable) == len(saved)
  for loaded, expected in zip(weights.trainable, saved):
    np.testing.assert_array_equal(loaded, expected)
  # Training moved the weights: the check is not of the seeded start.
  fresh = assembly.build_keras_model_fn(_config(), data)()
  assert any(not np.array_equal(a, b.numpy())
             for a, b in zip(saved, fresh.trainable_variables))


def test_description_names_the_public_clients(data, checkpoint):
  meta = pretrained_meta.read_meta(checkpoint[0])
  assert meta['public_clients'] == list(data.public_client_ids)
  assert meta['data_fingerprint'] == data.fingerprint()
  assert meta['model']['transformer_width'] == _TINY['transformer_width']
  sentence = pretrained_meta.public_data_sentence(checkpoint[0])
  assert f'{len(data.public_client_ids)} clients' in sentence
  assert python_stdlib.PUBLIC_RULE in sentence


@pytest.mark.parametrize('settings,named', [
    (dict(transformer_width=16), 'transformer_width=8, this run has '
     'transformer_width=16'),
    (dict(transformer_layers=2), 'transformer_layers=1, this run has '
     'transformer_layers=2'),
    (dict(model='rnn'), 'model=transformer, this run has model=rnn'),
])
def test_a_checkpoint_of_another_model_is_refused(data, checkpoint, settings,
                                                  named):
  with pytest.raises(ConfigError, match=named) as refused:
    pretrained_meta.check_checkpoint(checkpoint[0], _config(**settings), data)
  assert refused.value.flag == 'init_from'
  assert '\n' not in str(refused.value)


def test_an_altered_weights_file_is_refused(data, checkpoint, tmp_path):
  altered = tmp_path / 'altered'
  altered.mkdir()
  for name in (pretrained_meta.META_FILE, pretrained_meta.WEIGHTS_FILE):
    with open(os.path.join(checkpoint[0], name), 'rb') as f:
      (altered / name).write_bytes(f.read())
  with open(altered / pretrained_meta.WEIGHTS_FILE, 'ab') as f:
    f.write(b'\0')
  with pytest.raises(ConfigError, match='does not match the hash'):
    pretrained_meta.check_checkpoint(str(altered), _config(), data)


def test_a_file_that_is_not_a_checkpoint_is_refused(data, tmp_path):
  (tmp_path / pretrained_meta.META_FILE).write_text(json.dumps({'a': 1}))
  with pytest.raises(ConfigError, match='is not a'):
    pretrained_meta.check_checkpoint(str(tmp_path), _config(), data)


def test_data_without_public_clients_is_refused(data):

  @dataclasses.dataclass
  class NoPublicClients:
    input_dim: int = data.input_dim
    label_kind: LabelKind = LabelKind.NEXT_TOKENS

  with pytest.raises(ConfigError, match='declares no public clients'):
    pretrained_meta.public_examples(_config(), NoPublicClients())


@pytest.mark.tff
def test_a_run_starts_from_the_checkpoint(data, checkpoint, tff_runtime):
  del tff_runtime
  config = _config(dp_mechanism='none',
                   clients_per_round=2,
                   init_from=checkpoint[0])
  sampler = run_privacy.build_sampler(config, data.population, secret=1)
  process = assembly.build_process(config, data, sampler)
  state = pretrained.initial_state(process, process.initialize(), config, data)
  started = process.get_model_weights(state)
  saved = checkpoint[1].get_weights()
  assert len(started.trainable) == len(saved)
  for value, expected in zip(started.trainable, saved):
    np.testing.assert_array_equal(value, expected)
  # Without --init_from: the seeded initial model, which differs.
  plain = process.get_model_weights(
      pretrained.initial_state(
          process, process.initialize(),
          _config(dp_mechanism='none', clients_per_round=2), data))
  assert any(not np.array_equal(a, b) for a, b in zip(plain.trainable, saved))
