"""Splits an imported client-data file into K shards and a manifest.

`./run.sh import-data --shards=K --output=DIR` imports the table as usual
(`csv_import`, into a temporary file inside DIR), then calls `write_shards`,
which writes the layout `shard_manifest` describes and removes the
temporary. Clients are assigned whole, by the manifest's rule (contiguous
ranges of the sorted training ids); each shard is an ordinary client-data
file (training split only, its own counts and label histogram, the
importer's metadata plus which shard it is), checked by the same loader as
any other on the worker that serves it. The held-out test split goes to
`test.npz` for the driver: it holds no training client's row when the test
split is by clients (the default).

Every file is written to a temporary name and published complete; the
manifest, written last, names each file's SHA-256.
"""

import json
import os
import tempfile
from typing import Any

import numpy as np

from tff_dp import atomic_io
from tff_dp.data import client_data_checks
from tff_dp.data import client_data_writer
from tff_dp.data import shard_examples
from tff_dp.data import shard_manifest
from tff_dp.data import sql_queries

# Statistics the writer recomputes for each shard (`ClientDataWriter.finish`).
_SHARD_OVERRIDES = {'test_split': 'none', 'test_fraction': None}


def _temporary(directory: str, name: str) -> str:
  fd, path = tempfile.mkstemp(dir=directory, prefix=f'.{name}.', suffix='.tmp')
  os.close(fd)
  os.remove(path)  # SQLite creates it afresh.
  return path


def _publish(tmp_path: str, path: str) -> None:
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp_path, 0o666 & ~umask)
  atomic_io.publish(tmp_path, path)


def _write_test_set(con, path: str, metadata: dict[str, Any],
                    out_dir: str) -> str:
  """test.npz of the source's test split; returns its file name."""
  rows = con.execute('SELECT rowid, serialized_example_proto, label FROM '
                     "examples WHERE split_name = 'test' ORDER BY rowid")
  x, y = shard_examples.rows_as_arrays(path,
                                       rows,
                                       input_dim=metadata['input_dim'])
  if not y.shape[0]:
    raise client_data_checks.error(
        path, 'has no test split; the driver of a sharded run evaluates on '
        'one (import with --test_split=clients)')
  final = os.path.join(out_dir, shard_manifest.TEST_NAME)
  tmp = _temporary(out_dir, shard_manifest.TEST_NAME)
  with open(tmp, 'wb') as f:
    np.savez(f, x=x, y=y)
  _publish(tmp, final)
  return shard_manifest.TEST_NAME


def _shard_metadata(metadata: dict[str, Any], *, index: int, count: int,
                    dataset_id: str, first: int, clients: int,
                    rows: int) -> dict[str, Any]:
  shard = dict(metadata, **_SHARD_OVERRIDES)
  shard['rows'] = rows
  shard[shard_manifest.SHARD_METADATA_KEY] = {
      'index': index,
      'count': count,
      'dataset_id': dataset_id,
      'first_client': first,
      'clients': clients,
  }
  return shard


def write_shards(source_path: str, out_dir: str, shards: int) -> str:
  """Writes `shards` shard files, test.npz and the manifest into `out_dir`.

  Args:
    source_path: A client-data file (`csv_import.import_table`'s output).
    out_dir: An existing directory; shard-<s>/ are created in it.
    shards: K, at most the number of training clients.

  Returns:
    The manifest's path.

  Raises:
    ClientDataFormatError: A source without a test split, or fewer training
      clients than shards.
  """
  dataset_id = shard_manifest.file_sha256(source_path)
  con = sql_queries.connect_readonly(source_path)
  writers, tmp_paths = [], []
  try:
    metadata = client_data_checks.read_metadata(source_path, con)
    ids, sizes, _ = client_data_checks.read_clients(source_path, con)
    if shards > len(ids):
      raise client_data_checks.error(
          source_path, f'has {len(ids)} training clients, fewer than '
          f'--shards={shards} (a shard holds at least one client)')
    ranges = shard_manifest.shard_ranges(len(ids), shards)
    for s in range(shards):
      directory = os.path.join(out_dir, shard_manifest.shard_dir_name(s))
      os.makedirs(directory, exist_ok=True)
      tmp_paths.append(_temporary(directory, shard_manifest.SHARD_FILE))
      writers.append(client_data_writer.ClientDataWriter(tmp_paths[-1]))
    shard_by_id = {
        cid: s for s, (first, n) in enumerate(ranges)
        for cid in ids[first:first + n]
    }
    for cid, rows in shard_examples.train_rows_by_client(con):
      writers[shard_by_id[cid]].add_encoded(cid, rows)
    test_file = _write_test_set(con, source_path, metadata, out_dir)
    entries = []
    for s, (writer, (first, n)) in enumerate(zip(writers, ranges)):
      writer.finish(
          _shard_metadata(metadata,
                          index=s,
                          count=shards,
                          dataset_id=dataset_id,
                          first=first,
                          clients=n,
                          rows=writer.rows))
      writer.close()
      relative = os.path.join(shard_manifest.shard_dir_name(s),
                              shard_manifest.SHARD_FILE)
      final = os.path.join(out_dir, relative)
      _publish(tmp_paths[s], final)
      entries.append({
          'index': s,
          'file': relative,
          'fingerprint': shard_manifest.file_sha256(final),
          'first_client': first,
          'clients': n,
          'client_sizes': [int(k) for k in sizes[first:first + n]],
      })
  except BaseException:
    for writer in writers:
      writer.close()
    for path in tmp_paths:
      if os.path.exists(path):
        os.remove(path)
    raise
  finally:
    con.close()
  manifest = {
      'format': shard_manifest.FORMAT,
      'version': shard_manifest.VERSION,
      'dataset_id': dataset_id,
      'source': metadata['source'],
      'input_dim': metadata['input_dim'],
      'num_classes': metadata['num_classes'],
      'population': len(ids),
      'assignment': 'contiguous ranges of the sorted training client ids: '
                    'shard s holds [first_client, first_client + clients)',
      'test': {
          'file':
              test_file,
          'fingerprint':
              shard_manifest.file_sha256(os.path.join(out_dir, test_file)),
      },
      'shards': entries,
  }
  path = os.path.join(out_dir, shard_manifest.MANIFEST_NAME)
  atomic_io.write_text_atomic(path, json.dumps(manifest, indent=1) + '\n')
  return path
