"""A shard's clients as the grouped path's client files, on the host that holds it.

`./run.sh worker --tls --data_dir=DIR` calls `write_worker_data`: DIR holds
one shard (`shard_manifest`: `clients.sqlite`), which is opened and checked
in full by the loader every client-data file goes through
(`client_data_source.SqlClientDataSource`), then each client's training
examples are written as `tff_dp.algorithms.grouped_data.write_client_files`
writes them, named by the client's POPULATION index (the shard's first
client plus its position), and `shard.json` says which shard this is:
index, count, the import's dataset_id, first client, clients, and the shard
file's SHA-256 as it was checked. The TFF worker reads these files
(`tff_dp.execution.shard_routing`); the driver reads `shard.json` through
the worker to refuse a worker serving the wrong shard.

`load_in_memory` reads every shard beside a manifest into `FederatedData`:
the same population, client order and examples, trained on one machine.
"""

import json
import os
from typing import Any

import numpy as np

from tff_dp.data import client_data_checks
from tff_dp.data import shard_examples
from tff_dp.data import shard_manifest
from tff_dp.data import sql_queries
from tff_dp.data.federated_data import FederatedData

IDENTITY_NAME = 'shard.json'
# The worker's client files are in `data` under its working directory, and
# computations built on the driver name them through the reading process's
# own working directory (`tff_dp.algorithms.shard_routing` says why).
WORKER_DATA_NAME = 'data'
WORKER_DATA_DIR = '/proc/self/cwd/' + WORKER_DATA_NAME


def _shard_info(path: str, metadata: dict[str, Any]) -> dict[str, Any]:
  """The shard's own record of which shard it is, checked."""
  info = metadata.get(shard_manifest.SHARD_METADATA_KEY)
  keys = ('index', 'count', 'first_client', 'clients')
  if not (isinstance(info, dict) and
          all(isinstance(info.get(k), int) and info[k] >= 0 for k in keys) and
          isinstance(info.get('dataset_id'), str)):
    raise client_data_checks.error(
        path, 'is not a shard (no shard metadata: made by ./run.sh '
        'import-data --shards=K?)')
  if info['clients'] != metadata['train_clients']:
    raise client_data_checks.error(
        path, f'shard metadata says {info["clients"]} clients, the file has '
        f'{metadata["train_clients"]}')
  return info


def shard_file_in(data_dir: str) -> str:
  """The shard file of a worker's --data_dir; ShardError if there is none."""
  path = os.path.join(data_dir, shard_manifest.SHARD_FILE)
  if not os.path.isfile(path):
    raise shard_manifest.ShardError(
        f'--data_dir={data_dir}: no {shard_manifest.SHARD_FILE} (copy a '
        'shard-<s> directory of ./run.sh import-data --shards=K there)')
  return path


def _client_arrays(path: str, metadata: dict[str, Any]):
  """(client id, x, y) of every training client, in sorted-id order."""
  con = sql_queries.connect_readonly(path)
  try:
    for cid, rows in shard_examples.train_rows_by_client(con):
      x, y = shard_examples.rows_as_arrays(path,
                                           rows,
                                           input_dim=metadata['input_dim'])
      yield cid, x, y
  finally:
    con.close()


def write_worker_data(data_dir: str, out_dir: str) -> dict[str, Any]:
  """Checks the shard in `data_dir`; writes its client files into `out_dir`.

  Args:
    data_dir: The worker's --data_dir.
    out_dir: A fresh private directory (the worker's `data`).

  Returns:
    The identity written to `out_dir/shard.json`.

  Raises:
    ShardError, ClientDataFormatError (ValueErrors) naming the file.
  """
  # pylint: disable-next=g-import-not-at-top
  from tff_dp.data import client_data_source  # Imports TensorFlow.
  path = shard_file_in(data_dir)
  source = client_data_source.SqlClientDataSource(path)
  info = _shard_info(path, source.metadata)
  count = 0
  for local, (cid, x, y) in enumerate(_client_arrays(path, source.metadata)):
    if cid != source.client_ids[local]:
      raise client_data_checks.error(path, 'changed while it was read')
    client = info['first_client'] + local
    np.asarray(x, '<f4').tofile(os.path.join(out_dir, f'x{client}.bin'))
    np.asarray(y, '<i4').tofile(os.path.join(out_dir, f'y{client}.bin'))
    count += 1
  if count != info['clients']:
    raise client_data_checks.error(path, 'changed while it was read')
  identity = dict(info, fingerprint=source.fingerprint())
  with open(os.path.join(out_dir, IDENTITY_NAME), 'w', encoding='utf-8') as f:
    json.dump(identity, f)
  return identity


def load_in_memory(manifest_path: str) -> FederatedData:
  """Every shard beside the manifest, as one in-memory population.

  Raises:
    ShardError: A shard missing or not the manifest's (fingerprint).
  """
  manifest = shard_manifest.read_manifest(manifest_path)
  base = os.path.dirname(manifest_path)
  ids, xs, ys = [], [], []
  for shard in manifest['shards']:
    path = os.path.join(base, shard['file'])
    if not os.path.isfile(path):
      raise shard_manifest.ShardError(
          f'{path}: no such shard (without --workers, every shard must be '
          'beside the manifest)')
    if shard_manifest.file_sha256(path) != shard['fingerprint']:
      raise shard_manifest.ShardError(
          f'{path}: shard {shard["index"]}\'s SHA-256 is not the '
          'manifest\'s (a shard of another import?)')
    con = sql_queries.connect_readonly(path)
    try:
      metadata = client_data_checks.read_metadata(path, con)
      client_data_checks.check_metadata(path, metadata)
    finally:
      con.close()
    for cid, x, y in _client_arrays(path, metadata):
      ids.append(cid)
      xs.append(x)
      ys.append(y)
  data = shard_manifest.ShardedClientData(manifest_path)
  return FederatedData(name=data.name,
                       client_ids=tuple(ids),
                       client_x=tuple(xs),
                       client_y=tuple(ys),
                       test_x=data.test_x,
                       test_y=data.test_y,
                       num_classes=data.num_classes,
                       provenance=f'the {len(manifest["shards"])} shards of '
                       f'{manifest_path}, read into memory')
