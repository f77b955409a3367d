"""Tests for tff_dp.data.partition: the contract and the skew each promises."""

import numpy as np
import pytest

from tff_dp.data import partition as partition_lib

Partition = partition_lib.Partition

# 10 balanced classes of 100 examples, in a shuffled order so that index
# order says nothing about the label.
_LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 100))


def _make(kind, *, num_clients, seed, labels=_LABELS, **kwargs):
  return partition_lib.make_partition(kind,
                                      labels=labels,
                                      num_clients=num_clients,
                                      seed=seed,
                                      **kwargs)


def _assert_valid(parts, num_examples, num_clients):
  assert len(parts) == num_clients
  flat = np.concatenate(parts)
  # Same length and same set: every example exactly once.
  assert flat.size == num_examples
  np.testing.assert_array_equal(np.sort(flat), np.arange(num_examples))
  assert min(p.size for p in parts) >= 1
  assert all(np.issubdtype(p.dtype, np.integer) for p in parts)


def _max_label_fraction(parts, labels=_LABELS):
  return np.mean([np.bincount(labels[p]).max() / p.size for p in parts])


_LABEL_KINDS = [Partition.IID, Partition.DIRICHLET, Partition.QUANTITY_SKEW]


@pytest.mark.parametrize('kind', _LABEL_KINDS)
@pytest.mark.parametrize('num_clients', [1, 7, 20, 1000])
def test_contract(kind, num_clients):
  parts = _make(kind, num_clients=num_clients, seed=0)
  _assert_valid(parts, _LABELS.size, num_clients)


@pytest.mark.parametrize('kind', _LABEL_KINDS)
def test_many_tiny_clients(kind):
  # The default run: ~700 clients with ~2 examples each.
  labels = np.random.default_rng(0).integers(0, 10, size=1437)
  parts = _make(kind, labels=labels, num_clients=700, seed=3)
  _assert_valid(parts, labels.size, 700)


@pytest.mark.parametrize('kind', _LABEL_KINDS)
def test_seeds_reproduce_and_differ(kind):
  first = _make(kind, num_clients=20, seed=5)
  again = _make(kind, num_clients=20, seed=5)
  other = _make(kind, num_clients=20, seed=6)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(a.size != b.size or np.any(a != b) for a, b in zip(first, other))


@pytest.mark.parametrize('kind', _LABEL_KINDS)
def test_too_many_clients_names_the_numbers(kind):
  with pytest.raises(ValueError, match=r'num_clients=11\b.*num_examples=10\b'):
    _make(kind, labels=np.arange(10) % 2, num_clients=11, seed=0)


def test_zero_clients_rejected():
  with pytest.raises(ValueError, match='num_clients'):
    partition_lib.partition_iid(num_examples=10,
                                num_clients=0,
                                rng=np.random.default_rng(0))


def test_iid_sizes_near_equal():
  parts = partition_lib.partition_iid(num_examples=1003,
                                      num_clients=10,
                                      rng=np.random.default_rng(0))
  sizes = [p.size for p in parts]
  assert max(sizes) - min(sizes) <= 1


def test_dirichlet_sizes_near_equal():
  # Hsu et al. fix client sizes so that only the labels are skewed.
  parts = _make(Partition.DIRICHLET,
                num_clients=30,
                seed=0,
                dirichlet_alpha=0.1)
  sizes = [p.size for p in parts]
  assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_follows_alpha():
  # 20 clients x 50 examples over 10 classes of 100. At alpha=100,
  # q_k ~ uniform and the mean max-label fraction is that of 50 i.i.d. draws,
  # ~0.19 (0.18-0.20 over 20 seeds). At alpha=0.1 each q_k is nearly one-hot
  # (Dirichlet parameters 0.01), so clients fill up from one class until the
  # pool runs out: 0.54-0.77 over 20 seeds. A 0.25 gap sits in the middle of
  # that separation, far above the seed-to-seed spread of either mean.
  def mean_over_seeds(alpha, stat):
    return np.mean([
        stat(
            _make(Partition.DIRICHLET,
                  num_clients=20,
                  seed=s,
                  dirichlet_alpha=alpha)) for s in range(5)
    ])

  concentration = [
      mean_over_seeds(a, _max_label_fraction) for a in (0.1, 1.0, 10.0, 100.0)
  ]
  assert concentration[0] > concentration[-1] + 0.25
  assert all(a > b for a, b in zip(concentration, concentration[1:]))

  def distinct_labels(parts):
    return np.mean([np.unique(_LABELS[p]).size for p in parts])

  # Nearly all 10 labels per client at alpha=100, a handful at alpha=0.1.
  assert mean_over_seeds(0.1, distinct_labels) < 6
  assert mean_over_seeds(100.0, distinct_labels) > 9


def test_dirichlet_survives_underflowing_concentration():
  # alpha * p = 1e-5 underflows most gamma draws; rows without mass must
  # fall back instead of producing NaN or empty clients.
  parts = _make(Partition.DIRICHLET,
                num_clients=50,
                seed=0,
                dirichlet_alpha=1e-4)
  _assert_valid(parts, _LABELS.size, 50)


def test_dirichlet_accepts_any_label_values():
  labels = np.array(['cat', 'dog', 'cat', 'eel', 'dog', 'cat'])
  parts = partition_lib.partition_dirichlet(labels=labels,
                                            num_clients=3,
                                            alpha=1.0,
                                            rng=np.random.default_rng(0))
  _assert_valid(parts, labels.size, 3)


@pytest.mark.parametrize('alpha', [0.0, -1.0, float('nan'), float('inf')])
def test_dirichlet_rejects_bad_alpha(alpha):
  with pytest.raises(ValueError, match='alpha'):
    _make(Partition.DIRICHLET, num_clients=5, seed=0, dirichlet_alpha=alpha)


def _top_decile_share(parts):
  sizes = np.sort([p.size for p in parts])
  return sizes[-len(sizes) // 10:].sum() / sizes.sum()


def test_quantity_skew_is_heavy_tailed():
  # With Pareto(1.5) weights the largest 10% of clients hold ~0.1**(1/3) =
  # 46% of the data in expectation (0.25-0.6 over 200 seeds at this size);
  # equal sizes would give exactly 10%. 0.2 leaves room for unlucky seeds
  # while still being twice the IID share.
  labels = np.zeros(10_000, dtype=int)
  for seed in range(5):
    parts = _make(Partition.QUANTITY_SKEW,
                  labels=labels,
                  num_clients=100,
                  seed=seed,
                  power=1.5)
    sizes = np.array([p.size for p in parts])
    assert _top_decile_share(parts) > 0.2
    assert sizes.max() > 3 * np.median(sizes)
  iid = _make(Partition.IID, labels=labels, num_clients=100, seed=0)
  assert _top_decile_share(iid) == pytest.approx(0.1)


def test_quantity_skew_heavier_for_smaller_power():
  labels = np.zeros(10_000, dtype=int)
  share = [
      np.mean([
          _top_decile_share(
              _make(Partition.QUANTITY_SKEW,
                    labels=labels,
                    num_clients=100,
                    seed=s,
                    power=power)) for s in range(10)
      ]) for power in (1.0, 1.5, 3.0)
  ]
  assert share[0] > share[1] > share[2]


def test_quantity_skew_extreme_power_keeps_contract():
  # power=0.05 means weights up to exp(E / 0.05): overflow without logs.
  parts = _make(Partition.QUANTITY_SKEW, num_clients=100, seed=0, power=0.05)
  _assert_valid(parts, _LABELS.size, 100)


def test_natural_groups_by_id():
  groups = ['b', 'a', 'b', 'c', 'a', 'b']
  ids, parts = partition_lib.partition_natural(groups=groups)
  assert ids == ['a', 'b', 'c']
  np.testing.assert_array_equal(parts[0], [1, 4])
  np.testing.assert_array_equal(parts[1], [0, 2, 5])
  np.testing.assert_array_equal(parts[2], [3])
  _assert_valid(parts, len(groups), 3)


def test_natural_numeric_ids_become_strings():
  ids, parts = partition_lib.partition_natural(groups=np.array([7, 3, 7]))
  assert ids == ['3', '7']
  assert [p.tolist() for p in parts] == [[1], [0, 2]]


@pytest.mark.parametrize('groups', [['a', None], [1.0, float('nan')]])
def test_natural_rejects_missing_ids(groups):
  with pytest.raises(ValueError, match='missing client id'):
    partition_lib.partition_natural(groups=groups)


def test_natural_rejects_empty():
  with pytest.raises(ValueError, match='empty'):
    partition_lib.partition_natural(groups=[])


def test_make_partition_refuses_natural_and_missing_seed():
  with pytest.raises(ValueError, match='partition_natural'):
    _make(Partition.NATURAL, num_clients=3, seed=0)
  with pytest.raises(ValueError, match='seed'):
    _make(Partition.IID, num_clients=3, seed=None)


def test_make_partition_accepts_enum_values():
  by_value = _make('dirichlet', num_clients=4, seed=1)
  by_member = _make(Partition.DIRICHLET, num_clients=4, seed=1)
  for a, b in zip(by_value, by_member):
    np.testing.assert_array_equal(a, b)
