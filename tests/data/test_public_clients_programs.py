"""Public clients through the programs: `pretrain` on the declared public
clients of an imported table, then a DP `train` from its checkpoint with the
same declaration, whose population, ledger and statement leave them out.

A tiny MLP on a tiny imported table: a refusal (one program that stops after
loading the table, ~20 s) and the round trip (two programs, ~90 s on 2 shared
cores), both `slow`.
"""

import json

import pytest

from tests.helpers import client_data_files
from tests.helpers import programs
from tff_dp.data import csv_import

pytestmark = pytest.mark.e2e


def _imported(tmp_path, num_clients=12):
  """Client k has 3 rows whose features are all k; labels in [0, 3)."""
  rows = [(f'client{k:02d}', [float(k)] * 3, (k + r) % 3)
          for k in range(num_clients)
          for r in range(3)]
  return client_data_files.imported(tmp_path,
                                    rows,
                                    test_split=csv_import.TestSplit.ROWS,
                                    test_fraction=0.2)


@pytest.mark.slow  # The table's source imports TensorFlow: ~20 s here.
def test_an_unknown_public_client_is_one_line_and_exit_2(tmp_path):
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('client01\nnobody\n')
  result = programs.run_train('--dataset=sqlite',
                              f'--client_data={_imported(tmp_path)}',
                              f'--public_clients={ids_file}',
                              f'--output={tmp_path}/ckpt',
                              program=programs.PRETRAIN)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip() == (
      f"tff-dp-pretrain: error: --public_clients={ids_file}: 'nobody' is "
      'not a training client of --dataset=sqlite (12 clients)')


@pytest.mark.slow
def test_pretrain_on_public_clients_then_train_without_them(tmp_path):
  data = _imported(tmp_path)
  ids_file = tmp_path / 'public.txt'
  ids_file.write_text('client03\nclient08\n')
  common = ('--dataset=sqlite', f'--client_data={data}', '--model=mlp',
            '--hidden_layers=1', '--hidden_units=8',
            f'--public_clients={ids_file}')
  checkpoint = str(tmp_path / 'ckpt')
  programs.run_train(*common,
                     '--steps=3',
                     '--batch_size=4',
                     f'--output={checkpoint}',
                     program=programs.PRETRAIN,
                     check=True)
  programs.run_train(*common,
                     '--rounds=2',
                     '--clients_per_round=4',
                     '--dp_mechanism=gaussian_fixed',
                     '--noise_multiplier=1.0',
                     '--clip=0.1',
                     f'--init_from={checkpoint}',
                     f'--output_dir={tmp_path}/runs',
                     '--run_name=dp',
                     check=True)
  run_dir = tmp_path / 'runs' / 'dp'
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert summary['population'] == 10 and summary['rounds'] == 2
  statement = (run_dir / 'privacy_statement.txt').read_text()
  assert ('on data treated as public: 2 clients of --dataset=sqlite (the '
          f'client ids listed in --public_clients={ids_file}') in statement
