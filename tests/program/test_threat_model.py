"""The privacy statement's claims about secrets and releases, end to end.

What an adversary holding every released file (all but checkpoints/) may
learn: not the cohorts (their secret is in the checkpoints only, drawn from
the OS, so two identical runs differ), not the noise, not client metrics or
timings, and no evaluation on private data presented as covered. Program runs
go through `python -m tff_dp.cli.train` on the smoke config (about 15 s each).
"""

import csv
import os

import pytest

from tests import helpers
from tests.helpers import REPO_ROOT
from tests.helpers import client_data_files
from tests.helpers import programs
from tff_dp.cohorts import sampling

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _train(tmp_path, name, *flags):
  result = programs.run_train(f'--flagfile={_SMOKE}',
                              f'--output_dir={tmp_path}',
                              f'--run_name={name}',
                              *flags,
                              timeout=600,
                              check=True)
  return result, os.path.join(tmp_path, name)


def _rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _cohort_sizes(rounds, secret):
  """Cohort sizes of rounds 1..rounds as the smoke config's sampler draws
  them from `secret` (40 clients, 10 per round, Poisson)."""
  sampler = sampling.ClientSampler(sampling.ClientSampling.POISSON,
                                   population=40,
                                   clients_per_round=10,
                                   seed=secret)
  return [len(sampler.sample(r)) for r in range(1, rounds + 1)]


@pytest.mark.e2e
def test_cohorts_are_secret_per_run_and_resume_redraws_its_own(tmp_path):
  flags = ('--release_nonprivate_metrics', '--rounds=3')
  first_out, first = _train(tmp_path, 'first', *flags)
  _, second = _train(tmp_path, 'second', *flags)
  secrets = [helpers.checkpoint_secret(d) for d in (first, second)]
  assert secrets[0] != secrets[1]
  assert min(s.bit_length() for s in secrets) > 100  # 128 bits from the OS.
  for run_dir, secret in zip((first, second), secrets):
    # The released (non-private, on request) cohort sizes are the ones the
    # checkpoint's secret draws: the secret is what chose the cohorts.
    released = [int(float(r['nonprivate/cohort_size'])) for r in _rows(run_dir)]
    assert released == _cohort_sizes(3, secret)
  # Two runs with identical flags and --seed draw different cohorts.
  cohorts = [[
      tuple(
          sampling.ClientSampler(sampling.ClientSampling.POISSON,
                                 40,
                                 10,
                                 seed=s).sample(r)) for r in (1, 2, 3)
  ] for s in secrets]
  assert cohorts[0] != cohorts[1]
  # Resuming continues with the checkpoint's secret.
  _train(tmp_path, 'first', '--release_nonprivate_metrics', '--rounds=5')
  assert helpers.checkpoint_secret(first) == secrets[0]
  released = [int(float(r['nonprivate/cohort_size'])) for r in _rows(first)]
  assert released == _cohort_sizes(5, secrets[0])
  # Nothing released, stdout included, holds the secret; the checkpoint does.
  released_files = helpers.released_files(first)
  assert len(released_files) >= 6
  assert helpers.files_containing(released_files, secrets[0]) == []
  assert not any(
      p in first_out.stdout.encode() for p in helpers.encodings(secrets[0]))
  meta = os.path.join(helpers.latest_checkpoint(first), 'meta.json')
  assert helpers.files_containing([meta], secrets[0]) == [meta]
  # TensorBoard's event times would give every round's duration (a side
  # channel of the cohort's size): they say only the step.
  offsets = _event_time_offsets(os.path.join(second, 'tensorboard'))
  assert len(offsets) > 10 and len(set(offsets)) == 1, set(offsets)
  # Nor do the times inside the hparams plugin's data: the run's start.
  assert _hparams_times(os.path.join(second, 'tensorboard')) == set(offsets)


def _event_time_offsets(event_dir):
  """wall_time - step of every summary event in `event_dir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  offsets = []
  for name in os.listdir(event_dir):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(event_dir, name)):
      if event.HasField('summary'):
        offsets.append(event.wall_time - event.step)
  return offsets


def _hparams_times(event_dir):
  """The experiment's creation and the session's start, in `event_dir`."""
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  times = set()
  for name in os.listdir(event_dir):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(event_dir, name)):
      for value in event.summary.value:
        content = value.metadata.plugin_data.content
        if value.tag == metadata.EXPERIMENT_TAG:
          times.add(
              metadata.parse_experiment_plugin_data(content).time_created_secs)
        elif value.tag == metadata.SESSION_START_INFO_TAG:
          times.add(
              metadata.parse_session_start_info_plugin_data(
                  content).start_time_secs)
  return times


@pytest.mark.e2e
def test_evaluation_on_private_data_is_never_released_as_covered(tmp_path):
  from tff_dp.data import csv_import  # pylint: disable=g-import-not-at-top
  rows = [(f'c{k:02d}', [k % 3 + 0.1 * r, (k + r) % 2], k % 3)
          for k in range(40)
          for r in range(4)]
  data = client_data_files.imported(tmp_path,
                                    rows,
                                    name='table',
                                    test_split=csv_import.TestSplit.ROWS,
                                    test_fraction=0.25)
  # Without --release_nonprivate_metrics such a run does not evaluate at all
  # (test_only_public_test_sets_feed_the_covered_keys); asked, it releases
  # the metrics, but only as not covered.
  asked, asked_dir = _train(tmp_path, 'asked', '--dataset=sqlite',
                            f'--client_data={data}',
                            '--dp_mechanism=gaussian_fixed',
                            '--clients_per_round=10',
                            '--release_nonprivate_metrics')
  keys = set(_rows(asked_dir)[0])
  assert not [k for k in keys if k.startswith('eval/')]
  assert 'nonprivate/eval/accuracy' in keys
  with open(os.path.join(asked_dir, 'privacy_statement.txt')) as f:
    statement = f.read()
  assert 'belongs to the private population' in statement
  assert 'nonprivate/eval/accuracy' in statement.split('NOT COVERED')[1]
  # The banner of a DP run states public facts only.
  assert 'histogram' not in asked.stdout and 'median' not in asked.stdout
  assert '40 clients (the population N' in asked.stdout


@pytest.mark.parametrize('dataset, prefix', [('digits', 'eval/'),
                                             ('emnist_digits', 'eval/'),
                                             ('sqlite', 'nonprivate/eval/')])
def test_only_public_test_sets_feed_the_covered_keys(dataset, prefix):
  from absl import flags  # pylint: disable=g-import-not-at-top

  from tff_dp.cli import cli_flags  # pylint: disable=g-import-not-at-top
  from tff_dp.program import round_releases  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['x', f'--dataset={dataset}'])
  config = cli_flags.config_from_flags(fv)
  assert round_releases.eval_prefix(config) == prefix
  # A DP run evaluates on private data only when asked to release it.
  assert round_releases.evaluation_released(config) == (prefix == 'eval/')


@pytest.mark.tff
@pytest.mark.parametrize(
    'argv',
    [
        ('--local_dp=gaussian', '--local_noise_multiplier=0.5',
         '--dp_mechanism=none'),
        # Client + server noise: central DP over locally noised updates.
        ('--local_dp=laplace', '--local_epsilon=2', '--clip=5',
         '--dp_mechanism=gaussian_fixed'),
        ('--example_dp', '--dp_mechanism=none', '--local_steps=2'),
    ],
    ids=['local', 'client_server', 'example_dp'])
def test_with_noise_at_the_clients_no_raw_client_metric_reaches_the_server(
    tff_runtime, argv):
  """The process's own output, whatever the flags say about releasing."""
  del tff_runtime
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tensorflow.python.util import nest  # pylint: disable=g-import-not-at-top

  from tff_dp.cli import cli_flags  # pylint: disable=g-import-not-at-top
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  from tff_dp.program import client_data  # pylint: disable=g-import-not-at-top
  from tff_dp.program import prepare  # pylint: disable=g-import-not-at-top
  from tff_dp.program import run_privacy  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv([
      'x', f'--flagfile={_SMOKE}', '--clients_per_call=1',
      '--release_nonprivate_metrics', *argv
  ])
  prepared = prepare.prepare_run(cli_flags.config_from_flags(fv))
  config, data = prepared.config, prepared.data
  sampler = run_privacy.build_sampler(config, data.population, secret=0)
  process = assembly.build_process(config, data, sampler)
  datasets = client_data.round_datasets_for(data,
                                            batch_size=config.client_batch_size,
                                            epochs=1,
                                            seed=0)(1, [0, 1])
  output = process.next(process.initialize(), datasets)
  assert not output.metrics['client_work']['train']
  names = [
      path for path, _ in nest.flatten_with_joined_string_paths(output.metrics)
  ]
  assert not [
      n for n in names if 'loss' in n or 'num_examples' in n or 'accuracy' in n
  ], names
