"""Whether a training configuration can run: cross-flag and data checks.

Every check raises `ConfigError` naming the flag and its value, before the
program pays for importing TFF: `check_config` needs no data; the others
check the configuration against the population and the loaded data. Which
simulation path runs a configuration is `tff_dp.simulation_path`'s.

Pure Python, like `tff_dp.config`: importing this module must stay cheap.
"""

import os
from typing import Optional

from tff_dp import simulation_path
from tff_dp.checks import ConfigError
from tff_dp.cohorts import sampling
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import Evaluation
from tff_dp.config import LocalDp
from tff_dp.config import ModelKind
from tff_dp.config import Trainable
from tff_dp.config import TrainConfig
from tff_dp.config import WorkerLoss
from tff_dp.data import loading
from tff_dp.data import shard_manifest
from tff_dp.mechanisms import registry as mechanism_registry


def _other_guarantee(config: TrainConfig) -> str:
  """', and this run's guarantee is ...' for a run private without central
  noise, else ''."""
  if config.local_dp is not LocalDp.NONE:
    return (f'; this run\'s guarantee is local, --local_dp='
            f'{config.local_dp.value}, set by its own flags')
  if config.example_dp:
    return ('; this run\'s guarantee is record-level, --example_dp, set by '
            '--example_noise_multiplier')
  return '; epsilon is infinite'


def _check_transformer(config: TrainConfig) -> None:
  """The transformer's heads divide its width; --init_from names a file."""
  if config.model is ModelKind.TRANSFORMER and (config.transformer_width %
                                                config.transformer_heads):
    raise ConfigError(
        'transformer_heads', config.transformer_heads,
        f'must divide --transformer_width={config.transformer_width} (each '
        'head attends over an equal slice of the width)')
  if config.init_from and not os.path.isdir(config.init_from):
    raise ConfigError('init_from', config.init_from,
                      'is not a directory (a checkpoint of ./run.sh pretrain)')


def needs(flag: str, what: str) -> str:
  """The reason of a `ConfigError` for a setting that needs --`flag`, unset.

  Named by the flag that is set (its value says what it is), never as
  '--flag=None', which tells a new user neither what is missing nor why.
  """
  return f'needs --{flag} ({what})'


def _check_workers(config: TrainConfig) -> None:
  """Remote workers: certificates named; which path reads the data where.

  With a sharded --client_data (a manifest of `./run.sh import-data
  --shards=K`) each worker reads its own shard on the grouped path
  (`tff_dp.algorithms.shard_routing`) and the driver holds no example, so
  TFF's one-client-per-call path (the driver sends the examples) and
  anything else that reads clients' examples on the driver are refused.
  With any other data the driver sends the examples, on TFF's path only:
  the grouped path's client files would be on the driver's disk.
  """
  if config.workers and not config.worker_certs:
    raise ConfigError(
        'workers', config.workers,
        needs(
            'worker_certs', 'the directory of the driver\'s certificates '
            'ca.crt, driver.crt and driver.key: ./run.sh certs'))
  if config.worker_certs and not config.workers:
    raise ConfigError('worker_certs', config.worker_certs,
                      'is used only with --workers')
  continues = config.on_worker_loss is WorkerLoss.CONTINUE
  if not config.workers:
    if continues:
      raise ConfigError('on_worker_loss', config.on_worker_loss.value,
                        'is used only with --workers')
    return
  if continues and shard_manifest.is_manifest_path(
      config.client_data) and (config.client_sampling
                               is not sampling.ClientSampling.POISSON):
    raise ConfigError(
        'on_worker_loss', config.on_worker_loss.value,
        f'with a sharded --client_data a lost worker\'s clients become '
        f'unreachable; leaving them out of a cohort is exact only for '
        f'--client_sampling=poisson (this run: '
        f'{config.client_sampling.value}); use --on_worker_loss=stop')
  if not shard_manifest.is_manifest_path(config.client_data):
    if config.clients_per_call > 1:
      raise ConfigError(
          'clients_per_call', config.clients_per_call,
          'the grouped path under --workers reads each worker\'s own shard: '
          'pass --dataset=sqlite --client_data=DIR/manifest.json (./run.sh '
          'import-data --shards=K), or use --clients_per_call=1 (the driver '
          'then sends the examples)')
    return
  if config.clients_per_call == 1:
    raise ConfigError(
        'clients_per_call', 1,
        f'with a sharded --client_data={config.client_data} the workers read '
        'the examples on the grouped path and the driver holds none; use '
        '--clients_per_call=0 (automatic) or N > 1')
  reason = simulation_path.grouped_unsupported_reason(config)
  if reason is not None:
    raise ConfigError(
        'client_data', config.client_data,
        f'a sharded import trains on the grouped path, which does not '
        f'implement {reason}')
  if config.evaluation is Evaluation.FEDERATED:
    raise ConfigError(
        'evaluation', config.evaluation.value,
        'reads held-out clients\' examples on the driver, which holds none '
        'with a sharded --client_data; use --evaluation=centralized')


def check_config(config: TrainConfig) -> None:
  """Cross-flag checks that need no data. Raises `ConfigError`."""
  if config.client_data and config.dataset is not loading.Dataset.SQLITE:
    # Else the run would train on --dataset and ignore the file.
    raise ConfigError(
        'client_data', config.client_data,
        f'is read only with --dataset=sqlite (this run: --dataset='
        f'{config.dataset.value}); pass --dataset=sqlite to train on it')
  _check_workers(config)
  simulation_path.resolve_rounds_per_call(config, clients_per_call=None)
  _check_transformer(config)
  reason = simulation_path.grouped_unsupported_reason(config)
  if config.clients_per_call > 1 and reason is not None:
    raise ConfigError(
        'clients_per_call', config.clients_per_call,
        f'the grouped path does not implement {reason}; use '
        '--clients_per_call=1 (or 0 to choose automatically)')
  mechanism = config.dp_mechanism.value
  if not config.uses_dp_aggregator:
    for name in ('target_epsilon', 'max_epsilon'):
      if getattr(config, name) is not None:
        # A local or record-level guarantee has its own epsilon, set by its
        # own flags; these two are about the central one.
        raise ConfigError(
            name, getattr(config, name),
            'is about the central epsilon, which needs a central DP '
            'mechanism (--dp_mechanism=none adds no central noise'
            f'{_other_guarantee(config)})')
  elif config.target_epsilon is None:
    if config.noise_multiplier == 0 and not config.allow_zero_noise:
      raise ConfigError(
          'noise_multiplier', config.noise_multiplier,
          f'must be > 0 with --dp_mechanism={mechanism} (zero noise gives '
          'epsilon = infinity); pass --allow_zero_noise to run it anyway as '
          'a NON-private run, or use --dp_mechanism=none')
    if config.noise_multiplier == 0 and config.max_epsilon is not None:
      raise ConfigError('max_epsilon', config.max_epsilon,
                        'cannot be met with --noise_multiplier=0')
    check_mechanism(config)
  check_audit(config)
  # Also with noise at the clients only: the server's mean would divide by
  # the sum of the cohort's sizes, un-noised (--example_dp: refused in
  # _check_mechanism_combinations).
  if config.client_weighting is ClientWeighting.NUM_EXAMPLES and (
      config.uses_dp_aggregator or config.local_dp is not LocalDp.NONE):
    used_with = (f'--dp_mechanism={mechanism}' if config.uses_dp_aggregator else
                 f'--local_dp={config.local_dp.value}')
    raise ConfigError(
        'client_weighting', config.client_weighting.value,
        f'cannot be used with {used_with}: weighting by |D_k| '
        'has unbounded sensitivity; use --client_weighting=capped '
        '--weight_cap=N (McMahan et al. 2018) or uniform')
  capped = config.client_weighting is ClientWeighting.CAPPED
  if capped and config.weight_cap is None:
    raise ConfigError(
        'client_weighting', config.client_weighting.value,
        needs(
            'weight_cap', 'a positive number; clients with at least this '
            'many examples get weight 1'))
  if not capped and config.weight_cap is not None:
    raise ConfigError('weight_cap', config.weight_cap,
                      'is used only with --client_weighting=capped')
  if config.algorithm is not Algorithm.FEDPROX and config.proximal_strength:
    raise ConfigError('proximal_strength', config.proximal_strength,
                      'is only used with --algorithm=fedprox')
  _check_mechanism_combinations(config)
  # Before the data are loaded: the dataset decides whether they are tokens.
  _check_token_data(config, tokens=loading.is_token_data(config.dataset))
  if loading.is_offline(config.dataset) and (config.clients_per_round
                                             > config.num_clients):
    raise ConfigError('clients_per_round', config.clients_per_round,
                      f'must not exceed --num_clients={config.num_clients}')
  _check_evaluation(config)
  _check_trainable(config)


def model_blocks(config: TrainConfig) -> int:
  """Blocks of `config`'s built-in model that --trainable=last_k counts
  (`tff_dp.models.trainable.blocks`: each layer with weights below the
  head)."""
  if config.model is ModelKind.MLP:
    return config.hidden_layers
  if config.model is ModelKind.RNN:
    return config.hidden_layers + 1  # The embedding and the LSTM layers.
  if config.model is ModelKind.CNN:
    return 3  # Two convolutions and the dense layer.
  if config.model is ModelKind.TRANSFORMER:
    return config.transformer_layers
  return 0


def _check_trainable(config: TrainConfig) -> None:
  """--trainable_last_k within the model's blocks."""
  if config.trainable is not Trainable.LAST_K:
    return
  blocks = model_blocks(config)
  if config.trainable_last_k > blocks:
    advice = (f'use at most {blocks}'
              if blocks else 'use --trainable=head or all')
    raise ConfigError(
        'trainable_last_k', config.trainable_last_k,
        f'exceeds the {blocks} blocks of --model={config.model.value}; '
        f'{advice}')


def _check_evaluation(config: TrainConfig) -> None:
  """--evaluation, --eval_clients, and what a DP run may release."""
  federated = config.evaluation is Evaluation.FEDERATED
  if federated and config.eval_clients is None:
    raise ConfigError(
        'evaluation', config.evaluation.value,
        needs(
            'eval_clients', 'a positive integer; how many clients to hold '
            'out of training and evaluate on'))
  if not federated and config.eval_clients is not None:
    raise ConfigError('eval_clients', config.eval_clients,
                      'is used only with --evaluation=federated')
  if not federated:
    return
  # With --target_epsilon the noise is calibrated later, always above 0.
  will_be_private = config.private or config.target_epsilon is not None
  if will_be_private and not config.release_nonprivate_metrics:
    raise ConfigError(
        'evaluation', config.evaluation.value,
        'computes its metrics from the held-out clients\' data without '
        'noise, outside the DP guarantee; in a DP run pass '
        '--release_nonprivate_metrics to release them anyway (labelled '
        'nonprivate/fed_eval/), or use --evaluation=centralized')
  if loading.is_offline(config.dataset):
    check_eval_clients(config, config.num_clients)


def check_eval_clients(config: TrainConfig, population: int) -> None:
  """Checks --eval_clients against the clients the data has, before the
  held-out ones are taken out of the population."""
  if config.evaluation is not Evaluation.FEDERATED:
    return
  training = population - config.eval_clients
  if training < config.clients_per_round:
    raise ConfigError(
        'eval_clients', config.eval_clients,
        f'must leave at least --clients_per_round={config.clients_per_round} '
        f'of the {population} clients for training ({max(training, 0)} '
        'would remain)')
  if (config.client_sampling is sampling.ClientSampling.FULL and
      training != config.clients_per_round):
    raise ConfigError(
        'eval_clients', config.eval_clients,
        f'leaves {training} of the {population} clients for training, and '
        '--client_sampling=full needs --clients_per_round to equal that '
        f'number (it is {config.clients_per_round})')


def _check_mechanism_row(config: TrainConfig) -> None:
  """What the central mechanism's row says it runs with."""
  row = config.mechanism
  if config.algorithm.value not in row.algorithms:
    fitting = [
        m.name
        for m in mechanism_registry.MECHANISMS
        if config.algorithm.value in m.algorithms
    ]
    raise ConfigError(
        'dp_mechanism', config.dp_mechanism.value,
        f'runs with --algorithm={"|".join(sorted(row.algorithms))}; '
        f'--algorithm={config.algorithm.value} runs with --dp_mechanism='
        f'{"|".join(fitting)}')
  if not row.calibrates and config.target_epsilon is not None:
    raise ConfigError(
        'target_epsilon', config.target_epsilon,
        'calibration is implemented for sampled Gaussian rounds only, not '
        f'for --dp_mechanism={row.name}')
  if not row.local_dp and config.local_dp is not LocalDp.NONE:
    raise ConfigError('local_dp', config.local_dp.value,
                      f'does not combine with --dp_mechanism={row.name}')


def _check_local_parameters(config: TrainConfig) -> None:
  """Each local mechanism's parameter is given with it, and only with it (a
  --local_epsilon without --local_dp=laplace would be ignored silently)."""
  laplace = config.local_dp is LocalDp.LAPLACE
  gaussian = config.local_dp is LocalDp.GAUSSIAN
  if laplace and config.local_epsilon is None:
    raise ConfigError(
        'local_dp', config.local_dp.value,
        needs(
            'local_epsilon', 'a positive number; the Laplace mechanism\'s '
            'epsilon per client per round'))
  if gaussian and config.local_noise_multiplier is None:
    raise ConfigError(
        'local_dp', config.local_dp.value,
        needs(
            'local_noise_multiplier', 'a positive number; the noise std '
            'of the local Gaussian mechanism is it times --local_clip'))
  if not laplace and config.local_epsilon is not None:
    raise ConfigError('local_epsilon', config.local_epsilon,
                      'is used only with --local_dp=laplace')
  if not gaussian and config.local_noise_multiplier is not None:
    raise ConfigError('local_noise_multiplier', config.local_noise_multiplier,
                      'is used only with --local_dp=gaussian')


def _check_mechanism_combinations(config: TrainConfig) -> None:
  """Which algorithms, mechanisms and samplers go together."""
  _check_mechanism_row(config)
  dp_ftrl = config.algorithm is Algorithm.DP_FTRL
  epochs = config.client_sampling is sampling.ClientSampling.SHUFFLED_EPOCHS
  if dp_ftrl != epochs:
    raise ConfigError(
        'client_sampling', config.client_sampling.value,
        'DP-FTRL processes clients in shuffled epochs: use '
        '--client_sampling=shuffled_epochs with, and only with, '
        '--algorithm=dp_ftrl')
  if dp_ftrl and config.client_weighting is not ClientWeighting.UNIFORM:
    raise ConfigError('client_weighting', config.client_weighting.value,
                      'DP-FTRL weights clients uniformly')
  _check_local_parameters(config)
  if config.local_dp is not LocalDp.NONE and config.example_dp:
    raise ConfigError(
        'local_dp', config.local_dp.value,
        'does not combine with --example_dp (noise inside the clients)')
  if config.example_dp and config.algorithm is not Algorithm.FEDAVG:
    raise ConfigError(
        'example_dp', True, 'example-level DP-SGD runs inside '
        'FedAvg clients: use --algorithm=fedavg')
  if config.example_dp and config.client_epochs != 1:
    # The client's dataset then holds every record client_epochs times, so a
    # record can join several batches of a pass while the accountant
    # (`tff_dp.privacy.example_accounting`) charges each record as one.
    raise ConfigError(
        'client_epochs', config.client_epochs,
        'must be 1 with --example_dp (the record-level accounting charges '
        'each record once per local step; more local work: raise --rounds)')
  if config.example_dp and config.client_weighting is not (
      ClientWeighting.UNIFORM):
    raise ConfigError('client_weighting', config.client_weighting.value,
                      'example-level DP-SGD clients are weighted uniformly')
  if config.max_epsilon is not None and not config.central_private:
    raise ConfigError(
        'max_epsilon', config.max_epsilon,
        'is a budget on the central guarantee, which this run '
        'does not have')


def check_mechanism(config: TrainConfig) -> None:
  """The central mechanism's own checks of its parameters (`ConfigError`)."""
  config.mechanism.check(config.dp_settings)


def check_audit(config: TrainConfig) -> None:
  """Canary clients go with a central mechanism and nothing at the clients."""
  canaries = config.audit_canaries
  if not canaries:
    return
  if canaries < 4:
    raise ConfigError('audit_canaries', canaries,
                      'must be 0 (no audit) or at least 4')
  if not config.uses_dp_aggregator:
    raise ConfigError(
        'audit_canaries', canaries,
        f'audits a central mechanism; --dp_mechanism='
        f'{config.dp_mechanism.value} has none')
  if config.local_dp is not LocalDp.NONE or config.example_dp:
    raise ConfigError(
        'audit_canaries', canaries,
        'canaries enter the central mechanism only; with --local_dp or '
        '--example_dp they would skip the clients\' noise (audit the run '
        'without it)')


def check_population(config: TrainConfig, population: int) -> None:
  """Checks that depend on the population the data actually has.

  With canaries (`--audit_canaries`) the sampler draws from the N real
  clients and the M canaries together.
  """
  if config.audit_canaries > population:
    raise ConfigError(
        'audit_canaries', config.audit_canaries,
        f'must not exceed the population of {population} clients')
  real, population = population, population + config.audit_canaries
  if config.clients_per_round > population:
    raise ConfigError(
        'clients_per_round', config.clients_per_round,
        f'must not exceed the population of {population} clients')
  if (config.client_sampling is sampling.ClientSampling.FULL and
      config.clients_per_round != population):
    raise ConfigError(
        'clients_per_round', config.clients_per_round,
        f'must equal the population ({population}) with '
        '--client_sampling=full')
  if config.private and not config.delta < 1.0 / real:
    raise ConfigError(
        'delta', config.delta, f'must be below 1/population = 1/{real} = '
        f'{1.0 / real:.3g}: with a larger delta, "release one client\'s '
        'data in the clear" satisfies the guarantee')


def check_record_level_delta(config: TrainConfig, largest_client: int) -> None:
  """With example-level DP, delta must be below 1/n_k for every client."""
  if not config.delta < 1.0 / largest_client:
    raise ConfigError(
        'delta', config.delta,
        f'must be below 1/n_k for every client with --example_dp (the '
        f'largest client holds {largest_client} records): a larger delta '
        'allows releasing a record outright')


_TOKEN_MODELS = (ModelKind.RNN, ModelKind.TRANSFORMER)


def _check_token_data(config: TrainConfig, *, tokens: bool) -> None:
  """Token ids go with, and only with, the rnn and transformer models (and
  no example DP)."""
  dataset = config.dataset.value
  if config.model in _TOKEN_MODELS and not tokens:
    raise ConfigError(
        'model', config.model.value,
        f'needs token data and --dataset={dataset} is not token ids; use '
        'shakespeare, stackoverflow_nwp or python_stdlib, or --model=mlp')
  if tokens and config.model not in _TOKEN_MODELS:
    raise ConfigError(
        'model', config.model.value,
        f'--dataset={dataset} holds token ids (the previous tokens as '
        'numbers), which only the rnn and transformer models embed; use '
        '--model=rnn or --model=transformer')
  if tokens and config.example_dp:
    raise ConfigError(
        'example_dp', config.example_dp,
        'record-level DP-SGD needs each client\'s exact number of records, '
        f'and --dataset={dataset} cuts its records (windows) from the text '
        'as it streams; use user-level central DP')


def check_model_fits_data(config: TrainConfig,
                          *,
                          image_shape: Optional[tuple[int, ...]],
                          vocab_size: Optional[int] = None) -> None:
  """The model can read the data's features.

  The CNN reshapes its input to images: the data must declare a shape. The
  rnn model embeds token ids: the data must declare a vocabulary, and token
  ids fit no other model.

  Args:
    config: The configuration.
    image_shape: The loaded data's `image_shape` (None: not images).
    vocab_size: The loaded data's `vocab_size` (None: not token ids).
  """
  _check_token_data(config, tokens=vocab_size is not None)
  if config.model is ModelKind.CNN and image_shape is None:
    raise ConfigError(
        'model', config.model.value,
        f'needs image data and --dataset={config.dataset.value} is not '
        'images; use digits, emnist_digits, emnist_full or cifar100, or '
        '--model=mlp')
