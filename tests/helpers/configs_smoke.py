"""Trains configs of configs/ for two rounds and checks what each run claims.

Shared by tests/program/test_configs_smoke.py and its second half. The
configs run one after another in a subprocess (this module run as a script,
`python -m tests.helpers.configs_smoke OUTPUT_DIR CONFIG...`), so TensorFlow
is imported once per call: each config still goes through the program's own
path (flag parsing, checks, data, the experiment, the run directory) and its
own TFF worker, on fake TFF caches for the presets that need TFF's benchmark
files. The planner's epsilons (`./run.sh epsilon`) are compared with the
ones each run reports.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import helpers
from tests.helpers import benchmark_presets as presets

_ROOT = helpers.REPO_ROOT
_CONFIGS = os.path.join(_ROOT, 'configs')
_SMOKE_OVERRIDES = ['--rounds=2']
# Enough fake EMNIST writers for the tutorial preset's 120 clients per round.
_FAKE_WRITERS = 130
# Enough fake CIFAR-100 clients for the cifar100 preset's 50 per round.
_FAKE_CIFAR_CLIENTS = 60
# The LSTM presets run with the small cohort of their own tests: a TFF call
# of an LSTM client takes ~0.3 s here, and their own cohorts (50, 100) would
# add over a minute.
_COHORT_OVERRIDES = {
    name: [f'--clients_per_round={presets.PROGRAM_COHORT}']
    for name in ('shakespeare.cfg', 'stackoverflow_nwp.cfg',
                 'stackoverflow_tag.cfg')
}
# Fake Shakespeare roles and Stack Overflow users.
_FAKE_TEXT_CLIENTS = presets.PROGRAM_CLIENTS


def _run_configs(names, output_dir):
  """Script body: trains each config, prints one JSON line per config."""
  # pylint: disable=g-import-not-at-top
  from absl import flags
  import numpy as np

  from tff_dp.cli import cli_flags
  from tff_dp.cli import train
  from tff_dp.execution import runtime
  from tff_dp.program import experiment
  from tff_dp.program import prepare
  from tff_dp.program import run_privacy
  runtime.disable_default_context()
  # A tiny federated EMNIST in TFF's real file format, for the presets that
  # need TFF's benchmark files (no network here).
  from tests.helpers import fake_tff_caches
  data_dir = os.path.join(output_dir, 'tff_cache')
  os.makedirs(data_dir)
  rng = np.random.default_rng(0)
  writers = [f'f{i:04d}_00' for i in range(_FAKE_WRITERS)]
  example = lambda: fake_tff_caches.emnist_example(rng, 10)
  fake_tff_caches.write_database(
      os.path.join(data_dir, 'emnist_all.sqlite'), {
          'digits_only_train': {
              w: [example(), example()] for w in writers
          },
          'digits_only_test': {
              w: [example()] for w in writers[:20]
          },
      })
  image = lambda: fake_tff_caches.cifar_example(rng)
  fake_tff_caches.write_database(
      os.path.join(data_dir, 'cifar100.sqlite'), {
          'train': {
              str(i): [image()] for i in range(_FAKE_CIFAR_CLIENTS)
          },
          'test': {
              '0': [image(), image()]
          },
      })
  from tests.helpers import fake_shakespeare
  from tests.helpers import fake_stackoverflow
  fake_shakespeare.write_fake_cache(
      data_dir,
      train_clients=fake_shakespeare.fake_clients(rng, _FAKE_TEXT_CLIENTS),
      test_clients=fake_shakespeare.fake_clients(rng, 2))
  fake_stackoverflow.write_fake_cache(
      data_dir,
      train_clients=fake_stackoverflow.fake_clients(rng, _FAKE_TEXT_CLIENTS),
      test_clients=fake_stackoverflow.fake_clients(rng, 2))
  # Its word and tag counts cannot have TFF's published hashes: expect the
  # fakes'. The tag preset reads the same users' posts.
  fake_stackoverflow.write_fake_vocabularies(data_dir)
  for name in names:
    fv = flags.FlagValues()
    cli_flags.define_train_flags(fv)
    fv([
        'tff-dp', f'--flagfile={os.path.join(_CONFIGS, name)}',
        *_SMOKE_OVERRIDES, *_COHORT_OVERRIDES.get(name, []),
        f'--data_dir={data_dir}', f'--output_dir={output_dir}',
        f'--run_name={name}'
    ])
    prepared = prepare.prepare_run(cli_flags.config_from_flags(fv))
    with train.open_run_dir(output_dir, name) as run_dir:
      summary = experiment.run_experiment(prepared, run_dir.path)
    # What `./run.sh epsilon` plans for the same flags (the program's own
    # function, on the same prepared data).
    plan = run_privacy.planned_tracker(prepared.config, prepared.data)
    local = plan.local_guarantee()
    record = plan.record_level_report()
    print(json.dumps({
        'config': name,
        'summary': summary.to_json(),
        'plan': {
            'central': ({
                k.value: v for k, v in plan.epsilons().items()
            } if plan.central_claim else {}),
            'local': None if local is None else local.epsilon,
            'record_level': None if record is None else record.worst_epsilon(),
        }
    }),
          flush=True)


CONFIGS = sorted(n for n in os.listdir(_CONFIGS) if n.endswith('.cfg'))
# One per mechanism family, on light models: central Gaussian with adaptive
# and fixed clipping, capped weighting, FedSGD, DP-FTRL's tree, local DP
# alone and with central noise, record-level DP-SGD in silos, no DP, and the
# synthetic cross-device data on the grouped path.
FAST_CONFIGS = ('client_server.cfg', 'cross_device.cfg', 'cross_silo.cfg',
                'default.cfg', 'dp_ftrl.cfg', 'fedsgd_dp.cfg', 'fixed_clip.cfg',
                'local_laplace.cfg', 'nonprivate.cfg', 'weighted_dp.cfg')
SLOW_CONFIGS = tuple(name for name in CONFIGS if name not in FAST_CONFIGS)


def train_and_check(tmp_path, names):
  """Trains `names` (2 rounds each) and checks what each summary claims."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  result = subprocess.run([
      sys.executable, '-m', 'tests.helpers.configs_smoke',
      str(tmp_path), *names
  ],
                          cwd=_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  summaries, plans = {}, {}
  for line in result.stdout.splitlines():
    if line.startswith('{"config"'):
      record = json.loads(line)
      summaries[record['config']] = record['summary']
      plans[record['config']] = record['plan']
  assert sorted(summaries) == sorted(names)
  for name, summary in summaries.items():
    _check_plan_agrees(name, summary, plans[name])
    _check_secrets_stay_in_checkpoints(name, os.path.join(tmp_path, name))
    _check_run_dir_report(name, os.path.join(tmp_path, name), summary)
  populations = {
      'emnist_tutorial.cfg': _FAKE_WRITERS,
      'cifar100.cfg': _FAKE_CIFAR_CLIENTS,
      'shakespeare.cfg': _FAKE_TEXT_CLIENTS,
      'stackoverflow_nwp.cfg': _FAKE_TEXT_CLIENTS,
      'stackoverflow_tag.cfg': _FAKE_TEXT_CLIENTS
  }
  for name, summary in summaries.items():
    if name in populations:
      assert summary['population'] == populations[name], name
    assert summary['rounds'] == 2, name
    assert summary['headline_value'] is not None, name
    assert 0 <= summary['headline_value'] <= 1, name
    if name == 'stackoverflow_tag.cfg':
      # Multi-label data have no accuracy; their headline is recall@5.
      assert summary['headline_key'] == 'eval/recall_at_5'
    else:
      assert summary['headline_key'] == 'eval/accuracy', name
      assert summary['accuracy'] == summary['headline_value'], name
    with open(os.path.join(tmp_path, name, 'privacy_statement.txt')) as f:
      statement = f.read()
    if summary['private']:
      assert 'NOT PRIVATE' not in statement, name
      assert 'Assumed public: the population size N' in statement, name
      assert 'Randomness: cohorts' in statement, name
    else:
      assert 'NOT PRIVATE' in statement, name
    _check_statement_lists_the_releases(name, statement, tmp_path)
  # The mechanisms report the guarantees they claim.
  claims = {
      'local_laplace.cfg':
          lambda s: (s['local_epsilon'] > 0 and s['guarantee_epsilon'] is None),
      'client_server.cfg':
          lambda s: (s['local_epsilon'] > 0 and s['guarantee_epsilon'] > 0),
      'cross_silo.cfg':
          lambda s: s['record_level_epsilon'] > 0,
      'dp_ftrl.cfg':
          lambda s: (s['guarantee_accountant'] == 'rdp' and s[
              'accountants_not_applicable'] == ['pld']),
  }
  for name, claim in claims.items():
    if name in summaries:
      assert claim(summaries[name]), (name, summaries[name])


def _check_secrets_stay_in_checkpoints(name, run_dir):
  """No released file holds the sampling secret or a state seed."""
  secret = helpers.checkpoint_secret(run_dir)
  assert secret.bit_length() > 100, name  # 128 bits from the OS.
  meta = os.path.join(helpers.latest_checkpoint(run_dir), 'meta.json')
  assert helpers.files_containing([meta], secret) == [meta]  # Scan works.
  released = helpers.released_files(run_dir)
  assert helpers.files_containing(released, secret) == [], name
  seeds = helpers.checkpoint_seed_pairs(run_dir)
  if name == 'dp_ftrl.cfg':
    assert seeds, 'the tree noise seed is in the checkpointed state'
  for seed in seeds:
    assert helpers.files_containing(released, seed) == [], (name, seed)


def _check_statement_lists_the_releases(name, statement, tmp_path):
  """The statement lists exactly the keys metrics.csv holds."""
  with open(os.path.join(tmp_path, name, 'metrics.csv')) as f:
    keys = set(f.readline().strip().split(',')) - {'round'}
  listed = set()
  for line in statement.splitlines():
    for marker in ('per round: ', 'Released per round: ',
                   'released on request): '):
      if marker in line:
        listed |= set(line.split(marker, 1)[1].rstrip('.').split(', '))
  assert listed - {'nothing'} == keys, (name, listed, keys)
  if name == 'weighted_dp.cfg':
    assert 'min(n_k / 3, 1)' in statement


def _check_run_dir_report(name, run_dir, summary):
  """`./run.sh epsilon --run_dir` states every guarantee the run claims."""
  if not (summary['local_epsilon'] or summary['record_level_epsilon'] or
          not summary['private']):
    return  # Central-only runs: tests/cli/test_epsilon_program.py.
  result = subprocess.run(
      [sys.executable, '-m', 'tff_dp.cli.epsilon', f'--run_dir={run_dir}'],
      cwd=_ROOT,
      capture_output=True,
      text=True,
      timeout=120)
  assert result.returncode == 0, result.stderr
  for key, words in (('local_epsilon', 'local epsilon'),
                     ('record_level_epsilon', 'record-level epsilon')):
    if summary[key] is not None:
      line = [x for x in result.stdout.splitlines() if x.startswith(words)]
      assert line, (name, result.stdout)
      printed = float(line[0].split('): ')[1].split()[0])
      assert printed == pytest.approx(summary[key], rel=1e-5), name
  if not summary['private']:
    assert 'not private' in result.stdout, (name, result.stdout)
  assert 'inf' not in result.stdout.replace('infinite', ''), result.stdout


def _check_plan_agrees(name, summary, plan):
  """The planner's epsilons for a preset are the run's (module docstring)."""
  central = {
      k: v for k, v in plan['central'].items() if v is not None and v == v
  }  # NaN: not applicable.
  assert central == pytest.approx(summary['epsilon'], rel=1e-9), name
  # Local and record-level: the plan charges every client every round, an
  # upper bound that the run reaches when some client takes part each time.
  assert (plan['local'] is None) == (summary['local_epsilon'] is None), name
  for key, planned in (('local_epsilon', plan['local']),
                       ('record_level_epsilon', plan['record_level'])):
    if summary[key] is not None:
      assert planned >= summary[key] * (1 - 1e-9), (name, key)


if __name__ == '__main__':
  # `python -m tests.helpers.configs_smoke OUTPUT_DIR CONFIG...` from the
  # repository root (train_and_check's call).
  _run_configs(sys.argv[2:], sys.argv[1])
