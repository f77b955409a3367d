"""The sweep and compare programs end to end, with real (tiny) training.

A tiny sweep (the smoke config, 2 noise multipliers x 2 seeds, 3 rounds, no
twin) writes its table, plots and hparams; compare tabulates two of its runs;
bad input is one line and exit 2; and a sweep stopped by SIGTERM while its
second run trains finishes when run again, without rerunning the first, with
the interrupted run's epsilon equal to an uninterrupted one's.
"""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from tests.helpers import REPO_ROOT
from tests.helpers import programs

pytestmark = pytest.mark.e2e

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _run(program, *args, timeout=300):
  """`python -m tff_dp.cli.<program> ARGS...`, from the repository root."""
  return programs.run_train(*args,
                            program=f'tff_dp.cli.{program}',
                            timeout=timeout)


def _sweep_args(output_dir, *extra):
  return (f'--flagfile={_SMOKE}', f'--output_dir={output_dir}',
          '--run_name=tiny', '--nononprivate_twin', *extra)


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('sweeps')
  result = _run(
      'sweep',
      *_sweep_args(output_dir, '--grid=noise_multiplier=0.5,0.8', '--seeds=2'))
  return result, os.path.join(output_dir, 'tiny')


def _session_hparams(run_dir):
  found = []
  for path in glob.glob(os.path.join(run_dir, 'tensorboard', 'events.*')):
    for raw in event_file_loader.RawEventFileLoader(path).Load():
      event = event_pb2.Event.FromString(raw)
      for value in event.summary.value:
        if value.tag == hparams_metadata.SESSION_START_INFO_TAG:
          info = hparams_metadata.parse_session_start_info_plugin_data(
              value.metadata.plugin_data.content)
          found.append({
              k: v.number_value
              for k, v in info.hparams.items()
              if v.WhichOneof('kind') == 'number_value'
          })
  return found


def test_a_tiny_sweep_writes_its_table_plots_and_hparams(tiny_sweep):
  result, sweep_dir = tiny_sweep
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'sweep: 4/4 runs done' in result.stdout
  with open(os.path.join(sweep_dir, 'results.md')) as f:
    table = f.read().splitlines()
  assert table[0].startswith('| setting | runs | target epsilon | '
                             'epsilon (RDP) | epsilon (PLD) | delta |')
  assert [row.split(' | ')[:2] for row in table[2:]
         ] == [['| noise_multiplier=0.5', '2'], ['| noise_multiplier=0.8', '2']]
  with open(os.path.join(sweep_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  for row, noise in zip(rows, ('0.5', '0.8')):
    run = os.path.join(sweep_dir, f'noise_multiplier-{noise}_seed0')
    with open(os.path.join(run, 'summary.json')) as f:
      summary = json.load(f)
    # Released values, as the run released them.
    assert float(row['epsilon_pld']) == summary['epsilon']['pld']
    assert row['rounds'] == '3' and row['delta'] == '0.001'
  for name in ('accuracy_vs_epsilon.png', 'epsilon_vs_rounds.png',
               'accuracy_vs_rounds.png'):
    with open(os.path.join(sweep_dir, name), 'rb') as f:
      data = f.read()
    assert data.startswith(_PNG_SIGNATURE) and len(data) > 10_000, name
  with open(os.path.join(sweep_dir, 'nonprivate', 'wall_times.md')) as f:
    assert 'NOT covered by the privacy guarantee' in f.read()
  for noise in (0.5, 0.8):
    for seed in (0, 1):
      run = os.path.join(sweep_dir, f'noise_multiplier-{noise:g}_seed{seed}')
      [hparams] = _session_hparams(run)
      assert hparams['seed'] == seed and hparams['noise_multiplier'] == noise


def test_compare_tabulates_existing_runs(tiny_sweep, tmp_path):
  _, sweep_dir = tiny_sweep
  runs = [
      os.path.join(sweep_dir, name)
      for name in ('noise_multiplier-0.5_seed0', 'noise_multiplier-0.8_seed1')
  ]
  result = _run('compare', *runs, f'--output_dir={tmp_path}', '--run_name=both')
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'both' / 'results.md') as f:
    table = f.read()
  assert table == result.stdout.split('\n\n')[0] + '\n'
  assert '| noise_multiplier-0.5 | 1 |' in table
  assert '| noise_multiplier-0.8 | 1 |' in table
  assert os.path.getsize(tmp_path / 'both' / 'accuracy_vs_epsilon.png') > 10_000


@pytest.mark.parametrize('program, args, named', [
    ('sweep', ('--grid=noise_mutliplier=1,2',), '--grid=noise_mutliplier=1,2'),
    ('sweep', ('--grid=noise_multiplier=1,x',),
     "--grid=noise_multiplier=1,x: 'x' is not a number"),
    ('sweep', ('--grid=noise_multiplier=-1',), '--noise_multiplier=-1.0'),
    ('sweep', ('--target_epsilons=4,zero',), '--target_epsilons=4,zero'),
    ('sweep', ('--target_epsilons=',), '--target_epsilons='),
    ('sweep', ('--seeds=0',), '--seeds=0'),
    ('compare', ('/nonexistent/run',), '/nonexistent/run: no such directory'),
    ('compare', (REPO_ROOT,), f'{REPO_ROOT}: not a tff-dp run directory'),
    ('compare', (), 'no DIR given'),
])
def test_bad_input_is_one_line_and_exit_2(program, args, named, tmp_path):
  if program == 'sweep':
    args = (f'--flagfile={_SMOKE}', f'--output_dir={tmp_path}', *args)
  result = _run(program, *args, timeout=120)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert result.stderr.startswith(f'tff-dp-{program}: error: ')
  assert named in result.stderr
  assert os.listdir(tmp_path) == []  # Refused before anything was written.


def _wait_for(predicate, timeout=120):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.05)


@pytest.mark.slow
def test_a_stopped_sweep_finishes_without_rerunning_finished_runs(tmp_path):
  # Two settings with the same privacy cost: the first run is the
  # uninterrupted reference for the second, which is stopped mid-way.
  args = _sweep_args(tmp_path, '--grid=client_learning_rate=0.1,0.2',
                     '--rounds=40')
  first = tmp_path / 'tiny' / 'client_learning_rate-0.1_seed0'
  second = tmp_path / 'tiny' / 'client_learning_rate-0.2_seed0'
  sweep = subprocess.Popen([sys.executable, '-m', 'tff_dp.cli.sweep', *args],
                           cwd=REPO_ROOT,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
                           stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE,
                           text=True)
  try:
    _wait_for(lambda: (second / 'checkpoints').is_dir() and os.listdir(
        second / 'checkpoints'))
  finally:
    sweep.send_signal(signal.SIGTERM)
    _, stderr = sweep.communicate(timeout=120)
  assert sweep.returncode == 128 + signal.SIGTERM, stderr
  assert 'run the same command again to resume' in stderr
  assert not (second / 'summary.json').exists()
  finished = {p: os.stat(p).st_mtime_ns for p in first.rglob('*')}
  result = _run('sweep', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'finished before, not rerun: client_learning_rate-0.1_seed0' in (
      result.stdout)
  assert {p: os.stat(p).st_mtime_ns for p in first.rglob('*')} == finished
  reference = json.loads((first / 'summary.json').read_text())
  resumed = json.loads((second / 'summary.json').read_text())
  assert resumed['resumed_from'] is not None and resumed['rounds'] == 40
  assert resumed['epsilon'] == reference['epsilon']
  columns = ('round', 'privacy/epsilon_rdp', 'privacy/epsilon_pld')

  def series(run):
    with open(run / 'metrics.csv') as f:
      return [tuple(row[c] for c in columns) for row in csv.DictReader(f)]

  assert series(second) == series(first)  # Every round once, same charge.
