"""Which simulation path runs a configuration: clients and rounds per TFF call.

The grouped path (`tff_dp.algorithms.grouped_fedavg`) simulates many clients
in one TFF call and, where nothing reads the model between rounds, several
rounds per call (`tff_dp.algorithms.fused_rounds`); everything else runs on
TFF's learning algorithms, one client per call. `tff_dp.config_checks`
refuses an explicit setting that asks for a path that cannot run.

Pure Python, like `tff_dp.config`: importing this module must stay cheap.
"""

from typing import Optional

from tff_dp.checks import ConfigError
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import LocalDp
from tff_dp.config import ModelKind
from tff_dp.config import TrainConfig
from tff_dp.data import loading
from tff_dp.data import shard_manifest
from tff_dp.data.labels import LabelKind

# Simulated clients per TFF call of the grouped path when --clients_per_call
# is 0 (automatic). Measured on W1 (50 clients of the 784-128-10 MLP, client
# files): 0.064 s/round with one call of 50 and 0.071 s with two of 25, so
# one call per 64 clients keeps a typical cohort in one or two calls.
AUTO_CLIENTS_PER_CALL = 64

# Rounds per TFF call on the grouped path when --rounds_per_call is 0
# (automatic). Measured on W1 with 10 clients (benchmarks/README.md, "Several
# rounds per call"): 0.0103 s per round with 10 per call and 0.0107 s with
# 30, against 0.0174 s with one.
AUTO_ROUNDS_PER_CALL = 10

# The --algorithm values the grouped path implements.
_GROUPED_ALGORITHMS = frozenset(
    {Algorithm.FEDAVG, Algorithm.DP_FTRL, Algorithm.FEDPROX, Algorithm.FEDSGD})


def _claims_dp(config: TrainConfig) -> bool:
  """Whether any DP mechanism runs (central, even at zero noise, local or
  example-level)."""
  return (config.uses_dp_aggregator or config.local_dp is not LocalDp.NONE or
          config.example_dp)


def grouped_unsupported_reason(config: TrainConfig) -> Optional[str]:
  """Why the grouped path (`tff_dp.algorithms.grouped_fedavg`) cannot run `config`.

  The grouped path runs the algorithms in `_GROUPED_ALGORITHMS` with the
  central mechanisms whose row says `grouped` (TF Privacy's Gaussian queries,
  DP-FTRL's tree, and none: non-private FedAvg, `tff_dp.algorithms.
  grouped_mean`), uniform or capped weights (and |D_k| weights without any
  DP), local DP and example-level DP-SGD (alone or under central noise),
  training single-label classifiers and, with DP-FedAvg and DP-FTRL under
  central noise, the transformer's next-token labels (`tff_dp.algorithms.
  grouped_model`), any `--trainable`; anything else runs on TFF's learning
  algorithms.

  Returns:
    None if it can; else the reason, naming the flag and its value.
  """
  label_kind = loading.label_kind(config.dataset)
  if label_kind is LabelKind.MULTI_HOT:
    return (f'--dataset={config.dataset.value} (multi-label data; the '
            'grouped path trains single-label and next-token models only)')
  next_tokens = label_kind is LabelKind.NEXT_TOKENS or (
      config.model is ModelKind.TRANSFORMER)
  checks = (
      (config.algorithm
       in _GROUPED_ALGORITHMS, 'algorithm', config.algorithm.value),
      # Next-token labels are tested against the reference with DP-FedAvg
      # and DP-FTRL only (tests/algorithms/test_grouped_language_model.py).
      (not next_tokens or
       config.algorithm in (Algorithm.FEDAVG, Algorithm.DP_FTRL), 'algorithm',
       f'{config.algorithm.value} with --model={config.model.value}'),
      (not next_tokens or
       (config.local_dp is LocalDp.NONE and not config.example_dp), 'model',
       f'{config.model.value} with local or example-level DP'),
      (config.mechanism.grouped, 'dp_mechanism', config.dp_mechanism.value),
      # The language models' non-private runs are not tested against the
      # reference.
      (not next_tokens or config.mechanism.noised, 'dp_mechanism',
       f'{config.dp_mechanism.value} with --model={config.model.value}'),
      # |D_k| weights only in the non-private mean (`tff_dp.algorithms.
      # grouped_mean`; check_config refuses them with a DP mechanism);
      # capped weights are scaled per simulated client before clipping.
      (config.client_weighting is not ClientWeighting.NUM_EXAMPLES or
       not _claims_dp(config), 'client_weighting', config.client_weighting.value
      ),
      # The grouped DP-SGD samples each client's n_k distinct examples; the
      # reference's client receives --client_epochs copies of them.
      (not config.example_dp or config.client_epochs == 1, 'example_dp',
       f'{config.example_dp} with --client_epochs={config.client_epochs}'),
  )
  for supported, name, value in checks:
    if not supported:
      return f'--{name}={value}'
  return None


def resolve_clients_per_call(config: TrainConfig, *, in_memory: bool) -> int:
  """Simulated clients per TFF call: 1 for TFF's algorithms, else grouped.

  Args:
    config: A configuration that passed `check_config`.
    in_memory: Whether the run's data are held in memory (`tff_dp.data.
      federated_data.FederatedData`); the grouped path needs that.

  Returns:
    `config.clients_per_call`, or for 0 (automatic) `AUTO_CLIENTS_PER_CALL`
    where the grouped path applies, else 1.

  Raises:
    ConfigError: If --clients_per_call > 1 asks for the grouped path on
      streamed data.
  """
  sharded = bool(config.workers) and shard_manifest.is_manifest_path(
      config.client_data)
  if sharded:
    # `_check_workers` refused 1: the workers read their own shards on the
    # grouped path.
    return config.clients_per_call or AUTO_CLIENTS_PER_CALL
  if config.clients_per_call == 0:
    if config.workers:
      return 1  # Unsharded data: the driver sends the examples (TFF's path).
    supported = in_memory and grouped_unsupported_reason(config) is None
    return AUTO_CLIENTS_PER_CALL if supported else 1
  if config.clients_per_call > 1 and not in_memory:
    from tff_dp.data import token_memory  # pylint: disable=g-import-not-at-top
    raise ConfigError(
        'clients_per_call', config.clients_per_call,
        f'the grouped path needs in-memory data and --dataset='
        f'{config.dataset.value} is streamed ({token_memory.RULE}); use '
        '--clients_per_call=1')
  return config.clients_per_call


def _rounds_per_call_blocker(config: TrainConfig,
                             clients_per_call: Optional[int]) -> Optional[str]:
  """Why the rounds of this run cannot share a TFF call, or None."""
  if clients_per_call == 1 or config.clients_per_call == 1:
    return ('needs the grouped path (--clients_per_call=0 or N > 1); TFF\'s '
            'one-client-per-call path runs one round per call')
  if config.workers:
    return ('is not supported with --workers (the server\'s part of each '
            'round runs on the driver, between the workers\' calls)')
  if config.audit_canaries:
    return (f'is not supported with --audit_canaries={config.audit_canaries} '
            '(the audit observes the model after every round)')
  return None


def resolve_rounds_per_call(config: TrainConfig, *,
                            clients_per_call: int) -> int:
  """Most rounds per TFF call: `config.rounds_per_call`, or for 0
  (automatic) `AUTO_ROUNDS_PER_CALL` where rounds can share a call, else 1.

  Raises:
    ConfigError: If --rounds_per_call > 1 where rounds cannot share a call.
  """
  reason = _rounds_per_call_blocker(config, clients_per_call)
  if config.rounds_per_call > 1 and reason is not None:
    raise ConfigError('rounds_per_call', config.rounds_per_call, reason)
  if config.rounds_per_call == 0:
    return 1 if reason is not None else AUTO_ROUNDS_PER_CALL
  return config.rounds_per_call
