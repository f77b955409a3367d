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


# --- A run that trains part of the model: its frozen constants. -------------


def _lora_config(**settings):
  return _config(trainable='lora',
                 lora_rank=2,
                 lora_alpha=2.0,
                 clients_per_call=1,
                 dp_mechanism='none',
                 clients_per_round=2,
                 **settings)


def _frozen(process, state):
  return [np.array(w) for w in process.get_model_weights(state).non_trainable]


def _lora_process(config, data):
  """The process as `tff_dp.program.experiment` builds it, fresh or
  resumed: its frozen constants from `pretrained.frozen_weights`."""
  sampler = run_privacy.build_sampler(config, data.population, secret=1)
  return assembly.build_process(config,
                                data,
                                sampler,
                                frozen_weights=pretrained.frozen_weights(
                                    config, data))


def _saved(checkpoint):
  # Read from the variables: Keras' get_weights can fail once TFF has
  # traced a model in the same process (its v1 training engine).
  return [v.numpy() for v in checkpoint[1].weights]


def _as_saved(frozen, saved):
  """Each frozen value matched to the saved weight it equals (same shape,
  same bytes): the checkpoint's weights, every one used once."""
  left = list(saved)
  for value in frozen:
    match = [
        i for i, w in enumerate(left)
        if w.shape == value.shape and np.array_equal(w, value)
    ]
    assert match, f'a frozen {value.shape} tensor is not in the checkpoint'
    left.pop(match[0])
  return left


def test_lora_runs_freeze_the_checkpoints_weights(data, checkpoint):
  """What a run gives its process as frozen constants
  (`pretrained.frozen_weights`) is the checkpoint's base model, every
  weight once (LoRA freezes all of it), not the seeded model's."""
  frozen = pretrained.frozen_weights(_lora_config(init_from=checkpoint[0]),
                                     data)
  assert _as_saved(frozen, _saved(checkpoint)) == []
  seeded = assembly.build_keras_model_fn(_lora_config(), data)()
  assert any(not np.array_equal(a, b.numpy())
             for a, b in zip(frozen, seeded.non_trainable_variables))
  assert pretrained.frozen_weights(_lora_config(), data) is None


# Building the transformer's TFF process takes 10-45 s (load 10-14).
@pytest.mark.tff
@pytest.mark.slow
def test_lora_constants_are_the_checkpoints_weights(data, checkpoint,
                                                    tff_runtime):
  """The clients' frozen constants are the pretrained (public) checkpoint's
  weights, not the seeded model's and never computed from client data: the
  initial state holds them (pinned to the constants), and the seeded
  model's frozen weights are refused."""
  del tff_runtime
  config = _lora_config(init_from=checkpoint[0])
  process = _lora_process(config, data)
  state = process.initialize()
  frozen = _frozen(process, state)
  # LoRA freezes the whole base model: every saved weight, once each.
  assert _as_saved(frozen, _saved(checkpoint)) == []
  state = pretrained.initial_state(process, state, config, data)
  assert all(
      np.array_equal(a, b) for a, b in zip(_frozen(process, state), frozen))
  seeded = assembly.build_keras_model_fn(_lora_config(), data)()
  weights = process.get_model_weights(state)
  other = type(weights)(
      trainable=weights.trainable,
      non_trainable=[v.numpy() for v in seeded.non_trainable_variables])
  assert any(
      not np.array_equal(a, b) for a, b in zip(other.non_trainable, frozen))
  with pytest.raises(Exception, match='frozen weights differ'):
    process.set_model_weights(state, other)


@pytest.mark.tff
@pytest.mark.slow
def test_a_resumed_lora_run_rebuilds_the_same_constants(data, checkpoint,
                                                        tff_runtime, tmp_path):
  """A round, a checkpoint, then a process built anew as a resumed run
  builds it: it takes the checkpointed state and trains on with the
  checkpoint's frozen weights, bit-identical."""
  del tff_runtime
  from tff_dp.program import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from tff_dp.program import client_data  # pylint: disable=g-import-not-at-top
  config = _lora_config(init_from=checkpoint[0])
  datasets = client_data.round_datasets_for(data,
                                            batch_size=8,
                                            epochs=1,
                                            seed=0)
  process = _lora_process(config, data)
  state = pretrained.initial_state(process, process.initialize(), config, data)
  frozen = _frozen(process, state)
  state = process.next(state, datasets(1, [0, 1])).state
  manager = checkpoint_lib.CheckpointManager(str(tmp_path))
  manager.save(1, state, {'round': 1})

  resumed = _lora_process(config, data)
  template = pretrained.initial_state(resumed, resumed.initialize(), config,
                                      data)
  restored = manager.load(1, template).state
  # The rebuilt constants accept the restored model (they refuse others).
  restored = resumed.set_model_weights(restored,
                                       resumed.get_model_weights(restored))
  output = resumed.next(restored, datasets(2, [1, 0]))
  trained = resumed.get_model_weights(output.state).trainable
  assert any(not np.array_equal(a, b)
             for a, b in zip(trained,
                             resumed.get_model_weights(restored).trainable))
  for want, got in zip(frozen, _frozen(resumed, output.state)):
    np.testing.assert_array_equal(got, want)
  assert _as_saved(frozen, _saved(checkpoint)) == []
