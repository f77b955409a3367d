"""Federated Shakespeare (LEAF, Caldas et al. 2018; McMahan et al. 2017) as
next-character windows, and the rnn model that trains on them.

The data tests write a tiny shakespeare.sqlite in TFF's own format
(`tests.helpers.fake_shakespeare`) and read it through TFF's real loader:
nothing is mocked. The ids are checked against TFF's own Shakespeare tokenizer.
The program tests run `python -m tff_dp.cli.train` on the
configs/shakespeare.cfg preset: once without the cache (exit 2, the file named)
and once for one round on a fake cache.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing as tff_chars
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_tasks as tff_char_tasks

from tests.helpers import benchmark_presets as presets
from tests.helpers import fake_shakespeare as fake
from tff_dp import config_checks
from tff_dp.algorithms import models
from tff_dp.checks import ConfigError
from tff_dp.config import ModelKind
from tff_dp.data import loading
from tff_dp.data import token_sources

_W = token_sources.SHAKESPEARE_WINDOW


@pytest.fixture(name='cache')
def fixture_cache(tmp_path):
  """A tiny shakespeare.sqlite; returns (data_dir, train, test snippets)."""
  rng = np.random.default_rng(0)
  # 'HAMLET' sorts before 'KING'; HAMLET's text spans several windows and a
  # partial last one; the one-letter snippet of KING is a window of its own.
  train = {
      'KING': ['O'],
      'HAMLET': [fake.snippet(rng, 150),
                 fake.snippet(rng, 47)],
      'OPHELIA': [fake.snippet(rng, 79)]
  }
  test = {'HAMLET': [fake.snippet(rng, 90)], 'KING': [fake.snippet(rng, 20)]}
  fake.write_fake_cache(str(tmp_path), train_clients=train, test_clients=test)
  return str(tmp_path), train, test


@pytest.mark.tff
def test_vocabulary_and_window_are_tffs():
  assert token_sources.SHAKESPEARE_CHARS == ''.join(tff_chars.CHAR_VOCAB)
  vocabulary = token_sources.SHAKESPEARE_VOCABULARY
  assert len(vocabulary.tokens) == 86
  assert (vocabulary.pad, vocabulary.oov, vocabulary.bos,
          vocabulary.eos) == tff_chars.get_special_tokens() == (0, 87, 88, 89)
  assert vocabulary.size == tff_char_tasks.VOCAB_LENGTH == 90
  assert _W == tff_chars.DEFAULT_SEQUENCE_LENGTH == 80


@pytest.mark.tff
def test_ids_are_tffs_ids():
  # TFF's tokenizer with split length 1 pads nothing: [bos, ids..., eos].
  tff_ids = tff_chars._build_tokenize_fn(  # pylint: disable=protected-access
      split_length=1)
  for text in [''.join(fake.LINES), 'O', '', 'naïve ~ café\n']:
    element = {'snippets': tf.constant(text.encode('utf-8'))}
    ours = token_sources.shakespeare_ids(element).numpy().tolist()
    assert ours == tff_ids(element).numpy().tolist(), text
    assert ours == fake.reference_ids(text)
  assert fake.reference_ids('é~')[1:-1] == [87, 87, 87]


@pytest.mark.parametrize('lengths', [[3], [4], [5], [2, 3, 4], [1, 9]])
def test_windows_cut_the_joined_stream_and_left_pad_the_last(lengths):
  window = 3
  start = iter(range(1, 100))
  records = [[next(start) for _ in range(n)] for n in lengths]
  dataset = token_sources.token_windows(tf.data.Dataset.from_generator(
      lambda: iter(records), output_signature=tf.TensorSpec([None], tf.int64)),
                                        window=window)
  assert dataset.element_spec == (tf.TensorSpec([window], tf.float32),
                                  tf.TensorSpec([], tf.int32))
  got = fake.as_pairs(dataset)
  assert got == fake.reference_windows(records, window)
  # Every id is in exactly one window, and every label is a real token.
  assert sorted(t for f, y in got for t in f + [y] if t) == list(
      range(1,
            sum(lengths) + 1))
  assert all(y != 0 for _, y in got)


def test_windows_by_hand():
  # [1 2 3 4 | 5 6 7], W = 3: (1 2 3 -> 4), (0 5 6 -> 7).
  dataset = token_sources.token_windows(tf.data.Dataset.from_tensors(
      tf.constant([1, 2, 3, 4, 5], tf.int64)).concatenate(
          tf.data.Dataset.from_tensors(tf.constant([6, 7], tf.int64))),
                                        window=3)
  assert fake.as_pairs(dataset) == [([1, 2, 3], 4), ([0, 5, 6], 7)]


@pytest.mark.tff
def test_source_reads_clients_sizes_and_vocabulary(cache):
  data_dir, _, _ = cache
  source = presets.load(loading.Dataset.SHAKESPEARE, data_dir)
  assert isinstance(source, token_sources.TokenSource)
  assert source.client_ids == ['HAMLET', 'KING', 'OPHELIA']
  assert source.population == 3  # The file's clients, not --num_clients.
  # Records (snippets) per client, from the file's metadata.
  np.testing.assert_array_equal(source.client_sizes(), [2, 1, 1])
  assert (source.input_dim, source.num_classes, source.vocab_size) == (80, 90,
                                                                       90)
  assert source.image_shape is None
  text = source.describe()
  assert "Federated data 'shakespeare': 3 clients" in text
  assert 'train snippets: 4' in text
  assert 'the 80 token ids before the label (vocabulary of 90 ids' in text
  assert "test: the file's test split, every client's windows" in text


@pytest.mark.tff
def test_client_windows_are_the_reference_windows(cache):
  data_dir, train, _ = cache
  source = token_sources.shakespeare_source(data_dir=data_dir)
  for index, client_id in enumerate(source.client_ids):
    dataset = source.client_dataset(index)
    assert dataset.element_spec == (tf.TensorSpec([_W], tf.float32),
                                    tf.TensorSpec([], tf.int32))
    want = fake.reference_windows(
        [fake.reference_ids(s) for s in train[client_id]], _W)
    assert fake.as_pairs(dataset) == want, client_id
  # HAMLET's text makes 2 full windows and a partial one; OPHELIA's 79
  # characters, bos and eos exactly one full window.
  hamlet = sum(len(fake.reference_ids(s)) for s in train['HAMLET'])
  assert 2 * (_W + 1) < hamlet < 3 * (_W + 1)
  assert len(fake.as_pairs(source.client_dataset(0))) == 3
  ophelia = fake.as_pairs(source.client_dataset(2))
  assert len(ophelia) == 1 and ophelia[0][0][0] == 88  # bos, no padding.


@pytest.mark.tff
def test_test_set_is_each_test_clients_windows(cache):
  data_dir, _, test = cache
  source = token_sources.shakespeare_source(data_dir=data_dir)
  got = sorted(fake.as_pairs(source.test_dataset()))
  # Per client: windows never join two clients' text.
  want = sorted(pair for snippets in test.values()
                for pair in fake.reference_windows(
                    [fake.reference_ids(s) for s in snippets], _W))
  assert got == want and len(got) == 3


@pytest.mark.tff
def test_missing_cache_is_a_data_error_naming_the_file(tmp_path):
  presets.assert_missing_cache_refused(loading.Dataset.SHAKESPEARE,
                                       str(tmp_path), 'shakespeare.sqlite')
  assert os.listdir(tmp_path) == []


def _rnn(seed=3, **kwargs):
  settings = dict(input_dim=_W,
                  num_classes=90,
                  hidden_units=16,
                  hidden_layers=2,
                  embedding_dim=8,
                  vocab_size=90,
                  seed=seed)
  settings.update(kwargs)
  return models.build_keras_model(ModelKind.RNN, **settings)


def _lstm_params(inputs, units):
  return 4 * (units * (inputs + units) + units)


@pytest.mark.tff
@pytest.mark.parametrize('layers,units,embedding', [(2, 16, 8), (1, 32, 4)])
def test_rnn_takes_float_ids_and_outputs_logits(layers, units, embedding):
  model = _rnn(hidden_layers=layers,
               hidden_units=units,
               embedding_dim=embedding)
  assert model.input_shape == (None, _W)
  assert model.output_shape == (None, 90)
  lstm = _lstm_params(embedding,
                      units) + (layers - 1) * _lstm_params(units, units)
  assert model.count_params() == 90 * embedding + lstm + units * 90 + 90
  rng = np.random.default_rng(0)
  x = rng.integers(1, 90, (4, _W)).astype(np.float32)
  logits = model(x, training=False).numpy()
  assert logits.shape == (4, 90)
  assert not np.allclose(logits.sum(axis=1), 1.0)  # Logits, not softmax.


@pytest.mark.tff
def test_rnn_masks_the_padding():
  model = _rnn()
  x = np.zeros((2, _W), np.float32)
  x[0, -5:] = [5, 6, 7, 8, 9]  # A short last window, left-padded.
  x[1] = np.arange(1, _W + 1) % 89 + 1
  before = model(x).numpy()
  embedding = model.layers[0]
  weights = embedding.get_weights()[0]
  weights[0] = 100.0  # The padding's embedding must not matter.
  embedding.set_weights([weights])
  np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-6)


@pytest.mark.tff
def test_rnn_initial_weights_follow_the_seed():
  model = _rnn(seed=5)
  names = [w.name for w in model.weights]
  five = model.get_weights()
  again, six = (_rnn(seed=s).get_weights() for s in (5, 6))
  for a, b in zip(five, again):
    np.testing.assert_array_equal(a, b)
  # Embedding, kernels and recurrent kernels (biases start at constants).
  for name, a, b in zip(names, five, six):
    if 'bias' not in name:
      assert not np.array_equal(a, b), name
  # No two initializers share a seed: all seeded tensors differ in values.
  firsts = [
      w.ravel()[:4].tolist() for n, w in zip(names, five) if 'bias' not in n
  ]
  assert len({tuple(f) for f in firsts}) == len(firsts)


@pytest.mark.tff
@pytest.mark.parametrize('vocab_size,num_classes,message', [
    (None, 90, 'needs token data'),
    (90, 10, 'predicts token ids, but the data have 10 classes'),
    (1, 1, 'at least 2'),
])
def test_rnn_refuses_data_without_a_usable_vocabulary(vocab_size, num_classes,
                                                      message):
  with pytest.raises(ValueError, match=message):
    models.build_model_fn(ModelKind.RNN,
                          input_dim=_W,
                          num_classes=num_classes,
                          hidden_units=4,
                          seed=0,
                          vocab_size=vocab_size)


@pytest.mark.parametrize('argv,flag_value', [
    (['--model=rnn'], '--model=rnn'),
    (['--dataset=shakespeare', '--model=mlp'], '--model=mlp'),
    (['--dataset=shakespeare', '--model=cnn'], '--model=cnn'),
    ([
        '--dataset=shakespeare', '--model=rnn', '--example_dp',
        '--dp_mechanism=none'
    ], '--example_dp=True'),
])
def test_token_data_and_the_rnn_go_together(argv, flag_value):
  # Refused before the data load (check_config) and after (with the data's
  # vocabulary, check_model_fits_data).
  from absl import flags  # pylint: disable=g-import-not-at-top

  from tff_dp.cli import cli_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', *argv])
  config = cli_flags.config_from_flags(fv)
  with pytest.raises(ConfigError) as error:
    config_checks.check_config(config)
  assert str(error.value).startswith(flag_value)
  tokens = loading.is_token_data(config.dataset)
  with pytest.raises(ConfigError) as error:
    config_checks.check_model_fits_data(config,
                                        image_shape=None,
                                        vocab_size=90 if tokens else None)
  assert str(error.value).startswith(flag_value)


@pytest.mark.e2e
def test_program_without_cache_exits_2_naming_the_file(tmp_path):
  presets.assert_program_refuses_a_missing_cache(
      tmp_path,
      'shakespeare',
      error_start='--dataset=shakespeare: Shakespeare',
      file_name='shakespeare.sqlite')


@pytest.mark.e2e
@pytest.mark.slow  # 20-36 s; the preset's own run is in the configs smoke test.
def test_preset_trains_one_round_on_a_fake_cache(tmp_path):
  rng = np.random.default_rng(1)
  data_dir = tmp_path / 'cache'
  data_dir.mkdir()
  fake.write_fake_cache(str(data_dir),
                        train_clients=fake.fake_clients(
                            rng, presets.PROGRAM_CLIENTS),
                        test_clients=fake.fake_clients(rng, 2))
  _, summary, config = presets.train_one_round(tmp_path, 'shakespeare',
                                               data_dir)
  assert 0 <= summary['accuracy'] <= 1
  assert config['model'] == 'rnn'
