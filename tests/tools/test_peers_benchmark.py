"""The peers benchmark (`./run.sh bench --peers`): its plan, environments and report.

Pure Python: the peers' environments (Flower, pfl) are made only by the
benchmark itself, never by the suite (they need PyPI and minutes). What is
checked here is what the benchmark decides before and after the engines run:
the rotation, each engine's job, the environment's cache key, and that the
ratios and the table come from the engines' results. `run_job`'s peak memory
is checked on a real subprocess tree.
"""

import os
import sys

import pytest

from tests.helpers import REPO_ROOT

if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import peer_envs
from benchmarks import peers
from benchmarks import run_all

# pylint: enable=g-import-not-at-top,wrong-import-position


def test_every_engine_runs_once_per_alternation_in_rotating_order():
  count = len(peers.ENGINES)
  orders = [peers.order(a) for a in range(count)]
  for engines in orders:
    assert sorted(engines) == sorted(peers.ENGINES)
  # Each engine takes every position once over as many alternations.
  for position in range(count):
    assert sorted(o[position] for o in orders) == sorted(peers.ENGINES)


def test_jobs_run_the_same_workloads_with_each_engines_interpreter():
  workloads = peers.peer_workloads(quick=True)
  assert [w.family for w in workloads] == ['W1', 'W2']
  pythons = {'flower': '/envs/flower/bin/python', 'pfl': '/envs/pfl/bin/python'}
  jobs = {
      e: peers.engine_job(e, workloads, pythons)
      for e in peers.ENGINES
      if e != 'program'
  }
  for job in jobs.values():
    assert [r['workload'] for r in job['spec']['rows']
           ] == [w.to_json() for w in workloads]
  assert jobs['flower']['python'] == pythons['flower']
  assert jobs['pfl']['module'] == 'benchmarks.peer_pfl'
  assert 'python' not in jobs['tff-dp'] and 'python' not in jobs['floor']
  assert jobs['tff-dp']['spec']['rows'][0]['mechanism'] == 'gaussian_fixed'


def test_environment_is_keyed_by_the_lock_and_reused_only_when_ready(
    tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  lock = tmp_path / 'x.lock'
  lock.write_text('six==1.16.0\n')
  peer = peer_envs.Peer(name='x', version='1', module='m')
  monkeypatch.setattr(peer_envs.Peer, 'lock_path',
                      property(lambda _: str(lock)))
  first = peer_envs.env_dir(peer)
  assert first.startswith(str(tmp_path / 'tff-dp' / 'peers' / 'x-'))
  lock.write_text('six==1.17.0\n')
  assert peer_envs.env_dir(peer) != first
  assert not peer_envs.is_ready(peer)
  os.makedirs(peer_envs.env_dir(peer))
  open(os.path.join(peer_envs.env_dir(peer), '.tff-dp-ready'), 'w').close()
  assert peer_envs.is_ready(peer)
  # Ready: ensure_env returns without running venv or pip.
  assert peer_envs.ensure_env(peer, log_path=str(tmp_path / 'log')) == \
      os.path.join(peer_envs.env_dir(peer), 'bin', 'python')
  assert not (tmp_path / 'log').exists()


def test_every_peer_has_a_committed_lock_pinning_its_release():
  for peer in peer_envs.PEERS:
    with open(peer.lock_path) as f:
      pins = [
          line.strip()
          for line in f
          if line.strip() and not line.startswith('#')
      ]
    assert all('==' in pin for pin in pins), peer.name
    name = {'flower': 'flwr', 'pfl': 'pfl'}[peer.name]
    assert f'{name}=={peer.version}' in pins


def _run(seconds, start, pss):
  return {
      'ok': True,
      'error': None,
      'seconds_per_round': seconds,
      'time_to_first_round_s': start,
      'peak_rss_mb': pss + 10,
      'peak_pss_mb': pss,
      'wall_s': 1.0
  }


def test_ratios_and_table_come_from_the_engines_results():
  workloads = peers.peer_workloads(quick=True)
  w1, w2 = (w.name for w in workloads)
  runs = {
      'tff-dp': [_run({
          w1: 0.1,
          w2: 1.0
      }, 6.0, 600.0)],
      'program': [_run({}, 4.5, 700.0)],
      'floor': [_run({
          w1: 0.05,
          w2: 0.8
      }, 3.0, 300.0)],
      'flower': [_run({
          w1: 2.0,
          w2: 4.0
      }, 20.0, 1600.0)],
      'pfl': [_run({
          w1: 0.3,
          w2: 3.0
      }, 5.0, 400.0)],
  }
  ratios = peers.ratios(runs, workloads)['alternation 1']
  assert ratios[f'flower/tff-dp {w1}'] == pytest.approx(20.0)
  assert ratios[f'pfl/tff-dp {w2}'] == pytest.approx(3.0)
  # The start target is the program's; the engine's is printed beside it.
  assert ratios['program/pfl time to first round'] == pytest.approx(0.9)
  # pfl's peak covers W2 too: no memory ratio for the W1-only program.
  assert 'program/pfl peak PSS' not in ratios
  assert ratios['tff-dp/pfl time to first round'] == pytest.approx(1.2)
  assert ratios['tff-dp/pfl peak PSS'] == pytest.approx(1.5)
  report = {
      'mode': 'quick',
      'started_utc': 't',
      'cpus': 2,
      'load_average': {
          'start': [0],
          'end': [0]
      },
      'workloads': [w.to_json() for w in workloads],
      'runs': runs,
      'ratios': peers.ratios(runs, workloads)
  }
  text = peers.format_report(report)
  assert '2.000' in text and '1600 (1610)' in text and 'FAILED' not in text


def _run_engine(tmp_path,
                monkeypatch,
                child: str,
                poll_s: float,
                pause_s: float = 0.0):
  """`run_all.run_job` on an engine that sleeps `pause_s` and then runs
  `child` in a subprocess (a process of the tree other than the engine)."""
  engine = tmp_path / 'engine.py'
  engine.write_text(
      'import subprocess, sys, time\n'
      f'time.sleep({pause_s})\n'
      f'subprocess.run([sys.executable, "-c", {child!r}], check=True)\n')
  job = {
      'name': 'fake',
      'module': 'engine',
      'spec': {},
      'poll_s': poll_s,
      'python': sys.executable
  }
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  monkeypatch.setattr(run_all, '_engine_env', lambda: env)
  record = run_all.run_job(job, str(tmp_path), timeout_s=60)
  assert record['returncode'] == 0
  return record['peak_tree_memory']


def test_run_job_reports_the_peak_memory_of_the_whole_process_tree(
    tmp_path, monkeypatch):
  # The engine starts a child that holds ~200 MiB; the tree's peak must
  # count the child, not only the engine process.
  child = ('import time; b = bytearray(200 * 2**20); '
           'b[::4096] = b"x" * len(b[::4096]); time.sleep(2)')
  peak = _run_engine(tmp_path, monkeypatch, child, poll_s=0.2)
  assert peak['rss_mb'] > 200
  assert 200 < peak['pss_mb'] < 400


def test_run_job_keeps_a_peak_that_falls_between_polls(tmp_path, monkeypatch):
  # The child holds ~200 MiB for a moment (a poll sees it at most by luck)
  # and frees it; its high-water mark (VmHWM) counts it at every later poll.
  child = ('import time; b = bytearray(200 * 2**20); '
           'b[::4096] = b"x" * len(b[::4096]); del b; time.sleep(2)')
  peak = _run_engine(tmp_path, monkeypatch, child, poll_s=0.4, pause_s=0.5)
  assert peak['hwm_sum_mb'] > 200
