"""metrics.csv's sink writes what TFF's CSVFileReleaseManager (WRITE) wrote."""

import asyncio
import os

import pytest
import tensorflow_federated as tff

from tff_dp.program import csv_sink

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
