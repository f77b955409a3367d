"""Every preset's header says what it shows and, offline, what it reaches.

The "Measured" line's epsilons are a tested claim: they must agree, to two
significant digits, with what `./run.sh epsilon --flagfile=...` plans for the
same flags (`run_privacy.planned_tracker`, pure Python, no training). The
accuracy is a measurement and is only checked for its form and its rounds.
"""

import os
import re

from absl import flags
import pytest

from tests import helpers
from tff_dp.cli import cli_flags
from tff_dp.data import registry
from tff_dp.program import prepare
from tff_dp.program import run_privacy

_CONFIGS = os.path.join(helpers.REPO_ROOT, 'configs')
CONFIGS = sorted(n for n in os.listdir(_CONFIGS) if n.endswith('.cfg'))
_MEASURED = re.compile(r'^# Measured \((\d{4}-\d{2}-\d{2}), [^)]+\): '
                       r'accuracy (0\.\d+)(?: \(mean of \d+ runs, sd '
                       r'0\.\d+\))? after (\d+) rounds; (.+)\.$')
_CENTRAL = re.compile(r'^central epsilon ([\d.e+]+) \((PLD|RDP), '
                      r'delta ([\d.e+-]+)\)$')
_LOCAL = re.compile(r'^local epsilon ([\d.e+]+) \(.+\)$')
_RECORD = re.compile(r'^record-level epsilon ([\d.e+]+) \(worst silo, '
                     r'delta ([\d.e+-]+)\)$')


def _header(name):
  with open(os.path.join(_CONFIGS, name)) as f:
    lines = f.read().splitlines()
  header = []
  for line in lines:
    if not line.startswith('#'):
      break
    header.append(line)
  return header


def _flags(name):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', f'--flagfile={os.path.join(_CONFIGS, name)}'])
  return fv


def _two_digits(value):
  return float(f'{value:.2g}')


def _clauses(line):
  """The guarantee clauses after 'rounds; ' (split at '; ' outside parens)."""
  clauses, depth, current = [], 0, ''
  for char in line:
    depth += {'(': 1, ')': -1}.get(char, 0)
    if char == ';' and depth == 0:
      clauses.append(current.strip())
      current = ''
    else:
      current += char
  return [*clauses, current.strip()]


@pytest.mark.parametrize('name', CONFIGS)
def test_header_has_a_description(name):
  header = _header(name)
  assert header, f'{name}: no header comment'
  assert len(header[0].lstrip('# ').strip()) >= 20, (
      f'{name}: the first line should say what the preset shows')


@pytest.mark.parametrize('name', CONFIGS)
def test_offline_header_numbers_are_the_planned_ones(name):
  fv = _flags(name)
  measured = [line for line in _header(name) if line.startswith('# Measured')]
  if not registry.spec(fv.dataset).offline:
    # TFF's benchmark files cannot be fetched here: no measurement required.
    return
  assert len(measured) == 1, f'{name}: one "# Measured (...)" line expected'
  match = _MEASURED.match(measured[0])
  assert match, f'{name}: malformed Measured line: {measured[0]!r}'
  assert int(match[3]) == fv.rounds, f'{name}: measured rounds != --rounds'
  prepared = prepare.prepare_run(cli_flags.config_from_flags(fv),
                                 calibrate_noise=False)
  plan = run_privacy.planned_tracker(prepared.config, prepared.data)
  central = local = record = None
  for clause in _clauses(match[4]):
    if clause == 'not private':
      assert not plan.guarantees(), f'{name}: the plan has a guarantee'
    elif m := _CENTRAL.match(clause):
      central = m
    elif m := _LOCAL.match(clause):
      local = m
    elif m := _RECORD.match(clause):
      record = m
    else:
      raise AssertionError(f'{name}: unknown guarantee {clause!r}')
  assert (central is not None) == bool(plan.central_claim), name
  if central is not None:
    epsilons = {k.value.upper(): v for k, v in plan.epsilons().items()}
    assert _two_digits(float(central[1])) == _two_digits(
        epsilons[central[2]]), (name, epsilons)
    assert float(central[3]) == fv.delta, name
  planned_local = plan.local_guarantee()
  assert (local is not None) == (planned_local is not None), name
  if local is not None:
    assert _two_digits(float(local[1])) == _two_digits(
        planned_local.epsilon), (name, planned_local.epsilon)
  planned_record = plan.record_level_report()
  assert (record is not None) == (planned_record is not None), name
  if record is not None:
    assert _two_digits(float(record[1])) == _two_digits(
        planned_record.worst_epsilon()), (name, planned_record.worst_epsilon())
    assert float(record[2]) == fv.delta, name
