"""The privacy statement printed at the end of every run and saved with it.

It says, in words, what the epsilon printed by the run means: unit of privacy,
adjacency, sampling, noise, rounds, delta, the accountants, and what was
released, including any value that is NOT covered by the guarantee.
Pure Python.
"""

import math
from typing import Mapping

from tff_dp import accounting
from tff_dp import release
from tff_dp import sampling
from tff_dp.config import DpMechanism
from tff_dp.config import TrainConfig

_SAMPLING_WORDS = {
    sampling.ClientSampling.POISSON: (
        'Poisson: each client joined each round independently with '
        'probability q = {q:.6g}; the cohort is assumed hidden from the '
        'adversary (only its aggregate is released)'),
    sampling.ClientSampling.FIXED_SIZE: (
        'fixed-size: exactly {n} distinct clients per round, uniformly '
        'without replacement (q = {q:.6g})'),
    sampling.ClientSampling.FULL: (
        'full participation: every client in every round (no amplification '
        'by sampling)'),
}

_ADJACENCY_WORDS = {
    'ADD_OR_REMOVE_ONE': 'add/remove one client (and all of its data)',
    'REPLACE_ONE': 'replace one client (and all of its data) by another',
}


def _format_epsilon(eps: float) -> str:
  if math.isnan(eps):
    return 'not computable by this accountant for these events'
  if math.isinf(eps):
    return 'infinite (no privacy)'
  return f'{eps:.4g}'


def privacy_statement(config: TrainConfig, *, population: int,
                      rounds_run: int,
                      epsilons: Mapping[accounting.AccountantKind, float]
                      ) -> str:
  """Returns the statement as plain text.

  Args:
    config: The run's configuration.
    population: Number of clients the data really has (N).
    rounds_run: Rounds released (charged to the ledger).
    epsilons: Final epsilon by accountant.
  """
  lines = ['Privacy statement', '=================']
  if not config.private:
    why = ('--dp_mechanism=none' if not config.uses_dp_aggregator else
           f'--dp_mechanism={config.dp_mechanism.value} with '
           '--noise_multiplier=0 (--allow_zero_noise): updates were clipped '
           'but not noised')
    lines += [
        f'NOT PRIVATE: {why}. Epsilon is infinite. Every released value (the',
        'model included) is computed from client data without noise.',
        f'Rounds: {rounds_run}; population: {population} clients.',
    ]
    return '\n'.join(lines) + '\n'

  relation = accounting.neighboring_relation(config.client_sampling)
  q = config.clients_per_round / population
  if config.dp_mechanism is DpMechanism.GAUSSIAN_FIXED:
    mechanism = (f'Gaussian mechanism on the sum of client updates clipped to '
                 f'L2 norm {config.clip:g} (fixed), noise std = z * clip, '
                 f'z = {config.noise_multiplier:g}')
  else:
    mechanism = (
        f'Gaussian mechanism with adaptive clipping (Andrew et al. 2021): '
        f'initial clip {config.initial_clip:g}, target quantile '
        f'{config.target_unclipped_quantile:g}, clip learning rate '
        f'{config.clip_learning_rate:g}; total noise multiplier '
        f'z = {config.noise_multiplier:g} (split by TFF between the update '
        'sum and the private clipped-count estimate; accounted as one '
        f'Gaussian with z = {config.noise_multiplier:g})')
  lines += [
      'Unit of privacy: one client, i.e. all of the data of one client '
      '(user-level DP).',
      f'Adjacency: {_ADJACENCY_WORDS[relation.name]}.',
      f'Population: N = {population} clients (from the data).',
      'Sampling: ' + _SAMPLING_WORDS[config.client_sampling].format(
          q=q, n=config.clients_per_round) + '.',
      f'Mechanism: {mechanism}; the noised sum is divided by the fixed '
      f'clients_per_round = {config.clients_per_round}.',
      f'Rounds released: {rounds_run}.',
      f'Delta: {config.delta:g}.',
  ]
  for kind, eps in epsilons.items():
    lines.append(f'Epsilon ({_accountant_words(kind)}): '
                 f'{_format_epsilon(eps)}.')
  tightest = accounting.tightest_epsilon(epsilons)
  if tightest is not None:
    lines.append(f'Guarantee: ({_format_epsilon(tightest[1])}, '
                 f'{config.delta:g})-DP for each client (the smallest epsilon '
                 'above; each accountant gives a valid upper bound).')
  lines += [
      'Released: the model after every round (and anything computed from it '
      'and public data), and per round: '
      + ', '.join(sorted(release.DP_SAFE_KEYS)) + '.',
      'Timing: time/round_seconds is wall time; it is not noised and grows '
      'with the cohort size, so treat it as a weak side channel of cohort '
      'size when publishing.',
  ]
  if config.release_nonprivate_metrics:
    lines.append(
        'NOT COVERED by the guarantee (released on request, prefix '
        f'"{release.NONPRIVATE_PREFIX}"): '
        + ', '.join(sorted(release.NONPRIVATE_KEYS)) + '.')
  else:
    lines.append('Not released: client training metrics and the actual '
                 'cohort sizes (computed from client data without noise).')
  lines.append('Not claimed: secure aggregation (the simulation sums updates '
               'in the clear on this machine).')
  return '\n'.join(lines) + '\n'


def _accountant_words(kind: accounting.AccountantKind) -> str:
  if kind is accounting.AccountantKind.RDP:
    return 'RDP accountant, dp-accounting'
  return (f'PLD accountant, dp-accounting, value discretization '
          f'{accounting.PLD_DISCRETIZATION:g}')
