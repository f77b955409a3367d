"""A run stopped before its planned rounds still states what it released.

Ctrl-C or SIGTERM during training used to leave metrics.csv rows and a
ledger but no privacy_statement.txt. The statement of such a run covers the
rounds its newest checkpoint charges (what `./run.sh epsilon --run_dir`
reports, every released row among them), says after which round of the
planned ones it stopped, and takes each epsilon from the accountant over
those events, never the planned total. The runs are the smoke preset's,
in-process through `tff_dp.train` (a few seconds each); the epsilon program
then reads the same run directory.
"""

import csv
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import flag_configs
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.program import privacy_statement
from tff_dp.program import run_privacy
from tff_dp.program import run_statement

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_DELTA = 1e-3  # configs/smoke.cfg's.


class _Clients:
  population = 40  # configs/smoke.cfg's.


def test_the_stopped_line_names_the_charged_and_the_planned_rounds():
  config = flag_configs.smoke_config(rounds=5, run_name='r')
  tracker = run_privacy.planned_tracker(config, _Clients())
  text = privacy_statement.privacy_statement(config,
                                             population=40,
                                             rounds_run=5,
                                             privacy=tracker,
                                             stopped='interrupted (SIGTERM)')
  assert ('STOPPED EARLY: interrupted (SIGTERM) after round 5 of the planned '
          '5.') in text
  assert '--run_name=r' in text
  nothing = privacy_statement.privacy_statement(config,
                                                population=40,
                                                rounds_run=0,
                                                privacy=tracker,
                                                stopped='interrupted (SIGINT)')
  assert 'before its first round was charged' in nothing
  ended = privacy_statement.privacy_statement(config,
                                              population=40,
                                              rounds_run=5,
                                              privacy=tracker)
  assert 'STOPPED' not in ended


@pytest.mark.parametrize('error, words', [
    (KeyboardInterrupt(), 'interrupted (SIGINT, Ctrl-C)'),
    (SystemExit(3), 'interrupted (SystemExit)'),
    (RuntimeError('client 17 has 3 examples'), 'stopped by an error '
     '(RuntimeError)'),
])
def test_why_a_run_stopped_never_quotes_an_error_message(error, words):
  assert run_statement.stopped_words(error) == words


def test_a_terminated_run_names_its_signal():
  import signal  # pylint: disable=g-import-not-at-top

  from tff_dp.cli import signals  # pylint: disable=g-import-not-at-top
  assert run_statement.stopped_words(signals.Terminated(
      signal.SIGTERM)) == 'interrupted (SIGTERM)'


def _stated_epsilons(statement):
  return {
      kind:
          float(
              re.search(rf'^Epsilon \({re.escape(row.words)}\): (\S+)\.$',
                        statement, re.MULTILINE)[1])
      for kind, row in accounting.ACCOUNTANTS.items()
      if f'Epsilon ({row.words})' in statement
  }


def _check_statement_covers_the_ledger(run_dir, *, rounds, planned):
  """The statement says `rounds` of `planned`, with the ledger's epsilons."""
  with open(os.path.join(run_dir, 'privacy_statement.txt'),
            encoding='utf-8') as f:
    statement = f.read()
  assert (f'after round {rounds} of the planned {planned}.') in statement
  assert f'Rounds released: {rounds}.' in statement
  ledger = privacy_ledger.PrivacyLedger.load(
      os.path.join(run_dir, 'ledger.json'))
  assert ledger.rounds == rounds
  stated = _stated_epsilons(statement)
  assert stated
  event = ledger.events[-1]
  for kind, eps in stated.items():
    assert eps == pytest.approx(ledger.epsilon(delta=_DELTA, accountant=kind),
                                rel=1e-3)
    # Never the planned total's (which is larger).
    planned_eps = ledger.epsilon_with(*[event] * (planned - rounds),
                                      delta=_DELTA,
                                      accountant=kind)
    assert eps < planned_eps / 1.01
  with open(os.path.join(run_dir, 'metrics.csv'), encoding='utf-8') as f:
    released = [int(row['round']) for row in csv.DictReader(f)]
  assert released and max(released) <= rounds
  return stated


@pytest.mark.tff
@pytest.mark.e2e
def test_an_interrupted_run_states_the_epsilon_of_its_released_rounds(tmp_path):
  import tff_dp  # pylint: disable=g-import-not-at-top

  def interrupt(round_num, values):
    del values
    if round_num == 2:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    tff_dp.train(flagfile=_SMOKE,
                 rounds=5,
                 rounds_per_call=1,
                 output_dir=str(tmp_path),
                 run_name='run',
                 on_round=interrupt)
  run_dir = str(tmp_path / 'run')
  stated = _check_statement_covers_the_ledger(run_dir, rounds=2, planned=5)
  # `./run.sh epsilon --run_dir` (from the verified checkpoint) agrees.
  result = subprocess.run(
      [sys.executable, '-m', 'tff_dp.cli.epsilon', f'--run_dir={run_dir}'],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      check=False)
  assert result.returncode == 0, result.stderr
  assert 'checksums verified' in result.stdout and '2 rounds' in result.stdout
  assert 'warning' not in result.stdout
  for kind, eps in stated.items():
    printed = re.search(rf'^epsilon \({kind.value}\): (\S+)$', result.stdout,
                        re.MULTILINE)
    assert float(printed[1]) == pytest.approx(eps, rel=1e-3)


@pytest.mark.tff
def test_a_round_charged_but_not_checkpointed_is_not_in_the_statement(
    tmp_path, monkeypatch):
  """SIGTERM lands after round 3 was charged in memory, before its
  checkpoint: nothing of round 3 was released, and the statement, ledger.json
  and the checkpoint all charge 2 rounds."""
  import signal  # pylint: disable=g-import-not-at-top

  import tff_dp  # pylint: disable=g-import-not-at-top
  from tff_dp.cli import signals  # pylint: disable=g-import-not-at-top
  from tff_dp.program import checkpoint  # pylint: disable=g-import-not-at-top
  save = checkpoint.CheckpointManager.save

  def save_until_round_3(self, round_num, *args, **kwargs):
    if round_num == 3:
      raise signals.Terminated(signal.SIGTERM)
    return save(self, round_num, *args, **kwargs)

  monkeypatch.setattr(checkpoint.CheckpointManager, 'save', save_until_round_3)
  with pytest.raises(signals.Terminated):
    tff_dp.train(flagfile=_SMOKE,
                 rounds=5,
                 rounds_per_call=1,
                 output_dir=str(tmp_path),
                 run_name='run')
  run_dir = str(tmp_path / 'run')
  _check_statement_covers_the_ledger(run_dir, rounds=2, planned=5)
  with open(os.path.join(run_dir, 'privacy_statement.txt'),
            encoding='utf-8') as f:
    assert 'STOPPED EARLY: interrupted (SIGTERM)' in f.read()
