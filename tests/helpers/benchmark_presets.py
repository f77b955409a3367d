"""Loading TFF's benchmark datasets and running their presets, for their tests.

configs/cifar100.cfg, shakespeare.cfg, stackoverflow_nwp.cfg and
stackoverflow_tag.cfg train on TFF's benchmark caches (each preset is named
after its dataset). Their tests in tests/data/ write a tiny fake cache
(`fake_tff_caches`, `fake_shakespeare`, `fake_stackoverflow`), `load` it as
the program does, and run the preset's program: without its cache
(`assert_program_refuses_a_missing_cache`), and for one round of a small
cohort on a fake cache of `PROGRAM_CLIENTS` clients (`train_one_round`; the
configs smoke test runs each preset's own cohort).
"""

import json
import os

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp.data import loading
from tff_dp.data.partition import Partition

# 13 is the smallest cohort for which adaptive clipping admits the presets'
# noise (z up to 1.2 < 0.1 * clients_per_round); a few more clients.
PROGRAM_CLIENTS = 16
PROGRAM_COHORT = 13


def preset(name: str) -> str:
  """Path of configs/<name>.cfg."""
  return os.path.join(REPO_ROOT, 'configs', f'{name}.cfg')


def load(dataset: loading.Dataset, data_dir: str):
  """`dataset` read from the cache in `data_dir`, as the program loads it.

  The cache decides the clients: `num_clients` and the partition settings
  given here are not used.
  """
  return loading.load(dataset,
                      num_clients=7,
                      partition=Partition.IID,
                      seed=0,
                      test_fraction=0.2,
                      dirichlet_alpha=0.5,
                      data_dir=data_dir,
                      client_data=None)


def assert_missing_cache_refused(dataset: loading.Dataset, data_dir: str,
                                 file_name: str) -> None:
  """Loading `dataset` from `data_dir` without `file_name` is a DataError
  that says where to put it and names TFF's archive of it."""
  with pytest.raises(loading.DataError) as info:
    load(dataset, data_dir)
  assert f'put {file_name} in {data_dir}' in str(info.value)
  assert f'{file_name}.lzma' in str(info.value)


def assert_program_refuses_a_missing_cache(tmp_path, name: str,
                                           error_start: str,
                                           file_name: str) -> None:
  """The preset `name` on an empty --data_dir: exit 2 before anything is
  written, with one error line that starts `tff-dp: error: <error_start>`
  and says where to put `file_name`."""
  data_dir = tmp_path / 'empty'
  data_dir.mkdir()
  output_dir = tmp_path / 'runs'
  result = programs.run_train(f'--flagfile={preset(name)}',
                              f'--data_dir={data_dir}',
                              f'--output_dir={output_dir}')
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  errors = [
      line for line in result.stderr.splitlines()
      if line.startswith('tff-dp: error:')
  ]
  assert len(errors) == 1, result.stderr[-2000:]
  assert errors[0].startswith(f'tff-dp: error: {error_start}')
  assert f'put {file_name} in {data_dir}' in errors[0]
  assert not output_dir.exists()


def train_one_round(tmp_path,
                    name: str,
                    data_dir,
                    *flags: str,
                    program: str = programs.TRAIN):
  """Trains the preset `name` for one round on the fake cache in `data_dir`.

  Checks what every preset's run claims: it ends well, its banner names the
  dataset and its `PROGRAM_CLIENTS` clients, and its summary one private
  round with a central epsilon.

  Args:
    tmp_path: The output directory; the run is its `name` subdirectory.
    name: The preset, and the dataset it trains on.
    data_dir: Holds a fake cache of `PROGRAM_CLIENTS` training clients.
    *flags: More flags for the program.
    program: The module that runs it (`programs.run_train`).

  Returns:
    The run's stdout, and its summary.json and config.json, read.
  """
  result = programs.run_train(f'--flagfile={preset(name)}',
                              '--rounds=1',
                              f'--clients_per_round={PROGRAM_COHORT}',
                              *flags,
                              f'--data_dir={data_dir}',
                              f'--output_dir={tmp_path}',
                              f'--run_name={name}',
                              program=program)
  assert result.returncode == 0, result.stderr[-3000:]
  # A DP run's banner: public facts only (N, shapes), no statistics.
  assert (f"Federated data '{name}': {PROGRAM_CLIENTS} clients"
          in result.stdout), result.stdout[-3000:]
  assert 'round 1/1' in result.stdout
  with open(os.path.join(tmp_path, name, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['population'] == PROGRAM_CLIENTS
  assert summary['rounds'] == 1 and summary['private']
  assert summary['guarantee_epsilon'] > 0
  with open(os.path.join(tmp_path, name, 'config.json')) as f:
    config = json.load(f)
  assert config['dataset'] == name
  return result.stdout, summary, config
