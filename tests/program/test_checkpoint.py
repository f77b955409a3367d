"""Checkpoints: round trip, and every kind of corruption is detected."""

import collections
import os

import numpy as np
import pytest

from tests.helpers import json_edits
from tff_dp.program import checkpoint


def _state(scale=1.0):
  return collections.OrderedDict(
      model=[np.full((3, 2), scale, np.float32),
             np.arange(2.0) * scale],
      round=np.int64(7),
      event=(b'dp_accounting.dp_event', np.float32(0.5)))


def _manager(tmp_path, **kwargs):
  return checkpoint.CheckpointManager(str(tmp_path), **kwargs)


def _assert_same(a, b):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    if isinstance(x, bytes):
      assert x == y
    else:
      np.testing.assert_array_equal(x, y)
      assert np.asarray(x).dtype == np.asarray(y).dtype


def test_round_trip_is_exact(tmp_path):
  manager = _manager(tmp_path)
  manager.save(1, _state(1.5), {'ledger': {'rounds': []}})
  loaded = manager.load(1, _state())
  _assert_same(loaded.state, _state(1.5))
  assert loaded.meta['ledger'] == {'rounds': []}
  assert loaded.meta['round'] == 1


def test_keeps_the_newest_checkpoints(tmp_path):
  manager = _manager(tmp_path, keep=2)
  for round_num in range(1, 5):
    manager.save(round_num, _state(round_num), {})
  assert manager.rounds() == [3, 4]


def _corrupt_flip(path):
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def _corrupt_truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize('corrupt,file_name', [
    (_corrupt_flip, 'state.npz'),
    (_corrupt_flip, 'meta.json'),
    (_corrupt_truncate, 'state.npz'),
    (os.remove, 'state.npz'),
    (os.remove, 'MANIFEST.json'),
    (lambda p: open(p, 'w').write('{}'), 'MANIFEST.json'),
])
def test_corrupt_newest_falls_back_to_previous(tmp_path, corrupt, file_name):
  manager = _manager(tmp_path)
  manager.save(1, _state(1.0), {})
  newest = manager.save(2, _state(2.0), {})
  corrupt(os.path.join(newest, file_name))
  loaded, skipped = manager.load_latest_valid(_state())
  assert loaded.round_num == 1
  _assert_same(loaded.state, _state(1.0))
  assert len(skipped) == 1 and skipped[0][0] == 2
  assert 'round_00000002' in skipped[0][1]


def test_consistent_but_wrong_shape_is_refused(tmp_path):
  manager = _manager(tmp_path)
  manager.save(1, _state(), {})
  other = _state()
  other['model'][0] = np.zeros((4, 2), np.float32)
  with pytest.raises(checkpoint.CheckpointError, match=r'float32\[4, 2\]'):
    manager.load(1, other)


def test_stray_temporary_directory_is_never_loaded(tmp_path):
  manager = _manager(tmp_path)
  manager.save(1, _state(1.0), {})
  stray = os.path.join(manager.directory, '.round_00000002.tmp-abc')
  os.makedirs(stray)
  with open(os.path.join(stray, 'state.npz'), 'wb') as f:
    f.write(b'partial')
  assert manager.rounds() == [1]
  assert manager.load_latest_valid(_state())[0].round_num == 1
  assert manager.remove_stray_temporaries() == ['.round_00000002.tmp-abc']
  assert not os.path.exists(stray)


def test_nothing_is_unpickled(tmp_path):
  # An object array can only be saved with pickle; loading refuses it even
  # when the manifest matches, because np.load runs with allow_pickle=False.
  manager = _manager(tmp_path)
  path = manager.save(1, _state(), {})
  np.savez(os.path.join(path, 'state.npz'), np.array([object()], dtype=object))
  json_edits.match_manifest(path, 'state.npz')
  with pytest.raises(checkpoint.CheckpointError, match='unreadable'):
    manager.load(1, _state())


def test_corrupt_checkpoints_move_aside_so_their_round_can_be_saved_again(
    tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path))
  for round_num in (1, 2):
    manager.save(round_num, _state(), {'x': round_num})
  with pytest.raises(checkpoint.CheckpointError, match='already exists'):
    manager.save(2, _state(), {'x': 2})
  moved = manager.move_aside([2])
  assert [os.path.basename(p) for p in moved] == ['corrupt-round_00000002']
  assert manager.rounds() == [1]
  manager.save(2, _state(), {'x': 2})  # No longer wedged.
  assert manager.move_aside([2])[0].endswith('corrupt-round_00000002-2')
