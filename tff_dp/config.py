"""The resolved configuration of a training run: `TrainConfig` and its enums.

Pure Python: importing this module must stay cheap (no TensorFlow), because the
program validates its input before it pays for importing TFF. Whether a
configuration can run is `tff_dp.config_checks`'s job.

Field names are the flag names: one name per concept across flags, config,
outputs and documentation.
"""

import dataclasses
import enum
from typing import Any, Mapping, Optional

from tff_dp.cohorts import sampling
from tff_dp.data import loading
from tff_dp.data import partition as partition_lib
from tff_dp.mechanisms import central
from tff_dp.mechanisms import registry as mechanism_registry
from tff_dp.mechanisms.registry import DpMechanism
from tff_dp.privacy import accounting


class Algorithm(enum.Enum):
  """The federated algorithm (how clients train and the server updates)."""
  # McMahan et al. 2017: local SGD epochs, the server averages model deltas.
  FEDAVG = 'fedavg'
  # Li et al. 2020, "Federated Optimization in Heterogeneous Networks":
  # FedAvg with a proximal term mu/2 ||w - w_server||^2 in the local loss.
  FEDPROX = 'fedprox'
  # McMahan et al. 2017: one full-batch gradient per client per round;
  # w <- w - eta * sum_k |D_k| / |D| * grad L(w; D_k).
  FEDSGD = 'fedsgd'
  # Kairouz et al. 2021: FTRL on tree-aggregated noisy prefix sums, clients
  # in shuffled epochs (no sampling).
  DP_FTRL = 'dp_ftrl'


class LocalDp(enum.Enum):
  """Noise each client adds to its update before it leaves the client."""
  NONE = 'none'
  LAPLACE = 'laplace'  # L1 clip, Lap(2 * C1 / epsilon_local) per coordinate
  GAUSSIAN = 'gaussian'  # L2 clip, N(0, (z_local * C)^2) per coordinate


class ClientWeighting(enum.Enum):
  """How client updates are weighted in the server average."""
  UNIFORM = 'uniform'
  # |D_k| / |D| (McMahan et al. 2017's FedAvg weighting); non-private only
  # (its sensitivity is unbounded).
  NUM_EXAMPLES = 'num_examples'
  # McMahan et al. 2018: w_k = min(n_k / weight_cap, 1), DP-compatible.
  CAPPED = 'capped'


# The transformer's default size: 1.65M parameters with python_stdlib's 100
# ids and context of 64. Measured on 2 shared cores (training steps of 16
# windows, interleaved): 2 x 256 takes ~1.2x the time of 4 x 128 (0.83M
# parameters; 80 steps, a round of 20 clients x 4 batches, took 3.25 s of
# steps on a quiet machine) and ~0.46x the time of 4 x 192 (1.83M).
DEFAULT_TRANSFORMER_LAYERS = 2
DEFAULT_TRANSFORMER_WIDTH = 256
DEFAULT_TRANSFORMER_HEADS = 4
DEFAULT_TRANSFORMER_FF_WIDTH = 1024


class ModelKind(enum.Enum):
  MLP = 'mlp'
  LOGISTIC_REGRESSION = 'logistic_regression'
  # The EMNIST CNN of TFF's baselines (Reddi et al. 2021); needs image data.
  CNN = 'cnn'
  # Embedding + LSTM next-token model of TFF's Shakespeare and Stack Overflow
  # baselines (McMahan et al. 2017; Reddi et al. 2021); needs token data.
  RNN = 'rnn'
  # Decoder-only transformer language model (GPT-style, Radford et al. 2019;
  # `tff_dp.models.transformer`) predicting every next token of a window;
  # needs token data.
  TRANSFORMER = 'transformer'


class Trainable(enum.Enum):
  """Which of the model's parameters clients train (`tff_dp.models.trainable`).

  The others are frozen: non-trainable Keras variables, so they are never
  clipped, noised or aggregated, and a DP mechanism's noise has the trained
  parameters' dimension.
  """
  ALL = 'all'
  # Hu et al. 2022: low-rank adapters on every Dense layer, all else frozen.
  LORA = 'lora'
  # Sun et al. 2024 (FFA-LoRA, arXiv 2403.12313): LoRA with A frozen too.
  FFA_LORA = 'ffa_lora'
  # The output layer only (`lm_head`, or the model's last Dense layer).
  HEAD = 'head'
  # The last --trainable_last_k blocks, the final LayerNorm and the head.
  LAST_K = 'last_k'


class ServerOptimizer(enum.Enum):
  SGD = 'sgd'
  # Reddi et al. 2021, "Adaptive Federated Optimization" (FedAdam, FedYogi).
  ADAM = 'adam'
  YOGI = 'yogi'


class Evaluation(enum.Enum):
  """Where the global model is evaluated."""
  # The server's held-out test set: public data and the DP model, so its
  # metrics are covered by the guarantee.
  CENTRALIZED = 'centralized'
  # TFF's federated evaluation over --eval_clients clients held out of
  # training: their data without noise, so NOT covered by the guarantee.
  FEDERATED = 'federated'


class WorkerLoss(enum.Enum):
  """What a run with --workers does when a worker is lost mid-run."""
  # End the run (nothing of the round released, resumable).
  STOP = 'stop'
  # Go on with the other workers (`tff_dp.execution.split_rounds`).
  CONTINUE = 'continue'


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on; one field per flag."""
  # Data.
  dataset: loading.Dataset
  data_dir: str
  client_data: str
  num_clients: int
  partition: partition_lib.Partition
  dirichlet_alpha: float
  test_fraction: float
  data_seed: int
  # Evaluation.
  evaluation: Evaluation
  eval_clients: Optional[int]
  # Model.
  model: ModelKind
  hidden_layers: int
  hidden_units: int
  embedding_dim: int
  # Training.
  algorithm: Algorithm
  proximal_strength: float
  client_weighting: ClientWeighting
  weight_cap: Optional[float]
  rounds: int
  clients_per_round: int
  client_sampling: sampling.ClientSampling
  dropout_rate: float
  client_epochs: int
  client_batch_size: int
  client_learning_rate: float
  client_momentum: float
  server_optimizer: ServerOptimizer
  server_learning_rate: float
  server_momentum: float
  seed: int
  # None: cohorts from a secret drawn from OS entropy (`tff_dp.privacy.run_secrets`).
  insecure_sampling_seed: Optional[int]
  # Privacy and accounting.
  dp_mechanism: DpMechanism
  noise_multiplier: float
  delta: float
  accountants: tuple[accounting.AccountantKind, ...]
  target_epsilon: Optional[float]
  # Local DP (noise at the clients).
  local_dp: LocalDp
  local_clip: float
  local_epsilon: Optional[float]
  local_noise_multiplier: Optional[float]
  # Example-level DP-SGD inside clients.
  example_dp: bool
  example_noise_multiplier: float
  example_clip: float
  local_steps: int
  # Clipping, budget and releases.
  clip: float
  initial_clip: float
  target_unclipped_quantile: float
  clip_learning_rate: float
  max_epsilon: Optional[float]
  allow_zero_noise: bool
  release_nonprivate_metrics: bool
  # Empirical privacy audit: M canary clients join the population
  # (`tff_dp.program.canary_audit`); 0 for none (a production run).
  audit_canaries: int
  # Output.
  output_dir: str
  run_name: str
  eval_every: int
  # Simulation layout (never changes what is computed).
  clients_per_call: int
  # Start the TFF worker even where it cannot be confined (`tff_dp.execution.worker_launch`).
  allow_unconfined_worker: bool
  # Remote TFF workers, HOST:PORT,... ('' for the local one), and the driver's
  # certificates for them (`tff_dp.execution.remote_workers`).
  workers: str
  worker_certs: str
  # With --workers: stop, or continue on the remaining workers, when one is
  # lost mid-run (`tff_dp.execution.split_rounds`).
  on_worker_loss: WorkerLoss = WorkerLoss.STOP
  # The transformer's size (--model=transformer; its context is the data's
  # window).
  transformer_layers: int = DEFAULT_TRANSFORMER_LAYERS
  transformer_width: int = DEFAULT_TRANSFORMER_WIDTH
  transformer_heads: int = DEFAULT_TRANSFORMER_HEADS
  transformer_ff_width: int = DEFAULT_TRANSFORMER_FF_WIDTH
  # A checkpoint of `./run.sh pretrain` to start from ('' for the seeded
  # initial model); its data were declared public (`tff_dp.cli.pretrain`).
  init_from: str = ''
  # Which parameters train (`tff_dp.models.trainable`); the rest are frozen.
  trainable: Trainable = Trainable.ALL
  lora_rank: int = 8
  lora_alpha: float = 8.0
  trainable_last_k: int = 1
  # Clients declared public (`tff_dp.data.public_clients`): a file of ids, or
  # the fraction whose id hashes below it; never in the private population.
  public_clients: str = ''
  public_fraction: float = 0.0
  # Most rounds per TFF call on the grouped path (`tff_dp.algorithms.
  # fused_rounds`); 0 for automatic. Layout only, like clients_per_call.
  rounds_per_call: int = 0

  @property
  def mechanism(self) -> central.CentralMechanism:
    """The central mechanism's row (`tff_dp.mechanisms.registry`)."""
    return mechanism_registry.mechanism(self.dp_mechanism)

  @property
  def dp_settings(self) -> central.DpSettings:
    """The central mechanism's parameters."""
    return central.DpSettings(
        mechanism=self.dp_mechanism,
        noise_multiplier=self.noise_multiplier,
        clients_per_round=self.clients_per_round,
        clip=self.clip,
        initial_clip=self.initial_clip,
        target_unclipped_quantile=self.target_unclipped_quantile,
        clip_learning_rate=self.clip_learning_rate)

  @property
  def uses_dp_aggregator(self) -> bool:
    """Whether updates are clipped and noised by a DP aggregator."""
    return self.mechanism.noised

  @property
  def central_private(self) -> bool:
    """Whether the released model carries a central (user-level) claim."""
    return self.uses_dp_aggregator and self.noise_multiplier > 0

  @property
  def private(self) -> bool:
    """Whether the run claims any DP guarantee (central, local or record)."""
    return (self.central_private or self.local_dp is not LocalDp.NONE or
            self.example_dp)

  def to_json(self) -> dict[str, Any]:
    """Plain JSON-able mapping of flag name to value (enums as their value)."""
    return {
        field.name: _plain(getattr(self, field.name))
        for field in dataclasses.fields(self)
    }


def _plain(value: Any) -> Any:
  if isinstance(value, enum.Enum):
    return value.value
  if isinstance(value, tuple):
    return [_plain(v) for v in value]
  return value


def config_from_mapping(values: Mapping[str, Any]) -> TrainConfig:
  """Builds a `TrainConfig` from flag-name -> raw value (strings for enums)."""
  kwargs = {}
  for field in dataclasses.fields(TrainConfig):
    if field.name not in values and field.default is not dataclasses.MISSING:
      continue  # A setting added since `values` was written.
    value = values[field.name]
    if isinstance(field.type, type) and issubclass(field.type, enum.Enum):
      value = field.type(value)
    kwargs[field.name] = value
  kwargs['accountants'] = tuple(
      accounting.AccountantKind(v) for v in values['accountants'])
  return TrainConfig(**kwargs)
