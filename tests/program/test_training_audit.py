"""The audit of a configuration's training (`./run.sh audit`, the default kind).

The program trains the smoke config three times (canaries, their noise-off
twin, production), prints one table with the accuracies and the membership
attack, and writes the runs, audit.json, the plots and the attack's results
under nonprivate/ only. Pure parts (the runs' configurations, the number of
non-members) are checked without training.
"""

import json
import os

from absl import flags
import pytest

from tests.helpers import programs
from tff_dp.cli import cli_flags
from tff_dp.program import prepare
from tff_dp.program import training_audit


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['audit', '--flagfile=configs/smoke.cfg', *argv])
  return cli_flags.config_from_flags(fv)


def test_the_three_runs_differ_only_in_canaries_and_noise():
  config = _config('--max_epsilon=50')
  runs = training_audit.run_configs(config, 12)
  assert list(runs) == list(training_audit.RUNS)
  assert runs['canaries'].audit_canaries == 12
  assert runs['canaries'].noise_multiplier == config.noise_multiplier
  twin = runs['noise_off']
  assert (twin.audit_canaries, twin.noise_multiplier, twin.max_epsilon,
          twin.allow_zero_noise) == (12, 0.0, None, True)
  assert runs['production'] == config


def test_non_members_are_held_out_unless_the_run_holds_some_out():
  config = _config()
  assert training_audit.mia_clients_for(config, 700) == 70
  assert training_audit.mia_clients_for(config, 40) == 10
  assert training_audit.mia_clients_for(config, 100_000) == 1000
  federated = _config('--evaluation=federated', '--eval_clients=5')
  assert training_audit.mia_clients_for(federated, 700) == 0


def test_each_run_gets_a_new_directory_and_never_writes_over_one(tmp_path):
  """A run's directory that exists stops the audit before that run (no
  resume or overwrite of another's files); the runs before it got fresh,
  empty ones."""
  config = _config()
  data = prepare.prepare_run(config).data
  old = tmp_path / 'noise_off'
  old.mkdir()
  (old / 'summary.json').write_text('old')
  started = []

  def run(prepared, directory):
    started.append((os.path.basename(directory), os.listdir(directory)))
    return None  # Never read: the next run's directory is refused first.

  with pytest.raises(FileExistsError):
    training_audit.audit_training(config,
                                  data,
                                  str(tmp_path),
                                  canaries=8,
                                  beta=0.05,
                                  run=run)
  assert started == [('canaries', [])]
  assert os.listdir(old) == ['summary.json']
  assert (old / 'summary.json').read_text() == 'old'


@pytest.mark.e2e
def test_the_program_refuses_an_earlier_audits_directory(tmp_path):
  """`--run_name` of an existing directory: one line, exit 2, untouched."""
  old = tmp_path / 'a'
  old.mkdir()
  (old / 'audit.json').write_text('{}')
  result = programs.run_train('--flagfile=configs/smoke.cfg',
                              f'--output_dir={tmp_path}',
                              '--run_name=a',
                              program=programs.AUDIT)
  assert result.returncode == 2
  assert result.stderr == (
      f'tff-dp-audit: error: --run_name=a: {old} exists (an earlier output?) '
      'and is never written over; choose another --run_name or remove it\n')
  assert os.listdir(old) == ['audit.json']
  assert (old / 'audit.json').read_text() == '{}'


@pytest.mark.e2e
def test_the_program_trains_three_runs_and_keeps_the_attack_nonprivate(
    tmp_path):
  result = programs.run_train('--flagfile=configs/smoke.cfg',
                              '--rounds=3',
                              '--audit_canaries=8',
                              f'--output_dir={tmp_path}',
                              '--run_name=a',
                              program=programs.AUDIT,
                              check=True)
  out = result.stdout
  assert 'audited' in out and 'noise off' in out and 'accuracy' in out
  assert 'production (no canaries): accuracy' in out
  assert 'NON-PRIVATE (client data without noise): loss-threshold' in out
  run_dir = tmp_path / 'a'
  # The lock that kept other audits out while it ran (`run_lock`).
  assert sorted(os.listdir(run_dir)) == [
      '.tff-dp-run.lock', 'audit.json', 'audit_canaries.png',
      'audit_epsilon.png', 'canaries', 'noise_off', 'nonprivate', 'production',
      'tensorboard'
  ]
  with open(run_dir / 'audit.json', encoding='utf-8') as f:
    written = json.load(f)
  assert written['kind'] == 'training'
  assert written['audited']['canaries'] == 8
  # A DP run's wall time grows with its hidden cohorts: not released.
  assert 'seconds' not in written['audited']
  assert 'seconds' not in written['noise_off']
  assert set(written['accuracy']) == set(training_audit.RUNS)
  # The attack's numbers are in nonprivate/ and nowhere else.
  assert 'auc' not in json.dumps(written)
  with open(run_dir / 'nonprivate' / 'membership.json', encoding='utf-8') as f:
    attack = json.load(f)
  # smoke: 40 clients, 10 held out as non-members.
  assert (attack['members'], attack['non_members']) == (30, 10)
  # Each run is a complete run: the production run has no canary.
  with open(run_dir / 'production' / 'summary.json', encoding='utf-8') as f:
    assert 'audit' not in json.load(f)
  with open(run_dir / 'canaries' / 'summary.json', encoding='utf-8') as f:
    assert json.load(f)['audit']['canaries'] == 8
