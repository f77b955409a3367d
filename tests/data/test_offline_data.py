"""Tests for the offline datasets and the FederatedData container."""

import json

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from tests.helpers import fresh_imports
from tff_dp.data import federated_data
from tff_dp.data import offline
from tff_dp.data.partition import Partition

OfflineDataset = offline.OfflineDataset
FederatedData = federated_data.FederatedData

# Small synthetic clients keep the tests fast; sizes keep their shape.
_SMALL_SYNTHETIC = dict(synthetic_examples_per_client_mean=40.0)


def _load(dataset, **kwargs):
  defaults = dict(num_clients=50, seed=0)
  if dataset is OfflineDataset.SYNTHETIC:
    defaults.update(partition=Partition.NATURAL, **_SMALL_SYNTHETIC)
  else:
    defaults.update(partition=Partition.IID)
  defaults.update(kwargs)
  return offline.load_offline(dataset, **defaults)


def _assert_same(a, b):
  assert a.client_ids == b.client_ids
  for xa, xb in zip(a.client_x + a.client_y, b.client_x + b.client_y):
    np.testing.assert_array_equal(xa, xb)
  np.testing.assert_array_equal(a.test_x, b.test_x)
  np.testing.assert_array_equal(a.test_y, b.test_y)


_EXPECTED = {
    # dataset: (input_dim, num_classes, total examples)
    OfflineDataset.DIGITS: (64, 10, 1797),
    OfflineDataset.BREAST_CANCER: (30, 2, 569),
}


@pytest.mark.parametrize('dataset', list(_EXPECTED))
@pytest.mark.parametrize(
    'partition', [Partition.IID, Partition.DIRICHLET, Partition.QUANTITY_SKEW])
def test_sklearn_datasets_shapes_and_invariants(dataset, partition):
  input_dim, num_classes, total = _EXPECTED[dataset]
  data = _load(dataset, partition=partition, num_clients=40)
  assert data.population == 40 == len(data.client_x)
  assert data.input_dim == input_dim
  assert data.num_classes == num_classes
  sizes = data.client_sizes()
  assert sizes.min() >= 1
  assert sizes.sum() + data.test_y.size == total
  assert data.test_y.size == pytest.approx(0.2 * total, abs=num_classes)
  for x, y in zip(data.client_x + (data.test_x,),
                  data.client_y + (data.test_y,)):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert np.all(np.isfinite(x))
    assert 0 <= y.min() and y.max() < num_classes


def test_digits_scaled_by_public_pixel_range():
  data = _load(OfflineDataset.DIGITS)
  x, _ = data.pooled_train()
  assert x.min() == 0.0 and x.max() == 1.0
  # x / 16 of integer pixel counts: every value is a multiple of 1/16.
  np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_only_digits_are_images():
  # load_digits rows are 8x8 images, row-major: what the CNN reshapes to.
  data = _load(OfflineDataset.DIGITS)
  assert data.image_shape == (8, 8, 1)
  assert '64 (8x8x1 images)' in data.describe()
  np.testing.assert_array_equal(sk_datasets.load_digits().images[0].reshape(-1),
                                sk_datasets.load_digits().data[0])
  assert _load(OfflineDataset.BREAST_CANCER).image_shape is None


def test_digits_test_set_disjoint_from_clients_by_content():
  # load_digits has no duplicate images, so content identifies examples.
  data = _load(OfflineDataset.DIGITS,
               partition=Partition.DIRICHLET,
               num_clients=700)
  train = {row.tobytes() for x in data.client_x for row in x}
  test = {row.tobytes() for row in data.test_x}
  assert len(train) == data.client_sizes().sum()
  assert len(test) == data.test_y.size
  assert not train & test


def test_test_split_is_stratified():
  data = _load(OfflineDataset.BREAST_CANCER)
  stats = data.statistics()
  train_share = stats['label_histogram'][1] / stats['examples_total']
  test_share = stats['test_label_histogram'][1] / stats['test_examples']
  assert test_share == pytest.approx(train_share, abs=0.01)


def test_breast_cancer_features_are_per_example_log_scaled():
  raw = sk_datasets.load_breast_cancer().data
  expected = {
      row.tobytes() for row in (np.log(raw + 0.01) / 5.0).astype(np.float32)
  }
  data = _load(OfflineDataset.BREAST_CANCER)
  rows = [row.tobytes() for x in data.client_x + (data.test_x,) for row in x]
  # Each example's features depend on that example alone: the same rows
  # come out whatever the split, partition or seed.
  assert set(rows) == expected
  assert np.abs(data.test_x).max() < 2.0


@pytest.mark.parametrize('dataset', list(OfflineDataset))
def test_same_seed_same_data_other_seed_other_data(dataset):
  kwargs = {} if dataset is OfflineDataset.SYNTHETIC else dict(
      partition=Partition.DIRICHLET)
  a = _load(dataset, seed=7, **kwargs)
  _assert_same(a, _load(dataset, seed=7, **kwargs))
  b = _load(dataset, seed=8, **kwargs)
  assert not np.array_equal(a.test_x, b.test_x)


def test_too_many_clients_names_the_numbers():
  # 569 examples, 20% of each class (42 + 71) held out: 456 for clients.
  with pytest.raises(ValueError,
                     match=r'num_clients=700\b.*num_examples=456\b'):
    _load(OfflineDataset.BREAST_CANCER, num_clients=700)


def test_synthetic_shapes_and_determinism():
  data = _load(OfflineDataset.SYNTHETIC, num_clients=30)
  assert data.population == 30
  assert data.input_dim == 60 and data.num_classes == 10
  assert data.client_sizes().min() >= 1
  assert all(
      x.dtype == np.float32 and np.all(np.isfinite(x)) for x in data.client_x)
  assert all(y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
             for y in data.client_y)
  assert data.test_y.size > 0


def test_synthetic_clients_do_not_depend_on_population():
  small = _load(OfflineDataset.SYNTHETIC, num_clients=5)
  large = _load(OfflineDataset.SYNTHETIC, num_clients=9)
  for k in range(5):
    np.testing.assert_array_equal(small.client_x[k], large.client_x[k])
    np.testing.assert_array_equal(small.client_y[k], large.client_y[k])
  np.testing.assert_array_equal(small.test_y, large.test_y[:small.test_y.size])


def test_synthetic_is_heterogeneous():
  data = _load(OfflineDataset.SYNTHETIC,
               num_clients=30,
               synthetic_examples_per_client_mean=200.0)
  hists = np.array(
      [np.bincount(y, minlength=10) / y.size for y in data.client_y])
  # Each client's own model W_k makes a few labels dominate it, and which
  # labels differs between clients; pooled, the labels are far more mixed.
  assert hists.max(axis=1).mean() > 0.4
  assert np.unique(hists.argmax(axis=1)).size >= 4
  pairwise_tv = 0.5 * np.abs(hists[:, None] - hists[None]).sum(-1)
  assert pairwise_tv[np.triu_indices(30, 1)].mean() > 0.5
  # Feature means differ across clients too (v_k ~ N(B_k, 1)).
  means = np.array([x.mean(axis=0) for x in data.client_x])
  assert means.std(axis=0).mean() > 0.5


def test_synthetic_alpha_beta_zero_still_heterogeneous_in_size():
  data = _load(OfflineDataset.SYNTHETIC,
               num_clients=40,
               synthetic_alpha=0.0,
               synthetic_beta=0.0)
  sizes = data.client_sizes()
  assert sizes.max() > 3 * np.median(sizes)


def test_synthetic_reference_sizes():
  data = offline.load_offline(OfflineDataset.SYNTHETIC,
                              num_clients=5,
                              partition=Partition.NATURAL,
                              seed=0,
                              test_fraction=0.1)
  # int(lognormal) + 50 per client, of which int(0.9 n) are kept.
  assert data.client_sizes().min() >= 45


def test_synthetic_test_set_is_held_out_fraction_of_each_client():
  data = _load(OfflineDataset.SYNTHETIC, num_clients=20, test_fraction=0.25)
  train = data.client_sizes().sum()
  total = train + data.test_y.size
  assert data.test_y.size / total == pytest.approx(0.25, abs=0.03)
  train_rows = {r.tobytes() for x in data.client_x for r in x}
  assert not train_rows & {r.tobytes() for r in data.test_x}


@pytest.mark.parametrize(
    'partition', [Partition.IID, Partition.DIRICHLET, Partition.QUANTITY_SKEW])
def test_synthetic_refuses_other_partitions(partition):
  with pytest.raises(ValueError, match="use partition 'natural'"):
    _load(OfflineDataset.SYNTHETIC, partition=partition)


def test_sklearn_datasets_refuse_natural():
  with pytest.raises(ValueError, match='no natural client structure'):
    _load(OfflineDataset.DIGITS, partition=Partition.NATURAL)


@pytest.mark.parametrize('test_fraction', [0.0, 1.0, -0.1, float('nan')])
def test_bad_test_fraction(test_fraction):
  with pytest.raises(ValueError, match='test_fraction'):
    _load(OfflineDataset.DIGITS, test_fraction=test_fraction)


def test_accepts_enum_values_as_strings():
  a = offline.load_offline('digits', num_clients=10, partition='iid', seed=0)
  b = _load(OfflineDataset.DIGITS, num_clients=10)
  _assert_same(a, b)


def test_statistics_and_describe():
  data = _load(OfflineDataset.DIGITS,
               num_clients=700,
               partition=Partition.DIRICHLET)
  stats = data.statistics()
  json.dumps(stats)  # Plain Python values, so it can go in run records.
  sizes = data.client_sizes()
  assert stats['clients'] == 700
  assert stats['examples_total'] == sizes.sum()
  assert stats['examples_per_client_min'] == sizes.min() == 2
  assert stats['examples_per_client_median'] == np.median(sizes)
  assert stats['examples_per_client_max'] == sizes.max()
  assert sum(stats['label_histogram']) == stats['examples_total']
  assert len(stats['label_histogram']) == 10
  assert stats['test_examples'] == data.test_y.size
  text = data.describe()
  assert "'digits': 700 clients" in text
  assert 'population N' in text
  assert 'dirichlet(alpha=0.5)' in text
  assert f"train examples: {stats['examples_total']}" in text
  assert ('test examples (server-side evaluation only): '
          f"{stats['test_examples']}") in text
  assert len(text.splitlines()) >= 5


def _tiny(**overrides):
  kwargs = dict(name='tiny',
                client_ids=('a', 'b'),
                client_x=(np.zeros((2, 3),
                                   np.float32), np.ones((1, 3), np.float32)),
                client_y=(np.array([0, 1], np.int32), np.array([2], np.int32)),
                test_x=np.zeros((1, 3), np.float32),
                test_y=np.array([1], np.int32),
                num_classes=3)
  kwargs.update(overrides)
  return FederatedData(**kwargs)


def test_federated_data_properties_and_read_only():
  data = _tiny()
  assert data.population == 2 and data.input_dim == 3
  np.testing.assert_array_equal(data.client_sizes(), [2, 1])
  with pytest.raises(ValueError):
    data.client_x[0][0, 0] = 5.0


@pytest.mark.parametrize('overrides, message', [
    (dict(client_ids=('a',)), 'lengths differ'),
    (dict(client_ids=('a', 'a')), 'duplicates'),
    (dict(client_x=(np.zeros((2, 3)), np.ones((1, 3), np.float32))),
     "client 'a'.*float32"),
    (dict(client_y=(np.array([0, 1]), np.array([2], np.int32))),
     "client 'a'.*int32"),
    (dict(client_x=(np.zeros((0, 3), np.float32), np.ones((1, 3), np.float32)),
          client_y=(np.zeros(0, np.int32), np.array(
              [2], np.int32))), "client 'a' has no examples"),
    (dict(client_y=(np.array([0, 3], np.int32), np.array([2], np.int32))),
     r"client 'a'.*labels must be in \[0, 3\)"),
    (dict(client_y=(np.array([0, -1], np.int32), np.array([2], np.int32))),
     r'labels must be in'),
    (dict(client_x=(np.array([[0, np.nan, 0], [0, 0, 0]], np.float32),
                    np.ones((1, 3), np.float32))), 'NaN or infinite'),
    (dict(test_x=np.zeros((1, 4), np.float32)), 'test set.*4 features'),
    (dict(client_x=(np.zeros((3, 3), np.float32), np.ones((1, 3), np.float32))),
     '3 rows but y has 2'),
    (dict(test_x=np.zeros((0, 3), np.float32), test_y=np.zeros(
        0, np.int32)), 'test set has no examples'),
    (dict(num_classes=1), 'num_classes'),
    (dict(client_ids=(), client_x=(), client_y=()), 'no clients'),
    (dict(image_shape=(2, 2, 1)), 'image_shape.*the 3 features'),
    (dict(image_shape=(3, 1)), 'image_shape'),
])
def test_federated_data_validation(overrides, message):
  with pytest.raises(ValueError, match=message):
    _tiny(**overrides)


def test_import_does_not_pull_in_tensorflow():
  # The data layer must stay usable (and testable) without TensorFlow.
  assert fresh_imports.heavy_imports('tff_dp.data', 'tff_dp.data.offline') == []
