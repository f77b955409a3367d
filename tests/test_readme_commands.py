"""Every `./run.sh` command the README shows runs as written.

The README is a user's first hour: a command in it that is refused, names a
program run.sh does not have, or prints other numbers than it says is a
broken promise. This test reads every `./run.sh` command of the README (code
blocks and inline code), and:

* each names a program of run.sh's usage text;
* each `train` and `audit` command is parsed as run.sh parses it
  (configs/default.cfg first unless it names a flagfile) and goes through
  every check and the data load a run does before it trains
  (`prepare.prepare_run`): a refused setting fails here;
* each `sweep` command's plan is made as the program makes it, and every
  run of it passes the training program's flag and cross-flag checks, its
  first seed also the data load and calibration (`prepare.prepare_run`);
  nothing is trained;
* each `epsilon` command runs (it needs no training), and the numbers the
  README prints beside it (the lines of `#   ...` after it, a `# ...: RDP
  48.8` comment) are in its output.

Commands with a placeholder (`runs/<run>`, `CFG`, `=M`, `[...]`) or that name
a run the reader made earlier (`compare` commands name such runs) are
parsed only as far as their program; the
commands that train for real are run by tests/cli/test_own_data.py (the own-
data block), the main job by tests/cli/test_train_program.py, `./run.sh test`
and `lint` by CI itself.
"""

import os
import re
import shlex
import subprocess
import sys

from absl import flags
import pytest

from tests.helpers import REPO_ROOT
from tff_dp.cli import cli_flags
from tff_dp.cli import sweep_flags
from tff_dp.program import prepare
from tff_dp.sweeps import plan as plan_lib

_README = os.path.join(REPO_ROOT, 'README.md')
_DEFAULT_CONFIG = os.path.join(REPO_ROOT, 'configs', 'default.cfg')
# A run directory the README's reader made earlier (its name is an example).
_EXAMPLE_RUN = re.compile(r'--run_dir=runs/')
_PLACEHOLDER = re.compile(r'<[a-z_]+>|\bCFG\b|=M\b|\[|/path/to/')


def _readme() -> str:
  with open(_README, encoding='utf-8') as f:
    return f.read()


def _block_commands(text: str):
  """(argv, printed lines, comment) of each ./run.sh line in bash blocks."""
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.DOTALL):
    lines = block.replace('\\\n', ' ').splitlines()
    for i, line in enumerate(lines):
      if not line.startswith('./run.sh '):
        continue
      command, _, comment = line.partition('#')
      printed = []
      for after in lines[i + 1:]:
        if not after.startswith('#   '):
          break
        printed.append(after[1:].strip())
      commands.append((shlex.split(command), printed, comment.strip()))
  return commands


def _inline_commands(text: str):
  return [
      shlex.split(command)
      for command in re.findall(r'`(\./run\.sh [^`]*)`', text)
      if not _PLACEHOLDER.search(command)
  ]


def _all_commands():
  text = _readme()
  return [argv for argv, _, _ in _block_commands(text)] + _inline_commands(text)


def _programs() -> set[str]:
  """The commands run.sh's usage text lists."""
  with open(os.path.join(REPO_ROOT, 'run.sh'), encoding='utf-8') as f:
    usage = f.read().split('Commands:\n', 1)[1].split('\nEOF', 1)[0]
  return set(re.findall(r'^  ([a-z-]+)', usage, re.MULTILINE))


def _runnable(argv) -> bool:
  command = ' '.join(argv)
  return not (_PLACEHOLDER.search(command) or _EXAMPLE_RUN.search(command))


def test_the_readme_shows_commands_of_every_kind():
  # The parsing below must keep finding them (a changed fence would hide all).
  kinds = {argv[1] for argv in _all_commands()}
  assert {
      'train', 'test', 'epsilon', 'audit', 'import-data', 'tensorboard',
      'bench', 'sweep', 'compare'
  } <= kinds, kinds


def test_every_command_names_a_program_of_run_sh():
  programs = _programs()
  assert 'train' in programs and 'epsilon' in programs
  for argv in _all_commands():
    assert argv[0] == './run.sh' and argv[1] in programs, argv


def _training_commands():
  commands = {
      ' '.join(argv): argv
      for argv in _all_commands()
      if argv[1] in ('train',
                     'audit') and _runnable(argv) and '--help' not in argv and
      # The own-data block's file is imported first: test_own_data runs it.
      not any(arg.startswith('--client_data') for arg in argv)
  }
  return sorted(commands.items())


@pytest.mark.parametrize('command', [c for c, _ in _training_commands()])
def test_training_and_audit_commands_pass_every_check_before_training(command):
  argv = dict(_training_commands())[command]
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  # A checkpoint of --init_from is written by the README's pretrain command
  # before it: test_language_model_programs runs that pair; here the rest of
  # the command is checked.
  fv(['tff-dp', f'--flagfile={_DEFAULT_CONFIG}'] +
     [arg for arg in argv[2:] if not arg.startswith('--init_from=')])
  prepared = prepare.prepare_run(cli_flags.config_from_flags(fv))
  assert prepared.data.population > 0


def _sweep_commands():
  return sorted({
      ' '.join(argv): argv
      for argv in _all_commands()
      if argv[1] == 'sweep' and _runnable(argv) and '--help' not in argv
  }.items())


@pytest.mark.parametrize('command', [c for c, _ in _sweep_commands()])
def test_sweep_commands_plan_runs_that_pass_every_check(command, tmp_path):
  argv = dict(_sweep_commands())[command]
  # As run.sh passes them: configs/default.cfg first unless a flagfile is named.
  args = argv[2:] if any(a.startswith('--flagfile') for a in argv) else [
      f'--flagfile={_DEFAULT_CONFIG}', *argv[2:]
  ]
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  sweep_flags.define_sweep_flags(fv)
  fv(['tff-dp-sweep', *args])
  plan = sweep_flags.make_plan(fv, ['tff-dp-sweep', *args])
  sweep_flags.check_runs(plan, str(tmp_path))
  for label in plan.setting_labels():
    run = next(r for r in plan.runs if r.setting == label)
    run_fv = flags.FlagValues()
    cli_flags.define_train_flags(run_fv)
    run_fv(['tff-dp', *plan_lib.argv(plan.settings(run, sweep_dir='x'))])
    prepared = prepare.prepare_run(cli_flags.config_from_flags(run_fv))
    assert prepared.data.population > 0


def _epsilon_commands():
  return [(' '.join(argv), argv, printed, comment)
          for argv, printed, comment in _block_commands(_readme())
          if argv[1] == 'epsilon' and _runnable(argv)]


@pytest.mark.e2e
@pytest.mark.parametrize('command', [c for c, *_ in _epsilon_commands()])
def test_epsilon_commands_run_and_print_what_the_readme_says(command):
  _, argv, printed, comment = next(
      c for c in _epsilon_commands() if c[0] == command)
  result = subprocess.run(
      [sys.executable, '-m', 'tff_dp.cli.epsilon', *argv[2:]],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  for line in printed:
    assert line in result.stdout, (line, result.stdout)
  for number in re.findall(r'\d+\.\d+', comment):
    assert number in result.stdout, (number, result.stdout)
