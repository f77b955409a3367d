"""Data locality: three workers, each reading only its own shard, through the TLS proxies.

A table of scikit-learn's digits is imported with `--shards=3`; each worker
program (`./run.sh worker --tls --data_dir=...`) gets its own copy of one
shard directory (no shared files), and the driver's directory holds only the
manifest and the server's test set. The main job's model and settings train
3 rounds on the grouped path with each sampled client routed to its shard's
worker. At zero noise, with the same cohorts (--insecure_sampling_seed), the
released model equals the single-machine run's (the same import loaded into
memory on one machine, same seeds) to float tolerance; with noise the ledger
and epsilon are the single-machine run's. A driver given the manifest of
another import is refused before round 1 in one line naming the worker and
the shard. With --on_worker_loss=continue, a worker killed mid-run is left
out: the run completes, its shard's clients are stated as unreachable from
that round on, and the ledger is the uninterrupted run's.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import portpicker
import pytest
import sklearn.datasets

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tests.helpers import workers
from tff_dp.execution import certs
from tff_dp.execution import tls_proxy

pytestmark = [
    pytest.mark.skipif(tls_proxy.stunnel_binary() is None,
                       reason='stunnel is not installed (./run.sh test '
                       'installs it)'), pytest.mark.e2e
]

_DEFAULT = os.path.join(REPO_ROOT, 'configs', 'default.cfg')
_SAME_COHORTS = ('--insecure_sampling_seed=5',)


def _import(table, out, seed):
  subprocess.run([
      sys.executable, '-m', 'tff_dp.cli.import_data', f'--input={table}',
      f'--output={out}', '--client_column=client', '--label_column=y',
      '--num_classes=10', '--shards=3', f'--seed={seed}'
  ],
                 cwd=REPO_ROOT,
                 check=True,
                 capture_output=True)
  return os.path.join(out, 'manifest.json')


@pytest.fixture(name='layout', scope='module')
def fixture_layout(tmp_path_factory):
  """Per-host directories: the driver's manifest, one shard per worker."""
  base = tmp_path_factory.mktemp('hosts')
  digits = sklearn.datasets.load_digits()
  rng = np.random.default_rng(0)
  table = str(base / 'digits.npz')
  np.savez(table,
           client=np.array(
               [f'c{i:03d}' for i in rng.integers(0, 300, len(digits.target))]),
           x=(digits.data / 16.0).astype(np.float32),
           y=digits.target)
  full = _import(table, str(base / 'import'), seed=0)
  driver = base / 'driver'
  driver.mkdir()
  for name in ('manifest.json', 'test.npz'):
    shutil.copy(os.path.join(base, 'import', name), driver / name)
  hosts = []
  for s in range(3):
    shutil.copytree(base / 'import' / f'shard-{s}',
                    base / f'host{s}' / f'shard-{s}')
    hosts.append(str(base / f'host{s}' / f'shard-{s}'))
  other = _import(table, str(base / 'other'), seed=1)
  return {
      'full': full,
      'driver': str(driver / 'manifest.json'),
      'hosts': hosts,
      'other': other
  }


@pytest.fixture(name='pki', scope='module')
def fixture_pki(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('pki') / 'certs')
  certs.make_certs(out_dir=out, hosts=['127.0.0.1', 'localhost'])
  return out


@pytest.fixture(name='sharded_workers', scope='module')
def fixture_sharded_workers(pki, layout, tmp_path_factory):
  served = []
  try:
    # Listed in another order than the shards': routing follows what each
    # worker says it serves.
    for s in (2, 0, 1):
      served.append(
          workers.start_served_worker(pki,
                                      str(tmp_path_factory.mktemp(f'w{s}')),
                                      portpicker.pick_unused_port(),
                                      data_dir=layout['hosts'][s]))
    yield served
  finally:
    for worker in served:
      worker.stop()


def _train(output_dir, run_name, client_data, *flags, check=True):
  return programs.run_train(f'--flagfile={_DEFAULT}',
                            '--rounds=3',
                            '--dataset=sqlite',
                            f'--client_data={client_data}',
                            f'--output_dir={output_dir}',
                            f'--run_name={run_name}',
                            *_SAME_COHORTS,
                            *flags,
                            check=check)


def _worker_flags(served, pki):
  return (f'--workers={",".join(w.address for w in served)}',
          f'--worker_certs={pki}')


def _final_state(run_dir):
  path = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))[-1]
  with np.load(os.path.join(path, 'state.npz')) as arrays:
    names = sorted(arrays.files, key=lambda n: int(n[4:]))
    return [arrays[name] for name in names]


@pytest.mark.slow  # About 40 s: two 3-round runs.
def test_zero_noise_sharded_across_three_workers_equals_one_machine(
    sharded_workers, pki, layout, tmp_path):
  zero = ('--noise_multiplier=0', '--allow_zero_noise')
  result = _train(tmp_path, 'split', layout['driver'], *zero,
                  *_worker_flags(sharded_workers, pki))
  assert 'routed to the worker holding its shard' in result.stdout
  # The driver's disk holds no shard: only the manifest and the test set.
  assert sorted(os.listdir(os.path.dirname(
      layout['driver']))) == ['manifest.json', 'test.npz']
  _train(tmp_path, 'local', layout['full'], *zero)
  split = _final_state(tmp_path / 'split')
  local = _final_state(tmp_path / 'local')
  assert len(split) == len(local)
  for a, b in zip(split, local):
    if a.dtype.kind in 'fiu':
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(a, b)
  # Training moved the model: the runs are not equal by doing nothing.
  first = sorted(glob.glob(str(tmp_path / 'split' / 'checkpoints' /
                               'round_*')))[0]
  with np.load(os.path.join(first, 'state.npz')) as arrays:
    assert any(
        arrays[n].dtype.kind == 'f' and arrays[n].shape == a.shape and
        not np.allclose(arrays[n], a)
        for n, a in zip(sorted(arrays.files, key=lambda n: int(n[4:])), split))


@pytest.mark.slow  # About 35 s: two 3-round runs.
def test_with_noise_the_ledger_is_the_single_machine_runs(
    sharded_workers, pki, layout, tmp_path):
  _train(tmp_path, 'split', layout['driver'],
         *_worker_flags(sharded_workers, pki))
  _train(tmp_path, 'local', layout['full'])
  with open(tmp_path / 'split' / 'ledger.json') as f:
    split = json.load(f)
  with open(tmp_path / 'local' / 'ledger.json') as f:
    local = json.load(f)
  assert split == local
  with open(tmp_path / 'split' / 'summary.json') as f:
    split = json.load(f)
  with open(tmp_path / 'local' / 'summary.json') as f:
    local = json.load(f)
  assert split['epsilon'] == local['epsilon']
  assert split['rounds'] == local['rounds'] == 3


@pytest.mark.slow  # About 15 s: the driver starts, probes and stops.
def test_workers_serving_another_imports_shards_are_refused_naming_them(
    sharded_workers, pki, layout, tmp_path):
  result = _train(tmp_path,
                  'other',
                  layout['other'],
                  *_worker_flags(sharded_workers, pki),
                  check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert (f'worker {sharded_workers[0].address} serves shard 2 of another '
          'import') in result.stderr
  assert not os.path.exists(tmp_path / 'other' / 'ledger.json')


@pytest.mark.slow  # 156 s here: three workers, the 30 s loss deadline, two runs.
def test_a_lost_worker_with_continue_leaves_its_shard_out_and_says_so(
    pki, layout, tmp_path):
  served = [
      workers.start_served_worker(pki,
                                  str(tmp_path / f'w{s}'),
                                  portpicker.pick_unused_port(),
                                  data_dir=layout['hosts'][s]) for s in range(3)
  ]
  try:
    run = programs.start_train(f'--flagfile={_DEFAULT}', '--rounds=6',
                               '--dataset=sqlite',
                               f'--client_data={layout["driver"]}',
                               f'--output_dir={tmp_path}', '--run_name=lost',
                               '--log_every=1', *_SAME_COHORTS,
                               *_worker_flags(served,
                                              pki), '--on_worker_loss=continue')
    for line in run.stdout:
      if line.startswith('round 2/'):
        break
    served[2].process.kill()  # SIGKILL: its worker and stunnel die with it.
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    assert f'WARNING: worker {served[2].address} lost in round' in out
    assert 'the 79 clients of shard 2 are unreachable' in out or (
        'clients of shard 2 are unreachable' in out)
  finally:
    for worker in served:
      worker.stop()
  run_dir = tmp_path / 'lost'
  with open(run_dir / 'worker_losses.json') as f:
    (event,) = json.load(f)
  assert event['worker'] == served[2].address and event['shard'] == 2
  assert event['round'] >= 3
  statement = (run_dir / 'privacy_statement.txt').read_text()
  assert 'Workers lost during the run' in statement
  assert f"shard 2: its {event['clients_unreachable']} clients" in statement
  # Every round charged as planned: the ledger of an uninterrupted run.
  _train(tmp_path, 'uninterrupted', layout['full'], '--rounds=6')
  with open(run_dir / 'ledger.json') as f:
    lost = json.load(f)
  with open(tmp_path / 'uninterrupted' / 'ledger.json') as f:
    assert lost == json.load(f)
  with open(run_dir / 'summary.json') as f:
    assert json.load(f)['rounds'] == 6
