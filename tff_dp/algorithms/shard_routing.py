"""Grouped rounds routed to the workers that hold the sampled clients' data.

With a sharded import (`tff_dp.data.shard_manifest`) and `--workers`, each
worker serves one shard from its own disk (`./run.sh worker --tls
--data_dir=DIR`, `tff_dp.data.shard_files`): the driver holds the manifest
(client sizes, no example) and sends each worker client ids only.

Routing rides on how TFF's mergeable context splits a round (`tff_dp.
execution.split_rounds`): the CLIENTS-placed argument of `next`, here the
list of groups of the grouped DP-FedAvg (`tff_dp.algorithms.grouped_fedavg`),
is cut into K contiguous slices of ceil(len / K) values, slice i to worker i
(the --workers order). So `RoutedGroups` gives every worker the same number
G of groups, worker after worker: worker i's G groups hold exactly the
round's sampled clients of the shard it serves, in cohort order, padded with
padding groups (`grouped_data.padding_group`: one slot with `valid` False
and no example, so nothing added to the clipped sum, to adaptive clipping's
count or to the training metrics; one slot, not none: see
`padding_group`). K * G values cut into K slices of G: slice i is worker i's. G >= 1
even for an empty round, so that TFF never drops a worker's slice.

Where a worker's computation finds the examples: the group computation is
built and serialized on the driver, so the directory it reads is a constant
of the graph and must mean "this worker's shard" on every host. It is
`/proc/self/cwd/data` (`shard_files.WORKER_DATA_DIR`): Linux's name for the
READING process's working directory, which `./run.sh worker --data_dir`
sets to a private directory holding the shard's client files. Chosen over
an absolute path agreed between hosts (the driver cannot know it, and each
host would need the same layout) and over shipping a path per worker in the
groups (the data location would become round data). The driver's own local
worker runs only the merge and the server's part and needs no data.

A worker serving the wrong shard, or none, is caught before the first round:
`identity_probe` reads the worker's `shard.json` through its own TFF worker,
and `assign_workers` refuses, in one line naming the worker and the shard,
a worker without a shard, a shard of another import (dataset_id), a shard
whose SHA-256 is not the manifest's, two workers with one shard, or a
shard served by nobody.

With `--on_worker_loss=continue`, a lost worker is dropped (`drop_worker`):
its shard's clients are left out of every later round's groups, and the
groups are laid out for the surviving workers, in the same order as the
context slices them.
"""

import collections
import json
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import grouped_data
from tff_dp.data import shard_files
from tff_dp.data import shard_manifest

CLIENT_FILES_DIR = shard_files.WORKER_DATA_DIR


def identity_probe() -> tff.Computation:
  """A computation returning the worker's shard.json, or '' if it has none."""
  path = f'{CLIENT_FILES_DIR}/{shard_files.IDENTITY_NAME}'

  @tff.tensorflow.computation
  def probe():
    found = tf.io.matching_files(path)
    return tf.cond(
        tf.size(found) > 0, lambda: tf.io.read_file(found[0]),
        lambda: tf.constant(''))

  return probe


def _identity(text: Any, worker: str) -> Optional[dict[str, Any]]:
  if isinstance(text, bytes):
    text = text.decode('utf-8', 'replace')
  if not text:
    return None
  try:
    identity = json.loads(text)
  except json.JSONDecodeError:
    identity = None
  if not isinstance(identity, dict):
    raise shard_manifest.ShardError(
        f'worker {worker}: its shard.json is not a shard identity')
  return identity


def assign_workers(manifest: dict[str, Any], identities: Sequence[Any],
                   workers: Sequence[str]) -> list[int]:
  """The shard each worker serves, checked against the manifest.

  Args:
    manifest: The checked manifest (`shard_manifest.read_manifest`).
    identities: What `identity_probe` returned on each worker.
    workers: The workers' names ('host:port'), in the same order.

  Returns:
    Shard index of each worker.

  Raises:
    ShardError: One line naming the worker and the shard.
  """
  shards = manifest['shards']
  if len(workers) != len(shards):
    raise shard_manifest.ShardError(
        f'--workers lists {len(workers)} workers but the manifest has '
        f'{len(shards)} shards: start one worker per shard (--data_dir='
        'shard-<s>) and list each once')
  assigned, served_by = [], {}
  for worker, text in zip(workers, identities):
    identity = _identity(text, worker)
    if identity is None:
      raise shard_manifest.ShardError(
          f'worker {worker} serves no shard (start it with --data_dir='
          'shard-<s> of this import)')
    index = identity.get('index')
    if identity.get('dataset_id') != manifest['dataset_id']:
      raise shard_manifest.ShardError(
          f'worker {worker} serves shard {index!r} of another import '
          f'(dataset_id {identity.get("dataset_id")!r}, the manifest\'s is '
          f'{manifest["dataset_id"]})')
    if not isinstance(index, int) or not 0 <= index < len(shards):
      raise shard_manifest.ShardError(
          f'worker {worker} serves shard {index!r}, not in the manifest')
    if identity.get('fingerprint') != shards[index]['fingerprint']:
      raise shard_manifest.ShardError(
          f'worker {worker} serves shard {index} with SHA-256 '
          f'{identity.get("fingerprint")}, the manifest says '
          f'{shards[index]["fingerprint"]} (a changed or mismatched shard)')
    if index in served_by:
      raise shard_manifest.ShardError(
          f'workers {served_by[index]} and {worker} both serve shard {index}')
    served_by[index] = worker
    assigned.append(index)
  return assigned


class _Sizes(collections.abc.Sequence):
  """Client i -> an object of length n_i: what `make_groups` reads of
  `client_y` without examples."""

  def __init__(self, sizes: Sequence[int]):
    self._sizes = sizes

  def __len__(self) -> int:
    return len(self._sizes)

  def __getitem__(self, i):
    return range(int(self._sizes[i]))


class RoutedGroups:
  """(round, cohort) -> groups laid out for the workers (module docstring).

  Attributes:
    files_dir: Where the workers' computations read the client files.
  """

  files_dir = CLIENT_FILES_DIR

  def __init__(self, data: shard_manifest.ShardedClientData, *, seed: int,
               epochs: int, group_size: int):
    self._manifest = data.manifest
    self._sizes = _Sizes(data.client_sizes())
    self._seed, self._epochs, self._group_size = seed, epochs, group_size
    self._firsts = np.array(
        [s['first_client'] for s in self._manifest['shards']])
    self._worker_of_shard: Optional[list[int]] = None
    self._alive: list[int] = []
    # The workers read client files: groups without examples.
    self._padding = grouped_data.padding_group(
        grouped_data.group_type(data.input_dim, with_examples=False))

  def assign(self, probe_each, workers: Sequence[str]) -> list[int]:
    """Asks every worker which shard it serves; checks; remembers.

    Args:
      probe_each: Runs a computation on each worker, returns the results in
        worker order (`SplitRoundsContext.invoke_on_each_worker`).
      workers: The workers' names, in the same order.

    Returns:
      The shard of each worker.
    """
    shards = assign_workers(self._manifest, probe_each(identity_probe()),
                            workers)
    self._worker_of_shard = [0] * len(shards)
    for worker, shard in enumerate(shards):
      self._worker_of_shard[shard] = worker
    self._alive = list(range(len(shards)))
    return shards

  def drop_worker(self, worker: int) -> tuple[int, int]:
    """Stops routing to `worker` (lost): its shard's clients are left out of
    every later round's groups. Returns (its shard, that shard's clients)."""
    self._alive.remove(worker)
    shard = self._worker_of_shard.index(worker)
    return shard, self._manifest['shards'][shard]['clients']

  def __call__(self, round_num: int,
               cohort: Sequence[int]) -> list[collections.OrderedDict]:
    if self._worker_of_shard is None:
      raise RuntimeError('RoutedGroups.assign must run before the first round')
    per_worker = {worker: [] for worker in self._alive}
    shard_of = np.searchsorted(
        self._firsts, np.asarray(cohort, np.int64), side='right') - 1
    for client, shard in zip(cohort, shard_of):
      worker = self._worker_of_shard[shard]
      if worker in per_worker:  # Else its worker was lost: unreachable.
        per_worker[worker].append(int(client))
    groups = [
        grouped_data.make_groups(None,
                                 self._sizes,
                                 clients,
                                 round_num=round_num,
                                 seed=self._seed,
                                 epochs=self._epochs,
                                 group_size=self._group_size,
                                 with_examples=False)
        for clients in per_worker.values()
    ]
    count = max(1, max(len(g) for g in groups))
    routed = []
    for worker_groups in groups:
      routed.extend(worker_groups)
      routed.extend([self._padding] * (count - len(worker_groups)))
    return routed

  def close(self) -> None:
    pass

  def __enter__(self) -> 'RoutedGroups':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
