"""Definitions of tff-dp's absl flags, grouped, and the config they make.

Flags are defined here and read only by the programs (`tff_dp.cli.train`, ...).
Each `define_*` function defines one group on a given `FlagValues`, so tests
parse argument lists on a fresh `FlagValues` instead of the global one.
`TRAIN_FLAG_GROUPS` lists the training program's groups in order: those of
the privacy guarantee are in `privacy_flags`; every flag is range-checked at
parse time (`checked_flags`).
"""

import math
from typing import Optional

from absl import flags

from tff_dp import config as config_lib
from tff_dp import simulation_path
from tff_dp.cli import checked_flags
from tff_dp.cli import privacy_flags
from tff_dp.cohorts import sampling
from tff_dp.data import loading
from tff_dp.data import partition as partition_lib
from tff_dp.data import registry
from tff_dp.data import token_memory
from tff_dp.execution import worker_addresses


def define_data_flags(fv: flags.FlagValues) -> None:
  """Which federated dataset, and how it is split into clients."""
  checked_flags.define_enum(fv, 'dataset', loading.Dataset.DIGITS.value,
                            loading.Dataset, registry.flag_help())
  flags.DEFINE_string('data_dir',
                      loading.DEFAULT_DATA_DIR,
                      'Cache directory of TFF\'s benchmark files (e.g. '
                      'emnist_all.sqlite). Nothing is downloaded: a missing '
                      'file is reported with its name and URL.',
                      flag_values=fv)
  flags.DEFINE_string('client_data',
                      '',
                      'SQLite client-data file for --dataset=sqlite.',
                      flag_values=fv)
  flags.DEFINE_string(
      'public_clients',
      '', 'File of client ids, one per line, declared PUBLIC: removed from '
      'the private population (never sampled, evaluated or counted in N) and '
      'used by ./run.sh pretrain. For data with natural clients (shakespeare, '
      'stackoverflow_nwp, emnist_*, cifar100, sqlite); python_stdlib has its '
      'own split.',
      flag_values=fv)
  checked_flags.define_float(
      fv,
      'public_fraction',
      0.0, 'Declare PUBLIC the clients whose id hashes below this fraction '
      '(SHA-256 of the id, first 8 hex digits / 2**32), as --public_clients '
      'does for a list; 0: none.',
      lower=0.0,
      upper=1.0,
      upper_open=True)
  checked_flags.define_int(
      fv,
      'num_clients',
      700, 'Number of clients to split offline data into. The privacy '
      'population N is the number of clients the data really has.',
      lower=1,
      upper=checked_flags.MAX_CLIENTS)
  checked_flags.define_enum(
      fv, 'partition', partition_lib.Partition.IID.value,
      partition_lib.Partition,
      'How examples are assigned to clients. iid: near-equal random '
      'shares; dirichlet: label skew (Hsu et al. 2019); '
      'quantity_skew: power-law client sizes; natural: the data\'s '
      'own clients (required for synthetic).')
  checked_flags.define_float(
      fv,
      'dirichlet_alpha',
      0.5, 'Total concentration of the Dirichlet label skew (Hsu et al. '
      '2019: per-client class proportions ~ Dir(alpha * p), p the '
      'label distribution); smaller = more skewed.',
      lower=0.0,
      upper=1e6,
      lower_open=True)
  checked_flags.define_float(
      fv,
      'test_fraction',
      0.2,
      'Fraction of the data held out for server-side evaluation.',
      lower=0.0,
      upper=1.0,
      lower_open=True,
      upper_open=True)
  checked_flags.define_int(fv,
                           'data_seed',
                           0,
                           'Seed of the split and the partition.',
                           lower=0,
                           upper=2**32 - 1)


def define_evaluation_flags(fv: flags.FlagValues) -> None:
  """Where the global model is evaluated."""
  checked_flags.define_enum(
      fv, 'evaluation', config_lib.Evaluation.CENTRALIZED.value,
      config_lib.Evaluation,
      'centralized: on the server\'s held-out test set (public '
      'data: covered by the DP guarantee; released as eval/); '
      'federated: TFF\'s federated evaluation '
      '(tff.learning.algorithms.build_fed_eval) over --eval_clients '
      'clients held out of training, computed from their data '
      'WITHOUT noise: released as nonprivate/fed_eval/, in a DP run '
      'only with --release_nonprivate_metrics.')
  flags.DEFINE_integer(
      'eval_clients',
      None, 'With --evaluation=federated: how many clients to hold out of '
      'training (a seeded choice by --data_seed, independent of their data). '
      'They never train; the population N is the number of the other '
      'clients.',
      flag_values=fv)
  checked_flags.register(
      fv, 'eval_clients', lambda v: 1 <= v <= checked_flags.MAX_CLIENTS,
      f'must be an integer in [1, {checked_flags.MAX_CLIENTS}]')


def define_model_flags(fv: flags.FlagValues) -> None:
  """The model trained."""
  checked_flags.define_enum(
      fv, 'model', config_lib.ModelKind.MLP.value, config_lib.ModelKind,
      'mlp: one hidden ReLU layer (a 784-128-10 MLP for '
      '28x28 images; the input size follows the data); '
      'logistic_regression: multinomial logistic regression (one '
      'sigmoid per label on multi-label data); cnn: '
      'the EMNIST CNN of TFF\'s baselines (conv 32, conv 64, '
      'max-pool, dropout, dense 128, dropout) for image data (digits, '
      'emnist_*, cifar100); rnn: embedding (--embedding_dim), '
      '--hidden_layers LSTM layers of --hidden_units units and logits '
      'over the vocabulary, for token data (shakespeare, '
      'stackoverflow_nwp, python_stdlib); transformer: a decoder-only '
      '(GPT-style) language model of --transformer_* size whose context is '
      'the data\'s window, predicting the next token at every position, '
      'for the same token data.')
  checked_flags.define_int(
      fv,
      'hidden_layers',
      1, 'Hidden layers of the MLP (2 with --hidden_units=200 is the '
      '2x200 MLP of TFF\'s DP tutorial); LSTM layers of the rnn.',
      lower=1,
      upper=100)
  checked_flags.define_int(
      fv,
      'hidden_units',
      128, 'Hidden units of each MLP layer; units of each LSTM layer of '
      'the rnn.',
      lower=1,
      upper=checked_flags.MAX_UNITS)
  checked_flags.define_int(
      fv,
      'embedding_dim',
      8, 'Size of the rnn\'s token embedding (TFF\'s baselines: 8 for '
      'Shakespeare characters, 96 for Stack Overflow words).',
      lower=1,
      upper=checked_flags.MAX_UNITS)
  _define_transformer_flags(fv)
  _define_trainable_flags(fv)


def _define_transformer_flags(fv: flags.FlagValues) -> None:
  """The transformer's size, and the pretrained weights to start from."""
  for name, default, what in (
      ('transformer_layers', config_lib.DEFAULT_TRANSFORMER_LAYERS,
       'Transformer blocks of --model=transformer.'),
      ('transformer_width', config_lib.DEFAULT_TRANSFORMER_WIDTH,
       'Width (embeddings, attention, residual stream) of the transformer; '
       'a multiple of --transformer_heads.'),
      ('transformer_heads', config_lib.DEFAULT_TRANSFORMER_HEADS,
       'Attention heads of each transformer block.'),
      ('transformer_ff_width', config_lib.DEFAULT_TRANSFORMER_FF_WIDTH,
       'Hidden units of each transformer block\'s feed-forward network.'),
  ):
    checked_flags.define_int(fv,
                             name,
                             default,
                             what,
                             lower=1,
                             upper=checked_flags.MAX_UNITS)
  flags.DEFINE_string(
      'init_from',
      '', 'Start from the weights of this checkpoint of ./run.sh pretrain '
      '(central training on clients declared public) instead of the seeded '
      'initial model; its model must be this run\'s (same --model, sizes '
      'and data). The privacy statement names the public data.',
      flag_values=fv)


def _define_trainable_flags(fv: flags.FlagValues) -> None:
  """Which parameters clients train (`tff_dp.models.trainable`)."""
  checked_flags.define_enum(
      fv, 'trainable', config_lib.Trainable.ALL.value, config_lib.Trainable,
      'Which parameters clients train, clip, noise and send; the others '
      'stay frozen at their initial values. all: every parameter; lora: '
      'low-rank adapters (Hu et al. 2022) of rank --lora_rank on every '
      'Dense layer; ffa_lora: the same with A frozen (FFA-LoRA, Sun et al. '
      '2024); head: the output layer; last_k: the last --trainable_last_k '
      'blocks, the final LayerNorm and the head. A DP mechanism\'s noise '
      'has the trained parameters\' dimension.')
  checked_flags.define_int(fv,
                           'lora_rank',
                           8, 'Rank r of the LoRA adapters (--trainable=lora '
                           'or ffa_lora).',
                           lower=1,
                           upper=checked_flags.MAX_UNITS)
  checked_flags.define_float(
      fv,
      'lora_alpha',
      8.0, 'LoRA\'s alpha: the adapters\' update is scaled by '
      'alpha / r (Hu et al. 2022, who set alpha to the first r they tried '
      'and kept it when varying r). The effective step of the adapters '
      'grows with (alpha / r)^2: keep alpha near r, or lower '
      '--client_learning_rate.',
      lower=0.0,
      upper=1e6,
      lower_open=True)
  checked_flags.define_int(fv,
                           'trainable_last_k',
                           1, 'Blocks trained with --trainable=last_k (the '
                           'last ones).',
                           lower=1,
                           upper=1000)


def define_cohort_flags(fv: flags.FlagValues) -> None:
  """Rounds and client sampling: what the accountant charges per round."""
  checked_flags.define_int(fv,
                           'rounds',
                           100,
                           'Number of federated rounds.',
                           lower=1,
                           upper=checked_flags.MAX_ROUNDS)
  checked_flags.define_int(
      fv,
      'clients_per_round',
      70, 'Clients per round: the expected cohort size under Poisson '
      'sampling, the exact size under fixed_size. The DP aggregator '
      'divides by this fixed number and the accountant uses it.',
      lower=1,
      upper=checked_flags.MAX_CLIENTS)
  checked_flags.define_enum(
      fv, 'client_sampling', sampling.ClientSampling.POISSON.value,
      sampling.ClientSampling,
      'poisson: each client joins each round independently with '
      'probability q = clients_per_round / population (accounted '
      'with amplification by sampling, add/remove adjacency); '
      'fixed_size: exactly clients_per_round distinct clients '
      '(accounted as sampling without replacement, replace-one '
      'adjacency: costs more epsilon); full: every client every '
      'round (cross-silo; no amplification); shuffled_epochs: each '
      'client once per epoch in a shuffled order (DP-FTRL).')
  flags.DEFINE_integer(
      'insecure_sampling_seed',
      None, 'INSECURE, for tests and debugging only: draw the cohorts (and '
      'simulated dropout) from this value instead of a secret from the '
      'operating system. The value is in the released flags, so a guarantee '
      'that relies on amplification by sampling (poisson or fixed_size '
      'cohorts) does not hold against anyone who knows it; the privacy '
      'statement says which.',
      flag_values=fv)
  checked_flags.register(fv, 'insecure_sampling_seed',
                         lambda v: 0 <= v < 2**128,
                         'must be an integer in [0, 2**128)')


def define_training_flags(fv: flags.FlagValues) -> None:
  """The algorithm, local training and the server optimizer."""
  _define_algorithm_flags(fv)
  _define_client_flags(fv)
  _define_server_flags(fv)


def _define_algorithm_flags(fv: flags.FlagValues) -> None:
  """The federated algorithm, how clients are weighted, and dropout."""
  checked_flags.define_enum(
      fv, 'algorithm', config_lib.Algorithm.FEDAVG.value, config_lib.Algorithm,
      'fedavg: local SGD epochs, the server averages model deltas '
      '(McMahan et al. 2017); fedprox: FedAvg with a proximal term '
      '(Li et al. 2020, --proximal_strength); fedsgd: one full-batch '
      'gradient per client per round, w <- w - lr * sum_k weight_k '
      'grad_k (McMahan et al. 2017); dp_ftrl: DP-FTRL (Kairouz et al. '
      '2021) with --dp_mechanism=tree_aggregation and '
      '--client_sampling=shuffled_epochs.')
  checked_flags.define_float(
      fv,
      'proximal_strength',
      0.0, 'FedProx mu: weight of mu/2 ||w - w_server||^2 in the local '
      'loss.',
      lower=0.0,
      upper=1e6)
  checked_flags.define_enum(
      fv, 'client_weighting', config_lib.ClientWeighting.UNIFORM.value,
      config_lib.ClientWeighting,
      'Weights of client updates in the server average. uniform; '
      'num_examples: |D_k| / |D| (non-private runs only: unbounded '
      'sensitivity); capped: min(|D_k| / --weight_cap, 1), the '
      'DP-compatible weighting of McMahan et al. 2018.')
  flags.DEFINE_float('weight_cap',
                     None,
                     'n_cap of --client_weighting=capped: clients with at '
                     'least this many examples get weight 1.',
                     flag_values=fv)
  checked_flags.register(fv, 'weight_cap',
                         lambda v: math.isfinite(v) and 0 < v <= 1e12,
                         'must be a finite number in (0, 1e12]')
  checked_flags.define_float(
      fv,
      'dropout_rate',
      0.0, 'Simulated dropout: each sampled client fails to report with '
      'this probability. Noise and denominator stay as planned and '
      'the round is charged as sampled.',
      lower=0.0,
      upper=1.0,
      upper_open=True)


def _define_client_flags(fv: flags.FlagValues) -> None:
  """The clients' local training."""
  checked_flags.define_int(fv,
                           'client_epochs',
                           1,
                           'Local epochs per round.',
                           lower=1,
                           upper=checked_flags.MAX_EPOCHS)
  checked_flags.define_int(fv,
                           'client_batch_size',
                           16,
                           'Local batch size.',
                           lower=1,
                           upper=checked_flags.MAX_BATCH)
  checked_flags.define_float(fv,
                             'client_learning_rate',
                             0.1,
                             'Learning rate of the clients\' SGD.',
                             lower=0.0,
                             upper=checked_flags.MAX_RATE,
                             lower_open=True)
  checked_flags.define_float(fv,
                             'client_momentum',
                             0.0,
                             'Momentum of the clients\' SGD.',
                             lower=0.0,
                             upper=1.0,
                             upper_open=True)


def _define_server_flags(fv: flags.FlagValues) -> None:
  """The server optimizer, and the seed of what is public by design."""
  checked_flags.define_enum(
      fv, 'server_optimizer', config_lib.ServerOptimizer.SGD.value,
      config_lib.ServerOptimizer,
      'Server optimizer applied to the averaged update: sgd (with '
      '--server_momentum), adam or yogi (Reddi et al. 2021, '
      'Adaptive Federated Optimization).')
  checked_flags.define_float(fv,
                             'server_learning_rate',
                             0.5,
                             'Server learning rate.',
                             lower=0.0,
                             upper=checked_flags.MAX_RATE,
                             lower_open=True)
  checked_flags.define_float(fv,
                             'server_momentum',
                             0.9,
                             'Momentum of the server SGD.',
                             lower=0.0,
                             upper=1.0,
                             upper_open=True)
  checked_flags.define_int(
      fv,
      'seed',
      0, 'Seed of what is public by design: model initialization and '
      'the order of each client\'s local data. Cohorts and DP noise '
      'are drawn from the operating system\'s entropy, never from '
      'this seed.',
      lower=0,
      upper=2**32 - 1)


def define_output_flags(fv: flags.FlagValues) -> None:
  """Where and how often results are written."""
  flags.DEFINE_string('output_dir',
                      'runs',
                      'Directory that holds one subdirectory per run.',
                      flag_values=fv)
  # Empty would silently write into the current directory.
  checked_flags.register(fv, 'output_dir', lambda v: bool(v.strip()),
                         'must name a directory (it is empty)')
  flags.DEFINE_string('run_name',
                      '', 'Name of this run\'s directory under --output_dir '
                      '(an existing run there is resumed); default: a new '
                      'directory <config>-<UTC time> (-2, -3, ... if taken).',
                      flag_values=fv)
  checked_flags.register(
      fv, 'run_name', _valid_run_name,
      'must be a plain directory name (letters, digits, . _ -)')
  checked_flags.define_int(
      fv,
      'eval_every',
      1, 'Evaluate on the held-out set every this many rounds (and '
      'after the last).',
      lower=1,
      upper=checked_flags.MAX_ROUNDS)


def _valid_run_name(name: Optional[str]) -> bool:
  allowed = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'
                '0123456789._-')
  return not name or (set(name) <= allowed and name not in ('.', '..'))


def define_simulation_flags(fv: flags.FlagValues) -> None:
  """How the simulation is laid out; never changes what is computed."""
  checked_flags.define_int(
      fv,
      'clients_per_call',
      0, 'Simulated clients per TFF client invocation. 1: TFF\'s '
      'learning algorithm, one invocation per client (every '
      'configuration). N > 1: the grouped fast path '
      '(tff_dp/algorithms/grouped_fedavg.py): the same local training, clipping, '
      'noise and accounting per simulated client, for every --algorithm '
      '(fedavg, fedprox, fedsgd, dp_ftrl) with gaussian_fixed, '
      'gaussian_adaptive or tree_aggregation, uniform or capped '
      'weighting, local DP and example-level DP-SGD (with '
      '--client_epochs=1), and without DP (--dp_mechanism=none, also '
      'with num_examples weighting), on in-memory single-label data; and '
      'the transformer (fedavg, dp_ftrl, with a DP mechanism) on token '
      f'data of at most {token_memory.MAX_IN_MEMORY_CLIENTS:,} clients, '
      'read into memory (python_stdlib, shakespeare; stackoverflow_nwp '
      'stays streamed). '
      '0: the grouped path with '
      f'{simulation_path.AUTO_CLIENTS_PER_CALL} clients per call where it '
      'applies, else 1.',
      lower=0,
      upper=checked_flags.MAX_CLIENTS)
  checked_flags.define_int(
      fv,
      'rounds_per_call',
      0, 'Most training rounds per TFF call on the grouped path (the idea '
      'of Keras\' steps_per_execution): the state stays on the TFF worker '
      'between the rounds of a call. Each round is still sampled, charged '
      'and released on its own; a call never crosses a round that is '
      'evaluated (--eval_every) or one the budget (--max_epsilon) would '
      'refuse; checkpoints are written after each call, so a stopped run '
      'resumes after the last finished call. 1: one round per call. 0: '
      f'{simulation_path.AUTO_ROUNDS_PER_CALL} where rounds can share a call '
      '(the grouped path, without --workers or --audit_canaries), else 1.',
      lower=0,
      upper=checked_flags.MAX_ROUNDS)
  flags.DEFINE_bool(
      'allow_unconfined_worker',
      False, 'INSECURE: if the TFF worker cannot be confined to a private Unix '
      'socket (the shim tff_dp/execution/native/loopback_bind.c was not built, e.g. '
      'no C compiler, or not Linux), start it anyway: it then serves '
      'unauthenticated gRPC on all interfaces, and anyone who can connect '
      'can run code as you and read the clients\' data and the noise. '
      'Without this flag such a run is refused.',
      flag_values=fv)
  flags.DEFINE_string(
      'workers',
      '', 'Run each round\'s cohort on these TFF workers, HOST:PORT,... '
      '(each `./run.sh worker --tls` on its host), reached over mutual TLS '
      'with --worker_certs; TFF\'s mergeable execution context splits the '
      'cohort across them and the server part (the DP noise, the '
      'accounting) runs once, here. Empty: one local worker. With a '
      'sharded --client_data (import-data --shards=K; one worker per shard, '
      'each with --data_dir) the workers read their own clients on the '
      'grouped path; with other data the driver sends the examples and '
      '--clients_per_call must be 1 (0 means 1 here).',
      flag_values=fv)
  checked_flags.register(fv, 'workers', _valid_workers,
                         'must be HOST:PORT,... (ports in [1, 65535])')
  flags.DEFINE_string(
      'worker_certs',
      '', 'With --workers: directory holding ca.crt, driver.crt and '
      'driver.key (./run.sh certs).',
      flag_values=fv)
  checked_flags.define_enum(
      fv, 'on_worker_loss', config_lib.WorkerLoss.STOP.value,
      config_lib.WorkerLoss,
      'With --workers, when a worker is lost mid-run: stop (nothing of the '
      'round released; the same command resumes) or continue on the others '
      '(the round is completed without it: with sharded data its clients '
      'become unreachable and are no longer sampled, the ledger unchanged; '
      'README, "Running on several machines").')


def _valid_workers(text: str) -> bool:
  if not text:
    return True
  try:
    worker_addresses.parse_workers(text)
  except ValueError:
    return False
  return True


def define_audit_flags(fv: flags.FlagValues) -> None:
  """Canary clients for an empirical privacy audit of the run."""
  checked_flags.define_int(
      fv,
      'audit_canaries',
      0, 'Canary clients M that join the population for an empirical '
      'privacy audit of this run (each inserted with probability 1/2; '
      'estimates and a lower bound released next to the analytic epsilon '
      'as audit/*): an audit run, not a production run. 0: none. In '
      './run.sh audit, 0 means min(N/2, 1000).',
      lower=0,
      upper=checked_flags.MAX_CLIENTS)


TRAIN_FLAG_GROUPS = (
    ('Data', define_data_flags),
    ('Evaluation', define_evaluation_flags),
    ('Model', define_model_flags),
    ('Rounds and client sampling', define_cohort_flags),
    ('Local and server training', define_training_flags),
    ('Privacy and accounting', privacy_flags.define_privacy_flags),
    ('Local and example-level DP', privacy_flags.define_local_dp_flags),
    ('Clipping, budget and releases', privacy_flags.define_dp_training_flags),
    ('Empirical privacy audit', define_audit_flags),
    ('Output', define_output_flags),
    ('Simulation', define_simulation_flags),
)


def define_train_flags(fv: flags.FlagValues) -> None:
  """All flags of `tff_dp.cli.train`."""
  for _, define in TRAIN_FLAG_GROUPS:
    define(fv)


def unread_data_dir_note(fv: flags.FlagValues,
                         config: config_lib.TrainConfig) -> Optional[str]:
  """A note if --data_dir was given to a dataset that reads nothing from it.

  Not a refusal: one --data_dir for every run of a script or a sweep is
  common; but a user who meant another dataset should see it.
  """
  if fv['data_dir'].present and not registry.spec(
      config.dataset.value).data_files:
    return (f'note: --data_dir={fv["data_dir"].value} is not read: --dataset='
            f'{config.dataset.value} reads nothing from it')
  return None


def config_from_flags(fv: flags.FlagValues) -> config_lib.TrainConfig:
  """The `TrainConfig` of parsed flag values (one field per flag)."""
  return config_lib.config_from_mapping({
      field.name: fv[field.name].value
      for field in config_lib.dataclasses.fields(config_lib.TrainConfig)
  })
