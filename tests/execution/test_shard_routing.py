"""Routing a round's sampled clients to the workers that hold their shards.

The groups are cut by TFF's own partitioning (the function its mergeable
context slices CLIENTS values with): worker i's slice holds exactly the
cohort's clients of the shard it serves, each once, in cohort order, then
padding groups (`grouped_data.padding_group`: one slot, `valid` False). A
round so padded is, at zero noise, bit for bit the round without the
padding, on the group computation the program runs for the MLP (each
client's steps in a while loop); the group computation vectorized over a
group's clients (a study the program never runs; it fails on a group of zero
slots) is checked in the slow tier. Shard identities that do not match the
manifest are refused naming the worker and the shard.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable
import tensorflow_privacy as tfp

from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp.algorithms import grouped_client_work
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import shard_routing
from tff_dp.algorithms.grouped_client_options import ClientOptions
from tff_dp.config import DpMechanism
from tff_dp.data import shard_manifest
from tff_dp.data.labels import LabelKind


class _Data:
  """What `RoutedGroups` reads of `ShardedClientData`."""

  def __init__(self, sizes, shards, input_dim=3):
    self.input_dim = input_dim
    self.manifest = {
        'dataset_id':
            'sha256:d',
        'shards': [{
            'index': s,
            'first_client': first,
            'clients': n,
            'fingerprint': f'sha256:{s}'
        } for s, (
            first,
            n) in enumerate(shard_manifest.shard_ranges(len(sizes), shards))]
    }
    self._sizes = np.array(sizes)

  def client_sizes(self):
    return self._sizes


def _identity(index, **changes):
  identity = {
      'index': index,
      'dataset_id': 'sha256:d',
      'fingerprint': f'sha256:{index}'
  }
  identity.update(changes)
  return json.dumps(identity).encode()


def _slices(groups, workers):
  group_type = tff.FederatedType(
      grouped_data.group_type(3, with_examples=False), tff.CLIENTS)
  # pylint: disable-next=protected-access
  return mergeable._split_value_into_subrounds(groups, group_type, workers)


@pytest.mark.parametrize('cohort', [[], [0], [3, 29, 1, 17, 18, 2, 11, 28],
                                    list(range(30))])
def test_each_workers_slice_holds_exactly_its_shards_sampled_clients(cohort):
  data = _Data(np.arange(30) % 4 + 1, shards=3)
  routed = shard_routing.RoutedGroups(data, seed=1, epochs=2, group_size=3)
  # Worker i serves shard (i + 1) % 3: the --workers order need not be the
  # shards'.
  shards = routed.assign(
      lambda probe: [_identity(1), _identity(2),
                     _identity(0)], ['w0', 'w1', 'w2'])
  assert shards == [1, 2, 0]
  groups = routed(4, cohort)
  slices = _slices(groups, 3)
  assert len(slices) == 3  # No worker is dropped, even for an empty round.
  for worker, piece in enumerate(slices):
    first, n = shard_manifest.shard_ranges(30, 3)[shards[worker]]
    expected = [c for c in cohort if first <= c < first + n]
    got = [
        int(c)
        for group in piece
        for c, v in zip(group['client'], group['valid'])
        if v
    ]
    assert got == expected
    real = [group for group in piece if group['valid'].any()]
    for group in real:
      assert group['valid'].all()
      assert len(group['order']) == 2 * sum(group['length'])
    # Then padding groups only, each one slot without examples.
    assert [bool(group['valid'].any()) for group in piece
           ] == [True] * len(real) + [False] * (len(piece) - len(real))
    padding = grouped_data.padding_group(
        grouped_data.group_type(3, with_examples=False))
    for group in piece[len(real):]:
      assert list(group) == list(padding)
      for key, value in group.items():
        np.testing.assert_array_equal(value, padding[key])
        assert value.dtype == padding[key].dtype


def _assert_identical(actual, expected):
  tf.nest.assert_same_structure(actual, expected)
  for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
    np.testing.assert_array_equal(a, e)


def _routed_round(cohort=(0, 1, 2, 4, 5, 6)):
  """A round of g's population routed to 3 workers (shards 0-1, 2-3, 4-6):
  with groups of 2, this cohort gives them 1, 1 and 2 groups."""
  routed = shard_routing.RoutedGroups(_Data(g.SIZES, shards=3, input_dim=g.D),
                                      seed=g.DATA_SEED,
                                      epochs=g.EPOCHS,
                                      group_size=2)
  routed.assign(lambda probe: [_identity(s) for s in range(3)],
                ['w0', 'w1', 'w2'])
  groups = routed(1, list(cohort))
  unpadded = [group for group in groups if group['valid'].any()]
  assert len(groups) == 6 and len(unpadded) == 4
  return groups, unpadded


# One group function traced, no TFF execution: 0.7-1.3 s wall on the program's
# path (while loop, default tier), 4.7 s vectorized (slow tier; 9-10 s at
# load 7), at load 1.3-4 on 2 cores.
@g.PATHS
def test_routed_padding_adds_zeros_on_the_group_computation(
    tmp_path, monkeypatch, max_client_size):
  xs, ys = g.population()
  grouped_data.write_client_files(xs, ys, directory=str(tmp_path))
  traced = g.count_vectorized(monkeypatch)
  model = grouped_model.functional_model(g.keras_model_fn(),
                                         input_dim=g.D,
                                         num_classes=g.C,
                                         label_kind=LabelKind.SINGLE)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=g.CLIENT_LR)
  query = tfp.GaussianSumQuery(l2_norm_clip=1e6, stddev=0.0)
  group_fn = grouped_client_work.build_group_fn(
      model,
      optimizer,
      query,
      input_dim=g.D,
      batch_size=g.BATCH_SIZE,
      epochs=g.EPOCHS,
      max_norm=1e9,
      client_files_dir=str(tmp_path),
      max_batches=grouped_client_work.unrolled_batches(max_client_size,
                                                       epochs=g.EPOCHS,
                                                       batch_size=g.BATCH_SIZE),
      options=ClientOptions())
  weights, hparams, params = g.group_fn_arguments(model, optimizer, query)
  groups, unpadded = _routed_round()
  # Traced once for every group (as TFF does: its sizes are dynamic).
  traced_fn = group_fn.get_concrete_function(hparams, weights, params, {
      k: tf.TensorSpec([None], v.dtype) for k, v in groups[0].items()
  })
  for group in groups:
    records, metrics = tf.nest.map_structure(
        np.asarray, traced_fn(hparams, weights, params, dict(group)))
    trained = sum(g.SIZES[c] for c in group['client'][group['valid']])
    assert metrics['num_examples'] == g.EPOCHS * trained
    if any(group is u for u in unpadded):
      assert max(np.abs(r).max() for r in records) > 1e-3
    else:
      # Not one bit: the padded round's sums are the round's own.
      for r in records:
        np.testing.assert_array_equal(r, np.zeros_like(r))
      assert all(not np.any(m) for m in metrics.values())
  # The case's path was traced (vectorized: the one that fails on a group
  # of zero slots).
  g.assert_path(traced, max_client_size)


# A process build (the program's group computation) and two rounds: ~11 s of
# CPU (12-20 s wall at load 6-8 on 2 cores, when it was vectorized).
@pytest.mark.slow
@pytest.mark.tff
def test_padded_routed_round_is_the_round_without_padding(
    tff_runtime, tmp_path, monkeypatch):
  """At zero noise, bit for bit: the clipped sum, adaptive clipping's count
  (the clip in the state) and the training metrics."""
  del tff_runtime
  xs, ys = g.population()
  grouped_data.write_client_files(xs, ys, directory=str(tmp_path))
  traced = g.count_vectorized(monkeypatch)
  process = g.build_grouped(learning_process.build_dp_aggregator(
      central_dp.settings(DpMechanism.GAUSSIAN_ADAPTIVE,
                          clients_per_round=7,
                          clip=0.05)),
                            client_files_dir=str(tmp_path))
  g.assert_path(traced, None)  # As the program builds the MLP.
  groups, unpadded = _routed_round()
  state = process.initialize()
  padded_round = process.next(state, groups)
  _assert_identical(padded_round, process.next(state, unpadded))
  # Every sampled client trained (the comparison is not of two no-ops).
  assert padded_round.metrics['client_work']['train']['num_examples'] == (
      g.EPOCHS * sum(g.SIZES[c] for c in (0, 1, 2, 4, 5, 6)))
  assert g.max_abs_diff(g.weights(process, padded_round.state),
                        g.weights(process, state)) > 1e-3


def test_shard_identities_that_do_not_match_are_refused():
  manifest = _Data(np.ones(9), shards=3).manifest
  workers = ['a:1', 'b:2', 'c:3']
  ok = [_identity(0), _identity(1), _identity(2)]
  assert shard_routing.assign_workers(manifest, ok, workers) == [0, 1, 2]
  cases = [
      (ok[:2], workers[:2], '--workers lists 2 workers but the manifest has 3'),
      ([b'', ok[1], ok[2]], workers, 'worker a:1 serves no shard'),
      ([_identity(0, dataset_id='sha256:x'), ok[1],
        ok[2]], workers, 'worker a:1 serves shard 0 of another import'),
      ([ok[0], _identity(1, fingerprint='sha256:z'), ok[2]], workers,
       'worker b:2 serves shard 1 with SHA-256 sha256:z, the manifest says'),
      ([ok[0], ok[0],
        ok[2]], workers, 'workers a:1 and b:2 both serve shard 0'),
      ([ok[0], ok[1], _identity(7)], workers, 'worker c:3 serves shard 7'),
  ]
  for identities, names, message in cases:
    with pytest.raises(shard_manifest.ShardError, match=message):
      shard_routing.assign_workers(manifest, identities, names)
