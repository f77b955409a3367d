"""What a run says beside its guarantee, wherever it states one.

A run with --insecure_sampling_seed whose central epsilon relies on hidden
cohorts (Poisson or fixed-size sampling) says INSECURE (the statement, the
console's banner, progress lines and summary, summary.json); where no
guarantee relies on them, it says the seed is public and why the guarantees
hold, and never that amplification is void; a DP run that releases
values outside its guarantee on request (--release_nonprivate_metrics)
labels every one of them, the times included. Built directly from the smoke
preset's configuration (pure Python besides the statement's imports; no
training).
"""

import dataclasses
import types

import pytest

from tests.helpers import flag_configs
from tff_dp.cli import console
from tff_dp.data import labels
from tff_dp.privacy import run_secrets
from tff_dp.program import privacy_statement
from tff_dp.program import run_privacy
from tff_dp.program import run_summary

_N = 40  # configs/smoke.cfg's clients.
_OS_SECRET = (f'from a {run_secrets.SECRET_BITS}-bit secret drawn from the '
              'operating system')


@dataclasses.dataclass
class _Clients:
  population: int = _N
  label_kind: labels.LabelKind = labels.LabelKind.SINGLE

  def client_sizes(self):
    return [5] * self.population


def _config(seed=None, **overrides):
  if seed is not None:
    overrides['insecure_sampling_seed'] = seed
  return flag_configs.smoke_config(**overrides)


def _statement(config, released_keys=()):
  return privacy_statement.privacy_statement(
      config,
      population=_N,
      rounds_run=config.rounds,
      privacy=run_privacy.planned_tracker(config, _Clients()),
      released_keys=released_keys)


def _summary(config):
  tracker = run_privacy.planned_tracker(config, _Clients())
  result = types.SimpleNamespace(epsilons=tracker.epsilons(),
                                 last_values={'eval/accuracy': 0.5},
                                 rounds_completed=config.rounds,
                                 stop_reason='completed')
  return run_summary.summarize(config,
                               _Clients(),
                               '/runs/x',
                               result,
                               tracker,
                               eval_prefix='eval/',
                               resumed_from=None,
                               wall_seconds=1.0)


def _randomness_line(statement):
  lines = [
      line for line in statement.splitlines() if line.startswith('Randomness:')
  ]
  assert len(lines) == 1, statement
  return lines[0]


def test_an_insecure_seed_statement_never_claims_the_os_secret():
  statement = _statement(_config(7))
  assert _OS_SECRET not in statement
  line = _randomness_line(statement)
  assert '--insecure_sampling_seed=7' in line
  assert 'amplification by sampling does not hold' in line
  assert 'secret' not in statement.split('Not a release:')[1].splitlines()[0]


def test_a_secret_seed_statement_names_the_os_secret():
  statement = _statement(_config(None))
  assert _OS_SECRET in _randomness_line(statement)
  assert 'the sampling secret' in statement.split('Not a release:')[1]
  assert 'insecure_sampling_seed' not in statement


@pytest.mark.parametrize('seed, insecure', [(None, False), (7, True)])
def test_summary_json_says_whether_the_guarantee_is_insecure(seed, insecure):
  values = _summary(_config(seed)).to_json()
  assert values['guarantee_insecure'] is insecure
  assert values['guarantee_epsilon'] is not None


def test_a_local_only_guarantee_does_not_depend_on_the_cohorts():
  config = _config(7)
  config = dataclasses.replace(config,
                               dp_mechanism=type(config.dp_mechanism)('none'),
                               local_dp=type(config.local_dp)('laplace'),
                               local_epsilon=1.0,
                               local_clip=1.0)
  assert config.private and not config.central_private
  assert _summary(config).to_json()['guarantee_insecure'] is False


@pytest.mark.parametrize('seed', [None, 7])
def test_the_console_says_insecure_next_to_the_guarantee(
    seed, capsys, monkeypatch):
  config = _config(seed)
  from tff_dp.data import description  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(description, 'public_description',
                      lambda data, **kwargs: 'the data')
  console.print_banner(config, _Clients(), None)
  banner = capsys.readouterr().out
  console.print_summary(_summary(config),
                        '/runs/x/privacy_statement.txt',
                        eval_prefix='eval/',
                        metric_names=('accuracy',))
  guarantee, = [
      line for line in capsys.readouterr().out.splitlines()
      if line.startswith('guarantee: ')
  ]
  if seed is None:
    assert 'INSECURE' not in banner + guarantee
  else:
    assert f'INSECURE: --insecure_sampling_seed={seed}' in banner
    assert ' -- INSECURE: ' in guarantee
    assert 'void against anyone who knows it' in guarantee


# Each kind of guarantee under a public seed: (overrides of the smoke
# preset, whether a guarantee relies on hidden cohorts, words of the
# statement's first line that say why).
_SEED_CASES = {
    'poisson': ({}, True, 'its epsilon relies on amplification by sampling'),
    'fixed_size': ({
        'client_sampling': 'fixed_size',
        'dp_mechanism': 'gaussian_fixed'
    }, True, 'the RDP epsilon does NOT hold: it may rely on amplification '
                   'by sampling'),
    'full': ({
        'client_sampling': 'full',
        'clients_per_round': _N
    }, False, 'full participation, every client in every round'),
    'shuffled_epochs': ({
        'client_sampling': 'shuffled_epochs',
        'dp_mechanism': 'tree_aggregation',
        'algorithm': 'dp_ftrl',
        'clip': 0.5
    }, False, 'shuffled epochs, no amplification by sampling claimed'),
    'local': ({
        'dp_mechanism': 'none',
        'local_dp': 'laplace',
        'local_epsilon': 1.0,
        'local_clip': 1.0
    }, False, 'the local one: it assumes the server sees who takes part'),
    'record_level': ({
        'dp_mechanism': 'none',
        'client_sampling': 'full',
        'clients_per_round': _N,
        'example_dp': True,
        'example_noise_multiplier': 1.0,
        'example_clip': 1.0,
        'local_steps': 2
    }, False, 'the record-level one: each client samples its batches'),
}


@pytest.mark.parametrize('case', sorted(_SEED_CASES))
def test_a_public_seed_says_insecure_exactly_where_a_guarantee_needs_it(
    case, capsys, monkeypatch):
  overrides, voided, why = _SEED_CASES[case]
  config = _config(7, **overrides)
  assert config.private
  statement = _statement(config)
  first, = [
      line for line in statement.splitlines()
      if line.startswith(('INSECURE', 'Public seed'))
  ]
  assert '--insecure_sampling_seed=7' in first and why in first, first
  randomness = _randomness_line(statement)
  assert ('amplification by sampling does not hold' in randomness) is voided
  # Never the words of the other case.
  assert ('INSECURE' in statement) is voided
  assert ('amplification by sampling is void' in statement) is False
  assert ('Public seed' in first) is not voided
  summary = _summary(config).to_json()
  # Fixed size: the PLD epsilon is unamplified, so it holds if it is the
  # stated one (`run_secrets.seed_voids_epsilon`).
  stated_holds = (case == 'fixed_size' and
                  summary['guarantee_accountant'] == 'pld')
  assert summary['guarantee_insecure'] is (voided and not stated_holds)
  from tff_dp.data import description  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(description, 'public_description',
                      lambda data, **kwargs: 'the data')
  console.print_banner(config, _Clients(), None)
  banner = capsys.readouterr().out
  assert ('INSECURE: --insecure_sampling_seed=7' in banner) is voided
  assert ('public seed: --insecure_sampling_seed=7' in banner) is not voided
  assert 'amplification by sampling is void' not in banner


@pytest.mark.parametrize('seed, case, marked', [(7, 'poisson', True),
                                                (7, 'fixed_size', True),
                                                (7, 'full', False),
                                                (None, 'poisson', False)])
def test_the_progress_lines_carry_the_insecure_mark_where_it_applies(
    seed, case, marked, capsys, monkeypatch):
  """Through the program's own printer (`train._progress`), every line."""
  from tff_dp.cli import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(train, 'FLAGS', types.SimpleNamespace(log_every=1))
  config = _config(seed, rounds=3, **_SEED_CASES[case][0])
  progress = train._progress(config, _Clients(), 'eval/')  # pylint: disable=protected-access
  values = {'eval/accuracy': 0.5, 'privacy/epsilon_rdp': 1.0}
  for round_num in (1, 2, 3):
    progress(round_num, values)
  progress.close()
  lines = capsys.readouterr().out.splitlines()
  assert [line.startswith(f'round {r}/3') for r, line in zip((1, 2, 3), lines)
         ] == [True] * 3, lines
  assert all(line.endswith(' [INSECURE seed]') == marked for line in lines)


def test_asked_for_nonprivate_values_the_statement_lists_the_wall_time():
  config = _config(release_nonprivate_metrics=True)
  statement = _statement(config,
                         released_keys=('eval/accuracy',
                                        'nonprivate/round_seconds'))
  not_covered, = [
      line for line in statement.splitlines()
      if line.startswith('NOT COVERED by the guarantee')
  ]
  assert 'nonprivate/round_seconds' in not_covered
  assert 'wall_seconds' in not_covered
  assert 'ETA' in not_covered


def test_without_nonprivate_values_the_statement_lists_none():
  statement = _statement(_config(), released_keys=('eval/accuracy',))
  assert 'NOT COVERED' not in statement
  assert 'wall_seconds' not in statement


@pytest.mark.parametrize('settings, fields', [
    (dict(release_nonprivate_metrics=True), ['wall_seconds']),
    ({}, []),
    (dict(dp_mechanism='none'), []),
])
def test_summary_json_names_its_fields_outside_the_guarantee(settings, fields):
  values = _summary(_config(**settings)).to_json()
  assert values['nonprivate_fields'] == fields
  # Released (not null) exactly where a DP run asked, or without DP.
  assert (values['wall_seconds'] is None) == (values['private'] and not fields)


@pytest.mark.parametrize('asked', [False, True])
def test_the_console_labels_the_times_of_a_dp_run(asked, capsys):
  config = _config(release_nonprivate_metrics=asked)
  progress = console.Progress(3, private=True, log_every=1)
  for round_num in (1, 2):
    values = {'privacy/epsilon_pld': 1.0}
    if asked:
      values['nonprivate/round_seconds'] = 0.5
    progress(round_num, values)
  console.print_summary(_summary(config),
                        '/runs/x/privacy_statement.txt',
                        eval_prefix='eval/',
                        metric_names=('accuracy',))
  out = capsys.readouterr().out.splitlines()
  rounds = [line for line in out if line.startswith('round ')]
  wall = [line for line in out if line.startswith('wall time')]
  if not asked:
    assert not wall and all(' s' not in line.split('|')[-1] for line in rounds)
    return
  assert len(rounds) == 2 and all(
      line.split(' | ')[-1].startswith('non-private: 0.50 s')
      for line in rounds), rounds
  assert 'ETA' in rounds[1]
  assert wall == [
      'wall time (non-private, not covered by the DP guarantee): 0m01s'
  ]


def test_under_fixed_size_sampling_a_public_seed_voids_the_rdp_epsilon_only():
  fixed = _config(7,
                  client_sampling='fixed_size',
                  dp_mechanism='gaussian_fixed')
  assert run_secrets.seed_voids_epsilon(fixed, 'rdp')
  assert not run_secrets.seed_voids_epsilon(fixed, 'pld')
  poisson = _config(7)
  assert run_secrets.seed_voids_epsilon(poisson, 'pld')
  assert run_secrets.seed_voids_epsilon(poisson, 'rdp')
  assert not run_secrets.seed_voids_epsilon(_config(None), 'rdp')


@pytest.mark.parametrize('seed', [None, 7])
def test_the_statement_names_dp_ftrls_tree_seed_only_in_dp_ftrl_runs(seed):
  fedavg = _statement(_config(seed))
  assert 'tree seed' not in fedavg
  assert ('the sampling secret' in fedavg) is (seed is None)
  ftrl = _statement(_config(seed, **_SEED_CASES['shuffled_epochs'][0]))
  not_a_release = ftrl.split('Not a release:')[1].splitlines()[0]
  assert 'DP-FTRL\'s tree seed' in not_a_release
  assert ('the sampling secret' in not_a_release) is (seed is None)
