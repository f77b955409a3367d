"""Federated Stack Overflow (TFF; Reddi et al. 2021) as next-word windows.

The tests write a tiny stackoverflow.sqlite in TFF's own format and a tiny
word-count archive in the layout of TFF's (`stackoverflow.word_count` in a
.tar.bz2) and read both through TFF's real loaders. The archive cannot have
the SHA-256 that tff-dp and Keras check (TFF's published one), so the tests
that load it replace that expected hash by the fake's, in both places
(`tests.helpers.fake_stackoverflow.accept_fake_vocabulary`); a test without
the replacement checks that the hash is enforced. The ids are checked against
TFF's own Stack Overflow tokenizer. The program test runs the
configs/stackoverflow_nwp.cfg preset for one round in a subprocess, on fake
counts whose hashes it expects (`programs.TRAIN_ON_FAKE_STACKOVERFLOW`).
"""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.stackoverflow import constants
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_preprocessing as tff_words

from tests.helpers import benchmark_presets as presets
from tests.helpers import fake_shakespeare
from tests.helpers import fake_stackoverflow as fake
from tests.helpers import programs
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.data import loading
from tff_dp.data import token_sources


@pytest.fixture(name='cache')
def fixture_cache(tmp_path, monkeypatch):
  """A tiny Stack Overflow cache whose vocabulary is accepted; returns
  (data_dir, train sentences, test sentences)."""
  train = {
      '00000002': fake.SENTENCES[:3],
      '00000001': fake.SENTENCES[3:],
      '00000010': fake.SENTENCES[1:2]
  }
  test = {
      '00000001': fake.SENTENCES[:2],
      '00000005': fake.SENTENCES[2:],
      '00000007': fake.SENTENCES[4:]
  }
  fake.write_fake_cache(str(tmp_path), train_clients=train, test_clients=test)
  fake.accept_fake_vocabulary(fake.write_fake_vocabulary(str(tmp_path)),
                              monkeypatch.setattr)
  return str(tmp_path), train, test


def _load(data_dir):
  return presets.load(loading.Dataset.STACKOVERFLOW_NWP, data_dir)


@pytest.mark.tff
def test_vocabulary_size_window_and_special_ids_are_tffs():
  assert token_sources.STACKOVERFLOW_VOCAB_WORDS == (
      constants.DEFAULT_WORD_VOCAB_SIZE) == 10_000
  assert token_sources.STACKOVERFLOW_WINDOW == (
      constants.DEFAULT_SEQUENCE_LENGTH) == 20
  vocabulary = token_sources.TokenVocabulary(fake.WORDS)
  special = tff_words.get_special_tokens(len(fake.WORDS))
  assert (vocabulary.pad, [vocabulary.oov], vocabulary.bos,
          vocabulary.eos) == (special.padding, special.out_of_vocab,
                              special.beginning_of_sentence,
                              special.end_of_sentence)
  assert vocabulary.size == len(
      fake.WORDS) + special.get_number_of_special_tokens()


@pytest.mark.tff
def test_ids_are_tffs_ids():
  vocabulary = token_sources.TokenVocabulary(fake.WORDS)
  ours = token_sources.stackoverflow_ids_fn(vocabulary)
  # TFF truncates at its sequence length (and then drops eos); with a long
  # one it is [bos, ids..., eos] like ours, which never truncates.
  theirs = tff_words.build_to_ids_fn(list(fake.WORDS), max_sequence_length=1000)
  for sentence in fake.SENTENCES + ['']:
    element = {'tokens': tf.constant(sentence)}
    got = ours(element).numpy().tolist()
    assert got == theirs(element).numpy().tolist(), sentence
    assert got == fake.reference_ids(sentence), sentence
  assert fake.reference_ids('unknownword  twice')[1:-1] == [11, 11, 11]


@pytest.mark.tff
def test_source_reads_clients_sizes_and_vocabulary(cache):
  data_dir, _, _ = cache
  source = _load(data_dir)
  assert isinstance(source, token_sources.TokenSource)
  assert source.vocabulary.tokens == fake.WORDS
  assert source.client_ids == ['00000001', '00000002', '00000010']
  # Sentences per client, from the file's metadata.
  np.testing.assert_array_equal(source.client_sizes(), [3, 3, 1])
  assert (source.input_dim, source.num_classes, source.vocab_size) == (20, 14,
                                                                       14)
  assert source.image_shape is None
  text = source.describe()
  assert "Federated data 'stackoverflow_nwp': 3 clients" in text
  assert 'train sentences: 7' in text
  assert 'vocabulary of 14 ids: 10 tokens + pad, oov, bos, eos' in text
  assert "3 of the test split's 3 clients (fixed seed), at most 5 " in text


@pytest.mark.tff
def test_client_windows_are_the_reference_windows(cache):
  data_dir, train, _ = cache
  source = _load(data_dir)
  for index, client_id in enumerate(source.client_ids):
    want = fake_shakespeare.reference_windows(
        [fake.reference_ids(s) for s in train[client_id]], 20)
    got = fake_shakespeare.as_pairs(source.client_dataset(index))
    assert got == want, client_id
  # Client 00000002: 9 + 6 + 16 ids = 31: a full window, then 0-padding.
  assert len(fake_shakespeare.as_pairs(source.client_dataset(1))) == 2


@pytest.mark.tff
def test_test_set_is_a_bounded_seeded_sample(cache, monkeypatch):
  data_dir, _, test = cache
  monkeypatch.setattr(token_sources, 'STACKOVERFLOW_TEST_USERS', 2)
  monkeypatch.setattr(token_sources, 'STACKOVERFLOW_TEST_EXAMPLES_PER_USER', 1)
  source = _load(data_dir)
  assert "2 of the test split's 3 clients (fixed seed), at most 1 " in (
      source.describe())
  got = fake_shakespeare.as_pairs(source.test_dataset())
  first_windows = {
      cid:
          fake_shakespeare.reference_windows(
              [fake.reference_ids(s) for s in sentences], 20)[0]
      for cid, sentences in test.items()
  }
  assert len(got) == 2
  assert all(pair in first_windows.values() for pair in got)
  # The same sample every time.
  assert fake_shakespeare.as_pairs(_load(data_dir).test_dataset()) == got


@pytest.mark.tff
def test_vocabulary_is_the_most_frequent_words(cache, monkeypatch):
  data_dir, _, _ = cache
  monkeypatch.setattr(token_sources, 'STACKOVERFLOW_VOCAB_WORDS', 3)
  source = _load(data_dir)
  assert source.vocabulary.tokens == fake.WORDS[:3]
  assert source.vocab_size == source.num_classes == 7


@pytest.mark.tff
def test_missing_files_are_data_errors_naming_them(tmp_path, monkeypatch):
  # The vocabulary is read first.
  with pytest.raises(loading.DataError) as info:
    _load(str(tmp_path))
  assert (f'put stackoverflow.word_count.tar.bz2 in {tmp_path}/datasets'
          in str(info.value))
  fake.accept_fake_vocabulary(fake.write_fake_vocabulary(str(tmp_path)),
                              monkeypatch.setattr)
  presets.assert_missing_cache_refused(loading.Dataset.STACKOVERFLOW_NWP,
                                       str(tmp_path), 'stackoverflow.sqlite')


@pytest.mark.tff
def test_vocabulary_with_the_wrong_hash_is_refused(tmp_path):
  fake.write_fake_cache(str(tmp_path),
                        train_clients={'1': fake.SENTENCES},
                        test_clients={'1': fake.SENTENCES})
  path = fake.write_fake_vocabulary(str(tmp_path))
  with pytest.raises(loading.DataError) as info:
    _load(str(tmp_path))
  assert path in str(info.value) and 'sha256' in str(info.value)


@pytest.mark.tff
def test_rnn_of_the_word_vocabulary():
  vocab = 10_004
  model = models.build_keras_model(ModelKind.RNN,
                                   input_dim=20,
                                   num_classes=vocab,
                                   hidden_units=32,
                                   hidden_layers=1,
                                   embedding_dim=96,
                                   vocab_size=vocab,
                                   seed=0)
  assert model.input_shape == (None, 20)
  assert model.output_shape == (None, vocab)
  assert model.count_params() == (vocab * 96 + 4 * (32 * (96 + 32) + 32) +
                                  32 * vocab + vocab)
  x = np.zeros((3, 20), np.float32)
  x[:, -2:] = [[vocab - 2, 5], [vocab - 1, 1], [17, vocab - 3]]
  assert model(x).numpy().shape == (3, vocab)


@pytest.mark.e2e
@pytest.mark.slow  # 20-36 s; the preset's own run is in the configs smoke test.
def test_preset_trains_one_round_on_a_fake_cache(tmp_path):
  data_dir = tmp_path / 'cache'
  data_dir.mkdir()
  rng = np.random.default_rng(0)
  fake.write_fake_cache(str(data_dir),
                        train_clients=fake.fake_clients(
                            rng, presets.PROGRAM_CLIENTS),
                        test_clients=fake.fake_clients(rng, 2))
  _, summary, config = presets.train_one_round(
      tmp_path,
      'stackoverflow_nwp',
      data_dir,
      program=programs.TRAIN_ON_FAKE_STACKOVERFLOW)
  assert 0 <= summary['accuracy'] <= 1
  assert config['model'] == 'rnn'
