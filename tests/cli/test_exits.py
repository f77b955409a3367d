"""The one line a program prints for absl's flag errors (`exits`)."""

from absl import flags
import pytest

from tff_dp.cli import exits


def _error(*argv, required=('input', 'output')):
  fv = flags.FlagValues()
  for name in ('input', 'output', 'rounds'):
    flags.DEFINE_string(name, None, 'A flag.', flag_values=fv)
  for name in required:
    flags.mark_flag_as_required(name, flag_values=fv)
  with pytest.raises(flags.Error) as raised:
    fv(['program', *argv])
  return exits.flag_error_message(raised.value)


def test_missing_required_flags_are_said_to_be_required():
  assert _error() == '--input and --output are required'
  assert _error('--input=x') == '--output is required'
  assert _error(
      required=('input', 'output',
                'rounds')) == ('--input, --output and --rounds are required')


def test_other_flag_errors_are_absls_lines_joined_without_its_prefix(tmp_path):
  missing = tmp_path / 'missing.cfg'
  message = _error(f'--flagfile={missing}', required=())
  assert message == f'--flagfile={missing}: no such file or directory'
  assert str(missing) in message and not message.startswith('ERROR')
  assert '\n' not in message
  assert 'Unknown command line flag' in _error('--inptu=x', required=())
