"""Builds a run's learning process from ONE config.

One place decides how flags become mechanisms, so the `clients_per_round` the
sampler draws with (`tff_dp.program.run_privacy`, which also builds the ledgers) is
the one every aggregator divides by and every ledger charges, and the
mechanism that runs is the mechanism that is accounted (the table of
mechanisms, samplers and events is in `tff_dp.program.run_privacy`). Local DP and
example-level DP-SGD noise at the clients. DP-FedAvg may run on the grouped
path (`tff_dp.algorithms.grouped_fedavg`, many simulated clients per TFF call): the same
mechanism and events, so nothing here but the process differs.
"""

import functools

from tff_dp.algorithms import dp_ftrl
from tff_dp.algorithms import example_dp
from tff_dp.algorithms import grouped_client_options
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import grouped_mean
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.checks import ConfigError
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import LocalDp
from tff_dp.config import ModelKind
from tff_dp.config import Trainable
from tff_dp.config import TrainConfig
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.mechanisms import local_dp
from tff_dp.mechanisms import sanitize
from tff_dp.models import trainable as trainable_lib
from tff_dp.program import computation_cache
from tff_dp.program import run_privacy


def dp_settings(config: TrainConfig):
  """The settings of `config`'s central DP aggregator (None if none)."""
  return config.dp_settings if config.uses_dp_aggregator else None


def server_optimizer(config: TrainConfig):
  """The server optimizer of `config`."""
  return learning_process.build_server_optimizer(
      config.server_optimizer,
      learning_rate=config.server_learning_rate,
      momentum=config.server_momentum)


def _model_args(config: TrainConfig, data: FederatedData) -> dict:
  # One place, so that TFF's algorithms, the grouped path and federated
  # evaluation (`tff_dp.program.federated_evaluation`) build the very same model.
  return dict(input_dim=data.input_dim,
              num_classes=data.num_classes,
              hidden_units=config.hidden_units,
              seed=config.seed,
              hidden_layers=config.hidden_layers,
              image_shape=data.image_shape,
              vocab_size=data.vocab_size,
              embedding_dim=config.embedding_dim,
              transformer_layers=config.transformer_layers,
              transformer_width=config.transformer_width,
              transformer_heads=config.transformer_heads,
              transformer_ff_width=config.transformer_ff_width)


def build_model_fn(config: TrainConfig,
                   data: FederatedData,
                   keras_model_fn=None):
  """The TFF model constructor of `config`'s model for `data` (whose
  `label_kind` decides the loss and the metrics), or of the caller's own
  Keras model (`keras_model_fn`, from the Python API)."""
  if keras_model_fn is not None or freezes(config):
    return models.model_fn_from_keras(build_keras_model_fn(
        config, data, keras_model_fn),
                                      input_dim=data.input_dim,
                                      num_classes=data.num_classes,
                                      label_kind=data.label_kind)
  return models.build_model_fn(config.model,
                               label_kind=data.label_kind,
                               **_model_args(config, data))


def build_keras_model_fn(config: TrainConfig,
                         data: FederatedData,
                         keras_model_fn=None):
  """The no-argument Keras constructor of `config`'s model for `data` (the
  twin of `build_model_fn`'s, for server-side uses of a trained model)."""
  keras_model_fn = base_keras_model_fn(config, data, keras_model_fn)
  if not freezes(config):
    return keras_model_fn
  settings = trainable_lib.settings_from(config)
  return lambda: trainable_lib.configure(keras_model_fn(), settings)


def base_keras_model_fn(config: TrainConfig,
                        data: FederatedData,
                        keras_model_fn=None):
  """`build_keras_model_fn` with every parameter trainable, whatever
  --trainable says (central pretraining, and the weights it saves)."""
  if keras_model_fn is not None:
    return keras_model_fn
  return lambda: models.build_keras_model(config.model,
                                          **_model_args(config, data))


def check_trainable_model(config: TrainConfig,
                          data: FederatedData,
                          keras_model_fn=None) -> None:
  """Raises `ConfigError` naming --trainable if the model cannot be
  configured as it says (e.g. LoRA on a caller's model without Dense
  layers), before TFF traces it."""
  if not freezes(config):
    return
  try:
    build_keras_model_fn(config, data, keras_model_fn)()
  except ValueError as e:
    raise ConfigError('trainable', config.trainable.value, str(e)) from e


def freezes(config: TrainConfig) -> bool:
  """Whether `config` trains only some parameters (--trainable)."""
  return config.trainable is not Trainable.ALL


def build_process(config: TrainConfig,
                  data: FederatedData,
                  sampler: run_privacy.Sampler,
                  *,
                  group_size: int = 1,
                  client_files_dir: str = '',
                  canaries=None,
                  keras_model_fn=None,
                  frozen_weights=None,
                  cache_dir: str = ''):
  """The TFF learning process that implements `config`'s mechanisms.

  Args:
    config: The checked configuration.
    data: The run's data (input size, classes).
    sampler: The run's sampler (DP-FTRL's epoch length).
    group_size: `simulation_path.resolve_clients_per_call`; above 1 the grouped
      DP-FedAvg process, whose `next` takes `tff_dp.algorithms.grouped_data.
      GroupedRounds`' output instead of datasets.
    client_files_dir: Where `GroupedRounds` wrote the client files (grouped
      path only).
    canaries: An audit run's `tff_dp.program.canary_audit.CanaryRun`, whose
      canaries join the central mechanism's sums; None for a production run.
    keras_model_fn: The caller's own uncompiled Keras model constructor
      (Python API) instead of `config.model`'s.
    frozen_weights: The model's frozen (non-trainable) weights if they are
      not its initial ones (`--init_from`): every process but example-level
      DP-SGD's on the reference path makes them constants of its client
      computation (`tff_dp.algorithms.grouped_frozen`), sent once rather
      than broadcast each round; that one broadcasts them every round.
    cache_dir: Where `tff_dp.program.computation_cache` keeps traced
      processes across runs ('' for none); used for the processes it
      accepts (`computation_cache.cacheable`), never with `frozen_weights`
      (the pretrained weights would be constants of its graph).
  """

  def build():
    return _build_process(config,
                          data,
                          sampler,
                          group_size=group_size,
                          client_files_dir=client_files_dir,
                          canaries=canaries,
                          keras_model_fn=keras_model_fn,
                          frozen_weights=frozen_weights)

  if (not cache_dir or frozen_weights is not None or
      not computation_cache.cacheable(config,
                                      group_size=group_size,
                                      canaries=canaries,
                                      keras_model_fn=keras_model_fn)):
    return build()
  return computation_cache.cached_process(cache_dir,
                                          computation_cache.cache_key(
                                              config,
                                              data,
                                              group_size=group_size),
                                          build,
                                          files_dir=client_files_dir)


def _build_process(config, data, sampler, *, group_size, client_files_dir,
                   canaries, keras_model_fn, frozen_weights):
  """`build_process` without the cache."""
  wrap = canaries.wrap if canaries is not None else (lambda factory: factory)
  if group_size > 1:
    return _build_grouped_process(config,
                                  data,
                                  sampler,
                                  client_files_dir,
                                  wrap,
                                  keras_model_fn,
                                  frozen_weights=frozen_weights)
  model_fn = build_model_fn(config, data, keras_model_fn)
  dp = dp_settings(config)
  if config.algorithm is Algorithm.DP_FTRL:
    return dp_ftrl.build_dp_ftrl_process(
        model_fn=model_fn,
        client_learning_rate=config.client_learning_rate,
        server_learning_rate=config.server_learning_rate,
        server_momentum=config.server_momentum,
        model_aggregator=wrap(
            config.mechanism.build_aggregator(
                dp,
                rounds_per_epoch=sampler.rounds_per_epoch,
                record_specs=dp_ftrl.model_update_specs(model_fn))),
        client_momentum=config.client_momentum,
        frozen_weights=frozen_weights)
  if config.example_dp:
    return _build_example_dp_process(config, data, model_fn, dp)
  return learning_process.build_learning_process(
      model_fn=model_fn,
      algorithm=config.algorithm,
      model_aggregator=learning_process.build_model_aggregator(
          dp=dp,
          client_weighting=config.client_weighting,
          weight_cap=config.weight_cap,
          unweighted=(_local_dp_factory(config, dp) or
                      _central_factory(dp, wrap))),
      proximal_strength=config.proximal_strength,
      client_learning_rate=config.client_learning_rate,
      client_momentum=config.client_momentum,
      server_optimizer=server_optimizer(config),
      # Local DP: the server is the adversary, so no un-noised client metric
      # may reach it.
      metrics_aggregator=(None if config.local_dp is LocalDp.NONE else
                          learning_process.no_client_metrics),
      frozen_weights=frozen_weights)


def _central_factory(dp, wrap):
  """The sanitizing central DP factory (canaries in it for an audit run)."""
  if dp is None:
    return None
  return sanitize.sanitizing_aggregator(
      wrap(learning_process.build_dp_aggregator(dp)))


def _build_grouped_process(config: TrainConfig,
                           data: FederatedData,
                           sampler,
                           client_files_dir: str,
                           wrap,
                           keras_model_fn,
                           *,
                           frozen_weights=None):
  """The grouped process (many simulated clients per TFF call)."""
  # `simulation_path.grouped_unsupported_reason` refuses other data first.
  if data.label_kind is LabelKind.MULTI_HOT:
    raise ValueError('the grouped path trains single-label and next-token '
                     'models only')
  dp = dp_settings(config)
  if config.algorithm is Algorithm.DP_FTRL:
    # As the reference's `dp_ftrl.build_dp_ftrl_process`: the tree, and
    # heavy-ball SGD at the server.
    dp_factory = config.mechanism.build_aggregator(
        dp,
        rounds_per_epoch=sampler.rounds_per_epoch,
        record_specs=dp_ftrl.model_update_specs(
            build_model_fn(config, data, keras_model_fn)))
    optimizer = dp_ftrl.build_server_optimizer(
        server_learning_rate=config.server_learning_rate,
        server_momentum=config.server_momentum)
  else:
    # None: local or example-level DP alone (`grouped_unsupported_reason`
    # allows no other run without a central mechanism).
    dp_factory = (None
                  if dp is None else learning_process.build_dp_aggregator(dp))
    optimizer = server_optimizer(config)
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=build_keras_model_fn(config, data, keras_model_fn),
      input_dim=data.input_dim,
      num_classes=data.num_classes,
      dp_factory=None if dp_factory is None else wrap(dp_factory),
      client_learning_rate=config.client_learning_rate,
      client_momentum=config.client_momentum,
      server_optimizer=optimizer,
      batch_size=config.client_batch_size,
      epochs=config.client_epochs,
      client_files_dir=client_files_dir,
      max_client_size=_unroll_bound(config, data),
      options=_grouped_client_options(config),
      # Its randomizer runs per simulated client; the central factory, if
      # any, is `dp_factory` above.
      local_dp_factory=_local_dp_factory(config, None),
      example_dp_settings=_example_dp_settings(config),
      clients_per_round=config.clients_per_round,
      label_kind=data.label_kind,
      frozen_weights=frozen_weights,
      mean_query=_mean_query(config))


def _mean_query(config: TrainConfig):
  """Non-private FedAvg's mean (weighted by n_k or uniform), or None
  where any DP mechanism runs (`grouped_unsupported_reason` then refuses
  num_examples weighting)."""
  if (config.uses_dp_aggregator or config.local_dp is not LocalDp.NONE or
      config.example_dp):
    return None
  return grouped_mean.ClientMeanQuery(
      by_num_examples=config.client_weighting is ClientWeighting.NUM_EXAMPLES)


def _unroll_bound(config: TrainConfig, data: FederatedData):
  """The largest client's size, for the grouped path to unroll its local
  steps by; None (a graph-mode while loop) where unrolling does not pay.

  Unrolled steps make the CNN's rounds ~15% faster, which repays the
  seconds of tracing they add within tens of rounds
  (`grouped_client_work.MAX_UNROLLED_BATCHES`). The MLP's rounds were not
  faster unrolled (W1: 0.072 s both ways), but its build took 17-20 s
  against 12-13 s with the while loop (fresh processes, load 9;
  benchmarks/README.md, "Start-up and memory of `./run.sh train`"); the
  same for logistic regression, the smaller model. The while loop also
  keeps the client sizes, a statistic of the client data, out of the graph
  (`tff_dp.program.computation_cache` caches only such graphs). The
  language models keep the unrolled steps: not measured here.
  """
  if config.model in (ModelKind.MLP, ModelKind.LOGISTIC_REGRESSION):
    return None
  return max(map(int, data.client_sizes()), default=0)


def _example_dp_settings(config: TrainConfig):
  """The clients' DP-SGD as `_build_example_dp_process` sets it, or None."""
  if not config.example_dp:
    return None
  return example_dp.DpSgdSettings(
      learning_rate=config.client_learning_rate,
      noise_multiplier=config.example_noise_multiplier,
      clip=config.example_clip,
      expected_batch_size=config.client_batch_size,
      local_steps=config.local_steps)


def _grouped_client_options(config: TrainConfig):
  """What each simulated client does, as the reference's client work
  (`learning_process.build_learning_process`) and aggregator chain."""
  fedprox = config.algorithm is Algorithm.FEDPROX
  fedsgd = config.algorithm is Algorithm.FEDSGD
  return grouped_client_options.ClientOptions(
      full_gradient=fedsgd,
      proximal_strength=config.proximal_strength if fedprox else 0.0,
      # TFF's FedProx and FedSGD client works keep no optimizer hparams.
      stateless_client_work=fedprox or fedsgd,
      weight_cap=(config.weight_cap if config.client_weighting
                  is ClientWeighting.CAPPED else None))


def _build_example_dp_process(config: TrainConfig, data: FederatedData,
                              model_fn, dp):
  """FedAvg whose clients run example-level DP-SGD (optionally central DP)."""
  central = None if dp is None else learning_process.sanitizing_dp_aggregator(
      dp)
  return example_dp.build_example_dp_fed_avg(
      model_fn=model_fn,
      loss_fn=functools.partial(models.loss_fn, label_kind=data.label_kind),
      client_learning_rate=config.client_learning_rate,
      server_optimizer=server_optimizer(config),
      noise_multiplier=config.example_noise_multiplier,
      clip=config.example_clip,
      expected_batch_size=config.client_batch_size,
      local_steps=config.local_steps,
      model_aggregator=central,
      clients_per_round=None if central else config.clients_per_round,
      metrics_aggregator=learning_process.no_client_metrics)


def _local_dp_factory(config: TrainConfig, dp):
  """Local DP's factory (wrapping the central one), or None without it."""
  if config.local_dp is LocalDp.NONE:
    return None
  spec = run_privacy.local_spec(config)
  return local_dp.build_local_dp_factory(
      mechanism=spec.mechanism,
      clip=config.local_clip,
      epsilon_local=config.local_epsilon,
      noise_multiplier=config.local_noise_multiplier,
      clients_per_round=config.clients_per_round,
      central_factory=(None if dp is None else
                       learning_process.sanitizing_dp_aggregator(dp)))


def block_runner(process):
  """`training_loop`'s run_block for a process of the grouped path:
  (state, [each round's groups]) -> (state, [each round's output]), the
  rounds in ONE TFF call (`fused_rounds`), compiled from `next`'s compiled
  form (the computation cache's, when it has one). Intermediate states stay
  on the worker: only the last round's state comes back."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff

  from tff_dp.algorithms import fused_rounds
  from tff_dp.execution import compiled_forms
  # pylint: enable=g-import-not-at-top
  fused = fused_rounds.FusedRounds(process,
                                   compile_fn=compiled_forms.compile,
                                   register_fn=compiled_forms.register)

  def run_block(state, round_groups):
    state, metrics = fused.run(state, round_groups)
    return state, [
        tff.learning.templates.LearningProcessOutput(state=None,
                                                     metrics=round_metrics)
        for round_metrics in metrics
    ]

  return run_block
