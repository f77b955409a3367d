"""tools.mechanism_table --write_configs writes the header line the config
test reads: the same form, the run's numbers, one line per preset."""

from tests import test_configs_headers as headers
from tools import measured_headers


def _summary(**changes):
  summary = {
      'private': True,
      'accuracy': 0.93314,
      'guarantee_epsilon': 7.0466,
      'guarantee_accountant': 'pld',
      'local_epsilon': None,
      'record_level_epsilon': None,
      'delta': 1e-05,
      'rounds': 100,
      'rounds_planned': 100,
  }
  summary.update(changes)
  return summary


def _clauses(line):
  match = headers._MEASURED.match(line)  # pylint: disable=protected-access
  assert match, line
  return match, headers._clauses(match[4])  # pylint: disable=protected-access


def test_central_line_has_the_form_the_config_test_reads():
  line = measured_headers.measured_line(_summary(),
                                        date='2026-12-04',
                                        planned_local_epsilon=None)
  assert line == ('# Measured (2026-12-04, this machine, tools/'
                  'mechanism_table.py): accuracy 0.933 after 100 rounds; '
                  'central epsilon 7.05 (PLD, delta 1e-5).')
  _clauses(line)


def test_local_record_and_nonprivate_clauses_parse():
  line = measured_headers.measured_line(_summary(guarantee_epsilon=None,
                                                 local_epsilon=77.31,
                                                 record_level_epsilon=18.24,
                                                 delta=1e-3),
                                        date='2026-12-04',
                                        planned_local_epsilon=284.2)
  _, clauses = _clauses(line)
  assert headers._LOCAL.match(clauses[0])[1] == '284'  # pylint: disable=protected-access
  assert "the run's most frequent client: 77.3" in clauses[0]
  record = headers._RECORD.match(clauses[1])  # pylint: disable=protected-access
  assert (record[1], record[2]) == ('18.2', '1e-3')
  line = measured_headers.measured_line(_summary(private=False,
                                                 guarantee_epsilon=None),
                                        date='2026-12-04',
                                        planned_local_epsilon=None)
  assert _clauses(line)[1] == ['not private']


def test_the_line_replaces_the_old_one_or_ends_the_header(tmp_path):
  config = tmp_path / 'x.cfg'
  config.write_text('# What it shows.\n# Measured (old): x.\n--rounds=100\n')
  written = measured_headers.write_measured_line(str(config),
                                                 _summary(),
                                                 date='2026-12-04')
  assert config.read_text() == f'# What it shows.\n{written}\n--rounds=100\n'
  config.write_text('# What it shows.\n--rounds=100\n')
  measured_headers.write_measured_line(str(config),
                                       _summary(),
                                       date='2026-12-04')
  assert config.read_text().splitlines()[1] == written


def test_several_runs_state_their_mean_and_spread():
  line = measured_headers.measured_line(_summary(),
                                        date='2026-12-04',
                                        planned_local_epsilon=None,
                                        accuracies=[0.92, 0.93, 0.94])
  assert 'accuracy 0.930 (mean of 3 runs, sd 0.010) after 100 rounds' in line
  match, _ = _clauses(line)
  assert match[2] == '0.930'
