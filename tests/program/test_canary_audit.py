"""Canary clients in a training run (`--audit_canaries`), end to end in-process.

A production run (no canaries) is untouched by the audit code: it samples
from N clients, releases no audit/* value and states no audit. An audit run
samples from N + M clients, charges that sampler's events, trains the real
clients only, releases the audit's values every few rounds and states what
it is. Both the reference (one TFF call per client) and the grouped path,
and DP-FTRL's tree, take the canaries. Runs are tiny (digits, 40 clients, a
few rounds; seconds each).
"""

import csv
import json
import os

from absl import flags
import numpy as np
import pytest

from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.program import experiment
from tff_dp.program import prepare
from tff_dp.program import resume as resume_rules

pytestmark = pytest.mark.tff

_TINY = ('--dataset=digits', '--num_clients=40', '--model=logistic_regression',
         '--rounds=4', '--clients_per_round=10', '--delta=1e-3',
         '--noise_multiplier=0.5', '--insecure_sampling_seed=7')


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['train', *_TINY, *argv])
  return cli_flags.config_from_flags(fv)


def _run(tmp_path, name, *argv, on_round=None):
  prepared = prepare.prepare_run(_config(*argv))
  run_dir = os.path.join(tmp_path, name)
  os.makedirs(run_dir)
  summary = experiment.run_experiment(prepared, run_dir, on_round=on_round)
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  with open(os.path.join(run_dir, 'ledger.json')) as f:
    ledger = json.load(f)
  with open(os.path.join(run_dir, 'privacy_statement.txt')) as f:
    statement = f.read()
  return summary, rows, json.dumps(ledger), statement


def test_a_production_run_has_no_canary(tmp_path):
  summary, rows, ledger, statement = _run(tmp_path, 'prod',
                                          '--clients_per_call=1')
  assert not any(key.startswith('audit/') for key in rows[0])
  assert summary.canary_audit is None and 'audit' not in summary.to_json()
  assert 'AUDIT RUN' not in statement
  # Poisson sampling from the 40 real clients: q = 10/40.
  assert '"sampling_probability": 0.25' in ledger


# The reference path (one TFF call per client) also takes the canaries in
# the DP-FTRL test below; this one's reference case runs in the slow tier.
@pytest.mark.parametrize('path', [
    pytest.param('--clients_per_call=1', marks=pytest.mark.slow),
    '--clients_per_call=8'
])
def test_an_audit_run_samples_its_canaries_and_releases_the_audit(
    tmp_path, path):
  seen = []
  summary, rows, ledger, statement = _run(
      tmp_path,
      'audit',
      '--audit_canaries=20',
      path,
      '--rounds=8',
      on_round=lambda r, values: seen.append(sorted(values)))
  # q = 10 / (40 + 20): the canaries are clients of the sampled population.
  assert '"sampling_probability": 0.16666666666666666' in ledger
  audit_rows = [r for r in rows if r['audit/epsilon_lower_bound']]
  assert len(audit_rows) == 8  # Every round of a run shorter than 20.
  result = summary.canary_audit
  assert result.canaries == 20 and result.dim == 650 and result.rounds == 8
  assert 0 < result.inserted < 20
  assert result.bound.epsilon <= result.analytic_epsilon
  assert summary.to_json()['audit']['canaries'] == 20
  assert 'seconds' not in summary.to_json()['audit']  # A timing channel.
  assert 'AUDIT RUN: 20 canary clients' in statement
  assert 'canary audit: 20 canaries' in statement
  assert all('audit/epsilon_estimate_all_iterates' in keys for keys in seen)


def test_canaries_ride_the_tree_of_dp_ftrl_and_show_without_noise(tmp_path):
  # Server momentum 0: each released step is then one round's sum (DP-FTRL
  # with momentum = 0), so a canary is diluted only by its own cohort's
  # nine other clients, not by the momentum of earlier rounds. With the
  # default 0.9 a sampled canary's cosine fell to 0.007 in some runs and
  # 4 of 52 runs ordered fewer than 90% of the pairs (a CI failure).
  summary, _, _, _ = _run(tmp_path, 'ftrl', '--algorithm=dp_ftrl',
                          '--client_sampling=shuffled_epochs',
                          '--dp_mechanism=tree_aggregation',
                          '--server_momentum=0', '--noise_multiplier=0',
                          '--allow_zero_noise', '--audit_canaries=20',
                          '--rounds=8')
  result = summary.canary_audit
  # No noise: an inserted canary's best cosine with a round's step is far
  # above the null's spread 1/sqrt(d) = 0.039 (every canary is sampled in
  # 8 rounds of 10 of 60 clients). In 70 runs the inserted canaries' lowest
  # was 0.20 and the unseen ones' highest 0.13: not one pair misordered,
  # where failing needs ten of the hundred. Flake rate: under 1 in 100 (we
  # expect far less; an unseen canary above 0.20 is a 5-sigma event).
  inserted = result.statistics.all_iterates[result.inserted_mask]
  unseen = result.statistics.all_iterates[~result.inserted_mask]
  ordered = np.mean(inserted[:, None] > unseen[None, :])
  assert ordered >= 0.9, (inserted, unseen)


def test_audit_runs_refuse_resume_and_what_canaries_cannot_audit(tmp_path):
  with pytest.raises(resume_rules.ResumeError, match='cannot be resumed'):
    experiment.run_experiment(prepare.prepare_run(
        _config('--audit_canaries=20')),
                              str(tmp_path),
                              resume=True)
  for argv, message in ((('--dp_mechanism=none',), 'has none'),
                        (('--local_dp=gaussian', '--local_noise_multiplier=1',
                          '--dp_mechanism=none'),
                         'has none'), (('--audit_canaries=3',), 'at least 4')):
    with pytest.raises(ConfigError, match=message):
      config_checks.check_config(_config('--audit_canaries=20', *argv))
  with pytest.raises(ConfigError, match='audit_canaries=41'):
    prepare.prepare_run(_config('--audit_canaries=41'))
