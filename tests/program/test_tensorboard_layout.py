"""What TensorBoard shows of a run beyond its rows: hparams, layout, text.

The run's start (`run_start.open_releaser`) and end (the statement) are
driven directly on a run directory, without training: the event files hold
the hparams plugin's experiment and session (public settings, released
metric tags), the custom-scalars layout, the statement as paragraphs, once
per run (resumed or not), and no time but the run's start plus the step.
"""

import glob
import itertools
import math
import os
import re

from absl import flags
import pytest
from tensorboard import plugin_util
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as layout_metadata
from tensorboard.plugins.hparams import metadata as hparams_metadata

from tests.helpers import REPO_ROOT
from tff_dp.cli import cli_flags
from tff_dp.program import release
from tff_dp.program import round_releases
from tff_dp.program import run_start
from tff_dp.program import sinks
from tff_dp.program import tensorboard_layout

pytestmark = pytest.mark.tff

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_ROWS = [{
    'round': '1',
    'eval/accuracy': '0.5',
    'eval/loss': '2.0',
    'privacy/epsilon_rdp': '1.5',
    'privacy/epsilon_pld': '1.25',
}, {
    'round': '2',
    'eval/accuracy': '0.625',
    'eval/loss': '1.5',
    'privacy/epsilon_rdp': '2.5',
    'privacy/epsilon_pld': '2.25',
}]
_STATEMENT = ('Privacy statement\n=================\n'
              'Epsilon (RDP accountant, dp-accounting): 2.5.\n'
              'Released per round: eval/accuracy, privacy/epsilon_rdp.\n')


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['x', f'--flagfile={_SMOKE}', *argv])
  return cli_flags.config_from_flags(fv)


def _events(run_dir):
  events = []
  for path in sorted(
      glob.glob(os.path.join(sinks.tensorboard_dir(run_dir), 'events.*'))):
    # Raw: TensorBoard's EventFileLoader would turn the scalars to tensors.
    events += [
        event_pb2.Event.FromString(raw)
        for raw in event_file_loader.RawEventFileLoader(path).Load()
    ]
  return [e for e in events if e.HasField('summary')]


def _values(events, tag):
  return [(e, v) for e in events for v in e.summary.value if v.tag == tag]


def _run(run_dir, config, start, *, rows=(), resume=False):
  """A run's release files as the program writes them, without training."""
  releaser = run_start.open_releaser(config,
                                     run_dir,
                                     start,
                                     resume=resume,
                                     release_nonprivate=False,
                                     flagfile='--dataset=digits\n--rounds=2\n',
                                     population=100)
  for row in rows:
    releaser.release(int(row['round']), {
        k: float(v) for k, v in row.items() if k != 'round'
    })
  releaser.write_text('privacy_statement', _STATEMENT)
  releaser.close()
  return _events(run_dir)


def _fresh():
  return run_start.Start(round_num=1, state=None, last_values={}, secrets=None)


@pytest.fixture
def smoke_events(tmp_path):
  run_dir = str(tmp_path / 'smoke_run')
  os.makedirs(run_dir)
  return _run(run_dir, _config(), _fresh(), rows=_ROWS)


def _experiment(events):
  [(_, value)] = _values(events, hparams_metadata.EXPERIMENT_TAG)
  return hparams_metadata.parse_experiment_plugin_data(
      value.metadata.plugin_data.content)


def _session(events):
  [(event, value)] = _values(events, hparams_metadata.SESSION_START_INFO_TAG)
  return event, hparams_metadata.parse_session_start_info_plugin_data(
      value.metadata.plugin_data.content)


def _layout(events):
  [(_, value)] = _values(events, layout_metadata.CONFIG_SUMMARY_TAG)
  assert value.metadata.plugin_data.plugin_name == layout_metadata.PLUGIN_NAME
  return layout_pb2.Layout.FromString(value.tensor.string_val[0])


def _hparam(value):
  kind = value.WhichOneof('kind')
  return getattr(value, kind)


def test_the_hparams_dashboard_gets_the_public_settings_and_released_tags(
    smoke_events):
  experiment_pb = _experiment(smoke_events)
  assert [h.name for h in experiment_pb.hparam_infos][:5] == [
      'dp_mechanism', 'noise_multiplier', 'clip', 'sampling_rate',
      'clients_per_round'
  ]
  metrics = [m.name.tag for m in experiment_pb.metric_infos]
  # The columns are the released scalar tags (TensorBoard reads each as the
  # tag's last scalar), the accuracy and the epsilons first.
  assert metrics[:3] == [
      'eval/accuracy', 'privacy/epsilon_rdp', 'privacy/epsilon_pld'
  ]
  assert set(metrics) <= release.DP_SAFE_KEYS | release.NONPRIVATE_KEYS
  assert {m.name.group for m in experiment_pb.metric_infos} == {''}
  scalar_tags = {
      v.tag
      for e in smoke_events
      for v in e.summary.value
      if v.HasField('simple_value')
  }
  assert {
      'eval/accuracy', 'eval/loss', 'privacy/epsilon_rdp', 'privacy/epsilon_pld'
  } <= scalar_tags & set(metrics)
  domains = {h.name: list(h.domain_discrete) for h in experiment_pb.hparam_infos}
  assert 'gaussian_adaptive' in domains['dp_mechanism']
  assert 'digits' in domains['dataset']

  _, session = _session(smoke_events)
  # One row per run, named by its directory, never averaged with another.
  assert session.group_name == 'smoke_run'
  assert {
      name: _hparam(v) for name, v in session.hparams.items()
  } == {
      'dp_mechanism': 'gaussian_adaptive',
      'noise_multiplier': 0.5,
      'clip': 0.1,  # The initial clip of adaptive clipping.
      'sampling_rate': 0.1,  # q = 10 / N, N = 100 (public).
      'clients_per_round': 10,
      'population': 100,
      'rounds': 3,
      'seed': 0,
      'delta': 1e-3,
      'client_sampling': 'poisson',
      'local_dp': 'none',
      'example_dp': False,
      'algorithm': 'fedavg',
      'dataset': 'digits',
      'model': 'logistic_regression',
  }
  assert set(session.hparams) <= {h.name for h in experiment_pb.hparam_infos}


def test_the_custom_scalars_layout_shows_privacy_and_accuracy_first(
    smoke_events):
  layout = _layout(smoke_events)
  assert [c.title for c in layout.category] == ['privacy and accuracy']
  charts = layout.category[0].chart
  assert [c.title for c in charts] == [
      'accuracy (recall@5 for multi-label data)', 'central epsilon', 'loss'
  ]
  released = {
      'eval/accuracy', 'eval/loss', 'privacy/epsilon_rdp', 'privacy/epsilon_pld'
  }
  matched = {
      chart.title:
          sorted(key
                 for key in released
                 for regex in chart.multiline.tag
                 if re.match(regex, key)) for chart in charts
  }
  assert matched == {
      'accuracy (recall@5 for multi-label data)': ['eval/accuracy'],
      'central epsilon': ['privacy/epsilon_pld', 'privacy/epsilon_rdp'],
      'loss': ['eval/loss'],
  }


def test_the_statement_is_paragraphs_and_the_flags_a_code_block(smoke_events):
  [(_, statement)] = _values(smoke_events, 'privacy_statement')
  markdown = statement.tensor.string_val[0].decode()
  assert not [line for line in markdown.splitlines() if line.startswith(' ')]
  html = plugin_util.markdown_to_safe_html(markdown)
  assert '<pre>' not in html
  assert '<p>Released per round: eval/accuracy, privacy/epsilon_rdp.</p>' in (
      html)
  [(_, flags_text)] = _values(smoke_events, 'flags')
  assert flags_text.tensor.string_val[0].decode() == (
      '    --dataset=digits\n    --rounds=2')


def test_no_time_but_the_start_plus_the_step(tmp_path, monkeypatch):
  # A clock that jumps between writes, as rounds of different lengths would:
  # none of its later readings may reach the files.
  readings = itertools.count()
  monkeypatch.setattr('time.time', lambda: 1_000_000.75 + 37.5 * next(readings))
  run_dir = str(tmp_path / 'run')
  os.makedirs(run_dir)
  events = _run(run_dir, _config(), _fresh(), rows=_ROWS)
  origins = {e.wall_time - e.step for e in events}
  assert len(events) > 10 and len(origins) == 1, origins
  [origin] = origins
  assert origin == math.floor(origin) and origin >= 1_000_000
  _, session = _session(events)
  assert session.start_time_secs == origin
  assert _experiment(events).time_created_secs == origin
  assert {
      e.step for e in events if not e.summary.value[0].HasField('simple_value')
  } == {0}


def test_a_resumed_run_has_its_description_once(tmp_path):
  run_dir = str(tmp_path / 'run')
  os.makedirs(run_dir)
  config = _config()
  _run(run_dir, config, _fresh(), rows=_ROWS[:1])
  # Resumed after round 1 (the program rebuilds the sinks from metrics.csv).
  resumed = run_start.Start(round_num=2,
                            state=None,
                            last_values={},
                            secrets=None,
                            rows=_ROWS[:1])
  events = _run(run_dir,
                _config('--rounds=5'),
                resumed,
                rows=_ROWS[1:],
                resume=True)
  for tag in (hparams_metadata.EXPERIMENT_TAG,
              hparams_metadata.SESSION_START_INFO_TAG,
              layout_metadata.CONFIG_SUMMARY_TAG, 'flags', 'privacy_statement'):
    assert len(_values(events, tag)) == 1, tag
  _, session = _session(events)
  assert session.hparams['rounds'].number_value == 5
  assert sorted(e.step for e, _ in _values(events, 'eval/accuracy')) == [1, 2]


@pytest.mark.parametrize(
    'argv, hparams, charts',
    [
        (('--dp_mechanism=gaussian_fixed', '--clip=0.5'), {
            'clip': 0.5,
            'noise_multiplier': 0.5
        }, ['accuracy', 'central epsilon', 'loss']),
        (('--dp_mechanism=none', '--local_dp=gaussian',
          '--local_noise_multiplier=1.0'), {
              'local_noise_multiplier': 1.0,
              'local_dp': 'gaussian'
          }, ['accuracy', 'local epsilon', 'loss']),
        (('--dp_mechanism=none', '--local_dp=laplace', '--local_epsilon=2'), {
            'local_epsilon': 2.0
        }, ['accuracy', 'local epsilon', 'loss']),
        (('--dp_mechanism=none', '--example_dp'), {
            'example_dp': True
        }, ['accuracy', 'record-level epsilon', 'loss']),
        # A user-level claim: the silos' epsilon only on request.
        (('--example_dp',), {
            'example_dp': True
        }, ['accuracy', 'central epsilon', 'loss']),
        (('--dp_mechanism=none',), {
            'dp_mechanism': 'none'
        }, ['accuracy', 'loss']),
        # A DP run on its own data evaluates only on request.
        (('--dataset=sqlite', '--client_data=x.sqlite'), {
            'dataset': 'sqlite'
        }, ['central epsilon']),
    ],
    ids=[
        'fixed', 'local_gaussian', 'local_laplace', 'example_dp',
        'example_dp_central', 'nonprivate', 'own_data'
    ])
def test_only_what_applies_to_the_run(argv, hparams, charts):
  config = _config(*argv)
  values = tensorboard_layout.run_hparams(config, population=700)
  assert values.items() >= hparams.items()
  assert values['population'] == 700
  assert values['sampling_rate'] == pytest.approx(
      min(1, config.clients_per_round / 700))
  if not config.uses_dp_aggregator:
    assert 'noise_multiplier' not in values and 'clip' not in values
  if not config.private:
    assert 'delta' not in values
  assert ('local_epsilon' in values) == (config.local_dp.value == 'laplace')
  assert ('local_noise_multiplier'
          in values) == (config.local_dp.value == 'gaussian')
  assert 'target_epsilon' not in values  # Only a calibrated run has one.
  assert values['seed'] == config.seed
  titles = [
      c.title.split(' (')[0]
      for c in tensorboard_layout.layout(config).category[0].chart
  ]
  assert titles == charts


@pytest.mark.parametrize('argv', [
    (),
    ('--dataset=sqlite', '--client_data=x.sqlite'),
    ('--dataset=sqlite', '--client_data=x.sqlite',
     '--release_nonprivate_metrics'),
    ('--dataset=sqlite', '--client_data=x.sqlite', '--dp_mechanism=none'),
    ('--evaluation=federated', '--eval_clients=5',
     '--release_nonprivate_metrics'),
    ('--evaluation=federated', '--eval_clients=5'),
])
def test_the_evaluation_charts_follow_the_program(argv):
  config = _config(*argv)
  # pylint: disable-next=protected-access
  assert tensorboard_layout._evaluates(config) == (
      round_releases.evaluation_released(config))


def test_every_column_and_chart_names_released_keys():
  allowed = release.DP_SAFE_KEYS | release.NONPRIVATE_KEYS
  assert set(tensorboard_layout.METRICS) <= allowed
  for chart in tensorboard_layout.layout(
      _config('--example_dp', '--local_dp=gaussian',
              '--local_noise_multiplier=1',
              '--release_nonprivate_metrics')).category[0].chart:
    [regex] = chart.multiline.tag
    assert [k for k in allowed if re.match(regex, k)], chart.title


def test_a_calibrated_run_shows_its_target_and_every_run_its_seed():
  # A sweep's runs differ in these: the dashboard sorts and filters by them.
  values = tensorboard_layout.run_hparams(
      _config('--target_epsilon=4', '--seed=3'))
  assert values['target_epsilon'] == 4.0 and values['seed'] == 3
  names = [h.name for h in tensorboard_layout.HPARAMS]
  assert {'target_epsilon', 'seed'} <= set(names)
