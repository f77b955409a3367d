"""Federated evaluation over held-out clients (`--evaluation=federated`).

Checks the TFF process (types, and metrics equal to a direct numpy
computation on the same examples), which clients are held out and that the
sampler and the accountant see only the training clients, the refusal of an
unlabelled release in a DP run, and one run of the real program.
"""

import csv
import json
import os

from absl import flags
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp import config as config_lib
from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.data import held_out as held_out_lib
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.program import prepare

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
# configs/smoke.cfg: 40 clients, 10 per round; 5 of them held out.
_EVAL_CLIENTS = 5
_FEDERATED = ['--evaluation=federated', f'--eval_clients={_EVAL_CLIENTS}']
_FED_EVAL_KEYS = {
    'nonprivate/fed_eval/loss', 'nonprivate/fed_eval/accuracy',
    'nonprivate/fed_eval/num_examples'
}


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', f'--flagfile={_SMOKE}', *argv])
  return cli_flags.config_from_flags(fv)


def _toy_data(sizes=(3, 1, 4, 2, 5, 3), input_dim=4, num_classes=3):
  rng = np.random.default_rng(7)
  return FederatedData(
      name='toy',
      client_ids=tuple(f'c{k}' for k in range(len(sizes))),
      client_x=tuple(
          rng.normal(size=(n, input_dim)).astype(np.float32) for n in sizes),
      client_y=tuple(
          rng.integers(0, num_classes, size=n).astype(np.int32) for n in sizes),
      test_x=rng.normal(size=(2, input_dim)).astype(np.float32),
      test_y=np.array([0, 1], dtype=np.int32),
      num_classes=num_classes)


# --- Configuration: what a DP run may release ------------------------------


def test_dp_run_refuses_federated_evaluation_without_release_flag():
  with pytest.raises(ConfigError) as e:
    config_checks.check_config(_config(*_FEDERATED))
  assert e.value.flag == 'evaluation'
  assert str(e.value).startswith('--evaluation=federated: ')
  assert '--release_nonprivate_metrics' in str(e.value)
  # Calibrated noise makes a run private later: refused up front as well.
  with pytest.raises(ConfigError):
    config_checks.check_config(
        _config(*_FEDERATED, '--noise_multiplier=0', '--target_epsilon=5'))
  config_checks.check_config(
      _config(*_FEDERATED, '--release_nonprivate_metrics'))
  # A non-private run releases them without being asked (labelled anyway).
  config_checks.check_config(_config(*_FEDERATED, '--dp_mechanism=none'))


@pytest.mark.e2e
def test_dp_run_refusal_through_the_program_is_one_line_exit_2(tmp_path):
  result = programs.run_train(f'--flagfile={_SMOKE}',
                              *_FEDERATED,
                              f'--output_dir={tmp_path}',
                              timeout=120)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('tff-dp: error: --evaluation=federated: ')
  assert '--release_nonprivate_metrics' in lines[0]
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    'argv, flag',
    [
        (['--eval_clients=3'], 'eval_clients'),  # without federated
        (['--evaluation=federated', '--dp_mechanism=none'], 'evaluation'),
        # 40 clients, 10 per round: at most 30 may be held out.
        (['--evaluation=federated', '--eval_clients=31', '--dp_mechanism=none'
         ], 'eval_clients'),
    ])
def test_eval_clients_settings_are_checked(argv, flag):
  with pytest.raises(ConfigError) as e:
    config_checks.check_config(_config(*argv))
  assert e.value.flag == flag


def test_full_participation_must_fit_the_training_clients():
  config = _config('--evaluation=federated', '--eval_clients=2',
                   '--dp_mechanism=none', '--client_sampling=full',
                   '--clients_per_round=10', '--num_clients=10')
  with pytest.raises(ConfigError) as e:
    config_checks.check_eval_clients(config, 10)
  assert e.value.flag == 'eval_clients' and '8' in str(e.value)


# --- Which clients are held out, and the population -----------------------


def test_held_out_clients_are_seeded_disjoint_and_never_train():
  data = _toy_data()
  train, held = held_out_lib.hold_out_clients(data, eval_clients=2, seed=3)
  assert train.population == 4 and held.num_clients == 2
  assert set(train.client_ids).isdisjoint(held.client_ids)
  assert set(train.client_ids) | set(held.client_ids) == set(data.client_ids)
  # Training clients keep their data, re-indexed in the original order.
  for k, cid in enumerate(train.client_ids):
    i = data.client_ids.index(cid)
    np.testing.assert_array_equal(train.client_x[k], data.client_x[i])
  again, held_again = held_out_lib.hold_out_clients(data,
                                                    eval_clients=2,
                                                    seed=3)
  assert held_again.indices == held.indices
  assert again.client_ids == train.client_ids
  choices = {
      held_out_lib.hold_out_clients(data, eval_clients=2, seed=s)[1].indices
      for s in range(10)
  }
  assert len(choices) > 1  # The seed decides.
  with pytest.raises(ValueError):
    held_out_lib.hold_out_clients(data, eval_clients=6, seed=0)


def test_streamed_sources_are_reindexed_to_the_training_clients():

  class FakeStreamed:
    name, input_dim, num_classes, image_shape = 'fake', 2, 2, None
    vocab_size = None
    label_kind = LabelKind.MULTI_HOT
    client_ids = ['a', 'b', 'c', 'd', 'e']
    population = 5

    def client_sizes(self):
      return np.array([10, 20, 30, 40, 50])

    def client_dataset(self, index):
      return ('dataset of', self.client_ids[index])

  train, held = held_out_lib.hold_out_clients(FakeStreamed(),
                                              eval_clients=2,
                                              seed=0)
  assert train.population == 3
  assert train.label_kind is LabelKind.MULTI_HOT
  for k, cid in enumerate(train.client_ids):
    assert train.client_dataset(k) == ('dataset of', cid)
    assert train.client_sizes()[k] == 10 * (ord(cid) - ord('a') + 1)
  assert set(
      held.client_ids) == {'a', 'b', 'c', 'd', 'e'} - set(train.client_ids)
  assert 'held out' in held.describe()


def test_sampler_and_accountant_see_only_the_training_clients():
  from tff_dp.program import run_privacy  # pylint: disable=g-import-not-at-top
  config = _config(*_FEDERATED, '--release_nonprivate_metrics')
  config_checks.check_config(config)
  data = prepare.load_data(config)
  config_checks.check_eval_clients(config, data.population)
  train, held = held_out_lib.hold_out_clients(data,
                                              eval_clients=config.eval_clients,
                                              seed=config.data_seed)
  config_checks.check_population(config, train.population)
  training = config.num_clients - _EVAL_CLIENTS
  assert train.population == training and held.num_clients == _EVAL_CLIENTS
  sampler = run_privacy.build_sampler(config, train.population, secret=0)
  assert sampler.population == training
  tracker = run_privacy.build_privacy_tracker(config, sampler, train)
  event = tracker.round_event(1)
  assert event.sampling_probability == pytest.approx(config.clients_per_round /
                                                     training)
  # A cohort is drawn from the training clients' indices only.
  assert max(
      max(sampler.sample(r), default=0) for r in range(1, 50)) < (training)


def test_experiment_needs_the_held_out_clients_with_federated_only(tmp_path):
  from tff_dp.program import experiment  # pylint: disable=g-import-not-at-top
  config = _config(*_FEDERATED, '--release_nonprivate_metrics')
  data = _toy_data()
  with pytest.raises(ValueError, match='held_out'):
    experiment.run_experiment(
        prepare.PreparedRun(config=config, data=data, held_out=None),
        str(tmp_path))
  _, held = held_out_lib.hold_out_clients(data, eval_clients=1, seed=0)
  with pytest.raises(ValueError, match='held_out'):
    experiment.run_experiment(
        prepare.PreparedRun(config=_config(), data=data, held_out=held),
        str(tmp_path))


# --- The TFF process --------------------------------------------------------


def _model_fn(data):
  from tff_dp.algorithms import models  # pylint: disable=g-import-not-at-top
  return models.build_model_fn(config_lib.ModelKind.LOGISTIC_REGRESSION,
                               input_dim=data.input_dim,
                               num_classes=data.num_classes,
                               hidden_units=1,
                               seed=0)


@pytest.mark.tff
def test_process_types_are_tffs_federated_evaluation(tff_runtime):
  del tff_runtime
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_dp.algorithms import learning_process  # pylint: disable=g-import-not-at-top
  from tff_dp.program import federated_evaluation  # pylint: disable=g-import-not-at-top
  data = _toy_data()
  process = federated_evaluation.build_federated_evaluation(_model_fn(data))
  assert isinstance(process, tff.learning.templates.LearningProcess)
  client_data = process.next.type_signature.parameter[1]
  assert client_data.placement is tff.CLIENTS
  batch = client_data.member.element
  assert tf.as_dtype(batch[0].dtype) == tf.float32
  assert tuple(batch[0].shape) == (None, data.input_dim)
  assert tf.as_dtype(batch[1].dtype) == tf.int32
  metrics = process.next.type_signature.result.metrics
  assert metrics.placement is tff.SERVER
  current = metrics.member.client_work.eval.current_round_metrics
  for name in ('loss', 'sparse_categorical_accuracy', 'num_examples'):
    assert getattr(current, name) is not None
  # It takes the weights of the training process built from the same model.
  training = learning_process.build_learning_process(
      model_fn=_model_fn(data),
      model_aggregator=None,
      client_learning_rate=0.1,
      client_momentum=0.0,
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0))
  process.set_model_weights.type_signature.parameter[1].check_assignable_from(
      training.get_model_weights.type_signature.result)


@pytest.mark.tff
def test_metrics_equal_a_direct_computation_on_the_held_out_examples(
    tff_runtime):
  del tff_runtime
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_dp.program import federated_evaluation  # pylint: disable=g-import-not-at-top
  data = _toy_data()
  _, held = held_out_lib.hold_out_clients(data, eval_clients=3, seed=1)
  # Batches of 2 leave partial last batches: the metrics must still weight
  # every example equally.
  evaluate = federated_evaluation.FederatedEvaluator(
      federated_evaluation.build_federated_evaluation(_model_fn(data)),
      federated_evaluation.held_out_datasets(held, batch_size=2))
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(data.input_dim, data.num_classes))
  bias = rng.normal(size=data.num_classes)
  weights = tff.learning.models.ModelWeights(
      trainable=[kernel.astype(np.float32),
                 bias.astype(np.float32)],
      non_trainable=[])
  metrics = evaluate(weights)

  x = np.concatenate([data.client_x[i] for i in held.indices
                     ]).astype(np.float64)
  y = np.concatenate([data.client_y[i] for i in held.indices])
  logits = x @ kernel + bias
  log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  assert metrics['num_examples'] == len(y) == held.client_sizes().sum()
  assert metrics['loss'] == pytest.approx(
      -log_softmax[np.arange(len(y)), y].mean(), rel=1e-5)
  assert metrics['accuracy'] == pytest.approx(
      np.mean(logits.argmax(axis=1) == y), abs=1e-6)
  # Every evaluation starts afresh: nothing accumulates across calls.
  assert evaluate(weights) == metrics


# --- The real program -------------------------------------------------------


@pytest.mark.e2e
def test_program_releases_federated_metrics_under_nonprivate(tmp_path):
  result = programs.run_train(f'--flagfile={_SMOKE}', *_FEDERATED,
                              '--release_nonprivate_metrics', '--rounds=2',
                              f'--output_dir={tmp_path}', '--run_name=fed')
  assert result.returncode == 0, result.stderr[-3000:]
  run_dir = os.path.join(tmp_path, 'fed')
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [row['round'] for row in rows] == ['1', '2']
  keys = set(rows[0]) - {'round'}
  assert _FED_EVAL_KEYS <= keys
  # No unlabelled evaluation: the server's test set is not used.
  assert not any(key.startswith('eval/') for key in keys)
  config = _config(*_FEDERATED)
  _, held = held_out_lib.hold_out_clients(prepare.load_data(config),
                                          eval_clients=_EVAL_CLIENTS,
                                          seed=config.data_seed)
  for row in rows:
    assert float(
        row['nonprivate/fed_eval/num_examples']) == (held.client_sizes().sum())
    assert 0 <= float(row['nonprivate/fed_eval/accuracy']) <= 1

  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  training = config.num_clients - _EVAL_CLIENTS
  assert summary['evaluation'] == 'federated'
  assert summary['accuracy_key'] == 'nonprivate/fed_eval/accuracy'
  assert summary['accuracy'] == pytest.approx(
      float(rows[-1]['nonprivate/fed_eval/accuracy']))
  assert summary['population'] == training
  with open(os.path.join(run_dir, 'ledger.json')) as f:
    ledger = json.load(f)
  assert ledger['rounds'][0]['event']['sampling_probability'] == (pytest.approx(
      config.clients_per_round / training))

  with open(os.path.join(run_dir, 'privacy_statement.txt')) as f:
    statement = f.read()
  assert f'N = {training} clients' in statement
  not_covered = [
      line for line in statement.splitlines()
      if 'nonprivate/fed_eval/accuracy' in line
  ]
  assert not_covered and all(
      'NOT COVERED' in line.upper() for line in not_covered)
  assert 'federated evaluation accuracy' in result.stdout
  assert 'nonprivate/fed_eval/accuracy' in result.stdout
