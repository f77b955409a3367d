"""Empirical privacy audit of local DP: the server's view of one client.

In local DP (`tff_dp.mechanisms.local_dp`) the adversary is the server,
which sees every client's noised update on its own. So the audit looks at
exactly that: M canary clients each send one update through the run's own
client computation (its clip, its noise from a secret key); an inserted
canary's update is its secret direction scaled far past the clip, one that
is not inserted sends a zero update (any two inputs of a client are
neighbours in local DP). A canary's statistic is the cosine of its direction
with its own noised update; the one-shot estimate (Andrew et al. 2024, "One-
shot Empirical Privacy Estimation for Federated Learning") and Steinke,
Nasr, Jagielski's one-run lower bound (2023, "Privacy Auditing with One (1)
Training Run") are then compared with the local epsilon of ONE participation
(`tff_dp.privacy.local_accounting`): each canary participates once.

The cosine is the natural test for Gaussian noise; for Laplace noise (an L1
clip) it is not the most powerful one, so the audit is weaker there. The
audit sees no client data; the directions never leave this process.
"""

import math
import secrets as os_secrets
import time

import numpy as np
import tensorflow_federated as tff

from tff_dp.audit import canary_plan
from tff_dp.audit import lower_bound
from tff_dp.audit import one_shot
from tff_dp.config import LocalDp
from tff_dp.config import TrainConfig
from tff_dp.mechanisms import local_dp
from tff_dp.mechanisms import sanitize
from tff_dp.program import canary_statistics
from tff_dp.program import run_privacy


def local_factory(config: TrainConfig,
                  *,
                  noise_off: bool = False) -> local_dp.LocalDpFactory:
  """The run's local DP factory (its client computation), or its twin
  without noise."""
  spec = run_privacy.local_spec(config)
  return local_dp.LocalDpFactory(
      mechanism=spec.mechanism,
      clip=config.local_clip,
      noise_scale=0.0 if noise_off else spec.noise_scale(
          clip=config.local_clip),
      clients_per_round=config.clients_per_round,
      _allow_zero_noise=noise_off)


def behind_local_noise(config: TrainConfig, *, noise_off: bool = False):
  """A `mechanism_audit.audit_mechanism` aggregator builder: the central
  mechanism behind the clients' own noise (off in the twin), as a run with
  client+server noise composes them; None without local DP."""
  if config.local_dp is LocalDp.NONE:
    return None

  def build(settings, **context):
    central = sanitize.sanitizing_aggregator(
        config.mechanism.build_aggregator(settings, **context))
    own = local_factory(config, noise_off=noise_off)
    return local_dp.LocalDpFactory(mechanism=own.mechanism,
                                   clip=own.clip,
                                   noise_scale=own.noise_scale,
                                   clients_per_round=own.clients_per_round,
                                   central_factory=central,
                                   _allow_zero_noise=noise_off)

  return build


def analytic_local_epsilon(config: TrainConfig) -> dict[str, float]:
  """The local epsilon of one participation, by accountant name."""
  guarantee = run_privacy.local_spec(config).guarantee(
      1, delta=config.delta, accountants=config.accountants)
  return {kind.value: eps for kind, eps in guarantee.epsilons.items()}


def _cosines(directions: np.ndarray, updates: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(updates, axis=1)
  dots = np.einsum('ij,ij->i', directions.astype(np.float64), updates)
  return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def audit_local_mechanism(
    config: TrainConfig,
    *,
    dim: int,
    canaries: int,
    beta: float = 0.05,
    noise_off: bool = False) -> canary_statistics.AuditResult:
  """Audits `config`'s local mechanism on `canaries` canary clients.

  Args:
    config: A checked configuration with `--local_dp`.
    dim: The model dimension d.
    canaries: M >= 2 canaries, each inserted with probability 1/2.
    beta: One minus the confidence of the lower bound.
    noise_off: Audit the clip alone (the power twin).

  Returns:
    The `AuditResult`; `analytic` is the local epsilon of one
    participation (infinite for the noise-off twin).
  """
  rng = np.random.default_rng(os_secrets.randbits(128))
  directions = rng.standard_normal((canaries, dim)).astype(np.float32)
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  inserted = rng.random(canaries) < 0.5
  scale = canary_plan.CANARY_SCALE_IN_CLIPS * config.local_clip
  client = local_factory(config, noise_off=noise_off).client_computation(
      tff.TensorType(np.float32, [dim]))
  start = time.monotonic()
  updates = np.stack([
      np.asarray(client(scale * d if i else np.zeros(dim, np.float32)),
                 np.float64) for d, i in zip(directions, inserted)
  ])
  statistics = _cosines(directions, updates)
  estimate = canary_statistics.estimate(statistics[inserted],
                                        dim=dim,
                                        delta=config.delta,
                                        unseen_statistics=statistics[~inserted])
  bound = lower_bound.one_run_lower_bound(statistics,
                                          inserted,
                                          delta=config.delta,
                                          beta=beta)
  analytic = ({
      k: math.inf for k in analytic_local_epsilon(config)
  } if noise_off else analytic_local_epsilon(config))
  values = {
      canary_statistics.ESTIMATE_ALL_ITERATES: estimate.epsilon,
      canary_statistics.ESTIMATE_FINAL: estimate.epsilon,
      canary_statistics.LOWER_BOUND: bound.epsilon,
      **{
          f'privacy/epsilon_{k}': v for k, v in analytic.items()
      },
  }
  return canary_statistics.AuditResult(analytic=analytic,
                                       estimate_all_iterates=estimate,
                                       estimate_final=estimate,
                                       bound=bound,
                                       canaries=canaries,
                                       inserted=int(inserted.sum()),
                                       dim=dim,
                                       rounds=1,
                                       seconds=time.monotonic() - start,
                                       history=((1, values),),
                                       statistics=one_shot.CanaryStatistics(
                                           final_model=statistics,
                                           all_iterates=statistics.copy()),
                                       inserted_mask=inserted)
