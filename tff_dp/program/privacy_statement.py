"""The privacy statement saved with every run and named at its end.

It says, in words, what the epsilon printed by the run means: unit of privacy,
adjacency, sampling, noise, rounds, delta, the accountants, and what was
released, including any value that is NOT covered by the guarantee.
Pure Python.
"""

import math
from typing import Any, Iterable, Optional

from tff_dp.cohorts import sampling
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import Evaluation
from tff_dp.config import LocalDp
from tff_dp.config import TrainConfig
from tff_dp.data import loading
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_tracking
from tff_dp.privacy import run_secrets
from tff_dp.program import canary_audit
from tff_dp.program import release

_SAMPLING_WORDS = {
    sampling.ClientSampling.POISSON:
        ('Poisson: each client joined each round independently with '
         'probability q = {q:.6g}; the cohort is assumed hidden from the '
         'adversary (only its aggregate is released)'),
    sampling.ClientSampling.FIXED_SIZE:
        ('fixed-size: exactly {n} distinct clients per round, uniformly '
         'without replacement (q = {q:.6g})'),
    sampling.ClientSampling.FULL:
        ('full participation: every client in every round (no amplification '
         'by sampling)'),
    sampling.ClientSampling.SHUFFLED_EPOCHS:
        ('shuffled epochs: every client at most once per epoch, {n} per round, '
         'in a secret random order independent of the data (no amplification '
         'is claimed)'),
}

_ADJACENCY_WORDS = {
    'ADD_OR_REMOVE_ONE':
        'add/remove one client (and all of its data)',
    'REPLACE_ONE':
        'replace one client (and all of its data) by another',
    'REPLACE_SPECIAL': ('replace one client (and all of its data) by a client '
                        'whose updates are zero'),
}


def _format_epsilon(eps: float) -> str:
  if math.isnan(eps):
    return 'not computable by this accountant for these events'
  if math.isinf(eps):
    return 'infinite (no privacy)'
  return f'{eps:.4g}'


def privacy_statement(
    config: TrainConfig,
    *,
    population: int,
    rounds_run: int,
    privacy: privacy_tracking.PrivacyTracker,
    released_keys: Iterable[str] = (),
    canary_audit: Any = None,
    public_data: Optional[str] = None,
    model_size: Any = None,
    stopped: Optional[str] = None,
) -> str:
  """Returns the statement as plain text.

  Args:
    config: The run's configuration.
    population: Number of clients the data really has (N).
    rounds_run: Rounds released (charged to the ledger).
    privacy: The run's ledgers after its last round.
    released_keys: Every per-round key the run released (the statement lists
      exactly these).
    canary_audit: An audit run's `tff_dp.program.canary_statistics.
      AuditResult` (`--audit_canaries`), or None.
    public_data: A sentence naming the data treated as public besides the
      test set (the pretraining data of --init_from,
      `tff_dp.program.pretrained.public_data_sentence`), or None.
    model_size: What was trained and sent (`tff_dp.program.model_size.
      ModelSize`), or None to leave it out.
    stopped: Why the run stopped before its planned rounds (e.g.
      'interrupted (SIGTERM)'), or None for a run that ended normally (its
      last round, or its budget).
  """
  released_keys = sorted(released_keys)
  lines = ['Privacy statement', '=================']
  lines += _stopped_lines(config, rounds_run, stopped)
  if not config.private:
    why = ('--dp_mechanism=none' if not config.uses_dp_aggregator else
           f'--dp_mechanism={config.dp_mechanism.value} with '
           '--noise_multiplier=0 (--allow_zero_noise): updates were clipped '
           'but not noised')
    lines += [
        f'NOT PRIVATE: {why}. Epsilon is infinite. Every released value (the',
        'model included) is computed from client data without noise.',
        f'Rounds: {rounds_run}; population: {population} clients.',
        'Released per round: ' + (', '.join(released_keys) or 'nothing') + '.',
    ]
    lines += [public_data] if public_data else []
    if model_size is not None:
      lines += model_size.statement_lines(noised=False)
    lines += _canary_lines(config, canary_audit)
    lines += _federated_evaluation_lines(config, private=False)
    return '\n'.join(lines) + '\n'
  lines += _central_lines(config,
                          population=population,
                          rounds_run=rounds_run,
                          epsilons=privacy.epsilons())
  if model_size is not None:
    lines += model_size.statement_lines(noised=config.central_private)
  lines += _local_lines(config, privacy)
  lines += _record_level_lines(config, privacy)
  lines += _release_lines(config, released_keys)
  lines += [public_data] if public_data else []
  lines += _canary_lines(config, canary_audit)
  lines += _assumption_lines(config)
  return '\n'.join(lines) + '\n'


def _stopped_lines(config, rounds_run: int,
                   stopped: Optional[str]) -> list[str]:
  """What a run stopped early covers: the rounds charged, not those planned."""
  if stopped is None:
    return []
  if rounds_run == 0:
    return [
        f'STOPPED EARLY: {stopped} before its first round was charged: no '
        f'round of the planned {config.rounds} was released.'
    ]
  return [
      f'STOPPED EARLY: {stopped} after round {rounds_run} of the planned '
      f'{config.rounds}. This statement covers the {rounds_run} rounds '
      'charged to the privacy ledger (ledger.json, as its newest checkpoint '
      'has it), every round released in metrics.csv among them; each epsilon '
      f'below is that of those {rounds_run} rounds, not of the planned '
      f'{config.rounds}. Resuming the run (--run_name={config.run_name}) '
      'continues it and rewrites this statement.'
  ]


def _release_lines(config, released_keys: list[str]) -> list[str]:
  """What the run released, what it did not, and what no guarantee covers."""
  covered = [
      k for k in released_keys if not k.startswith(release.NONPRIVATE_PREFIX)
  ]
  uncovered = [
      k for k in released_keys if k.startswith(release.NONPRIVATE_PREFIX)
  ]
  lines = [
      'Released: the model after every round (and anything computed from it '
      'and public data), and per round: ' + (', '.join(covered) or 'nothing') +
      '.',
      'Evaluation data: ' + loading.test_set_origin(config.dataset).describe() +
      '.',
  ]
  if config.release_nonprivate_metrics:
    # The run's duration grows with the hidden cohorts' sizes: summary.json
    # releases it with the values above (`run_summary.summarize`).
    uncovered.append('the run\'s wall time (summary.json\'s wall_seconds, '
                     'and audit.seconds in an audit run; the console\'s '
                     'round times and ETA)')
  if uncovered:
    lines.append(
        'NOT COVERED by the guarantee (computed from client data without '
        f'noise, released on request): {", ".join(uncovered)}.')
    lines += _federated_evaluation_lines(config, private=True)
  else:
    lines.append(
        'Not released: client training metrics, the actual cohort sizes, '
        'round and run times (they grow with the hidden cohorts), and '
        'evaluation on data of the private population.')
  if config.local_dp is not LocalDp.NONE or config.example_dp:
    lines.append('Client training metrics never leave the clients: with '
                 'noise added at the clients, the server sees only noised '
                 'updates.')
  lines.append('Times: TensorBoard\'s event times are the run\'s start plus '
               'one second per round (no round durations); the files\' '
               'modification times still show when the run wrote them, '
               'i.e. its total duration: reset them before publishing if '
               'that matters.')
  lines.append('Not claimed: secure aggregation (the simulation sums updates '
               'in the clear on this machine).')
  return lines


def _assumption_lines(config) -> list[str]:
  """What the guarantee assumes public, and where its randomness comes from."""
  lines = [
      'Assumed public: the population size N (delta is chosen below 1/N), '
      'the settings in flags.txt, and what the dataset declares public (the '
      'test set above; dataset sizes for record-level DP).',
      'Randomness: ' + _sampling_randomness_words(config) +
      '; every noise draw from TensorFlow\'s stateless Philox generator '
      f'under a {run_secrets.SECRET_BITS}-bit key from the operating system, '
      'fresh per round and client, written nowhere' +
      (' (DP-FTRL\'s tree seed is in the checkpointed state)'
       if _dp_ftrl(config) else '') + '. Philox is a statistical, not a '
      'cryptographic, generator. --seed (public) only seeds the model\'s '
      'initialization and the order of each client\'s local data.',
      'Not a release: checkpoints/ holds the model state' +
      _checkpointed_randomness_words(config) + '; keep it private.',
  ]
  if config.allow_unconfined_worker:
    lines.append(
        'Runtime: --allow_unconfined_worker was set: where the TFF worker '
        'could not be confined to a private socket (the console says so), '
        'it served unauthenticated gRPC on all interfaces during the run, '
        'and the guarantee does not hold against anyone who connected.')
  if config.workers:
    lines.append(
        f'Runtime: the clients\' part of each round ran on the remote TFF '
        f'workers {config.workers} (mutual TLS): each saw its slice of the '
        'cohort\'s data and the broadcast model; the merge of their partial '
        'sums, the DP noise and the server update ran on the driver. The '
        'guarantee assumes those workers computed their clients\' clipped '
        'updates honestly.')
  if config.insecure_sampling_seed is not None:
    lines.insert(0, _public_seed_line(config))
  return lines


# Why a run's guarantees survive a public sampling seed, by what they are
# (`run_secrets.relies_on_hidden_cohorts`).
_NO_AMPLIFICATION_WORDS = {
    sampling.ClientSampling.FULL:
        ('the central one: full participation, every client in every round, '
         'no amplification by sampling claimed'),
    sampling.ClientSampling.SHUFFLED_EPOCHS:
        ('the central one: shuffled epochs, no amplification by sampling '
         'claimed; DP-FTRL\'s tree bound (Kairouz et al. 2021) holds for any '
         'order of the clients fixed independently of the data'),
}


def _public_seed_line(config) -> str:
  """What --insecure_sampling_seed costs this run's guarantees: true for
  each sampler and claim, not only for amplified ones."""
  seed = (f'the cohorts (and simulated dropout) were drawn from '
          f'--insecure_sampling_seed={config.insecure_sampling_seed}, which '
          'is in the released flags')
  if run_secrets.seed_voids_guarantee(config):
    if config.client_sampling is sampling.ClientSampling.POISSON:
      void = ('The central guarantee does NOT hold against anyone who knows '
              'that value: its epsilon relies on amplification by sampling, '
              'i.e. on hidden cohorts, and with the value the cohorts are '
              'public.')
    else:  # Fixed size: `accounting`'s bounds (a) and (b).
      void = ('Against anyone who knows that value, the RDP epsilon does NOT '
              'hold: it may rely on amplification by sampling (Wang et al.\'s '
              'bound for sampling without replacement), i.e. on hidden '
              'cohorts, and with the value the cohorts are public. The PLD '
              'epsilon is unamplified (any cohorts) and holds against them '
              'too.')
    return (f'INSECURE: {seed}. {void} Local and record-level guarantees, if '
            'any, do not depend on the cohorts.')
  reasons = []
  if config.central_private:
    reasons.append(_NO_AMPLIFICATION_WORDS[config.client_sampling])
  if config.local_dp is not LocalDp.NONE:
    reasons.append('the local one: it assumes the server sees who takes part')
  if config.example_dp:
    reasons.append('the record-level one: each client samples its batches '
                   'with its own secret noise keys')
  return (f'Public seed (for tests and debugging): {seed}, so anyone who knows '
          'it knows every cohort. No guarantee of this run relies on hidden '
          f'cohorts ({"; ".join(reasons)}): they hold against them too.')


def _dp_ftrl(config) -> bool:
  return config.algorithm is Algorithm.DP_FTRL


def _checkpointed_randomness_words(config) -> str:
  """The secrets checkpoints/ holds besides the model state (', ...')."""
  secrets = []
  if config.insecure_sampling_seed is None:
    # Else the cohorts' randomness is the public flag: no sampling secret.
    secrets.append('the sampling secret')
  if _dp_ftrl(config):
    secrets.append('DP-FTRL\'s tree seed')
  if not secrets:
    return ' (the cohorts came from the public seed)'
  return ', ' + ' and '.join(secrets)


def _sampling_randomness_words(config) -> str:
  """Where the cohorts' randomness came from: true for this run only."""
  if config.insecure_sampling_seed is not None:
    # Not the OS secret: saying so would be false for this run.
    effect = ('the guarantee\'s amplification by sampling does not hold '
              'against them' if run_secrets.seed_voids_guarantee(config) else
              'no amplification by sampling is claimed (see the line above)')
    return ('cohorts (and simulated dropout) from '
            f'--insecure_sampling_seed={config.insecure_sampling_seed}, a '
            'value in the released flags, not a secret: whoever knows it '
            f'knows every cohort; {effect}')
  return ('cohorts (and simulated dropout) from a '
          f'{run_secrets.SECRET_BITS}-bit secret drawn from the operating '
          'system, kept only in checkpoints/ so that a resumed run redraws '
          'them')


def _central_lines(config, *, population, rounds_run, epsilons) -> list[str]:
  if not config.central_private:
    return [
        'Central (user-level) guarantee: none. The released models carry '
        'no central DP claim (--dp_mechanism=none); see the local or '
        'record-level guarantee below.'
    ]
  relation = accounting.neighboring_relation(config.client_sampling)
  q = config.clients_per_round / population
  mechanism = config.mechanism.describe(config.dp_settings)
  lines = [
      'Central guarantee (against anyone who sees the released models)',
      'Unit of privacy: one client, i.e. all of the data of one client '
      '(user-level DP).',
      f'Adjacency: {_ADJACENCY_WORDS[relation.name]}.',
      f'Population: N = {population} clients (from the data)' +
      _held_out_words(config) + '.',
      'Sampling: ' + _SAMPLING_WORDS[config.client_sampling].format(
          q=q, n=config.clients_per_round) + '.',
      f'Mechanism: {mechanism}; the noised sum is divided by the fixed '
      f'clients_per_round = {config.clients_per_round}.' +
      _weighting_words(config),
      f'Rounds released: {rounds_run}.',
      f'Delta: {config.delta:g}.',
  ]
  for kind, eps in epsilons.items():
    lines.append(f'Epsilon ({accounting.ACCOUNTANTS[kind].words}): '
                 f'{_format_epsilon(eps)}.')
  tightest = accounting.tightest_epsilon(epsilons)
  if tightest is not None:
    lines.append(f'Guarantee: ({_format_epsilon(tightest[1])}, '
                 f'{config.delta:g})-DP for each client (the smallest epsilon '
                 'above; each accountant gives a valid upper bound).')
  return lines


def _weighting_words(config) -> str:
  if config.client_weighting is not ClientWeighting.CAPPED:
    return ''
  return (' Weighting (McMahan et al. 2018): each client\'s update is '
          f'multiplied by min(n_k / {config.weight_cap:g}, 1) before it is '
          'clipped, so no client weighs more than 1 and the sensitivity is '
          'the clip; the data sizes n_k are not released.')


def _held_out_words(config) -> str:
  if config.evaluation is not Evaluation.FEDERATED:
    return ''
  return (f'; the {config.eval_clients} clients held out for federated '
          'evaluation never train and are not counted')


def _federated_evaluation_lines(config, *, private: bool) -> list[str]:
  """What federated evaluation released, and that no guarantee covers it."""
  if config.evaluation is not Evaluation.FEDERATED:
    return []
  keys = ', '.join(
      sorted(key for key in release.NONPRIVATE_KEYS
             if key.startswith(release.FED_EVAL_PREFIX)))
  text = (f'Federated evaluation: {keys} (those that apply) are computed '
          f'from the data of the {config.eval_clients} held-out clients '
          '(chosen by --data_seed, never trained on) WITHOUT noise')
  if private:
    text += ('; they are NOT covered by the guarantee, and the held-out '
             'clients are not protected by it.')
  else:
    text += '.'
  return [text]


def _local_lines(config, privacy) -> list[str]:
  guarantee = privacy.local_guarantee()
  if guarantee is None:
    return []
  if config.local_dp is LocalDp.LAPLACE:
    mechanism = (f'Laplace: each update clipped to L1 norm '
                 f'{config.local_clip:g}, per-coordinate Lap(2 * clip / '
                 f'epsilon_local) noise with epsilon_local = '
                 f'{config.local_epsilon:g} per participation (2 * clip is the '
                 'L1 distance between two clipped updates)')
  else:
    mechanism = (f'Gaussian: each update clipped to L2 norm '
                 f'{config.local_clip:g}, noise std '
                 f'{config.local_noise_multiplier:g} * clip (sensitivity 2 * '
                 'clip: any two inputs of a client are neighbours)')
  count = ('every round so far (an upper bound that does not reveal the '
           'hidden cohorts)' if privacy.central_claim else
           'the most participations of any client')
  pure = ('' if math.isinf(guarantee.pure_epsilon) else
          f'; pure composition {guarantee.pure_epsilon:.4g} (delta 0)')
  return [
      'Local guarantee (against the server: noise added before an update '
      'leaves the client)',
      f'Mechanism: {mechanism}.',
      f'Composition: over {guarantee.participations} participations, '
      f'{count}; no amplification by sampling (the server sees who '
      'participates).',
      f'Local epsilon: {_format_epsilon(guarantee.epsilon)} at delta '
      f'{config.delta:g} ({guarantee.source}){pure}.',
  ]


def _record_level_lines(config, privacy) -> list[str]:
  report = privacy.record_level_report()
  if report is None:
    return []
  worst = report.worst()
  lines = [
      'Record-level guarantee inside each client (example-level DP-SGD, '
      'Abadi et al. 2016)',
      f'Per step: Poisson-sampled batch of expected size '
      f'{config.client_batch_size}, per-example clip {config.example_clip:g}, '
      f'noise multiplier {config.example_noise_multiplier:g}; '
      f'{config.local_steps} steps per participation.',
  ]
  if config.central_private and not config.release_nonprivate_metrics:
    lines.append('Record-level epsilon: not released (it depends on the '
                 'clients\' dataset sizes; ask with '
                 '--release_nonprivate_metrics).')
  elif worst is None:
    lines.append('Record-level epsilon: not computable by the selected '
                 'accountants.')
  else:
    lines.append(
        f'Record-level epsilon of the worst client: '
        f'{_format_epsilon(worst.guarantee[1])} at delta {config.delta:g} '
        f'({worst.num_examples} records, q = {worst.sampling_rate:.4g}, '
        f'{worst.steps} steps); client dataset sizes are treated as public.')
  return lines


def _canary_lines(config: TrainConfig, audit: Any) -> list[str]:
  """What an audit run's canaries are, and what its audit measured."""
  if not config.audit_canaries:
    return []
  lines = [
      '',
      f'AUDIT RUN: {config.audit_canaries} canary clients joined the '
      'population and were sampled',
      'like the real clients (each inserted with probability 1/2; an inserted',
      'canary sends a secret direction far past the clip). The epsilon above',
      'is that of this run, canaries included; the released model was trained',
      'with them: do not deploy it, deploy a run without --audit_canaries.',
      'The audit/* values are empirical: an estimate is not a guarantee, and',
      'a lower bound below epsilon never proves privacy.',
  ]
  if audit is not None:
    lines.append(canary_audit.describe(audit) + '.')
  return lines
