"""--help: each program lists its own flags, by group, and exits 0.

absl's --help listed only the main module's flags (none: ours are defined in
tff_dp/cli/cli_flags.py) and exited 1. The groups and their content are
checked in-process; one subprocess per program checks the real entry point.
"""

from absl import flags
import pytest

from tests.helpers import programs
from tff_dp.cli import cli_flags
from tff_dp.cli import program_help


def _train_flags():
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  return fv


def test_the_groups_hold_every_training_flag_once_in_the_readme_order():
  groups = program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS)
  assert [title for title, _ in groups
         ] == [title for title, _ in cli_flags.TRAIN_FLAG_GROUPS]
  names = [name for _, group in groups for name in group]
  assert sorted(names) == sorted(_train_flags())  # Every flag, once.
  data = dict(groups)['Data']
  assert data[:3] == ['dataset', 'data_dir', 'client_data']  # As defined.


def test_help_lists_each_group_with_its_flags_help_and_default():
  fv = _train_flags()
  text = program_help.grouped_help(
      fv, 'usage text', program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS))
  assert text.startswith('usage text\n\nData:\n  --dataset:\n      <digits|')
  rounds = text.index('Rounds and client sampling:\n')
  assert text.index('  --rounds: Number of federated rounds. (default: 100)'
                   ) > rounds > text.index('Model:\n')
  assert '  --[no]allow_unconfined_worker: INSECURE' in text
  assert "--client_data: SQLite client-data file for --dataset=sqlite. " \
      "(default: '')" in text
  assert max(len(line)
             for line in text.splitlines()
             if ' ' in line.strip()) <= 80  # Wrapped, save one-word lines.


@pytest.mark.parametrize('argument', ['--help', '-?', '--helpshort'])
def test_help_prints_the_groups_and_exits_0(argument, capsys):
  fv = _train_flags()
  program_help.define_help_flags(fv,
                                 doc='the program',
                                 groups=[('Cohort',
                                          ['rounds', 'clients_per_round'])])
  with pytest.raises(SystemExit) as stop:
    fv(['prog', argument])
  assert stop.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith('the program\n\nCohort:\n  --rounds:')
  assert '--clients_per_round' in out and '--dataset' not in out


def test_helpfull_prints_every_flag_and_exits_0(capsys):
  fv = _train_flags()
  program_help.define_help_flags(fv, doc='the program', groups=[])
  with pytest.raises(SystemExit) as stop:
    fv(['prog', '--helpfull'])
  assert stop.value.code == 0
  out = capsys.readouterr().out
  names = {fv[name].name for name in fv}  # Not the short names.
  assert all(f'--{name}' in out or f'--[no]{name}' in out for name in names)


@pytest.mark.e2e
@pytest.mark.parametrize(
    'program,first_group,flag',
    [
        ('tff_dp.cli.train', 'Data', '--rounds'),
        ('tff_dp.cli.epsilon', 'Accounting', '--population'),
        # The audit's own flags come from its module, whatever they are.
        ('tff_dp.cli.audit', 'Audit', '--audit_beta'),
        ('tff_dp.cli.import_data', 'Import', '--client_column'),
        ('tff_dp.cli.sweep', 'Sweep', '--target_epsilons'),
        ('tff_dp.cli.compare', 'Compare', '--output_dir'),
    ])
def test_each_program_lists_its_flags_and_exits_0(program, first_group, flag):
  # `python -m PROGRAM --help`, from the repository root.
  result = programs.run_train('--help', program=program, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  out = result.stdout
  # The program's own group first, then (but for import-data and compare,
  # which train nothing) the training flags as the README groups them.
  assert f'\n\n{first_group}:\n  --' in out, out[:3000]
  assert f'\n  {flag}: ' in out
  if program not in ('tff_dp.cli.import_data', 'tff_dp.cli.compare'):
    assert (out.index(f'\n{first_group}:\n') <= out.index('\nData:\n') <
            out.index('\nRounds and client sampling:\n  --rounds: '))
