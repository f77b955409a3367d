"""Prepares a run once: checks, data, held-out clients and calibration.

The trainer (`tff_dp.cli.train`), the planner (`tff_dp.cli.epsilon`) and the tests
resolve a configuration the same way, here, so that a plan sees the
population, the clients and the noise multiplier that a run with the same
flags would see. Everything that can be refused is refused before any output
is written, including a --max_epsilon that not even the first round fits
(`check_budget`). TensorFlow is imported only by the data sources that stream (the
offline datasets need none), and by nothing else here.
"""

import dataclasses
import math
from typing import Any, Optional

from tff_dp import config as config_lib
from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.checks import ConfigError
from tff_dp.cohorts import sampling
from tff_dp.config import TrainConfig
from tff_dp.data import loading
from tff_dp.data import public_clients


@dataclasses.dataclass(frozen=True)
class PreparedRun:
  """A checked configuration and the data it trains on.

  Attributes:
    config: The configuration; with --target_epsilon, its noise multiplier
      is the calibrated one.
    data: The training clients (the population N of the accounting).
    held_out: Clients held out for --evaluation=federated, else None.
    clients_per_call: Simulated clients per TFF call, resolved
      (`simulation_path.resolve_clients_per_call`): 1 for TFF's algorithms,
      more for the grouped path.
    rounds_per_call: Most rounds per TFF call, resolved
      (`simulation_path.resolve_rounds_per_call`).
    calibrated_by: The accountant whose epsilon calibrated the noise
      multiplier (--target_epsilon), else None.
    keras_model_fn: The caller's own uncompiled Keras model constructor
      (Python API), trained instead of `config.model`; None for the flags'.
  """
  config: TrainConfig
  data: Any
  held_out: Optional[Any]
  clients_per_call: int = 1
  rounds_per_call: int = 1
  calibrated_by: Optional[Any] = None
  keras_model_fn: Optional[Any] = None


def load_data(config: TrainConfig) -> Any:
  """The data `config` names; `ConfigError` naming the dataset if unusable."""
  from tff_dp.data import shard_manifest  # pylint: disable=g-import-not-at-top
  public = public_clients.PublicDeclaration(file=config.public_clients,
                                            fraction=config.public_fraction)
  # Before loading: Stack Overflow's clients take a while to list.
  public_clients.check_declaration(public, dataset=config.dataset.value)
  if shard_manifest.is_manifest_path(config.client_data):
    if public.declared:
      raise ConfigError(
          *public.flag, 'is not supported with a sharded '
          '--client_data (manifest.json); import the table '
          'unsharded to declare public clients')
    # A sharded import: with --workers the driver reads the manifest only.
    from tff_dp.data import shard_files  # pylint: disable=g-import-not-at-top
    try:
      if config.workers:
        return shard_manifest.ShardedClientData(config.client_data)
      return shard_files.load_in_memory(config.client_data)
    except (OSError, ValueError) as e:
      raise ConfigError('client_data', config.client_data, str(e)) from e
  try:
    return loading.load(config.dataset,
                        num_clients=config.num_clients,
                        partition=config.partition,
                        seed=config.data_seed,
                        test_fraction=config.test_fraction,
                        dirichlet_alpha=config.dirichlet_alpha,
                        data_dir=config.data_dir,
                        client_data=config.client_data,
                        next_token_labels=config.model
                        is config_lib.ModelKind.TRANSFORMER,
                        public=public)
  except loading.DataDirError as e:
    raise ConfigError('data_dir', config.data_dir, e.reason) from e
  except loading.DataError as e:
    raise ConfigError('dataset', config.dataset.value, str(e)) from e


def _tokens_in_memory(config: TrainConfig, data):
  """Token data read into memory for the transformer's grouped path
  (`token_memory`'s rule, on the public population N alone), else `data`.

  Only where the grouped path would train it: --clients_per_call=1, --workers
  (the driver then sends the examples) and what the grouped path does not
  implement keep the streamed source, one client per TFF call.
  """
  from tff_dp.data import token_memory  # pylint: disable=g-import-not-at-top
  from tff_dp.data.federated_data import FederatedData  # pylint: disable=g-import-not-at-top
  if (isinstance(data, FederatedData) or data.vocab_size is None or
      config.model is not config_lib.ModelKind.TRANSFORMER or
      config.clients_per_call == 1 or config.workers or
      simulation_path.grouped_unsupported_reason(config) is not None or
      not token_memory.fits(data)):
    return data
  try:
    return token_memory.to_federated_data(data)
  except ValueError as e:
    raise ConfigError('dataset', config.dataset.value, str(e)) from e


def _hold_out_eval_clients(config: TrainConfig, data):
  """(training data, held-out clients or None) for --evaluation.

  Done before any check or calibration that uses the population, so that
  all of them see the training clients only.
  """
  if config.evaluation is not config_lib.Evaluation.FEDERATED:
    return data, None
  config_checks.check_eval_clients(config, data.population)
  from tff_dp.data import held_out  # pylint: disable=g-import-not-at-top
  return held_out.hold_out_clients(data,
                                   eval_clients=config.eval_clients,
                                   seed=config.data_seed)


def calibrate(config: TrainConfig, population: int):
  """(config with the noise multiplier that meets --target_epsilon, the
  accountant that gave it)."""
  from tff_dp.privacy import accounting  # pylint: disable=g-import-not-at-top
  from tff_dp.privacy import calibration  # pylint: disable=g-import-not-at-top
  try:
    z, accountant = calibration.calibrate_noise_for_accountants(
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        rounds=config.rounds,
        sampling=config.client_sampling,
        population=population,
        clients_per_round=config.clients_per_round,
        accountants=config.accountants)
  except (ValueError, accounting.UnsupportedAccountingError) as e:
    raise ConfigError('target_epsilon', config.target_epsilon, str(e)) from e
  config = dataclasses.replace(config, noise_multiplier=z)
  try:
    config_checks.check_mechanism(config)
  except ConfigError as e:
    raise ConfigError('target_epsilon', config.target_epsilon,
                      f'needs {e}') from e
  return config, accountant


def _at_least(value: float) -> str:
  """`value` rounded up to 4 significant digits: passed back as a budget,
  the text admits `value`."""
  if value > 0 and math.isfinite(value):
    scale = 10.0**(math.floor(math.log10(value)) - 3)
    text = f'{math.ceil(value / scale) * scale:.4g}'
    if float(text) >= value:
      return text
  return repr(value)


def check_budget(config: TrainConfig, population: int) -> None:
  """Refuses a --max_epsilon that not even the first round fits.

  The training loop checks the budget before each round and would stop
  cleanly before round 1: a run of 0 rounds that exits 0, after importing
  TensorFlow and starting a worker. The first round's epsilon comes from the
  ledger the run itself keeps (`run_privacy.build_privacy_tracker`), with
  the loop's rule: the guarantee is the tightest accountant's epsilon, and
  an accountant that cannot compose the event does not count. A resumed run
  has charged at least that round already, so its budget check is the
  loop's, against its restored ledger; a budget below one round is refused
  here for it too, before its directory is touched.

  Args:
    config: The configuration, its noise multiplier final.
    population: The sampler's population (with an audit's canaries).

  Raises:
    ConfigError: Naming --max_epsilon and the first round's epsilon.
  """
  if config.max_epsilon is None or not config.central_private:
    return
  from tff_dp.privacy import accounting  # pylint: disable=g-import-not-at-top
  from tff_dp.program import run_privacy  # pylint: disable=g-import-not-at-top
  # The events depend on the sampler's kind and sizes, not on its secret.
  tracker = run_privacy.central_tracker(
      config, run_privacy.build_sampler(config, population, secret=0))
  tightest = accounting.tightest_epsilon(tracker.epsilons(next_round=1))
  accountants = ','.join(kind.value for kind in config.accountants)
  if tightest is None:
    raise ConfigError(
        'max_epsilon', config.max_epsilon,
        f'no accountant of --accountants={accountants} can compute the '
        f'epsilon of a round of --dp_mechanism={config.dp_mechanism.value}, '
        'so no round could be checked against the budget')
  kind, epsilon = tightest
  if epsilon > config.max_epsilon:
    # DP-FTRL charges its tree's whole first epoch at the first round.
    epoch = (' (charged for the tree\'s whole first epoch)'
             if config.client_sampling
             is sampling.ClientSampling.SHUFFLED_EPOCHS else ' alone')
    noise = ('lower --target_epsilon (more noise)' if config.target_epsilon
             is not None else 'add noise (--noise_multiplier)')
    raise ConfigError(
        'max_epsilon', config.max_epsilon,
        f'the first round{epoch} costs epsilon {_at_least(epsilon)} (the '
        f'{kind.value} accountant, delta = {config.delta:g}), so no round '
        f'could run; raise --max_epsilon to at least {_at_least(epsilon)} '
        f'or {noise}')


def prepare_run(config: TrainConfig,
                *,
                calibrate_noise: bool = True) -> PreparedRun:
  """Checks `config`, loads its data and calibrates its noise.

  Args:
    config: The configuration as the flags give it.
    calibrate_noise: With --target_epsilon, replace the noise multiplier by
      the calibrated one (the planner calibrates by itself).

  Returns:
    The `PreparedRun`.

  Raises:
    ConfigError: For any setting that cannot run, naming the flag and value.
  """
  config_checks.check_config(config)  # Before loading: cheap checks first.
  return _prepare_loaded(config,
                         load_data(config),
                         calibrate_noise=calibrate_noise)


def prepare_data(config: TrainConfig,
                 data: Any,
                 *,
                 calibrate_noise: bool = True) -> PreparedRun:
  """`prepare_run` for data already in hand (benchmarks, tests)."""
  config_checks.check_config(config)
  return _prepare_loaded(config, data, calibrate_noise=calibrate_noise)


def _prepare_loaded(config: TrainConfig, data: Any, *,
                    calibrate_noise: bool) -> PreparedRun:
  """The checks and resolutions of `prepare_run` that need the data."""
  data = _tokens_in_memory(config, data)
  data, held_out = _hold_out_eval_clients(config, data)
  config_checks.check_population(config, data.population)
  config_checks.check_model_fits_data(config,
                                      image_shape=data.image_shape,
                                      vocab_size=data.vocab_size)
  if config.init_from:
    from tff_dp.program import pretrained_meta  # pylint: disable=g-import-not-at-top
    pretrained_meta.check_checkpoint(config.init_from, config, data)
  from tff_dp.data.federated_data import FederatedData  # pylint: disable=g-import-not-at-top
  clients_per_call = simulation_path.resolve_clients_per_call(
      config, in_memory=isinstance(data, FederatedData))
  rounds_per_call = simulation_path.resolve_rounds_per_call(
      config, clients_per_call=clients_per_call)
  if config.example_dp:
    config_checks.check_record_level_delta(config,
                                           int(max(data.client_sizes())))
  calibrated_by = None
  # An audit run's sampler also draws its canaries.
  sampled = data.population + config.audit_canaries
  if calibrate_noise and config.target_epsilon is not None:
    config, calibrated_by = calibrate(config, sampled)
  if calibrate_noise or config.target_epsilon is None:
    check_budget(config, sampled)  # Once the noise multiplier is final.
  return PreparedRun(config=config,
                     data=data,
                     held_out=held_out,
                     clients_per_call=clients_per_call,
                     rounds_per_call=rounds_per_call,
                     calibrated_by=calibrated_by)
