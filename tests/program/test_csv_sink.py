"""metrics.csv's sink writes what TFF's CSVFileReleaseManager (WRITE) wrote."""

import asyncio
import os

import pytest
import tensorflow_federated as tff

from tff_dp.program import csv_sink
from tff_dp.program import resume

_ROWS = [
    (1, {
        'privacy/epsilon_rdp': 0.5,
        'eval/loss': 2.25
    }),
    (2, {
        'privacy/epsilon_rdp': 0.75
    }),
    # A new column, and the sorted order of a row's names.
    (3, {
        'privacy/epsilon_rdp': 1.0,
        'eval/accuracy': 0.125,
        'a': 1e-300
    }),
    (4, {
        'privacy/epsilon_rdp': 1.25,
        'eval/loss': float('nan')
    }),
    # A resumed run releases round 3 again: rounds >= 3 are dropped.
    (3, {
        'privacy/epsilon_rdp': 1.5
    }),
    (4, {
        'privacy/epsilon_rdp': 1.75,
        'z': 2
    }),
    # Everything dropped: the columns start over.
    (0, {
        'b': 3.0
    }),
    (1, {
        'privacy/epsilon_rdp': 0.5
    }),
]


def _release(manager, key, value):
  asyncio.run(manager.release(value, key=key))


def _tff(path):
  return tff.program.CSVFileReleaseManager(
      path, save_mode=tff.program.CSVSaveMode.WRITE, key_fieldname='round')


def _ours(path):
  return csv_sink.MetricsCsvReleaseManager(path, key_fieldname='round')


@pytest.mark.parametrize('reopen_at', [None, 2, 4, 6])
def test_same_bytes_as_tffs_manager_after_every_release(tmp_path, reopen_at):
  theirs_path = str(tmp_path / 'theirs' / 'metrics.csv')
  ours_path = str(tmp_path / 'ours' / 'metrics.csv')
  theirs, ours = _tff(theirs_path), _ours(ours_path)
  for i, (key, value) in enumerate(_ROWS):
    if i == reopen_at:  # A resumed run opens the file it left.
      theirs, ours = _tff(theirs_path), _ours(ours_path)
    _release(theirs, key, value)
    _release(ours, key, value)
    with open(theirs_path, 'rb') as f, open(ours_path, 'rb') as g:
      assert g.read() == f.read(), (i, key)
  assert os.listdir(tmp_path / 'ours') == ['metrics.csv']  # No temporaries.


def test_new_file_has_the_header_only(tmp_path):
  _ours(str(tmp_path / 'metrics.csv'))
  assert (tmp_path / 'metrics.csv').read_bytes() == b'round\r\n'


def test_refuses_a_file_without_the_key_column(tmp_path):
  (tmp_path / 'metrics.csv').write_text('step,x\r\n1,2\r\n')
  with pytest.raises(ValueError, match='round'):
    _ours(str(tmp_path / 'metrics.csv'))


class _NoPass(list):
  """Rows that fail any pass over them."""

  def __iter__(self):
    raise AssertionError('a release of a new last round read every row')


def test_a_release_after_every_row_does_not_pass_over_the_rows(tmp_path):
  # Per round, the release must not cost a pass over the rows already
  # released (benchmarks/README.md, "Outside the round").
  path = str(tmp_path / 'metrics.csv')
  manager = _ours(path)
  _release(manager, 1, {'privacy/epsilon_rdp': 0.5})
  manager._rows = _NoPass(manager._rows)  # pylint: disable=protected-access
  _release(manager, 2, {'privacy/epsilon_rdp': 0.75})
  with open(path, newline='', encoding='utf-8') as f:
    assert f.read() == ('round,privacy/epsilon_rdp\r\n1,0.5\r\n'
                        '2,0.75\r\n')


def _rows(n):
  # Round 1 brings the columns; later rounds add none (as a run's do).
  return [(r, {
      'privacy/epsilon_rdp': 0.25 * r,
      'eval/loss': 2.0 / r
  }) for r in range(1, n + 1)]


def _uninterrupted(path, rows):
  manager = _ours(path)
  for key, value in rows:
    _release(manager, key, value)
  with open(path, 'rb') as f:
    return f.read()


def test_each_round_appends_its_line_and_rewrites_nothing(
    tmp_path, monkeypatch):
  # O(1) per round: after the first release, a round's release neither
  # replaces the file nor touches its earlier bytes.
  path = str(tmp_path / 'metrics.csv')
  manager = _ours(path)
  rows = _rows(5)
  _release(manager, *rows[0])

  def replace(*args):
    raise AssertionError(f'the file was replaced: {args[0]}')

  monkeypatch.setattr(csv_sink.atomic_io, 'write_text_atomic', replace)
  inode = os.stat(path).st_ino
  for key, value in rows[1:]:
    with open(path, 'rb') as f:
      before = f.read()
    _release(manager, key, value)
    with open(path, 'rb') as f:
      after = f.read()
    assert os.stat(path).st_ino == inode
    assert after.startswith(before) and after.count(b'\n') == key + 1
  monkeypatch.undo()
  assert after == _uninterrupted(str(tmp_path / 'b.csv'), rows)


def test_a_file_changed_behind_its_back_is_replaced_not_appended(tmp_path):
  path = str(tmp_path / 'metrics.csv')
  manager = _ours(path)
  rows = _rows(3)
  _release(manager, *rows[0])
  with open(path, 'ab') as f:
    f.write(b'9,9')  # Someone else's bytes: not extended in place.
  for key, value in rows[1:]:
    _release(manager, key, value)
  with open(path, 'rb') as f:
    assert f.read() == _uninterrupted(str(tmp_path / 'b.csv'), rows)


def test_a_line_cut_by_a_crash_is_cut_on_resume_at_every_byte(tmp_path):
  # A crash mid-append leaves a prefix of the uninterrupted file; the
  # resume (the checkpoint of round 4, written before rounds 2-4 were
  # released, as a block of rounds per call is) cuts the cut line, and the
  # reopened sink releases the rounds the file lacks from the checkpoint:
  # the uninterrupted file, byte for byte.
  rows = _rows(4)
  whole = _uninterrupted(str(tmp_path / 'whole.csv'), rows)
  start = whole.index(b'\r\n2,') + 2  # Round 1 released whole.
  path = str(tmp_path / 'metrics.csv')
  for end in range(start, len(whole) + 1):
    with open(path, 'wb') as f:
      f.write(whole[:end])
    kept = resume.truncate_rows(path, last_round=4)
    manager = _ours(path)
    for key, value in rows[len(kept):]:
      _release(manager, key, value)
    with open(path, 'rb') as f:
      assert f.read() == whole, end


def test_a_sink_opened_on_a_cut_line_replaces_it_before_appending(tmp_path):
  # Without the resume's cut: the first release after opening the file
  # rewrites it from its whole rows, never appends behind half a row.
  rows = _rows(3)
  whole = _uninterrupted(str(tmp_path / 'whole.csv'), rows)
  path = str(tmp_path / 'metrics.csv')
  with open(path, 'wb') as f:
    f.write(whole[:-7])  # Round 3's line cut short.
  _release(_ours(path), *rows[2])
  with open(path, 'rb') as f:
    assert f.read() == whole
