"""`import-data --shards=K`: shards of whole clients, the manifest, a worker's client files.

The shards together hold exactly the unsharded import's training clients,
each whole, in the same population order (client index i is the same client
sharded or not); the manifest names each file's SHA-256 and is refused when
edited; a worker's client files are the shard's examples byte for byte, named
by population index.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tff_dp.data import client_data_source
from tff_dp.data import csv_import
from tff_dp.data import shard_files
from tff_dp.data import shard_manifest
from tff_dp.data import shard_writer


def write_table(path, *, clients=40, rows=400, seed=0):
  """An .npz table: `rows` rows of 6 features, 3 classes, random clients."""
  rng = np.random.default_rng(seed)
  np.savez(path,
           client=np.array(
               [f'u{i:03d}' for i in rng.integers(0, clients, rows)]),
           x=rng.normal(size=(rows, 6)).astype(np.float32),
           y=rng.integers(0, 3, rows))
  return str(path)


@pytest.fixture(name='imported', scope='module')
def fixture_imported(tmp_path_factory):
  """(the unsharded file, the sharded directory's manifest) of one table."""
  base = tmp_path_factory.mktemp('shards')
  table = write_table(base / 't.npz')
  whole = str(base / 'whole.sqlite')
  csv_import.import_table(table,
                          output_path=whole,
                          client_column='client',
                          label_column='y',
                          num_classes=3)
  out = base / 'out'
  out.mkdir()
  return whole, shard_writer.write_shards(whole, str(out), 3)


def test_shards_hold_every_client_whole_in_population_order(imported):
  whole, manifest_path = imported
  source = client_data_source.SqlClientDataSource(whole)
  manifest = shard_manifest.read_manifest(manifest_path)
  ids, sizes = [], []
  for s, entry in enumerate(manifest['shards']):
    shard = client_data_source.SqlClientDataSource(
        os.path.join(os.path.dirname(manifest_path), entry['file']))
    assert shard.fingerprint() == entry['fingerprint']
    assert shard.metadata['shard']['index'] == s
    assert entry['first_client'] == len(ids)
    ids.extend(shard.client_ids)
    sizes.extend(shard.client_sizes().tolist())
  assert ids == list(source.client_ids)
  assert sizes == source.client_sizes().tolist()
  assert [e['clients'] for e in manifest['shards']
         ] == [n for _, n in shard_manifest.shard_ranges(len(ids), 3)]
  data = shard_manifest.ShardedClientData(manifest_path)
  assert data.population == source.population
  assert data.client_sizes().tolist() == sizes


def test_in_memory_load_is_the_unsharded_data(imported):
  whole, manifest_path = imported
  source = client_data_source.SqlClientDataSource(whole)
  data = shard_files.load_in_memory(manifest_path)
  assert data.client_ids == tuple(source.client_ids)
  for i in (0, 13, data.population - 1):
    x, y = zip(*source.client_dataset(i).as_numpy_iterator())
    np.testing.assert_array_equal(data.client_x[i], np.stack(x))
    np.testing.assert_array_equal(data.client_y[i], np.array(y))
  test_x, test_y = zip(*source.test_dataset().as_numpy_iterator())
  np.testing.assert_array_equal(data.test_x, np.stack(test_x))
  np.testing.assert_array_equal(data.test_y, np.array(test_y))


def test_worker_client_files_are_named_by_population_index(imported, tmp_path):
  _, manifest_path = imported
  data = shard_files.load_in_memory(manifest_path)
  identity = shard_files.write_worker_data(
      os.path.join(os.path.dirname(manifest_path), 'shard-1'), str(tmp_path))
  first, count = identity['first_client'], identity['clients']
  assert identity['index'] == 1 and first > 0
  written = sorted(n for n in os.listdir(tmp_path) if n.startswith('x'))
  assert len(written) == count
  for i in (first, first + count - 1):
    x = np.fromfile(tmp_path / f'x{i}.bin', '<f4').reshape(-1, 6)
    np.testing.assert_array_equal(x, data.client_x[i])
    np.testing.assert_array_equal(np.fromfile(tmp_path / f'y{i}.bin', '<i4'),
                                  data.client_y[i])
  with open(tmp_path / shard_files.IDENTITY_NAME) as f:
    assert json.load(f)['fingerprint'] == shard_manifest.read_manifest(
        manifest_path)['shards'][1]['fingerprint']


def test_an_edited_manifest_or_shard_is_refused(imported, tmp_path):
  _, manifest_path = imported
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest['shards'][1]['first_client'] += 1
  edited = tmp_path / 'manifest.json'
  edited.write_text(json.dumps(manifest))
  with pytest.raises(shard_manifest.ShardError, match='assignment rule'):
    shard_manifest.read_manifest(str(edited))
  # A shard replaced by another (here shard 0's file as shard 1).
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest['shards'][1]['file'] = manifest['shards'][0]['file']
  base = os.path.dirname(manifest_path)
  moved = os.path.join(base, 'moved.json')
  with open(moved, 'w') as f:
    json.dump(manifest, f)
  try:
    with pytest.raises(shard_manifest.ShardError,
                       match="shard 1's SHA-256 is not the manifest's"):
      shard_files.load_in_memory(moved)
  finally:
    os.remove(moved)


def test_a_data_dir_without_a_shard_is_one_clear_error(tmp_path):
  with pytest.raises(shard_manifest.ShardError, match='no clients.sqlite'):
    shard_files.write_worker_data(str(tmp_path), str(tmp_path))


@pytest.mark.e2e
def test_import_data_shards_from_the_command_line(tmp_path):
  table = write_table(tmp_path / 't.npz', clients=10, rows=80)
  command = [
      sys.executable, '-m', 'tff_dp.cli.import_data', f'--input={table}',
      f'--output={tmp_path / "out"}', '--client_column=client',
      '--label_column=y', '--shards=4'
  ]
  result = subprocess.run(command,
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert 'manifest' in result.stdout and '--data_dir=' in result.stdout
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'manifest.json', 'shard-0', 'shard-1', 'shard-2', 'shard-3', 'test.npz'
  ]
  again = subprocess.run(command,
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=False)
  assert again.returncode == 2
  assert 'must be new or empty' in again.stderr
  assert again.stderr.count('\n') == 1, again.stderr
  too_many = subprocess.run(command[:-1] + ['--shards=99', '--overwrite'],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True,
                            check=False)
  assert too_many.returncode == 2
  assert 'fewer than --shards=99' in too_many.stderr
