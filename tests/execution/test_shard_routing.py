"""Routing a round's sampled clients to the workers that hold their shards.

The groups are cut by TFF's own partitioning (the function its mergeable
context slices CLIENTS values with): worker i's slice holds exactly the
cohort's clients of the shard it serves, each once, in cohort order, and the
padding contributes no slot. Shard identities that do not match the
manifest are refused naming the worker and the shard.
"""

import json

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable

from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import shard_routing
from tff_dp.data import shard_manifest


class _Data:
  """What `RoutedGroups` reads of `ShardedClientData`."""

  def __init__(self, sizes, shards):
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
    got = [int(c) for g in piece for c, v in zip(g['client'], g['valid']) if v]
    assert got == expected
    for group in piece:
      assert group['valid'].all()  # Padding is whole empty groups.
      assert len(group['order']) == 2 * sum(group['length'])


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
