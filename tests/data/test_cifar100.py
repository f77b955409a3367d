"""Federated CIFAR-100 (Krizhevsky 2009; TFF's Pachinko partition of Reddi et
al. 2021) as a training source, and the CNN it trains.

The data tests write a tiny cifar100.sqlite in TFF's own format
(`tests.helpers.fake_tff_caches`) and read it through TFF's real loader:
nothing is mocked. The program tests run `python -m tff_dp.cli.train` on the
configs/cifar100.cfg preset: once without the cache (exit 2, the file
named) and once for one round on a fake cache.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import benchmark_presets as presets
from tests.helpers import fake_tff_caches
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.data import benchmark_source
from tff_dp.data import loading


def _image(rng, low=0, high=256):
  return rng.integers(low, high, (32, 32, 3))


def _example(image, label, coarse_label=0):
  return {'coarse_label': coarse_label, 'image': image, 'label': label}


@pytest.fixture(name='cache')
def fixture_cache(tmp_path):
  """A tiny cifar100.sqlite; returns (data_dir, its splits)."""
  rng = np.random.default_rng(0)
  # Client '10' sorts before '2', as TFF's string ids do; its first image
  # spans the whole pixel range and the fine label differs from the coarse.
  extremes = _image(rng)
  extremes[0, 0, 0], extremes[31, 31, 2] = 0, 255
  splits = {
      'train': {
          '0': [_example(_image(rng), 3),
                _example(_image(rng), 97)],
          '1': [_example(_image(rng), 0)],
          '10': [
              _example(extremes, 99, coarse_label=19),
              _example(_image(rng), 42),
              _example(_image(rng), 7)
          ],
          '2': [_example(_image(rng), 55)],
      },
      'test': {
          '0': [_example(_image(rng), 12),
                _example(_image(rng), 13)],
          '1': [_example(_image(rng), 14)]
      },
  }
  fake_tff_caches.write_database(str(tmp_path / 'cifar100.sqlite'), splits)
  return str(tmp_path), splits


def _expected(examples):
  x = np.stack([
      np.asarray(e['image'], np.float32).reshape(-1) / 255.0 for e in examples
  ])
  return x, np.array([e['label'] for e in examples], np.int32)


@pytest.mark.tff
def test_source_reads_clients_sizes_and_shape(cache):
  data_dir, _ = cache
  source = presets.load(loading.Dataset.CIFAR100, data_dir)
  assert isinstance(source, benchmark_source.Cifar100Source)
  assert source.client_ids == ['0', '1', '10', '2']
  assert source.population == 4  # The file's clients, not --num_clients.
  np.testing.assert_array_equal(source.client_sizes(), [2, 1, 3, 1])
  assert (source.input_dim, source.num_classes) == (3072, 100)
  assert source.image_shape == (32, 32, 3)
  text = source.describe()
  assert "Federated data 'cifar100': 4 clients" in text
  assert 'train examples: 7' in text
  assert 'features: 3072 (32x32x3 images, pixels / 255), classes: 100' in text


@pytest.mark.tff
def test_examples_are_scaled_flat_images_with_fine_labels(cache):
  data_dir, splits = cache
  source = benchmark_source.Cifar100Source(data_dir=data_dir)
  dataset = source.client_dataset(source.client_ids.index('10'))
  assert dataset.element_spec == (tf.TensorSpec([3072], tf.float32),
                                  tf.TensorSpec([], tf.int32))
  got = list(dataset.as_numpy_iterator())
  x = np.stack([g[0] for g in got])
  y = np.array([g[1] for g in got])
  want_x, want_y = _expected(splits['train']['10'])
  np.testing.assert_allclose(x, want_x, rtol=0, atol=1e-7)
  # The fine label (99), not the coarse one (19).
  np.testing.assert_array_equal(y, want_y)
  assert x.min() == 0.0 and x.max() == 1.0
  # Row-major, channels last: the CNN's reshape gives the image back.
  np.testing.assert_allclose(x[0].reshape(32, 32, 3) * 255.0,
                             splits['train']['10'][0]['image'],
                             atol=1e-4)


@pytest.mark.tff
def test_test_set_is_the_pooled_test_split(cache):
  data_dir, splits = cache
  source = benchmark_source.Cifar100Source(data_dir=data_dir)
  got = list(source.test_dataset().as_numpy_iterator())
  want_x, want_y = _expected(splits['test']['0'] + splits['test']['1'])
  assert len(got) == 3
  assert sorted(int(g[1]) for g in got) == sorted(want_y.tolist())
  for features, label in got:
    row = list(want_y).index(label)
    np.testing.assert_allclose(features, want_x[row], rtol=0, atol=1e-7)


@pytest.mark.tff
def test_missing_cache_is_a_data_error_naming_the_file(tmp_path):
  presets.assert_missing_cache_refused(loading.Dataset.CIFAR100, str(tmp_path),
                                       'cifar100.sqlite')
  assert os.listdir(tmp_path) == []


@pytest.mark.tff
@pytest.mark.parametrize(
    'image_shape,num_classes,params',
    [
        # conv 3x3x3x32 + 32, conv 3x3x32x64 + 64, dense 14*14*64 x 128 + 128,
        # logits 128 x 100 + 100.
        ((32, 32, 3), 100, 896 + 18_496 + 1_605_760 + 12_900),
        # TFF's EMNIST CNN (digits): 1,199,882 weights in its docstring.
        ((28, 28, 1), 10, 1_199_882),
        ((8, 8, 1), 10, 320 + 18_496 + 4 * 64 * 128 + 128 + 1_290),
    ])
def test_cnn_takes_flat_images_and_outputs_logits(image_shape, num_classes,
                                                  params):
  input_dim = int(np.prod(image_shape))
  model = models.build_keras_model(ModelKind.CNN,
                                   input_dim=input_dim,
                                   num_classes=num_classes,
                                   hidden_units=7,
                                   seed=3,
                                   image_shape=image_shape)
  assert model.input_shape == (None, input_dim)
  assert model.output_shape == (None, num_classes)
  assert model.count_params() == params
  x = np.random.default_rng(0).random((4, input_dim)).astype(np.float32)
  logits = model(x, training=False).numpy()
  assert logits.shape == (4, num_classes)
  # Logits, not probabilities: rows need not sum to 1 nor lie in [0, 1].
  assert not np.allclose(logits.sum(axis=1), 1.0)
  # Evaluation is deterministic; training applies dropout.
  np.testing.assert_array_equal(model(x, training=False).numpy(), logits)
  assert not np.array_equal(model(x, training=True).numpy(), logits)


@pytest.mark.tff
def test_cnn_initial_weights_follow_the_seed():

  def weights(seed):
    return models.build_keras_model(ModelKind.CNN,
                                    input_dim=64,
                                    num_classes=10,
                                    hidden_units=1,
                                    seed=seed,
                                    image_shape=(8, 8, 1)).get_weights()

  for a, b in zip(weights(5), weights(5)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(weights(5)[0], weights(6)[0])


@pytest.mark.tff
@pytest.mark.parametrize('image_shape,input_dim,message', [
    (None, 3072, 'needs image data'),
    ((32, 32, 3), 784, r'\(32, 32, 3\) does not hold the data\'s 784'),
    ((32, 96), 3072, 'not \\(height, width, channels\\)'),
    ((4, 4, 4), 64, 'at least 6x6'),
])
def test_cnn_refuses_unusable_image_shapes(image_shape, input_dim, message):
  with pytest.raises(ValueError, match=message):
    models.build_model_fn(ModelKind.CNN,
                          input_dim=input_dim,
                          num_classes=10,
                          hidden_units=1,
                          seed=0,
                          image_shape=image_shape)


@pytest.mark.e2e
def test_program_without_cache_exits_2_naming_the_file(tmp_path):
  presets.assert_program_refuses_a_missing_cache(
      tmp_path,
      'cifar100',
      error_start='--dataset=cifar100: CIFAR-100',
      file_name='cifar100.sqlite')


@pytest.mark.e2e
@pytest.mark.slow  # 20-36 s; the preset's own run is in the configs smoke test.
def test_preset_trains_one_round_on_a_fake_cache(tmp_path):
  rng = np.random.default_rng(1)
  data_dir = tmp_path / 'cache'
  data_dir.mkdir()
  make = lambda: _example(_image(rng), int(rng.integers(100)))
  fake_tff_caches.write_database(
      str(data_dir / 'cifar100.sqlite'), {
          'train': {
              str(i): [make()] for i in range(presets.PROGRAM_CLIENTS)
          },
          'test': {
              '0': [make(), make()],
              '1': [make()]
          }
      })
  _, summary, config = presets.train_one_round(tmp_path, 'cifar100', data_dir)
  assert 0 <= summary['accuracy'] <= 1
  assert config['model'] == 'cnn'
