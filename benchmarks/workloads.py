"""Workloads, hyperparameters and synthetic data shared by all engines.

Pure Python plus numpy (no TensorFlow): the orchestrator (`run_all`) imports
this module to plan the runs without paying for TensorFlow; each engine runs
in its own subprocess and rebuilds the same workload from its JSON form.

The data are SYNTHETIC: features uniform in [0, 1), labels uniform in
[0, 10), generated from a fixed seed. Timing does not depend on what the
pixels show, only on the shapes, which are those of (E)MNIST: 784 features
(28 x 28 x 1) and 10 classes. W3's are token windows of the offline
language-model task's shape (`--dataset=python_stdlib`): 64 ids out of 100,
uniform over the 96 character ids, labelled with the next id at every
position.
"""

import dataclasses
import enum
from typing import Any, Optional

import numpy as np

INPUT_DIM = 784
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
DATA_SEED = 1234
# W3: windows of python_stdlib's shape (`tff_dp.data.python_stdlib`: WINDOW
# tokens, VOCABULARY.size ids: 0 padding, 96 characters, oov, bos, eos) and
# tff-dp's default transformer (`tff_dp.config`: 2 blocks of width 256, 4
# heads, feed-forward 1024).
TOKEN_WINDOW = 64
TOKEN_VOCAB_SIZE = 100
TRANSFORMER_SIZES = (('transformer_layers', 2), ('transformer_width', 256),
                     ('transformer_heads', 4), ('transformer_ff_width', 1024))


class ModelName(enum.Enum):
  """Architectures the workloads train."""
  # The MLP 784-128-10 (tff_dp.algorithms.models, ModelKind.MLP).
  MLP = 'mlp'
  # The EMNIST CNN of TFF's baselines (google-research/federated,
  # utils/models/emnist_models.py, create_conv_dropout_model): conv 32 3x3,
  # conv 64 3x3, max-pool 2x2, dropout 0.25, dense 128, dropout 0.5, dense 10;
  # 1,199,882 parameters.
  CNN = 'cnn'
  # tff-dp's decoder-only transformer (tff_dp.models.transformer) at
  # TRANSFORMER_SIZES, on next-token labels at every position (W3).
  TRANSFORMER = 'transformer'


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Training settings every engine uses, so that the rounds do the same work.

  The values are tff-dp's defaults (see tff_dp.cli.cli_flags), with the fixed clip
  of `gaussian_fixed`.
  """
  client_learning_rate: float = 0.1
  server_learning_rate: float = 0.5
  server_momentum: float = 0.9
  noise_multiplier: float = 1.0
  clip: float = 0.5
  # Only for the gaussian_adaptive row.
  initial_clip: float = 0.1
  target_unclipped_quantile: float = 0.5
  clip_learning_rate: float = 0.2
  model_seed: int = 0


HYPERPARAMETERS = Hyperparameters()


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """A mechanism row: tff-dp's flags for it, and the floor's extra work.

  tff-dp runs the workload with `flags` added to the shared ones (they win
  where both set a flag), as the named config of configs/ sets them; the
  floor (`benchmarks.floor`) does the same arithmetic per client in one
  tf.function. The default row is DP-FedAvg with `gaussian_fixed`.

  Attributes:
    name: The row's name.
    config: The config of configs/ it stands for.
    flags: tff-dp's flags on top of the workload's.
    floor: What the floor computes beyond (or instead of) DP-FedAvg's round.
    proximal_strength: FedProx's mu in the floor's local gradients.
    full_gradient: FedSGD: one mean gradient per client, no local step.
    weight_cap: Capped weights: the update times min(n_k / cap, 1).
    local: 'gaussian' (L2 clip) or 'laplace' (L1 clip): per-client noise.
    local_clip: The local clip.
    local_noise: The local noise's std (Gaussian) or scale (Laplace).
    central: Central clip and noise (else the sum over the fixed count).
    example_dp: (noise multiplier, clip, local steps) of per-client
      Poisson-sampled DP-SGD (expected batch = the workload's batch size).
    tree: DP-FTRL: the central noise is the tree's (`benchmarks.floor_tree`,
      `tree_rounds_per_epoch` rounds per tree).
  """
  name: str
  config: str
  flags: tuple[str, ...]
  floor: str
  proximal_strength: float = 0.0
  full_gradient: bool = False
  weight_cap: Optional[float] = None
  local: Optional[str] = None
  local_clip: float = 0.0
  local_noise: float = 0.0
  central: bool = True
  example_dp: Optional[tuple[float, float, int]] = None
  tree: bool = False

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict[str, Any]) -> 'Mechanism':
    values = dict(values)
    values['flags'] = tuple(values['flags'])
    if values.get('example_dp') is not None:
      values['example_dp'] = tuple(values['example_dp'])
    return cls(**values)


DP_FEDAVG = Mechanism(name='gaussian_fixed',
                      config='fixed_clip.cfg',
                      flags=(),
                      floor='DP-FedAvg: local SGD, clip, sum, noise')

# The mechanisms of configs/, one row each, on the shared hyperparameters
# (z = 1, C = 0.5 where a central mechanism runs) with the configs' own
# mechanism parameters.
MECHANISMS = (
    Mechanism(name='dp_ftrl',
              config='dp_ftrl.cfg',
              flags=('--algorithm=dp_ftrl', '--client_sampling=shuffled_epochs',
                     '--dp_mechanism=tree_aggregation'),
              floor='DP-FedAvg with the tree\'s noise work of each round '
              '(node draws, prefix sum, residual; benchmarks.floor_tree) '
              'instead of one Gaussian draw',
              tree=True),
    Mechanism(name='fedprox',
              config='fedprox.cfg',
              flags=('--algorithm=fedprox', '--proximal_strength=0.01'),
              floor='DP-FedAvg plus the proximal term in every local step',
              proximal_strength=0.01),
    Mechanism(name='fedsgd',
              config='fedsgd_dp.cfg',
              flags=('--algorithm=fedsgd',),
              floor='one mean gradient per client (no local step), clip, '
              'noise',
              full_gradient=True),
    Mechanism(name='weighted_dp',
              config='weighted_dp.cfg',
              flags=('--client_weighting=capped', '--weight_cap=3'),
              floor='DP-FedAvg with each update scaled by min(n_k / 3, 1)',
              weight_cap=3.0),
    Mechanism(name='local_gaussian',
              config='local_gaussian.cfg',
              flags=('--dp_mechanism=none', '--local_dp=gaussian',
                     '--local_clip=1.0', '--local_noise_multiplier=1.0'),
              floor='local SGD, per-client L2 clip and Gaussian noise, sum '
              'over the fixed count (no central noise)',
              local='gaussian',
              local_clip=1.0,
              local_noise=1.0,
              central=False),
    Mechanism(name='local_laplace',
              config='local_laplace.cfg',
              flags=('--dp_mechanism=none', '--local_dp=laplace',
                     '--local_clip=1.0', '--local_epsilon=5.0'),
              floor='local SGD, per-client L1 clip and Laplace noise '
              '(scale 2 C / epsilon), sum over the fixed count',
              local='laplace',
              local_clip=1.0,
              local_noise=0.4,
              central=False),
    Mechanism(name='client_server',
              config='client_server.cfg',
              flags=('--local_dp=gaussian', '--local_clip=0.5',
                     '--local_noise_multiplier=0.05'),
              floor='DP-FedAvg plus per-client L2 clip and Gaussian noise '
              'before the central clip',
              local='gaussian',
              local_clip=0.5,
              local_noise=0.025),
    Mechanism(name='example_dp',
              config='example_dp.cfg',
              flags=('--dp_mechanism=none', '--example_dp',
                     '--example_noise_multiplier=1.5', '--example_clip=1.0',
                     '--local_steps=10'),
              floor='10 Poisson-sampled DP-SGD steps per client '
              '(per-example gradients, clip, noise), sum over the fixed '
              'count',
              central=False,
              example_dp=(1.5, 1.0, 10)),
    # Added by the nonprivate branch (issue 21): the DP runs' baseline.
    Mechanism(name='nonprivate',
              config='nonprivate.cfg',
              flags=('--dp_mechanism=none', '--client_weighting=num_examples'),
              floor='local SGD, the mean of the updates (no clip, no noise; '
              'the workload\'s clients hold equally many examples, so the '
              'n_k-weighted mean is the plain one)',
              central=False),
)


@dataclasses.dataclass(frozen=True)
class Workload:
  """One federated round's shape, and how many rounds to time.

  Attributes:
    family: 'W1' (MLP) or 'W2' (CNN).
    model: The architecture.
    clients: Clients per round (every client of the population takes part in
      every round: the cohort is the population).
    examples_per_client: Examples each client holds.
    batch_size: Local batch size.
    epochs: Local epochs.
    warmup_rounds: Rounds run before timing (tracing, caches, allocator).
    timed_rounds: Rounds whose times are reported.
    trainable: tff-dp's --trainable (W3's LoRA row; the floor trains all).
    rounds_per_call: tff-dp's --rounds_per_call (0: as the program
      resolves it, 10 on the grouped path). A timed "round" of tff-dp is
      one TFF call of that many rounds, reported per round (`harness`).
  """
  family: str
  model: ModelName
  clients: int
  examples_per_client: int
  batch_size: int
  epochs: int
  warmup_rounds: int
  timed_rounds: int
  trainable: str = 'all'
  rounds_per_call: int = 0

  @property
  def name(self) -> str:
    suffix = '' if self.trainable == 'all' else f'-{self.trainable}'
    return f'{self.family}-c{self.clients}{suffix}'

  def to_json(self) -> dict[str, Any]:
    values = dataclasses.asdict(self)
    values['model'] = self.model.value
    values['name'] = self.name
    return values

  @classmethod
  def from_json(cls, values: dict[str, Any]) -> 'Workload':
    kwargs = {
        field.name: values.get(field.name, field.default)
        for field in dataclasses.fields(cls)
    }
    kwargs['model'] = ModelName(kwargs['model'])
    return cls(**kwargs)


def _w1(clients: int, *, warmup: int, timed: int) -> Workload:
  return Workload(family='W1',
                  model=ModelName.MLP,
                  clients=clients,
                  examples_per_client=64,
                  batch_size=16,
                  epochs=1,
                  warmup_rounds=warmup,
                  timed_rounds=timed)


def _w2(clients: int, *, warmup: int, timed: int) -> Workload:
  # Three rounds per call, not the program's 10: W2's round is
  # compute-bound (a second or more), so 10 rounds per timed call would make
  # its rows 3x longer for no more than ~5% (benchmarks/README.md, "Several
  # rounds per TFF call"); fewer rounds per call amortize less, so W2's
  # times are, if anything, slower than the program's.
  return Workload(family='W2',
                  model=ModelName.CNN,
                  clients=clients,
                  examples_per_client=100,
                  batch_size=16,
                  epochs=1,
                  warmup_rounds=warmup,
                  timed_rounds=timed,
                  rounds_per_call=3)


def timing_workloads(quick: bool) -> list[Workload]:
  """The workloads of the seconds-per-round table, first one first.

  The first workload of each engine's subprocess also gives its time to the
  first round: W1 at 50 clients in full mode, W1 at 10 clients in quick mode.

  Args:
    quick: The quick mode proves the machinery in well under two minutes: two
      small workloads, one warm-up round and three timed rounds each.
  """
  if quick:
    return [_w1(10, warmup=1, timed=3), _w2(2, warmup=1, timed=3)]
  return [
      _w1(50, warmup=3, timed=30),
      _w1(10, warmup=3, timed=30),
      _w1(200, warmup=2, timed=15),
      _w2(20, warmup=2, timed=15),
  ]


def tree_rounds_per_epoch(workload: Workload) -> int:
  """DP-FTRL's rounds per tree on a workload, as tff-dp's `EpochSampler`
  makes them: population // clients_per_round. `benchmarks.rounds` runs
  every client every round (both are `workload.clients`), so 1: every
  tree is one leaf, restarted after each round."""
  population = clients_per_round = workload.clients
  return max(1, population // clients_per_round)


def mechanism_workloads(quick: bool) -> list[Workload]:
  """The workloads of the mechanism rows (`MECHANISMS`), first one first.

  The first W1 workload of `timing_workloads`, and in full mode W2 as well
  with fewer rounds (2 warm-up + 8 timed instead of 2 + 15: eight mechanisms
  of one to several seconds a round, twice each with the floor in turn).
  """
  first = timing_workloads(quick)[0]
  if quick:
    return [first]
  return [first, _w2(20, warmup=2, timed=8)]


def _w3(clients: int,
        *,
        warmup: int,
        timed: int,
        trainable: str = 'all') -> Workload:
  # 4 batches of 16 windows per client.
  return Workload(family='W3',
                  model=ModelName.TRANSFORMER,
                  clients=clients,
                  examples_per_client=64,
                  batch_size=16,
                  epochs=1,
                  warmup_rounds=warmup,
                  timed_rounds=timed,
                  trainable=trainable)


def transformer_workloads(quick: bool) -> list[Workload]:
  """W3, the default transformer, 20 clients x 4 batches (issue 20): full
  fine-tuning (against its floor) and LoRA (tff-dp only). None in quick
  mode: one W3 round takes seconds, and tracing the process tens of them."""
  if quick:
    return []
  return [
      _w3(20, warmup=2, timed=8),
      _w3(20, warmup=2, timed=8, trainable='lora'),
  ]


def memory_workload(quick: bool) -> tuple[Workload, int]:
  """W1 at 50 clients for the memory run, and its number of rounds."""
  rounds = 4 if quick else 300
  return _w1(50, warmup=0, timed=rounds), rounds


@dataclasses.dataclass(frozen=True)
class SyntheticData:
  """Per-client arrays of a workload: x [clients, n, 784], y [clients, n]."""
  x: np.ndarray
  y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray


def synthetic_data(workload: Workload,
                   *,
                   test_examples: int = 512) -> SyntheticData:
  """Deterministic random data of the workload's shape (see the module doc).

  W3: token windows, x float32 [clients, n, TOKEN_WINDOW] of ids, y int32
  [clients, n, TOKEN_WINDOW] the ids that follow (real tokens, no padding).
  """
  rng = np.random.default_rng(
      [DATA_SEED, workload.clients, workload.examples_per_client])
  shape = (workload.clients, workload.examples_per_client)
  if workload.model is ModelName.TRANSFORMER:
    # Ids 1..96: the characters (0 is padding; the last 3 are special).
    stream = rng.integers(1,
                          TOKEN_VOCAB_SIZE - 3,
                          size=shape + (TOKEN_WINDOW + 1,))
    test = rng.integers(1,
                        TOKEN_VOCAB_SIZE - 3,
                        size=(test_examples, TOKEN_WINDOW + 1))
    return SyntheticData(x=stream[..., :-1].astype(np.float32),
                         y=stream[..., 1:].astype(np.int32),
                         test_x=test[:, :-1].astype(np.float32),
                         test_y=test[:, 1:].astype(np.int32))
  x = rng.random(shape + (INPUT_DIM,), dtype=np.float32)
  y = rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)
  test_x = rng.random((test_examples, INPUT_DIM), dtype=np.float32)
  test_y = rng.integers(0, NUM_CLASSES, size=test_examples).astype(np.int32)
  return SyntheticData(x=x, y=y, test_x=test_x, test_y=test_y)


def round_permutations(workload: Workload,
                       round_num: int,
                       seed: int = 0) -> np.ndarray:
  """Each client's example order in a round, as tff_dp.program.client_data draws it.

  Returns:
    int array [clients, epochs * examples_per_client]: for client i, the
    concatenation of `epochs` permutations drawn from
    `np.random.default_rng([seed, round_num, i])`, exactly as
    `tff_dp.program.client_data.RoundDatasets` does.
  """
  orders = []
  for i in range(workload.clients):
    rng = np.random.default_rng([seed, round_num, i])
    orders.append(
        np.concatenate([
            rng.permutation(workload.examples_per_client)
            for _ in range(workload.epochs)
        ]))
  return np.stack(orders)
