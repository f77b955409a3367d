"""The manifest of a sharded client-data import, and what a driver trains from it.

`./run.sh import-data --shards=K --output=DIR` (`shard_writer`) writes:

    DIR/manifest.json          what the driver reads (this module)
    DIR/test.npz               the server's held-out test set (x, y arrays)
    DIR/shard-<s>/clients.sqlite   shard s: a client-data file of the usual
                               format (`csv_import`), training split only

Assignment rule: the training clients, in sorted-id order (the order of an
unsharded file's client indices, `client_data_source`), are cut into K
contiguous ranges of as equal size as possible; shard s holds clients
[first_client, first_client + clients) whole. So client index i of the
population is the same client sharded or not, and a cohort of indices maps
to shards by the ranges alone.

Manifest (JSON): format, version, dataset_id (the SHA-256 of the unsharded
import, written into every shard's metadata too), input_dim, num_classes,
population, the test file and its fingerprint, and per shard: index, file,
fingerprint (SHA-256 of the shard file), first_client, clients, and the
client sizes (examples per client: the driver needs them to lay out the
groups; no example, no client id). A worker reports the fingerprint and
index of the shard it serves (`shard_files`), and the driver refuses a
shard whose fingerprint is not the manifest's (`tff_dp.execution.
shard_routing`).

`ShardedClientData` is the driver's view with `--workers`: the population,
sizes, shapes and the test set, without any client's examples. Without
`--workers`, `load` reads the shards beside the manifest into memory
(`FederatedData`): the same clients in the same order, on one machine.
Pure Python (numpy).
"""

import bisect
import hashlib
import json
import os
from typing import Any, Optional

import numpy as np

from tff_dp.data.federated_data import size_statistics
from tff_dp.data.labels import LabelKind

FORMAT = 'tff-dp client-data shards'
VERSION = 1
MANIFEST_NAME = 'manifest.json'
TEST_NAME = 'test.npz'
SHARD_FILE = 'clients.sqlite'
# The key of a shard file's own metadata (`tff_dp_metadata`) that says which
# shard it is.
SHARD_METADATA_KEY = 'shard'


class ShardError(ValueError):
  """A manifest or shard that cannot be used; the message names it."""


def shard_dir_name(index: int) -> str:
  return f'shard-{index}'


def is_manifest_path(path: Optional[str]) -> bool:
  """Whether `--client_data` names a shard manifest (else a .sqlite file)."""
  return bool(path) and path.endswith('.json')


def file_sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return 'sha256:' + hashlib.file_digest(f, 'sha256').hexdigest()


def shard_ranges(population: int, shards: int) -> list[tuple[int, int]]:
  """(first client, clients) of each shard: K contiguous, near-equal ranges."""
  if not 1 <= shards <= population:
    raise ValueError(f'shards must be in [1, {population}] (one client at '
                     f'least per shard), got {shards}')
  bounds = [s * population // shards for s in range(shards + 1)]
  return [(bounds[s], bounds[s + 1] - bounds[s]) for s in range(shards)]


def _bad(path: str, what: str) -> ShardError:
  return ShardError(f'{path}: {what}')


def _is_int(value: Any, low: int = 0) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def read_manifest(path: str) -> dict[str, Any]:
  """The manifest at `path`, checked (types, ranges, the ranges' cover)."""
  try:
    with open(path, encoding='utf-8') as f:
      m = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad(path, f'cannot be read as a shard manifest ({e})') from None
  if not isinstance(m, dict) or m.get('format') != FORMAT:
    raise _bad(
        path, f'not a shard manifest (format is not {FORMAT!r}; '
        'made by ./run.sh import-data --shards=K)')
  if m.get('version') != VERSION:
    raise _bad(path, f'version {m.get("version")!r}; this tff-dp reads '
               f'{VERSION}')
  for key, low in (('input_dim', 1), ('num_classes', 2), ('population', 1)):
    if not _is_int(m.get(key), low):
      raise _bad(path, f'{key} {m.get(key)!r}: expected an integer >= {low}')
  shards = m.get('shards')
  if not isinstance(shards, list) or not shards:
    raise _bad(path, 'shards: expected a non-empty list')
  expected = shard_ranges(m['population'], len(shards))
  for s, (shard, (first, count)) in enumerate(zip(shards, expected)):
    _check_shard_entry(path, s, shard, first, count)
  test = m.get('test')
  if not (isinstance(test, dict) and isinstance(test.get('file'), str) and
          isinstance(test.get('fingerprint'), str)):
    raise _bad(path, 'test: expected {"file": ..., "fingerprint": ...}')
  if not isinstance(m.get('dataset_id'), str):
    raise _bad(path, 'dataset_id: expected a string')
  return m


def _check_shard_entry(path: str, s: int, shard: Any, first: int,
                       count: int) -> None:
  where = f'shards[{s}]'
  if not isinstance(shard, dict) or shard.get('index') != s:
    raise _bad(path, f'{where}: expected an object with index {s}')
  if shard.get('first_client') != first or shard.get('clients') != count:
    raise _bad(
        path, f'{where}: clients [{shard.get("first_client")!r}, +'
        f'{shard.get("clients")!r}) is not the assignment rule\'s [{first}, '
        f'+{count})')
  sizes = shard.get('client_sizes')
  if not (isinstance(sizes, list) and len(sizes) == count and
          all(_is_int(n, 1) for n in sizes)):
    raise _bad(path, f'{where}: client_sizes: expected {count} integers >= 1')
  for key in ('file', 'fingerprint'):
    if not isinstance(shard.get(key), str) or not shard[key]:
      raise _bad(path, f'{where}: {key}: expected a string')
  if os.path.isabs(shard['file']) or '..' in shard['file'].split('/'):
    raise _bad(
        path, f'{where}: file {shard["file"]!r} must be relative, '
        'inside the manifest\'s directory')


def shard_of(manifest: dict[str, Any], client: int) -> int:
  """The shard holding population index `client`."""
  firsts = [s['first_client'] for s in manifest['shards']]
  return bisect.bisect_right(firsts, client) - 1


def _load_test_set(path: str, manifest: dict[str, Any]):
  """(x, y) of the manifest's test file, checked against its fingerprint."""
  test_path = os.path.join(os.path.dirname(path), manifest['test']['file'])
  if not os.path.isfile(test_path):
    raise _bad(
        test_path, 'no such file (the manifest\'s test set; it stays '
        'beside the manifest)')
  if file_sha256(test_path) != manifest['test']['fingerprint']:
    raise _bad(
        test_path, 'its SHA-256 is not the manifest\'s (a file of '
        'another import?)')
  with np.load(test_path, allow_pickle=False) as arrays:
    x, y = arrays['x'], arrays['y']
  if (x.dtype != np.float32 or x.ndim != 2 or
      x.shape[1] != manifest['input_dim'] or y.dtype != np.int32 or
      y.shape != (x.shape[0],) or not x.shape[0]):
    raise _bad(test_path, 'expected x float32 [n, input_dim] and y int32 [n], '
               'n >= 1')
  if not np.all(
      np.isfinite(x)) or y.min() < 0 or y.max() >= manifest['num_classes']:
    raise _bad(test_path, 'non-finite features or labels out of range')
  return x, y


class ShardedClientData:
  """A driver's training data with `--workers`: counts and shapes, no examples.

  Attributes:
    path: The manifest.
    manifest: Its checked content.
    name: 'sharded:<directory name>'.
    input_dim, num_classes: As in the shards.
    client_ids: Placeholders 'client-<index>' (the driver never reads ids).
    test_x, test_y: The server's held-out test set.
  """

  image_shape = None
  vocab_size = None
  label_kind = LabelKind.SINGLE

  def __init__(self, path: str):
    self.path = os.fspath(path)
    self._raw = open(self.path, 'rb').read()  # pylint: disable=consider-using-with
    self.manifest = read_manifest(self.path)
    self.name = 'sharded:' + os.path.basename(
        os.path.dirname(os.path.abspath(self.path)))
    self.input_dim = self.manifest['input_dim']
    self.num_classes = self.manifest['num_classes']
    self._sizes = np.array(
        [n for s in self.manifest['shards'] for n in s['client_sizes']],
        np.int64)
    self.client_ids = tuple(f'client-{i}' for i in range(len(self._sizes)))
    self.test_x, self.test_y = _load_test_set(self.path, self.manifest)

  @property
  def population(self) -> int:
    return len(self._sizes)

  @property
  def num_shards(self) -> int:
    return len(self.manifest['shards'])

  def client_sizes(self) -> np.ndarray:
    return self._sizes.copy()

  def fingerprint(self) -> str:
    """SHA-256 of the manifest (it holds every shard's and the test set's)."""
    return 'sha256:' + hashlib.sha256(self._raw).hexdigest()

  def test_dataset(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.data.Dataset.from_tensor_slices((self.test_x, self.test_y))

  def client_dataset(self, index: int):
    raise ShardError(
        f'{self.path}: client {index}\'s examples are on the worker serving '
        f'shard {shard_of(self.manifest, index)}, not on the driver')

  def statistics(self) -> dict[str, Any]:
    return {
        **size_statistics(self.name, self._sizes),
        'input_dim': self.input_dim,
        'num_classes': self.num_classes,
        'shards': self.num_shards,
        'test_examples': int(self.test_y.shape[0]),
    }

  def describe(self) -> str:
    s = self.statistics()
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} clients (the "
        'population N for privacy accounting) in '
        f"{s['shards']} shards, read by the workers",
        f'  manifest: {self.path} (the driver holds no client example)',
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f"  features: {s['input_dim']}, classes: {s['num_classes']}",
        f"  test examples (server-side evaluation only): "
        f"{s['test_examples']}",
    ])
