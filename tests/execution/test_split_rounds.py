"""`./run.sh train --workers=...`: the main job's rounds split across three workers over mutual TLS.

Three worker programs (`./run.sh worker --tls`) on loopback, each its own
confined TFF worker behind stunnel; the driver reaches them through its own
stunnel (`tff_dp.execution.driver_tunnels`). At zero noise and with the same
cohorts (--insecure_sampling_seed), 3 rounds of the main job's model split
across the three workers release the same model as the single local
worker's run, to float tolerance; with noise, the ledger and epsilons are
the single-worker run's. Bad input (no certificates, the grouped path
without sharded data, a worker that is not there) is one line and exit 2.
"""

import glob
import json
import os
import time

import numpy as np
import portpicker
import pytest

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
_SAME_COHORTS = ('--insecure_sampling_seed=5', '--clients_per_call=1')


@pytest.fixture(name='pki', scope='module')
def fixture_pki(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('pki') / 'certs')
  certs.make_certs(out_dir=out, hosts=['127.0.0.1', 'localhost'])
  return out


@pytest.fixture(name='three_workers', scope='module')
def fixture_three_workers(pki, tmp_path_factory):
  served = []
  try:
    for i in range(3):
      served.append(
          workers.start_served_worker(
              pki, str(tmp_path_factory.mktemp(f'worker{i}')),
              portpicker.pick_unused_port()))
    yield served
  finally:
    for worker in served:
      worker.stop()


def _train(output_dir, run_name, *flags):
  return programs.run_train(f'--flagfile={_DEFAULT}',
                            '--rounds=3',
                            f'--output_dir={output_dir}',
                            f'--run_name={run_name}',
                            *_SAME_COHORTS,
                            *flags,
                            check=True)


def _split_flags(three_workers, pki):
  # One worker dialled by name: the certificate's names are checked.
  addresses = [w.address for w in three_workers[:2]]
  addresses.append(f'localhost:{three_workers[2].port}')
  return (f'--workers={",".join(addresses)}', f'--worker_certs={pki}')


def _final_state(run_dir):
  path = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))[-1]
  with np.load(os.path.join(path, 'state.npz')) as arrays:
    names = sorted(arrays.files, key=lambda n: int(n[4:]))
    return [arrays[name] for name in names]


def _connections(worker) -> int:
  with open(os.path.join(worker.logs_dir, 'stunnel.log')) as f:
    return f.read().count('accepted connection')


@pytest.mark.slow  # 25 s: two 3-round runs.
def test_zero_noise_split_across_three_workers_equals_one_worker(
    three_workers, pki, tmp_path):
  zero = ('--noise_multiplier=0', '--allow_zero_noise')
  before = [_connections(w) for w in three_workers]
  _train(tmp_path, 'split', *zero, *_split_flags(three_workers, pki))
  assert all(_connections(w) > n for w, n in zip(three_workers, before)), before
  _train(tmp_path, 'local', *zero)
  split = _final_state(tmp_path / 'split')
  local = _final_state(tmp_path / 'local')
  assert len(split) == len(local)
  for a, b in zip(split, local):
    if a.dtype.kind in 'fiu':
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # 21 s: two 3-round runs.
def test_with_noise_the_ledger_is_the_single_worker_runs(
    three_workers, pki, tmp_path):
  _train(tmp_path, 'split', *_split_flags(three_workers, pki))
  _train(tmp_path, 'local')
  for name in ('ledger.json',):
    with open(tmp_path / 'split' / name) as f:
      split = json.load(f)
    with open(tmp_path / 'local' / name) as f:
      local = json.load(f)
    assert split == local
  with open(tmp_path / 'split' / 'summary.json') as f:
    split = json.load(f)
  with open(tmp_path / 'local' / 'summary.json') as f:
    local = json.load(f)
  assert split['epsilon'] == local['epsilon']
  assert split['rounds'] == local['rounds'] == 3


@pytest.mark.parametrize('flags,expected', [
    (('--workers=127.0.0.1:7000',),
     '--workers=127.0.0.1:7000: needs --worker_certs'),
    (('--workers=127.0.0.1:7000', '--worker_certs=/nonexistent'),
     '--worker_certs=/nonexistent: missing ca.crt, driver.crt, driver.key'),
    (('--workers=127.0.0.1', '--worker_certs=/x'), '--workers'),
])
def test_bad_worker_flags_are_one_line_and_exit_2(flags, expected, tmp_path):
  result = programs.run_train(f'--flagfile={_DEFAULT}', '--rounds=1',
                              f'--output_dir={tmp_path}', *flags)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') <= 2, result.stderr
  assert expected in result.stderr, result.stderr


def test_the_grouped_path_with_workers_needs_sharded_data(pki, tmp_path):
  result = programs.run_train(f'--flagfile={_DEFAULT}', '--rounds=1',
                              f'--output_dir={tmp_path}',
                              '--workers=127.0.0.1:7000',
                              f'--worker_certs={pki}', '--clients_per_call=5')
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert ('--clients_per_call=5: the grouped path under --workers reads each '
          "worker's own shard") in result.stderr


@pytest.mark.slow  # 36 s: the 30 s connect deadline.
def test_an_unreachable_worker_fails_fast_naming_it(pki, tmp_path):
  port = portpicker.pick_unused_port()  # Nothing listens there.
  start = time.monotonic()
  result = programs.run_train(f'--flagfile={_DEFAULT}', '--rounds=1',
                              f'--output_dir={tmp_path}', '--run_name=r',
                              f'--workers=127.0.0.1:{port}',
                              f'--worker_certs={pki}')
  took = time.monotonic() - start
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(
      f'tff-dp: error: worker 127.0.0.1:{port} not reachable over mutual TLS')
  assert result.stderr.count('\n') == 1, result.stderr
  assert took < 90, took


@pytest.mark.slow  # About 80 s: the 30 s loss deadline and three runs.
def test_a_worker_lost_mid_run_stops_the_run_which_resumes_exactly(
    pki, tmp_path):
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  served = [
      workers.start_served_worker(pki, str(tmp_path / f'w{i}'), port)
      for i, port in enumerate(ports)
  ]
  flags = (f'--flagfile={_DEFAULT}', f'--output_dir={tmp_path}',
           '--run_name=lost', '--log_every=1', *_SAME_COHORTS,
           f'--workers={served[0].address},{served[1].address}',
           f'--worker_certs={pki}')
  try:
    run = programs.start_train(*flags, '--rounds=30')
    for line in run.stdout:
      if line.startswith('round 3/'):
        break
    served[1].process.kill()  # SIGKILL: its worker and stunnel die with it.
    killed = time.monotonic()
    _, err = run.communicate(timeout=120)
    took = time.monotonic() - killed
    assert run.returncode == 3, err
    assert err.count('\n') == 1, err
    assert f'worker {served[1].address} has refused calls' in err
    assert 'Nothing of the interrupted round was released' in err
    assert took < 60, took
    run_dir = os.path.join(tmp_path, 'lost')
    assert workers.wait_until_gone(
        workers.worker_pids_from_log(os.path.join(run_dir,
                                                  'worker.log'))) == []
    assert not workers.is_running(served[1].worker_pid)
    assert not workers.is_running(served[1].proxy_pid)
    served[1] = workers.start_served_worker(pki, str(tmp_path / 'w1b'),
                                            ports[1])
    resumed = programs.run_train(*flags, '--rounds=6', check=True)
    assert 'resuming after round' in resumed.stdout
  finally:
    for worker in served:
      worker.stop()
  straight = programs.run_train(f'--flagfile={_DEFAULT}',
                                f'--output_dir={tmp_path}',
                                '--run_name=straight',
                                '--rounds=6',
                                *_SAME_COHORTS,
                                check=True)
  del straight
  with open(os.path.join(tmp_path, 'lost', 'summary.json')) as f:
    lost = json.load(f)
  with open(os.path.join(tmp_path, 'straight', 'summary.json')) as f:
    uninterrupted = json.load(f)
  assert lost['rounds'] == uninterrupted['rounds'] == 6
  assert lost['epsilon'] == uninterrupted['epsilon']
