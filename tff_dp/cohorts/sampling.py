"""Client samplers: which clients take part in a federated round.

The sampler is part of the privacy guarantee, not only of the training
schedule: the accountant (`tff_dp.privacy.accounting`) must charge each round for the
sampling scheme that actually ran.

* `POISSON`: every client joins a round independently with probability
  `q = clients_per_round / population`, so the cohort size is Binomial(N, q)
  and may be zero. This is the scheme analysed by the sampled Gaussian
  mechanism under add/remove-one adjacency (Abadi et al. 2016, "Deep learning
  with differential privacy"; Mironov, Talwar, Zhang 2019, "Renyi differential
  privacy of the sampled Gaussian mechanism"), which is what DP-FedAvg assumes
  (McMahan et al. 2018, "Learning differentially private recurrent language
  models").
* `FIXED_SIZE`: exactly `clients_per_round` distinct clients, uniformly without
  replacement. This is what `tff.simulation.build_uniform_sampling_fn` does.
  It is amplified only under replace-one adjacency (Wang, Balle,
  Kasiviswanathan 2019, "Subsampled Renyi differential privacy and analytical
  moments accountant"), where the sensitivity of a clipped sum doubles.
* `FULL`: every client every round (cross-silo); no amplification.

`ClientSampler.sample` is a pure function of `(seed, round_num)`, so a resumed
run redraws exactly the cohorts of the original run. Amplification by sampling
assumes the cohorts are hidden, so the program's seed is the run's sampling
secret (`tff_dp.privacy.run_secrets`: 128 bits of OS entropy, kept only in the
checkpoints), never a flag or anything released.
"""

import dataclasses
import enum

import numpy as np

from tff_dp import checks

# Domain separation for the random stream: other parts of the program may also
# derive generators from (seed, round_num) (e.g. noise seeds); cohorts must not
# be correlated with them even if the user passes the same seed everywhere.
_SAMPLING_STREAM_ID = 0x53414D50  # ASCII 'SAMP'.

# `np.random.SeedSequence` pads integer entropy to its 128-bit pool before
# appending the spawn key; bounding the seed below 2**128 (the size of a run
# secret) keeps every (seed, round_num) pair a distinct, unambiguous input.
_MAX_SEED = 2**128


class ClientSampling(enum.Enum):
  """How the cohort of a round is drawn from the client population."""

  POISSON = 'poisson'
  FIXED_SIZE = 'fixed_size'
  FULL = 'full'
  # Every client once per epoch, in a seeded shuffled order (DP-FTRL; the
  # sampler is `tff_dp.cohorts.epoch_sampling.EpochSampler`).
  SHUFFLED_EPOCHS = 'shuffled_epochs'


def validate_cohort(*, sampling: ClientSampling, population: int,
                    clients_per_round: int) -> None:
  """Checks that a (sampling, population, clients_per_round) triple is valid.

  Shared by `ClientSampler` and the accounting helpers so that an event can
  only be built for a configuration that a sampler could have run.

  Args:
    sampling: The sampling scheme.
    population: Number of clients N in the population (from the data).
    clients_per_round: Cohort size n (expected size for `POISSON`).

  Raises:
    TypeError: If an argument has the wrong type.
    ValueError: If the values are inconsistent; the message names the field.
  """
  if not isinstance(sampling, ClientSampling):
    raise TypeError(f'sampling must be a ClientSampling, got {sampling!r}.')
  checks.check_int('population', population, minimum=1)
  checks.check_int('clients_per_round', clients_per_round, minimum=1)
  if clients_per_round > population:
    raise ValueError(
        f'clients_per_round must be <= population ({population}), got '
        f'{clients_per_round}.')
  if sampling is ClientSampling.SHUFFLED_EPOCHS:
    raise ValueError(
        'shuffled epochs are drawn by '
        'tff_dp.cohorts.epoch_sampling.EpochSampler and accounted with '
        'tree-aggregation events, not by ClientSampler')
  if sampling is ClientSampling.FULL and clients_per_round != population:
    raise ValueError(
        f'clients_per_round must equal population ({population}) for '
        f'ClientSampling.FULL, got {clients_per_round}.')


@dataclasses.dataclass(frozen=True)
class ClientSampler:
  """Draws the cohort of each round, statelessly and reproducibly.

  Attributes:
    sampling: The sampling scheme.
    population: Number of clients N. Must come from the data, since the
      sampling probability (and hence epsilon) depends on it.
    clients_per_round: n; the exact cohort size for `FIXED_SIZE`, the expected
      cohort size for `POISSON`, and N for `FULL`.
    seed: Non-negative int below 2**128; together with the round number it
      determines the cohort. The program passes the run's secret
      (`tff_dp.privacy.run_secrets`).
  """

  sampling: ClientSampling
  population: int
  clients_per_round: int
  seed: int

  def __post_init__(self):
    validate_cohort(sampling=self.sampling,
                    population=self.population,
                    clients_per_round=self.clients_per_round)
    checks.check_int('seed', self.seed, minimum=0)
    if self.seed >= _MAX_SEED:
      raise ValueError(f'seed must be < 2**128, got {self.seed}.')

  @property
  def sampling_probability(self) -> float:
    """Probability q that a given client takes part in a given round."""
    if self.sampling is ClientSampling.FULL:
      return 1.0
    return self.clients_per_round / self.population

  def _rng(self, round_num: int) -> np.random.Generator:
    # spawn_key makes (seed, round) streams independent children of one root,
    # which is the use SeedSequence was designed for.
    seed_seq = np.random.SeedSequence(entropy=self.seed,
                                      spawn_key=(_SAMPLING_STREAM_ID,
                                                 round_num))
    return np.random.default_rng(seed_seq)

  def sample(self, round_num: int) -> np.ndarray:
    """Returns the cohort of round `round_num`.

    Depends only on `(seed, round_num)`: calling it twice, or after a restart,
    gives the same cohort; distinct rounds or seeds give independent draws.

    Args:
      round_num: Non-negative round number.

    Returns:
      Sorted 1-D int64 array of distinct client indices in [0, population).
      May be empty for `POISSON`: an empty round is still a round and must
      still be charged by the accountant.
    """
    round_num = checks.check_int('round_num', round_num, minimum=0)
    if self.sampling is ClientSampling.FULL:
      return np.arange(self.population, dtype=np.int64)
    rng = self._rng(round_num)
    if self.sampling is ClientSampling.POISSON:
      # Binomial size then a uniform subset of that size has exactly the law
      # of N independent Bernoulli(q) trials, in O(cohort) rather than O(N)
      # memory, which matters for cross-device populations of millions.
      size = int(rng.binomial(self.population, self.sampling_probability))
    else:
      size = self.clients_per_round
    cohort = rng.choice(self.population, size=size, replace=False)
    return np.sort(cohort).astype(np.int64, copy=False)


_DROPOUT_STREAM_ID = 0x44524F50  # 'DROP': independent of the cohort draws.


def reporting_clients(cohort: np.ndarray, *, dropout_rate: float, seed: int,
                      round_num: int) -> np.ndarray:
  """Simulates sampled clients that never report (device went offline).

  Each sampled client drops independently with probability `dropout_rate`,
  reproducibly in (seed, round); `seed` is the run's sampling secret, since
  who reports is part of the hidden cohort. Dropout happens after sampling and the DP
  aggregator still divides by the planned clients_per_round with the planned
  noise, so the round's event is unchanged: fewer contributions cannot raise
  the sensitivity, and accounting with the sampling rate q (not the smaller
  effective q * (1 - dropout_rate)) is a valid, conservative upper bound.
  """
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'dropout_rate must be in [0, 1), got {dropout_rate}')
  if dropout_rate == 0.0 or len(cohort) == 0:
    return cohort
  rng = np.random.default_rng(
      np.random.SeedSequence(entropy=seed,
                             spawn_key=(_DROPOUT_STREAM_ID, round_num)))
  return cohort[rng.random(len(cohort)) >= dropout_rate]
