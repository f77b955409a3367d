"""The randomness a privacy analysis assumes nobody else knows, and where it lives.

Amplification by sampling (Abadi et al. 2016; Mironov, Talwar, Zhang 2019)
holds only if the adversary does not know which clients a round sampled, and
the Gaussian mechanism only if the adversary cannot regenerate the noise. So:

* Every secret comes from the operating system's entropy (Python's `secrets`,
  i.e. `os.urandom`), `SECRET_BITS` = 128 bits, never from a flag, the clock
  or any value a run releases.
* The sampling secret (cohorts and simulated dropout) must survive a resume,
  so that a resumed run redraws its own cohorts: it is written to the
  checkpoints (which stay private) and nowhere else.
* Noise keys (`new_noise_key`) are drawn when a process is built and live
  only inside its TensorFlow computations (`tff_dp.mechanisms.noise_seeds`): noise that
  was never released need not be reproduced, so they are written nowhere.
  (The computation cache, `tff_dp.program.computation_cache`, writes
  placeholders in their place and draws new keys here when it loads.)

`--insecure_sampling_seed` replaces the sampling secret by a value the user
chose (reproducible cohorts for tests and debugging). That value is in the
released flags, so the run's statement says that the guarantee does not hold
against anyone who knows it. Pure Python.
"""

import dataclasses
import secrets
from typing import Any, Optional

from tff_dp.cohorts import sampling as sampling_lib

SECRET_BITS = 128

# What a checkpoint written before sampling secrets existed lacks.
_JSON_KEYS = frozenset({'sampling', 'source'})

SOURCE_OS = 'os_entropy'
SOURCE_FLAG = 'insecure_sampling_seed'


class SecretsFormatError(ValueError):
  """A checkpoint's secrets are missing or malformed."""


def new_secret() -> int:
  """A fresh non-negative integer of `SECRET_BITS` bits from the OS."""
  return secrets.randbits(SECRET_BITS)


def new_noise_key() -> tuple[int, int]:
  """A fresh 128-bit key as two signed int64 (TF's stateless seed shape)."""
  value = new_secret()
  return (_signed64(value & (2**64 - 1)), _signed64(value >> 64))


def _signed64(value: int) -> int:
  return value - 2**64 if value >= 2**63 else value


@dataclasses.dataclass(frozen=True)
class RunSecrets:
  """The secrets of one run that a checkpoint must carry.

  Attributes:
    sampling: Seeds the cohorts (`tff_dp.cohorts.sampling`, `tff_dp.cohorts.epoch_sampling`)
      and the simulated dropout.
    source: `SOURCE_OS`, or `SOURCE_FLAG` when the user chose the value
      (`--insecure_sampling_seed`): then it is public.
  """
  sampling: int
  source: str = SOURCE_OS

  @property
  def public(self) -> bool:
    """True if the sampling secret is known from the released flags."""
    return self.source == SOURCE_FLAG

  def to_json(self) -> dict[str, Any]:
    # A string: JSON readers may round integers beyond 2**53.
    return {'sampling': format(self.sampling, 'x'), 'source': self.source}

  @classmethod
  def from_json(cls, data: Any) -> 'RunSecrets':
    """Parses `to_json` output; raises `SecretsFormatError` if malformed."""
    if not isinstance(data, dict) or set(data) != _JSON_KEYS:
      raise SecretsFormatError(f'expected keys {sorted(_JSON_KEYS)}, got '
                               f'{data!r:.80}')
    if data['source'] not in (SOURCE_OS, SOURCE_FLAG):
      raise SecretsFormatError(f'unknown source {data["source"]!r:.40}')
    try:
      sampling = int(data['sampling'], 16)
    except (TypeError, ValueError) as e:
      raise SecretsFormatError('sampling secret is not a hex string') from e
    if not 0 <= sampling < 2**SECRET_BITS:
      raise SecretsFormatError(f'sampling secret is not {SECRET_BITS} bits')
    return cls(sampling=sampling, source=data['source'])


def draw(insecure_sampling_seed: Optional[int] = None) -> RunSecrets:
  """The secrets of a new run (OS entropy unless the user chose the seed)."""
  if insecure_sampling_seed is not None:
    return RunSecrets(sampling=insecure_sampling_seed, source=SOURCE_FLAG)
  return RunSecrets(sampling=new_secret())


# The samplers whose rounds the central accountant may amplify
# (`tff_dp.privacy.accounting.gaussian_round_event`): Poisson always, fixed
# size where Wang et al.'s bound (RDP) beats the unamplified one.
AMPLIFIED_SAMPLINGS = frozenset({
    sampling_lib.ClientSampling.POISSON,
    sampling_lib.ClientSampling.FIXED_SIZE,
})


def relies_on_hidden_cohorts(config: Any) -> bool:
  """Whether a guarantee of `config` (a `TrainConfig`) needs secret cohorts.

  Only a central claim amplified by sampling does: amplification holds only
  while the adversary does not know who was sampled. Full participation and
  shuffled epochs (DP-FTRL's tree bound holds for any order fixed
  independently of the data) claim no amplification; a local guarantee
  assumes the server sees who takes part; record-level DP-SGD samples each
  client's batches with its own secret noise keys, not with the cohorts'
  secret.
  """
  return (config.central_private and
          config.client_sampling in AMPLIFIED_SAMPLINGS)


def seed_voids_guarantee(config: Any) -> bool:
  """True if `config`'s --insecure_sampling_seed voids a guarantee it states:
  the seed is public and a guarantee relies on hidden cohorts."""
  return (config.insecure_sampling_seed is not None and
          relies_on_hidden_cohorts(config))


def seed_voids_epsilon(config: Any, accountant: Optional[str]) -> bool:
  """Whether the central epsilon of `accountant` ('rdp', 'pld') is void
  against whoever knows `config`'s public sampling seed.

  Under fixed-size sampling the PLD accountant composes the unamplified
  bound only (`tff_dp.privacy.accounting`, bound (b)), which holds for any
  cohorts; the RDP epsilon is the smaller of the amplified and the
  unamplified bound, so it may rely on hidden cohorts.
  """
  if not seed_voids_guarantee(config):
    return False
  return not (config.client_sampling is sampling_lib.ClientSampling.FIXED_SIZE
              and accountant == 'pld')
