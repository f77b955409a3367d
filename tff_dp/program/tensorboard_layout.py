"""What TensorBoard shows of a run beyond its rows: hparams and chart layout.

Written once per run, at step 0, through the run's TensorBoard sink (so with
its timeless event times, `tff_dp.program.event_writer`), and rebuilt with the
sink's files when a run resumes:

* The hparams plugin's data, so that runs can be compared and sorted in the
  HParams dashboard: the run's public settings that matter (flags, all
  public: never the cohorts, times or secrets), under the run's name, and the
  experiment: every setting with its domain and every metric column. A
  metric column is a released scalar tag (TensorBoard reads its value as the
  tag's last scalar), so the column names are the release allow-list's keys,
  unchanged. TensorBoard takes the experiment of one run (any) for the whole
  log directory, so every run writes the same one: all the columns some run
  may have; a run's cells are empty where its settings or keys do not apply.
* A custom-scalars layout whose first category, "privacy and accuracy", holds
  the run's evaluation and its epsilons, only the charts that apply to the
  run (the dashboard merges the runs' layouts by title).
"""

import dataclasses
import re
from typing import Mapping, Optional, Union

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as layout_metadata
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.util import tensor_util

from tff_dp import config as config_lib
from tff_dp.cohorts import sampling
from tff_dp.data import labels
from tff_dp.data import loading
from tff_dp.mechanisms import gaussian_adaptive
from tff_dp.mechanisms import registry as mechanism_registry
from tff_dp.privacy import accounting
from tff_dp.program import release

Value = Union[str, float, int, bool]

CATEGORY = 'privacy and accuracy'
LOCAL_EPSILON_KEY = 'privacy/local_epsilon'
EXAMPLE_EPSILON_KEYS = ('privacy/example_epsilon', 'nonprivate/example_epsilon')
# Where an evaluation's keys may be (`tff_dp.program.round_releases.eval_prefix`).
EVAL_PREFIXES = (release.EVAL_PREFIX, release.PRIVATE_EVAL_PREFIX,
                 release.FED_EVAL_PREFIX)
# The headline metric of each kind of labels (accuracy, recall@5).
HEADLINES = tuple(labels.headline_metric(kind) for kind in labels.LabelKind)
ACCURACY = labels.headline_metric(labels.LabelKind.SINGLE)
CENTRAL_EPSILON_KEYS = tuple(
    accounting.released_key(kind) for kind in accounting.AccountantKind)


class _Real(hp.Domain):
  """Any real number: a numeric column with no preset filter bounds.

  (TensorBoard's `RealInterval` would preset the dashboard's filter to its
  bounds, and hide every run outside them.)
  """

  @property
  def dtype(self):
    return float

  def sample_uniform(self, rng=None):
    raise NotImplementedError('not sampled')

  def update_hparam_info(self, hparam_info):
    hparam_info.type = api_pb2.DATA_TYPE_FLOAT64


def _choice(enum_type) -> hp.Discrete:
  return hp.Discrete([member.value for member in enum_type])


# Every column of the HParams dashboard, the same for every run. The
# dashboard shows the first five settings and the first five metrics until
# the user ticks more: the mechanism's and the epsilons first.
HPARAMS = (
    hp.HParam('dp_mechanism', _choice(mechanism_registry.DpMechanism)),
    hp.HParam('noise_multiplier',
              _Real(),
              description='The central noise multiplier z (resolved).'),
    hp.HParam('clip',
              _Real(),
              description='The central L2 clip: under adaptive clipping, '
              'the initial clip (the clip of each round is the released '
              'privacy/clip).'),
    hp.HParam('sampling_rate',
              _Real(),
              description='q: the chance that a client takes part in a '
              'round (clients_per_round over the population; public).'),
    hp.HParam('clients_per_round',
              _Real(),
              description='The planned (expected) cohort size.'),
    hp.HParam('population',
              _Real(),
              description='N: the clients the run samples from (public).'),
    hp.HParam('rounds', _Real(), description='Rounds planned.'),
    hp.HParam('delta', _Real()),
    hp.HParam('target_epsilon',
              _Real(),
              description='The epsilon --target_epsilon calibrated the '
              'noise multiplier to (empty: not calibrated).'),
    hp.HParam('seed',
              _Real(),
              description='--seed: model initialization and the clients\' '
              'data order (public; never the cohorts or the noise).'),
    hp.HParam('client_sampling', _choice(sampling.ClientSampling)),
    hp.HParam('local_dp', _choice(config_lib.LocalDp)),
    hp.HParam('local_epsilon',
              _Real(),
              description='Local DP (Laplace): epsilon per participation.'),
    hp.HParam('local_noise_multiplier',
              _Real(),
              description='Local DP (Gaussian): the clients\' noise '
              'multiplier.'),
    hp.HParam('example_dp', hp.Discrete([False, True])),
    hp.HParam('algorithm', _choice(config_lib.Algorithm)),
    hp.HParam('dataset', _choice(loading.Dataset)),
    hp.HParam('model', _choice(config_lib.ModelKind)),
)

# Every metric column, the same for every run: the covered evaluation's
# accuracy, every epsilon and the loss first, then the other headline metric
# (recall@5 of multi-label data) and the evaluations outside the guarantee.
METRICS = (
    release.EVAL_PREFIX + ACCURACY,
    *CENTRAL_EPSILON_KEYS,
    LOCAL_EPSILON_KEY,
    release.EVAL_PREFIX + 'loss',
    *(release.EVAL_PREFIX + name for name in HEADLINES if name != ACCURACY),
    *EXAMPLE_EPSILON_KEYS,
    *(prefix + name
      for prefix in (release.PRIVATE_EVAL_PREFIX, release.FED_EVAL_PREFIX)
      for name in (*HEADLINES, 'loss')),
)


def run_hparams(config: config_lib.TrainConfig,
                population: Optional[int] = None) -> dict[str, Value]:
  """The run's values of `HPARAMS`: only the settings that apply to it.

  Args:
    config: The run's settings.
    population: The clients it samples from (N, public: the accountant's
      input); None leaves N and q out.

  Returns:
    The values by hparam name.
  """
  values: dict[str, Value] = {
      'dataset': config.dataset.value,
      'model': config.model.value,
      'algorithm': config.algorithm.value,
      'dp_mechanism': config.dp_mechanism.value,
      'clients_per_round': config.clients_per_round,
      'client_sampling': config.client_sampling.value,
      'rounds': config.rounds,
      'seed': config.seed,
      'local_dp': config.local_dp.value,
      'example_dp': config.example_dp,
  }
  if population:
    values['population'] = population
    values['sampling_rate'] = min(1.0, config.clients_per_round / population)
  if config.uses_dp_aggregator:
    values['noise_multiplier'] = config.noise_multiplier
    values['clip'] = (config.initial_clip if config.mechanism
                      is gaussian_adaptive.MECHANISM else config.clip)
  if config.private:
    values['delta'] = config.delta
  if config.target_epsilon is not None:
    values['target_epsilon'] = config.target_epsilon
  if config.local_dp is config_lib.LocalDp.LAPLACE:
    values['local_epsilon'] = config.local_epsilon
  elif config.local_dp is config_lib.LocalDp.GAUSSIAN:
    values['local_noise_multiplier'] = config.local_noise_multiplier
  return values


def _evaluates(config: config_lib.TrainConfig) -> bool:
  """`tff_dp.program.round_releases.evaluation_released` (a test keeps them
  equal): a DP run evaluates outside its guarantee only on request."""
  covered = (config.evaluation is config_lib.Evaluation.CENTRALIZED and
             loading.test_set_origin(config.dataset).public)
  return covered or not config.private or config.release_nonprivate_metrics


def _any_of(keys) -> str:
  """A custom-scalars tag regex: exactly one of `keys`."""
  return '^(' + '|'.join(re.escape(key) for key in keys) + ')$'


def _chart(title: str, keys) -> layout_pb2.Chart:
  return layout_pb2.Chart(
      title=title,
      multiline=layout_pb2.MultilineChartContent(tag=[_any_of(keys)]))


# Every chart of the first category, in its order: (chart, whether it
# applies to a run). The charts are the same in every run, for the merge.
_CHARTS = (
    (_chart('accuracy (recall@5 for multi-label data)',
            [p + name for p in EVAL_PREFIXES for name in HEADLINES]),
     _evaluates),
    (_chart('central epsilon',
            CENTRAL_EPSILON_KEYS), lambda config: config.central_private),
    (_chart('local epsilon', [LOCAL_EPSILON_KEY]),
     lambda config: config.local_dp is not config_lib.LocalDp.NONE),
    # Released with a user-level claim only on request (it depends on the
    # silos' sizes), as nonprivate/ (`tff_dp.program.run_privacy`).
    (_chart('record-level epsilon',
            EXAMPLE_EPSILON_KEYS), lambda config: config.example_dp and
     (not config.central_private or config.release_nonprivate_metrics)),
    (_chart('loss', [p + 'loss' for p in EVAL_PREFIXES]), _evaluates),
)


def layout(config: config_lib.TrainConfig) -> layout_pb2.Layout:
  """The run's custom-scalars layout: the charts that apply to it."""
  return layout_pb2.Layout(category=[
      layout_pb2.Category(
          title=CATEGORY,
          chart=[chart for chart, applies in _CHARTS if applies(config)])
  ])


@dataclasses.dataclass(frozen=True)
class RunDescription:
  """What a sink may show of a run besides its rows (public values only).

  Attributes:
    name: The run's name (public: the run directory's name).
    hparams: The run's public settings that matter (`run_hparams`).
    layout: The run's custom-scalars layout.
  """
  name: str
  hparams: Mapping[str, Value]
  layout: layout_pb2.Layout

  def summaries(self, start_time: float) -> list[summary_pb2.Summary]:
    """The TensorBoard summaries, `start_time` their only time."""
    experiment = hp.hparams_config_pb(list(HPARAMS),
                                      [hp.Metric(tag) for tag in METRICS],
                                      time_created_secs=start_time)
    # The run's name as the trial: two runs with the same settings are two
    # rows, not one group whose metrics TensorBoard would average.
    session = hp.hparams_pb(dict(self.hparams),
                            trial_id=self.name,
                            start_time_secs=start_time)
    return [experiment, session, _layout_pb(self.layout)]


def _layout_pb(scalars_layout: layout_pb2.Layout) -> summary_pb2.Summary:
  """`tensorboard.summary.v1.custom_scalar_pb`, without TensorFlow."""
  summary = summary_pb2.Summary()
  summary.value.add(tag=layout_metadata.CONFIG_SUMMARY_TAG,
                    metadata=layout_metadata.create_summary_metadata(),
                    tensor=tensor_util.make_tensor_proto(
                        scalars_layout.SerializeToString()))
  return summary


def describe(config: config_lib.TrainConfig,
             *,
             run_name: str,
             population: Optional[int] = None) -> RunDescription:
  """The run's description for the sinks (`Releaser.describe_run`)."""
  return RunDescription(name=run_name,
                        hparams=run_hparams(config, population),
                        layout=layout(config))
