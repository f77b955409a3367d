"""Stack Overflow tag prediction (TFF's baseline; Reddi et al. 2021): data,
the multi-label model, what does not fit it, and the program.

The tests write a tiny stackoverflow.sqlite in TFF's own format, and tiny word-
and tag-count archives in the layout of TFF's, and read them through TFF's real
loaders (`tests.helpers.fake_stackoverflow`, whose fake sentences of the word
task are the posts' bodies here). The counts cannot have TFF's published hashes,
so the tests that load them expect the fakes' instead
(`accept_fake_vocabulary`). Features and labels are checked against TFF's own
tag preprocessing and a numpy reference; the loss and metrics against numpy. The
program test runs configs/stackoverflow_tag.cfg for one round in a
subprocess, on fake counts whose hashes it expects
(`programs.TRAIN_ON_FAKE_STACKOVERFLOW`).
"""

import functools
import math

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.baselines import client_spec
from tensorflow_federated.python.simulation.baselines.stackoverflow import constants
from tensorflow_federated.python.simulation.baselines.stackoverflow import tag_prediction_preprocessing as tff_tags

from tests.helpers import benchmark_presets as presets
from tests.helpers import fake_stackoverflow as fake
from tests.helpers import programs
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import models
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.config import ModelKind
from tff_dp.data import benchmark_source
from tff_dp.data import labels
from tff_dp.data import loading
from tff_dp.data import stackoverflow_tags
from tff_dp.data import token_sources
from tff_dp.data.labels import LabelKind
from tff_dp.program import release

_PRESET = presets.preset('stackoverflow_tag')
_TRAIN = {'00000002': [0, 1, 2], '00000001': [3, 4, 5, 6], '00000010': [1]}
_TEST = {'00000001': [0, 1], '00000005': [2, 3, 4], '00000007': [5, 6]}


@pytest.fixture(name='data_dir')
def fixture_data_dir(tmp_path, monkeypatch):
  """A tiny Stack Overflow cache whose counts are accepted."""
  fake.write_fake_posts(str(tmp_path), train_clients=_TRAIN, test_clients=_TEST)
  fake.write_fake_vocabularies(str(tmp_path), monkeypatch.setattr)
  return str(tmp_path)


def _load(data_dir):
  return presets.load(loading.Dataset.STACKOVERFLOW_TAG, data_dir)


def _as_arrays(dataset):
  pairs = list(dataset.as_numpy_iterator())
  return [x for x, _ in pairs], [y for _, y in pairs]


def _tff_preprocessed(posts, *, max_elements=None):
  """TFF's own tag preprocessing of `posts`, unshuffled, one per batch."""
  spec = client_spec.ClientSpec(num_epochs=1,
                                batch_size=1,
                                shuffle_buffer_size=1,
                                max_elements=max_elements)
  preprocess = tff_tags.create_preprocess_fn(spec, list(fake.WORDS),
                                             list(fake.TAGS))
  raw = tf.data.Dataset.from_tensor_slices({
      k: [fake.post(*fake.POSTS[i])[k] for i in posts]
      for k in ('tokens', 'title', 'tags')
  })
  return preprocess(raw).unbatch()


def test_sizes_and_cap_are_tffs_and_reddi_et_al():
  assert stackoverflow_tags.STACKOVERFLOW_TAGS == (
      constants.DEFAULT_TAG_VOCAB_SIZE) == 500
  assert token_sources.STACKOVERFLOW_VOCAB_WORDS == (
      constants.DEFAULT_WORD_VOCAB_SIZE)
  # google-research/federated's so_tp_max_elements_per_user.
  assert stackoverflow_tags.STACKOVERFLOW_TAG_MAX_POSTS_PER_USER == 1000


def test_labels_are_declared_before_and_after_loading():
  assert loading.label_kind(
      loading.Dataset.STACKOVERFLOW_TAG) is (LabelKind.MULTI_HOT)
  assert stackoverflow_tags.StackOverflowTagSource.label_kind is (
      LabelKind.MULTI_HOT)
  for dataset in loading.Dataset:
    if dataset is not loading.Dataset.STACKOVERFLOW_TAG:
      assert loading.label_kind(dataset) is LabelKind.SINGLE, dataset


def test_every_metric_has_its_released_keys():
  for kind in LabelKind:
    for name in labels.metric_names(kind):
      assert release.EVAL_PREFIX + name in release.DP_SAFE_KEYS
      assert f'nonprivate/train_{name}' in release.NONPRIVATE_KEYS
      assert release.FED_EVAL_PREFIX + name in release.NONPRIVATE_KEYS
  assert labels.headline_metric(LabelKind.MULTI_HOT) == 'recall_at_5'
  assert labels.headline_metric(LabelKind.SINGLE) == 'accuracy'


@pytest.mark.tff
def test_features_and_labels_are_tffs():
  ours = stackoverflow_tags.tag_example_fn(fake.WORDS, fake.TAGS)
  theirs = tff_tags.build_to_ids_fn(list(fake.WORDS), list(fake.TAGS))
  for post in fake.POSTS:
    element = {
        k: tf.constant(v) for k, v in zip(('tokens', 'title', 'tags'), post)
    }
    (x, y), (tx, ty) = ours(element), theirs(element)
    assert (x.dtype, y.dtype) == (tf.float32, tf.float32)
    np.testing.assert_array_equal(x.numpy(), tx.numpy())
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    want_x, want_y = fake.reference_tag_example(post)
    np.testing.assert_allclose(x.numpy(), want_x, rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), want_y)
  # No vocabulary word at all: zeros, not NaN (TFF's divide_no_nan).
  x, _ = ours({
      k: tf.constant(v)
      for k, v in zip(('tokens', 'title', 'tags'), fake.POSTS[4])
  })
  assert not x.numpy().any()


@pytest.mark.tff
def test_source_is_tffs_preprocessing_of_each_user(data_dir):
  source = _load(data_dir)
  assert isinstance(source, stackoverflow_tags.StackOverflowTagSource)
  assert (source.words, source.tags) == (fake.WORDS, fake.TAGS)
  assert source.client_ids == ['00000001', '00000002', '00000010']
  np.testing.assert_array_equal(source.client_sizes(), [4, 3, 1])
  assert (source.input_dim, source.num_classes) == (10, 6)
  assert (source.image_shape, source.vocab_size) == (None, None)
  assert source.label_kind is LabelKind.MULTI_HOT
  for index, client_id in enumerate(source.client_ids):
    theirs = _tff_preprocessed(_TRAIN[client_id])
    assert source.client_dataset(index).element_spec == theirs.element_spec
    got_x, got_y = _as_arrays(source.client_dataset(index))
    want_x, want_y = _as_arrays(theirs)
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got_y, want_y)
  text = source.describe()
  assert "Federated data 'stackoverflow_tag': 3 users" in text
  assert 'train posts: 8 used of 8 (the first 1000 of each user)' in text
  assert 'over 10 words of title and body; labels: multi-hot over 6 tags' in (
      text)


@pytest.mark.tff
def test_posts_per_user_are_capped_as_tffs_max_elements(data_dir, monkeypatch):
  monkeypatch.setattr(stackoverflow_tags,
                      'STACKOVERFLOW_TAG_MAX_POSTS_PER_USER', 2)
  source = _load(data_dir)
  np.testing.assert_array_equal(source.client_sizes(), [2, 2, 1])
  assert 'train posts: 5 used of 8 (the first 2 of each user)' in (
      source.describe())
  got_x, got_y = _as_arrays(source.client_dataset(0))
  # Unshuffled, TFF's max_elements takes the same first posts.
  want_x, want_y = _as_arrays(
      _tff_preprocessed(_TRAIN['00000001'], max_elements=2))
  np.testing.assert_array_equal(got_x, want_x)
  np.testing.assert_array_equal(got_y, want_y)


@pytest.mark.tff
def test_test_set_is_the_bounded_seeded_sample_of_the_word_task(
    data_dir, monkeypatch):
  monkeypatch.setattr(token_sources, 'STACKOVERFLOW_TEST_USERS', 2)
  monkeypatch.setattr(token_sources, 'STACKOVERFLOW_TEST_EXAMPLES_PER_USER', 1)
  source = _load(data_dir)
  assert "2 of the test split's 3 users (fixed seed), at most 1 posts" in (
      source.describe())
  users = benchmark_source.sample_client_ids(sorted(_TEST), 2)
  got_x, got_y = _as_arrays(source.test_dataset())
  want = [
      fake.reference_tag_example(fake.POSTS[_TEST[user][0]]) for user in users
  ]
  np.testing.assert_allclose(got_x, [x for x, _ in want], rtol=1e-6)
  np.testing.assert_array_equal(got_y, [y for _, y in want])


@pytest.mark.tff
def test_missing_or_wrong_tag_counts_are_data_errors_naming_them(
    tmp_path, monkeypatch):
  fake.write_fake_posts(str(tmp_path), train_clients=_TRAIN, test_clients=_TEST)
  fake.accept_fake_vocabulary(fake.write_fake_vocabulary(str(tmp_path)),
                              monkeypatch.setattr)
  with pytest.raises(loading.DataError) as info:
    _load(str(tmp_path))
  assert (f'put stackoverflow.tag_count.tar.bz2 in {tmp_path}/datasets'
          in str(info.value))
  path = fake.write_fake_tag_counts(str(tmp_path))
  with pytest.raises(loading.DataError) as info:
    _load(str(tmp_path))
  assert path in str(info.value) and 'sha256' in str(info.value)


# --- The multi-label model -------------------------------------------------


def _evaluator(x, y):
  from tff_dp.program import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.ServerEvaluator(
      ModelKind.LOGISTIC_REGRESSION,
      input_dim=x.shape[1],
      num_classes=y.shape[1],
      hidden_units=1,
      hidden_layers=1,
      label_kind=LabelKind.MULTI_HOT,
      test_data=tf.data.Dataset.from_tensor_slices((x, y)))


def _weights(kernel, bias):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return tff.learning.models.ModelWeights(
      trainable=[kernel.astype(np.float32),
                 bias.astype(np.float32)],
      non_trainable=[])


@pytest.mark.tff
def test_zero_weights_lose_log_2_per_label_and_predict_nothing():
  rng = np.random.default_rng(0)
  x = rng.random((9, 4)).astype(np.float32)
  y = (rng.random((9, 7)) < 0.3).astype(np.float32)
  metrics = _evaluator(x, y)(_weights(np.zeros((4, 7)), np.zeros(7)))
  assert metrics['loss'] == pytest.approx(math.log(2), rel=1e-6)
  # Every probability is 0.5, not above it: no tag is predicted.
  assert metrics['precision'] == 0
  assert set(metrics) == {'loss', 'recall_at_5', 'precision'}


@pytest.mark.tff
def test_loss_and_metrics_equal_numpy():
  rng = np.random.default_rng(1)
  x = rng.random((11, 4)).astype(np.float32)
  y = (rng.random((11, 7)) < 0.3).astype(np.float32)
  kernel, bias = rng.normal(size=(4, 7)), rng.normal(size=7)
  metrics = _evaluator(x, y)(_weights(kernel, bias))
  logits = x.astype(np.float64) @ kernel + bias
  p = 1 / (1 + np.exp(-logits))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
  predicted = p > 0.5
  top5 = np.zeros_like(predicted)
  np.put_along_axis(top5, np.argsort(-logits, axis=1)[:, :5], True, axis=1)
  assert metrics['loss'] == pytest.approx(bce, rel=1e-5)
  assert metrics['precision'] == pytest.approx(
      (predicted & (y > 0)).sum() / predicted.sum(), rel=1e-6)
  assert metrics['recall_at_5'] == pytest.approx(
      (top5 & (y > 0)).sum() / (y > 0).sum(), rel=1e-6)


def test_multi_label_needs_at_least_5_labels():
  with pytest.raises(ValueError, match='recall@5 needs at least 5'):
    models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                          input_dim=3,
                          num_classes=4,
                          hidden_units=1,
                          seed=0,
                          label_kind=LabelKind.MULTI_HOT)


# --- What does not fit multi-label data, and what does ----------------------


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', f'--flagfile={_PRESET}', *argv])
  return cli_flags.config_from_flags(fv)


def test_grouped_path_refuses_multi_label_data():
  reason = simulation_path.grouped_unsupported_reason(_config())
  assert '--dataset=stackoverflow_tag' in reason and 'multi-label' in reason
  with pytest.raises(ConfigError, match='--clients_per_call=8: .*multi-label'):
    config_checks.check_config(_config('--clients_per_call=8'))
  # Automatic: TFF's algorithm, one client per call.
  assert simulation_path.resolve_clients_per_call(_config(),
                                                  in_memory=False) == 1


def test_cnn_and_rnn_do_not_fit_bags_of_words():
  with pytest.raises(ConfigError, match='--model=rnn: needs token'):
    config_checks.check_config(_config('--model=rnn'))
  config = _config('--model=cnn')
  config_checks.check_config(config)
  with pytest.raises(ConfigError, match='--model=cnn: needs image'):
    config_checks.check_model_fits_data(config,
                                        image_shape=None,
                                        vocab_size=None)
  for model in ('logistic_regression', 'mlp'):
    config = _config(f'--model={model}')
    config_checks.check_config(config)
    config_checks.check_model_fits_data(config,
                                        image_shape=None,
                                        vocab_size=None)


def _one_round(config, source):
  """Metrics of one round of `config`'s process over users 0 and 1."""
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  from tff_dp.program import client_data  # pylint: disable=g-import-not-at-top
  from tff_dp.program import run_privacy  # pylint: disable=g-import-not-at-top
  sampler = run_privacy.build_sampler(config, source.population, secret=0)
  process = assembly.build_process(config, source, sampler)
  state = process.initialize()
  datasets = client_data.round_datasets_for(source,
                                            batch_size=config.client_batch_size,
                                            epochs=1,
                                            seed=0)(1, [0, 1])
  output = process.next(state, datasets)
  before = process.get_model_weights(state).trainable
  after = process.get_model_weights(output.state).trainable
  assert not all(np.array_equal(a, b) for a, b in zip(before, after))
  return output.metrics['client_work']['train']


@pytest.mark.tff
@pytest.mark.parametrize(
    'argv',
    [
        # Example-level DP-SGD: the per-example loss is the binary cross-entropy.
        ('--example_dp', '--dp_mechanism=none', '--local_steps=2',
         '--client_batch_size=2', '--example_noise_multiplier=0.5'),
        # Local DP noises the update, whatever the loss.
        ('--local_dp=gaussian', '--local_noise_multiplier=0.1',
         '--dp_mechanism=none'),
    ],
    ids=['example_dp', 'local_dp'])
def test_example_and_local_dp_train_on_multi_label_data(tff_runtime, data_dir,
                                                        argv):
  del tff_runtime
  source = _load(data_dir)
  config = _config('--clients_per_round=2', *argv)
  config_checks.check_config(config)
  train = _one_round(config, source)  # Checks that the model moved.
  # With noise at the clients, their un-noised metrics never reach the
  # server (`learning_process.no_client_metrics`).
  assert not train


@pytest.mark.tff
def test_federated_evaluation_equals_the_server_one_on_the_same_posts(
    tff_runtime, data_dir):
  del tff_runtime
  from tff_dp.data import held_out as held_out_lib  # pylint: disable=g-import-not-at-top
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  from tff_dp.program import federated_evaluation  # pylint: disable=g-import-not-at-top
  source = _load(data_dir)
  config = _config('--evaluation=federated', '--eval_clients=2',
                   '--release_nonprivate_metrics', '--clients_per_round=1')
  training, held = held_out_lib.hold_out_clients(source, eval_clients=2, seed=0)
  assert training.label_kind is LabelKind.MULTI_HOT
  evaluate = federated_evaluation.build_federated_evaluator(
      assembly.build_model_fn(config, training),
      held,
      label_kind=training.label_kind)
  rng = np.random.default_rng(2)
  weights = _weights(rng.normal(size=(10, 6)), rng.normal(size=6))
  got = evaluate(weights)
  posts = functools.reduce(lambda a, b: a.concatenate(b),
                           [source.client_dataset(i) for i in held.indices])
  x, y = (np.array(a) for a in _as_arrays(posts))
  want = _evaluator(x, y)(weights)
  assert got['num_examples'] == len(y)
  for name in ('loss', 'recall_at_5', 'precision'):
    assert got[name] == pytest.approx(want[name], rel=1e-5), name


# --- The program ------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow  # ~22 s; the configs smoke test's slow tier trains it too.
def test_preset_trains_one_round_and_reports_the_multi_label_metrics(tmp_path):
  data_dir = tmp_path / 'cache'
  data_dir.mkdir()
  rng = np.random.default_rng(0)
  fake.write_fake_posts(str(data_dir),
                        train_clients={
                            f'{i:08d}':
                                list(rng.integers(len(fake.POSTS), size=3))
                            for i in range(presets.PROGRAM_CLIENTS)
                        },
                        test_clients={
                            '00000001': [0, 1, 2],
                            '00000002': [3, 4, 5, 6]
                        })
  stdout, summary, config = presets.train_one_round(
      tmp_path,
      'stackoverflow_tag',
      data_dir,
      '--release_nonprivate_metrics',
      program=programs.TRAIN_ON_FAKE_STACKOVERFLOW)
  assert 'round 1/1 | recall_at_5 ' in stdout
  assert 'test recall_at_5: ' in stdout
  assert 'test precision: ' in stdout
  # No accuracy: the headline is recall@5, labelled as such.
  assert summary['accuracy'] is None and summary['accuracy_key'] is None
  assert summary['headline_key'] == 'eval/recall_at_5'
  assert set(summary['eval_metrics']) == {
      'eval/loss', 'eval/recall_at_5', 'eval/precision'
  }
  assert summary['headline_value'] == summary['eval_metrics'][
      'eval/recall_at_5']
  for value in summary['eval_metrics'].values():
    assert 0 <= value
  with open(tmp_path / 'stackoverflow_tag' / 'metrics.csv') as f:
    released = set(f.readline().strip().split(',')) - {'round'}
  assert {
      'eval/recall_at_5', 'eval/precision', 'nonprivate/train_recall_at_5',
      'nonprivate/train_precision'
  } <= released
  assert not any('accuracy' in key for key in released)
  # The un-noised training metrics are labelled, and only they.
  assert all(key in release.DP_SAFE_KEYS or (key in release.NONPRIVATE_KEYS)
             for key in released)
  assert config['model'] == 'logistic_regression'
