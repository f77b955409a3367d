"""The README's "Your own data" commands run as written, and so does the
training command `import-data` prints.

The README's training command was refused (adaptive clipping with 10 clients
per round at z = 1.0), and the import's hint trained on the default digits
(no --dataset=sqlite). The import runs for real; each training command is
parsed as `./run.sh train` parses it (configs/default.cfg first) and goes
through every check and the data load a run does before it trains
(`prepare.prepare_run`): the refusals were there. Training itself on an
imported file is tested in tests/program/test_threat_model.py.
"""

import csv
import os
import re
import shlex
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tff_dp.cli import cli_flags
from tff_dp.cli import import_data
from tff_dp.data import csv_import
from tff_dp.program import prepare

_DEFAULT_CONFIG = os.path.join(REPO_ROOT, 'configs', 'default.cfg')


def _readme_commands():
  """The commands of the README's "Your own data" code block, as argv."""
  with open(os.path.join(REPO_ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  section = readme[readme.index('\n## Your own data\n'):]
  block = re.search(r'```bash\n(.*?)```', section, re.DOTALL).group(1)
  return [
      shlex.split(line, comments=True)
      for line in block.replace('\\\n', ' ').splitlines()
      if line.strip()
  ]


def _write_visits(path, hospitals=60):
  """A table like the README's: patients of hospitals, an outcome label."""
  rng = np.random.default_rng(0)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['hospital', 'age', 'pressure', 'outcome'])
    for hospital in range(hospitals):
      for _ in range(rng.integers(5, 30)):
        x = rng.normal(size=2)
        writer.writerow([f'h{hospital}', *np.round(x, 3), int(x.sum() > 0)])


def _prepare(train_command):
  """What `./run.sh train ARGS` checks and loads before it trains."""
  assert train_command[:2] == ['./run.sh', 'train'], train_command
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  # run.sh reads configs/default.cfg first when no --flagfile is given.
  fv(['tff-dp', f'--flagfile={_DEFAULT_CONFIG}', *train_command[2:]])
  return prepare.prepare_run(cli_flags.config_from_flags(fv))


@pytest.mark.e2e
def test_the_readme_commands_and_the_imports_hint_run_as_written(
    tmp_path, monkeypatch):
  import_command, train_command = _readme_commands()
  monkeypatch.chdir(tmp_path)  # The README's relative file names.
  _write_visits(tmp_path / 'visits.csv')
  assert import_command[:2] == ['./run.sh', 'import-data']
  imported = subprocess.run(
      [sys.executable, '-m', 'tff_dp.cli.import_data', *import_command[2:]],
      cwd=tmp_path,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT),
      capture_output=True,
      text=True,
      timeout=120,
      check=False)
  assert imported.returncode == 0, imported.stderr
  assert '--dataset=sqlite' in train_command
  prepared = _prepare(train_command)
  assert prepared.data.population == 48
  hint = imported.stdout.splitlines()[-1].split(': ', 1)[1]
  assert _prepare(shlex.split(hint)).config.client_data == 'visits.sqlite'


def _summary(train_clients, test_examples=10):
  return csv_import.ImportSummary(output_path='my data.sqlite',
                                  rows=100,
                                  feature_names=('x',),
                                  num_classes=2,
                                  num_classes_inferred=False,
                                  test_split=csv_import.TestSplit.CLIENTS,
                                  train_clients=train_clients,
                                  test_clients=2,
                                  train_examples=90,
                                  test_examples=test_examples,
                                  examples_per_client_min=1,
                                  examples_per_client_median=1.0,
                                  examples_per_client_max=2)


def test_the_hint_fits_the_imported_population():
  small = import_data.train_command(_summary(4))
  assert small.startswith("./run.sh train --dataset=sqlite --client_data='my "
                          "data.sqlite' ")
  assert small.endswith(' --clients_per_round=4')  # No more than there are.
  assert '--delta' not in import_data.train_command(_summary(99_999))
  # configs/default.cfg's delta 1e-5 must stay below 1/N.
  assert import_data.train_command(
      _summary(100_000)).endswith(' --clients_per_round=10 --delta=1e-6')
  assert import_data.train_command(_summary(10, test_examples=0)) is None
