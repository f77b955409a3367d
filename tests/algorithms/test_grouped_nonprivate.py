"""Non-private FedAvg, FedSGD and FedProx on the grouped path against TFF's.

The reference is TFF's one-client-per-call builder with TFF's own mean
(`learning_process.build_model_aggregator(dp=None, ...)`): `MeanFactory`
weighted by n_k for `--client_weighting=num_examples`
(`build_weighted_fed_avg`, `build_fed_sgd`, `build_weighted_fed_prox`),
`UnweightedMeanFactory` for uniform and capped weights. The grouped process
takes `tff_dp.algorithms.grouped_mean`'s query instead of a DP factory. With
no noise anywhere the model, the training metrics and the state's leaves
must equal the reference's over three rounds of unequal cohorts (7, 5 and 2
clients of 1-7 examples, so n_k weights and the count both matter).

The aggregator's (empty) measurements differ in container only: TFF's mean
factories report `OrderedDict(mean_value=(), mean_weight=())` (or
`mean_count`), the grouped process `()`, as with local DP alone; neither
has a value, and the program reads only `client_work`.

Privacy: which path runs a non-private config changes neither its ledger
(zero-noise rounds, no central claim) nor its privacy statement, and the
grouped process keeps no aggregator state (no DP event in the state).
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT
from tests.helpers import central_dp
from tests.helpers import grouped as g
from tff_dp import api
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import grouped_mean
from tff_dp.algorithms import learning_process
from tff_dp.checks import ConfigError
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.program import privacy_statement
from tff_dp.program import run_privacy

_FEDSGD = grouped_client_options.ClientOptions(full_gradient=True,
                                               stateless_client_work=True)
_FEDPROX = grouped_client_options.ClientOptions(proximal_strength=0.1,
                                                stateless_client_work=True)


def _query(weighting):
  return grouped_mean.ClientMeanQuery(
      by_num_examples=weighting is ClientWeighting.NUM_EXAMPLES)


def _reference(weighting, *, algorithm=Algorithm.FEDAVG, weight_cap=None):
  return g.reference(learning_process.build_model_aggregator(
      dp=None, client_weighting=weighting, weight_cap=weight_cap),
                     algorithm=algorithm,
                     proximal_strength=_FEDPROX.proximal_strength
                     if algorithm is Algorithm.FEDPROX else 0.0)


def _assert_equivalent(weighting,
                       *,
                       algorithm=Algorithm.FEDAVG,
                       options=None,
                       weight_cap=None,
                       group_sizes=((3, True),),
                       max_client_size=None):
  """The grouped process == the reference (see the module docstring)."""
  xs, ys = g.population()
  reference = _reference(weighting, algorithm=algorithm, weight_cap=weight_cap)
  grouped = g.build_grouped(None,
                            options,
                            mean_query=_query(weighting),
                            max_client_size=max_client_size)
  ref_state, ref_outputs = g.run(
      reference, lambda r, c: g.reference_datasets(xs, ys, r, c))
  expected = g.weights(reference, ref_state)
  assert g.max_abs_diff(g.weights(grouped, grouped.initialize()),
                        g.weights(reference, reference.initialize())) == 0.0
  assert g.max_abs_diff(expected, g.weights(reference,
                                            reference.initialize())) > 1e-3
  for group_size, pad in group_sizes:
    state, outputs = g.run(grouped,
                           lambda r, c, n=group_size, p=pad: g.groups(
                               xs, ys, r, c, group_size=n, pad_to_group_size=p))
    diff = g.max_abs_diff(g.weights(grouped, state), expected)
    assert diff <= g.WEIGHTS_ATOL, (group_size, pad, diff)
    for ref_output, output in zip(ref_outputs, outputs):
      _assert_same_metrics(ref_output.metrics, output.metrics)
    assert g.leaves(state) == g.leaves(ref_state)
    # No aggregator state: no DP event is kept or could be extracted.
    assert state.aggregator == ()
  return grouped


def _assert_same_metrics(reference_metrics, grouped_metrics):
  """`g.assert_same_metrics`, but for the aggregator's empty container."""
  assert not tf.nest.flatten(reference_metrics['aggregator'])
  assert grouped_metrics['aggregator'] == ()
  g.assert_same_metrics(_without_aggregator(reference_metrics),
                        _without_aggregator(grouped_metrics))


def _without_aggregator(metrics):
  return type(metrics)(
      (k, () if k == 'aggregator' else v) for k, v in metrics.items())


# --- The query's weights (TF only, no TFF execution). -------------------------


@pytest.mark.parametrize('by_num_examples, expected',
                         [(True, [5.0, 0.0, 2.0]), (False, [1.0, 0.0, 1.0])])
def test_client_weights_are_tffs(by_num_examples, expected):
  query = grouped_mean.ClientMeanQuery(by_num_examples=by_num_examples)
  weights = [
      float(query.client_weight(tf.constant(n, tf.int64), tf.constant(ok)))
      for n, ok in ((5, True), (3, False), (2, True))
  ]
  # A client whose update was not finite weighs 0, as in TFF's client work.
  assert weights == expected


def test_weighted_mean_and_an_empty_round():
  query = grouped_mean.ClientMeanQuery(by_num_examples=True)
  params = query.derive_sample_params(query.initial_global_state())
  state = query.initial_sample_state([tf.zeros([2])])
  for update, n in (([1.0, 2.0], 1), ([4.0, -1.0], 3)):
    record = grouped_mean.preprocess_record(query,
                                            params, [tf.constant(update)],
                                            num_examples=tf.constant(
                                                n, tf.int64),
                                            finite=tf.constant(True))
    state = query.accumulate_preprocessed_record(state, record)
  result, _, _ = query.get_noised_result(state, query.initial_global_state())
  np.testing.assert_allclose(result[0], [(1 + 12) / 4, (2 - 3) / 4])
  # No client: a zero mean, not 0 / 0 (TFF's factories would give NaN).
  empty, _, event = query.get_noised_result(
      query.initial_sample_state([tf.zeros([2])]), query.initial_global_state())
  np.testing.assert_array_equal(empty[0], [0.0, 0.0])
  assert type(event).__name__ == 'NonPrivateDpEvent'


def test_a_dp_mechanism_beside_the_mean_is_refused():
  dp = central_dp.settings(clients_per_round=7, clip=0.3)
  with pytest.raises(TypeError, match='takes no DP factory'):
    g.build_grouped(learning_process.build_dp_aggregator(dp),
                    mean_query=_query(ClientWeighting.UNIFORM))


# --- Against the reference (TFF execution). -----------------------------------


@pytest.mark.tff
@g.PATHS
def test_nonprivate_fedavg_num_examples_equals_reference(
    tff_runtime, monkeypatch, max_client_size):
  """configs/nonprivate.cfg's mechanism: FedAvg weighted by n_k."""
  del tff_runtime
  traced = g.count_vectorized(monkeypatch)
  _assert_equivalent(ClientWeighting.NUM_EXAMPLES,
                     max_client_size=max_client_size)
  g.assert_path(traced, max_client_size)


@pytest.mark.tff
@pytest.mark.slow
def test_nonprivate_fedavg_uniform_equals_reference(tff_runtime):
  del tff_runtime
  _assert_equivalent(ClientWeighting.UNIFORM,
                     group_sizes=((3, True), (2, False), (7, True)))


@pytest.mark.tff
@pytest.mark.slow
def test_nonprivate_fedsgd_num_examples_equals_reference(tff_runtime):
  """configs/fedsgd.cfg's mechanism: FedSGD weighted by n_k."""
  del tff_runtime
  _assert_equivalent(ClientWeighting.NUM_EXAMPLES,
                     algorithm=Algorithm.FEDSGD,
                     options=_FEDSGD)


@pytest.mark.tff
@pytest.mark.slow
@pytest.mark.parametrize(
    'weighting', [ClientWeighting.NUM_EXAMPLES, ClientWeighting.UNIFORM])
def test_nonprivate_fedprox_equals_reference(tff_runtime, weighting):
  del tff_runtime
  _assert_equivalent(weighting, algorithm=Algorithm.FEDPROX, options=_FEDPROX)


@pytest.mark.tff
@pytest.mark.slow
def test_nonprivate_capped_weights_equal_reference(tff_runtime):
  del tff_runtime
  _assert_equivalent(ClientWeighting.CAPPED,
                     options=grouped_client_options.ClientOptions(weight_cap=3),
                     weight_cap=3)


# --- Which path, and that the path changes nothing private. ------------------


def _preset(name, **settings):
  return api.make_config(flagfile=f'{REPO_ROOT}/configs/{name}', **settings)


@dataclasses.dataclass
class _Clients:
  population: int

  def client_sizes(self):
    raise AssertionError('a non-private ledger reads no client size')


@pytest.mark.parametrize('name', ['nonprivate.cfg', 'fedsgd.cfg'])
def test_nonprivate_presets_take_the_grouped_path(name):
  config = _preset(name)
  assert config.client_weighting is ClientWeighting.NUM_EXAMPLES
  assert simulation_path.grouped_unsupported_reason(config) is None
  assert simulation_path.resolve_clients_per_call(
      config, in_memory=True) == simulation_path.AUTO_CLIENTS_PER_CALL
  # Streamed data still takes TFF's path.
  assert simulation_path.resolve_clients_per_call(config, in_memory=False) == 1


@pytest.mark.parametrize('name', ['nonprivate.cfg', 'fedsgd.cfg'])
def test_the_path_changes_nothing_private(name):
  """Ledger and statement of a non-private preset: zero-noise rounds, no
  claim, no released privacy value, the same whichever path runs."""
  texts = set()
  for per_call in (0, 1):
    config = _preset(name, clients_per_call=per_call)
    tracker = run_privacy.planned_tracker(config, _Clients(population=700))
    assert not config.private and not config.mechanism.noised
    assert config.mechanism.released_keys == ()
    assert tracker.guarantees() == [] and tracker.released_values() == {}
    assert all(np.isinf(e) for e in tracker.epsilons().values())
    texts.add((str(tracker.to_json()),
               privacy_statement.privacy_statement(config,
                                                   population=700,
                                                   rounds_run=config.rounds,
                                                   privacy=tracker)))
  assert len(texts) == 1
  (_, statement), = texts
  assert statement.splitlines()[2].startswith(
      'NOT PRIVATE: --dp_mechanism=none. Epsilon is infinite.')


@pytest.mark.parametrize('settings, flag', [
    (dict(dp_mechanism='gaussian_fixed'), '--dp_mechanism=gaussian_fixed'),
    (dict(dp_mechanism='gaussian_fixed',
          noise_multiplier=0.0,
          allow_zero_noise=True), '--dp_mechanism=gaussian_fixed'),
    (dict(local_dp='gaussian', local_noise_multiplier=1.0,
          local_clip=1.0), '--local_dp=gaussian'),
])
def test_num_examples_weights_are_refused_with_any_dp(settings, flag):
  with pytest.raises(ConfigError,
                     match=f'client_weighting=num_examples.*{flag}'):
    config_checks.check_config(_preset('nonprivate.cfg', **settings))
