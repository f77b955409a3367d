"""The fault campaign (tools/fault_campaign.py) end to end, small.

Runs every case of the campaign once or twice (a few kills of the trainer,
one of its worker, one full disk, one variant of each file case: about ten
minutes, every run imports TensorFlow), checks the report's counts, then
shows that its final run checks catch a duplicated CSV round and an epsilon
off by one ulp, so that a passing campaign means something.
"""

import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import json_edits

# `python -m pytest` from the root puts it on sys.path; bare `pytest` does not.
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from tools import fault_runs

# pylint: enable=g-import-not-at-top,wrong-import-position

# The campaign trains in subprocesses (e2e): first in its tier with --run-slow.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_KILLS = 2
_ROUNDS = 3
# Report line -> how many tries the small campaign makes.
_COUNTS = {
    'kills survived': _KILLS,
    'worker kills survived': 1,
    'corruptions detected': 2,  # One released, one not.
    'foreign checkpoints refused': 1,
    'edited ledgers caught': 1,
    'hostile client ids read only their own rows': 1,
    'bad inputs refused': 2,  # feature_names=5, num_classes=0.
}


def _report_value(stdout, prefix):
  lines = [
      line.strip()
      for line in stdout.splitlines()
      if line.strip().startswith(prefix)
  ]
  assert len(lines) == 1, stdout
  return lines[0][len(prefix):].strip()


def _count(stdout, label):
  """(passed, tries) of a report line 'label: passed/tries (...)'."""
  match = re.match(r'(\d+)/(\d+)', _report_value(stdout, f'{label}:'))
  assert match, stdout
  return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope='module')
def campaign(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('campaign')
  result = subprocess.run([
      sys.executable, '-m', 'tools.fault_campaign', f'--kills={_KILLS}',
      '--worker_kills=1', '--disk_fulls=1', '--quick', '--seed=3',
      f'--rounds={_ROUNDS}', f'--output_dir={output_dir}', '--keep'
  ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=3600)
  return result, output_dir


def test_every_case_passes_and_is_counted(campaign):
  result, _ = campaign
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  stdout = result.stdout
  for label, tries in _COUNTS.items():
    assert _count(stdout, label) == (tries, tries), label
  disk_full = _report_value(stdout, 'disk-full survived:')
  if os.geteuid() == 0:
    assert disk_full.startswith('1/1'), stdout
  else:
    assert disk_full.startswith('skipped (not root'), stdout
  assert _report_value(stdout, 'hangs:') == '0'
  assert _report_value(stdout, 'TFF workers left running:').startswith('0 ')
  assert _report_value(stdout, 'client-data copies left:') == '0'
  assert 'FAILED' not in stdout


def test_kills_lose_no_released_round(campaign):
  result, _ = campaign
  assert _report_value(result.stdout, 'survived:') == f'{_KILLS}/{_KILLS}'
  # Persist-before-release: a kill never costs a released round (negative:
  # a charged, checkpointed round that was not yet released was kept).
  lost = _report_value(result.stdout, 'rounds lost per kill:').split()
  assert len(lost) == _KILLS
  assert all(int(n) <= 0 for n in lost), lost
  assert _report_value(result.stdout, 'epsilon mismatches:').startswith('0 ')


def test_the_run_checks_can_fail(campaign):
  _, output_dir = campaign
  run_dir = os.path.join(output_dir, 'kills', 'campaign')
  event, delta, epsilons = fault_runs.expected_epsilons(
      fault_runs.read_flagfile(fault_runs.SMOKE_CONFIG), _ROUNDS)

  def verify():
    return fault_runs.verify_run(run_dir,
                                 planned=_ROUNDS,
                                 event=event,
                                 delta=delta,
                                 epsilons=epsilons)

  problems, checks, mismatches = verify()
  assert (problems, mismatches) == ([], 0)
  assert checks == 2 * len(epsilons)

  kind = sorted(epsilons)[0]

  def one_ulp_more(summary):
    summary['epsilon'][kind] = math.nextafter(summary['epsilon'][kind],
                                              math.inf)

  json_edits.rewrite(os.path.join(run_dir, 'summary.json'), one_ulp_more)
  csv_path = os.path.join(run_dir, 'metrics.csv')
  with open(csv_path) as f:
    lines = f.read().splitlines()
  with open(csv_path, 'w') as f:
    f.write('\n'.join(lines + [lines[-1]]) + '\n')  # Last round twice.

  problems, _, mismatches = verify()
  assert mismatches == 1
  assert any(p.startswith(f'summary epsilon {kind}') for p in problems)
  assert any(p.startswith('CSV rounds') for p in problems)
