"""Canary audits of a simulated Gaussian mechanism, exact, without R^d vectors.

The mechanism: round t releases Delta_t = (sum of the canary directions
inserted in round t) + N(0, noise_std^2 I_d). Directions are independent and
uniform on the unit sphere of R^d, so each canary's update is clipped to norm
exactly 1: the mechanism is the Gaussian mechanism with sensitivity 1 and
noise multiplier noise_std towards each canary, whose epsilon is
`analytic_epsilon(noise_std, delta)` (Balle and Wang 2018, through
dp_accounting's PLD). There are no other clients: their updates would be
data, not noise, and change nothing in the worst case.

The statistics are those of `tff_dp.audit.one_shot.canary_statistics`: the
cosine of each canary direction with each round's delta and with their sum.
They are functions of the inner products of n = K + T standard normal
vectors in R^d (the K canaries before normalization, the T noises divided by
noise_std), whose Gram matrix is Wishart_n(d, I). Bartlett's decomposition
samples it as A A^T, A lower triangular with A[i, i] = sqrt(chi2(d - i)) and
N(0, 1) below the diagonal: row i of A is vector i in an orthonormal basis of
their span. So the simulation is exact in distribution for any d >= n and
costs O(n^2 T) instead of O(n d): d = 10^5 or 10^6 costs the same.
"""

import dataclasses
import functools

from dp_accounting.pld import privacy_loss_distribution
import numpy as np
import threadpoolctl


@dataclasses.dataclass(frozen=True)
class Simulated:
  """Per canary: its cosine with each round's delta and with their sum."""
  per_round: np.ndarray  # [K, T]
  final_model: np.ndarray  # [K]

  @property
  def all_iterates(self) -> np.ndarray:
    return self.per_round.max(axis=1)


@functools.lru_cache(maxsize=8)
def _below_diagonal(n: int):
  return np.tril_indices(n, -1)


def simulate(rng: np.random.Generator, *, dim: int, noise_std: float,
             rounds: int, canary_rounds: np.ndarray) -> Simulated:
  """One run: canary k joins round canary_rounds[k] (-1: never inserted).

  BLAS runs on one thread: the matrices are small, and on a loaded 2-core
  machine a second thread made the simulation twice as slow.
  """
  with threadpoolctl.threadpool_limits(1):
    return _simulate(rng,
                     dim=dim,
                     noise_std=noise_std,
                     rounds=rounds,
                     canary_rounds=canary_rounds)


def _simulate(rng, *, dim, noise_std, rounds, canary_rounds) -> Simulated:
  canary_rounds = np.asarray(canary_rounds)
  k, n = canary_rounds.size, canary_rounds.size + rounds
  assert dim >= n and canary_rounds.max() < rounds
  a = np.zeros((n, n))
  a[_below_diagonal(n)] = rng.standard_normal(n * (n - 1) // 2)
  a[np.diag_indices(n)] = np.sqrt(rng.chisquare(dim - np.arange(n)))
  norms = np.linalg.norm(a[:k], axis=1)
  weights = np.zeros((n, rounds))  # Delta_t = sum_i weights[i, t] row_i.
  inserted = np.flatnonzero(canary_rounds >= 0)
  weights[inserted, canary_rounds[inserted]] = 1 / norms[inserted]
  weights[k + np.arange(rounds), np.arange(rounds)] = noise_std
  deltas = a.T @ weights  # [n, T]: each round's delta in that basis.
  total = deltas.sum(axis=1)
  per_round = (a[:k] @ deltas) / np.outer(norms, np.linalg.norm(deltas, axis=0))
  final = (a[:k] @ total) / (norms * np.linalg.norm(total))
  return Simulated(per_round=per_round, final_model=final)


def one_release(seed: int, *, canaries: int, dim: int, noise_std: float,
                insert_probability: float) -> tuple[np.ndarray, np.ndarray]:
  """Cosines of `canaries` canaries with one release, and who was inserted.

  Each canary is inserted independently with `insert_probability` (1/2 for
  Steinke et al.'s one-run audit; 1 for the one-shot estimate).
  """
  rng = np.random.default_rng(seed)
  inserted = rng.random(canaries) < insert_probability
  run = simulate(rng,
                 dim=dim,
                 noise_std=noise_std,
                 rounds=1,
                 canary_rounds=np.where(inserted, 0, -1))
  return run.final_model, inserted


@functools.lru_cache(maxsize=None)
def analytic_epsilon(noise_std: float, delta: float) -> float:
  """Epsilon of the Gaussian mechanism, sensitivity 1, at `delta` (PLD)."""
  pld = privacy_loss_distribution.from_gaussian_mechanism(
      noise_std, value_discretization_interval=1e-3)
  return pld.get_epsilon_for_delta(delta)
