"""The fault campaign (benchmarks/fault_campaign.py) end to end, small.

Runs the campaign with a few kills (a few minutes: every attempt imports
TensorFlow), then shows that its final checks catch a duplicated CSV round
and an epsilon off by one ulp, so that a passing campaign means something.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# `python -m pytest` from the root puts it on sys.path; bare `pytest` does not.
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import fault_campaign
# pylint: enable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.slow

_KILLS = 3
_ROUNDS = 4


def _report_value(stdout, prefix):
  lines = [line for line in stdout.splitlines() if line.startswith(prefix)]
  assert len(lines) == 1, stdout
  return lines[0][len(prefix):].strip()


def test_small_campaign_survives_and_its_checks_can_fail(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.fault_campaign',
       f'--kills={_KILLS}', '--seed=3', f'--rounds={_ROUNDS}',
       f'--output_dir={tmp_path}', '--keep'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stdout + result.stderr
  assert _report_value(result.stdout, 'survived:') == f'{_KILLS}/{_KILLS}'
  # Persist-before-release: a kill never costs a released round (negative:
  # a charged, checkpointed round that was not yet released was kept).
  lost = _report_value(result.stdout, 'rounds lost per kill:').split()
  assert len(lost) == _KILLS
  assert all(int(n) <= 0 for n in lost), lost
  assert _report_value(result.stdout, 'epsilon mismatches:').startswith('0 ')

  run_dir = os.path.join(tmp_path, 'campaign')
  event, delta, epsilons = fault_campaign.expected_epsilons(
      fault_campaign.read_flagfile(fault_campaign.SMOKE_CONFIG), _ROUNDS)

  def verify():
    return fault_campaign.verify_run(run_dir, planned=_ROUNDS, event=event,
                                     delta=delta, epsilons=epsilons)

  problems, checks, mismatches = verify()
  assert (problems, mismatches) == ([], 0)
  assert checks == 2 * len(epsilons)

  summary_path = os.path.join(run_dir, 'summary.json')
  with open(summary_path) as f:
    summary = json.load(f)
  kind = sorted(epsilons)[0]
  summary['epsilon'][kind] = math.nextafter(summary['epsilon'][kind], math.inf)
  with open(summary_path, 'w') as f:
    json.dump(summary, f)
  csv_path = os.path.join(run_dir, 'metrics.csv')
  with open(csv_path) as f:
    lines = f.read().splitlines()
  with open(csv_path, 'w') as f:
    f.write('\n'.join(lines + [lines[-1]]) + '\n')  # Last round twice.

  problems, _, mismatches = verify()
  assert mismatches == 1
  assert any(p.startswith(f'summary epsilon {kind}') for p in problems)
  assert any(p.startswith('CSV rounds') for p in problems)
