"""metrics.csv read back: a cut last line is dropped, anything else refused.

The CSV sink appends each round's row (`tff_dp.program.csv_sink`), so a
crash can leave its last line cut short; readers and the resume
(`tff_dp.program.resume`) must drop that line, and only that one.
"""

import pytest

from tff_dp.program import metrics_file
from tff_dp.program import resume

_WHOLE = ('round,eval/loss,privacy/epsilon_rdp\r\n'
          '1,2.25,0.5\r\n'
          '2,,0.75\r\n'
          '3,1.5,1.0\r\n')
_LAST = '4,1.25,1.25\r\n'


def _write(tmp_path, text):
  path = tmp_path / 'metrics.csv'
  path.write_bytes(text.encode())
  return str(path)


@pytest.mark.parametrize('cut', range(1, len(_LAST)))
def test_a_cut_last_line_is_dropped_and_cut_on_resume(tmp_path, cut):
  path = _write(tmp_path, _WHOLE + _LAST[:cut])
  whole = metrics_file.parse(_WHOLE, path=path, key_fieldname='round')
  assert resume.read_rows(path) == whole.rows
  assert [row['round'] for row in whole.rows] == ['1', '2', '3']
  assert resume.truncate_rows(path, last_round=4) == whole.rows
  with open(path, 'rb') as f:
    assert f.read() == _WHOLE.encode()  # Appends start after a whole row.


@pytest.mark.parametrize('cut,key', [(1, None), (2, 4), (5, 4), (12, 4)])
def test_a_cut_line_whose_round_is_whole_counts_as_released(tmp_path, cut, key):
  # Part of round 4 was released: a fallback past it must be refused.
  path = _write(tmp_path, _WHOLE + _LAST[:cut])
  contents = metrics_file.read(path, key_fieldname='round')
  assert contents.torn == _LAST[:cut]
  assert contents.torn_key('round') == key
  assert resume.released_rounds(str(tmp_path), csv_path=path) == (key or 3)


def test_a_whole_file_has_no_cut_line(tmp_path):
  path = _write(tmp_path, _WHOLE + _LAST)
  contents = metrics_file.read(path, key_fieldname='round')
  assert contents.torn == '' and contents.torn_key('round') is None
  assert [row['round'] for row in contents.rows] == ['1', '2', '3', '4']
  assert contents.rows[1] == {
      'round': '2',
      'eval/loss': '',
      'privacy/epsilon_rdp': '0.75'
  }


@pytest.mark.parametrize(
    'text,line',
    [
        # A cut line that is not the last one: appending went on after it.
        (_WHOLE.replace('2,,0.75\r\n', '2,,0.7') + _LAST, 3),
        # A short row with its line end.
        (_WHOLE.replace('2,,0.75', '2,'), 3),
        (_WHOLE + '4,1.25\r\n', 5),
        # A long row.
        (_WHOLE.replace('3,1.5,1.0', '3,1.5,1.0,7'), 4),
        # A key that is not an integer.
        (_WHOLE.replace('3,1.5', 'x,1.5'), 4),
        # A cut header.
        ('round,eval/lo', 1),
    ])
def test_a_malformed_line_is_an_error_naming_file_and_line(
    tmp_path, text, line):
  path = _write(tmp_path, text)
  with pytest.raises(resume.ResumeError) as error:
    resume.read_rows(path)
  message = str(error.value)
  assert message.startswith(f'{path} is not a metrics file tff-dp wrote')
  assert f'line {line}:' in message
  assert '\n' not in message


def test_a_missing_file_has_no_rows(tmp_path):
  assert resume.read_rows(str(tmp_path / 'metrics.csv')) == []
  assert resume.truncate_rows(str(tmp_path / 'metrics.csv'), last_round=3) == []
