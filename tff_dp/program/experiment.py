"""One training run, from a validated configuration to files in its directory.

This is the library behind `tff_dp.cli.train`: it takes explicit arguments (no
flags), builds the model, the DP aggregator, the learning process, the sampler
and the accountant from ONE configuration, so the `clients_per_round` the
sampler draws with is the one the aggregator divides by and the accountant
charges, runs the loop on a TFF worker it owns, and writes the run directory:

  flags.txt              the resolved flags (a flagfile that reproduces the run)
  config.json            the same, as JSON
  metrics.csv            one row per round (the release allow-list only)
  checkpoints/           the last checkpoints (state + ledger), for resuming
  tensorboard/           the same scalars, the flags and the privacy statement
  ledger.json            the privacy ledger: every round's DP event
  privacy_statement.txt  what the epsilon means and what was released
  summary.json           final metrics, epsilon, delta, rounds, wall time
  worker.log             output of the TFF C++ worker
"""

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Optional

from tff_dp import atomic_io
from tff_dp import config as config_lib
from tff_dp.algorithms import grouped_data
from tff_dp.cohorts import sampling
from tff_dp.config import TrainConfig
from tff_dp.data import fingerprint
from tff_dp.data import labels
from tff_dp.data import loading
from tff_dp.data.held_out import HeldOutClients
from tff_dp.execution import runtime
from tff_dp.privacy import accounting
from tff_dp.privacy import run_secrets
from tff_dp.program import assembly
from tff_dp.program import checkpoint
from tff_dp.program import client_data
from tff_dp.program import evaluation
from tff_dp.program import federated_evaluation
from tff_dp.program import prepare
from tff_dp.program import privacy_statement
from tff_dp.program import release as release_lib
from tff_dp.program import resume as resume_rules
from tff_dp.program import run_privacy
from tff_dp.program import training_loop


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a run reports at the end (also written as summary.json)."""
  run_dir: str
  private: bool
  # The guarantees the run claims: 'central', 'local', 'record-level' (empty
  # for a run that is not private).
  guarantees: list[str]
  accuracy: Optional[float]
  loss: Optional[float]
  # Which evaluation produced accuracy and loss (`--evaluation`), and the
  # released key of that accuracy: 'eval/accuracy' (server-side test set) or
  # 'nonprivate/fed_eval/accuracy' (held-out clients, NOT covered by the DP
  # guarantee).
  evaluation: str
  accuracy_key: Optional[str]
  # The headline metric the program prints (`tff_dp.data.labels.
  # headline_metric`: accuracy, or recall_at_5 for multi-label data, which
  # have no accuracy): its released key (as `accuracy_key`) and value.
  headline_key: Optional[str]
  headline_value: Optional[float]
  # Every value of the last evaluation (loss and metrics), by released key.
  eval_metrics: dict[str, float]
  # Central epsilon by accountant (null: infinite), only in runs with a
  # central claim; accountants that cannot compose this run's events are
  # listed in `accountants_not_applicable` instead.
  epsilon: dict[str, Optional[float]]
  accountants_not_applicable: list[str]
  # The stated guarantee: the smallest epsilon among the accountants (each is
  # a valid upper bound), and which accountant gave it.
  guarantee_epsilon: Optional[float]
  guarantee_accountant: Optional[str]
  # Local DP: the worst-case client's cumulative local epsilon; example-level
  # DP-SGD: the worst client's record-level epsilon (when released).
  local_epsilon: Optional[float]
  record_level_epsilon: Optional[float]
  delta: Optional[float]
  rounds: int
  rounds_planned: int
  population: int
  stop_reason: str
  resumed_from: Optional[int]
  # None in a DP run without --release_nonprivate_metrics (a timing side
  # channel of the cohorts).
  wall_seconds: Optional[float]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _json_number(value: float) -> Optional[float]:
  # JSON has no inf/nan; summary.json documents null as "infinite/unknown".
  return value if math.isfinite(value) else None


def _round_values_fn(config: TrainConfig, *, release_nonprivate: bool,
                     label_kind: labels.LabelKind):
  """Returns (output, cohort, seconds) -> the round's non-eval values."""

  def round_values(output, cohort, seconds) -> dict[str, float]:
    values = {'cohort/expected_size': float(config.clients_per_round)}
    values.update(config.mechanism.round_values(config.dp_settings, output))
    if release_nonprivate:
      values['nonprivate/cohort_size'] = float(len(cohort))
      values['nonprivate/round_seconds'] = seconds
      # Empty where noise is added at the clients: their metrics never reach
      # the server (`learning_process.no_client_metrics`).
      train = output.metrics['client_work']['train']
      if train:
        values['nonprivate/train_loss'] = float(train['loss'])
        for name, value in labels.released_metrics(
            train, label_kind=label_kind).items():
          values[f'nonprivate/train_{name}'] = value
        values['nonprivate/train_examples'] = float(train['num_examples'])
    return values

  return round_values


def resolved_flagfile(config: TrainConfig) -> str:
  """The configuration as an absl flagfile that reproduces the run."""
  lines = []
  for name, value in config.to_json().items():
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f'--{name}' if value else f'--no{name}')
    elif isinstance(value, list):
      lines.append(f'--{name}={",".join(value)}')
    else:
      lines.append(f'--{name}={value}')
  return '\n'.join(lines) + '\n'


def eval_prefix(config: TrainConfig) -> str:
  """Prefix of the released keys of `config`'s evaluation: `eval/` only for
  a public test set (`tff_dp.data.test_sets`), else under `nonprivate/`."""
  if config.evaluation is config_lib.Evaluation.FEDERATED:
    return release_lib.FED_EVAL_PREFIX
  if loading.test_set_origin(config.dataset).public:
    return release_lib.EVAL_PREFIX
  return release_lib.PRIVATE_EVAL_PREFIX


def evaluation_released(config: TrainConfig) -> bool:
  """Whether the run evaluates at all: in a DP run, evaluation outside the
  guarantee only on request (--release_nonprivate_metrics)."""
  covered = eval_prefix(config) == release_lib.EVAL_PREFIX
  return (covered or not config.private or config.release_nonprivate_metrics)


def _build_evaluator(config: TrainConfig, data,
                     held_out: Optional[HeldOutClients]):
  """Model weights -> metrics, for `config.evaluation`."""
  if config.evaluation is config_lib.Evaluation.FEDERATED:
    return federated_evaluation.build_federated_evaluator(
        assembly.build_model_fn(config, data),
        held_out,
        label_kind=data.label_kind)
  return evaluation.ServerEvaluator(
      config.model,
      input_dim=data.input_dim,
      num_classes=data.num_classes,
      hidden_units=config.hidden_units,
      hidden_layers=config.hidden_layers,
      image_shape=data.image_shape,
      vocab_size=data.vocab_size,
      embedding_dim=config.embedding_dim,
      label_kind=data.label_kind,
      test_data=client_data.test_dataset_for(data))


def run_experiment(
    prepared: prepare.PreparedRun,
    run_dir: str,
    *,
    resume: bool = False,
    config_defaults: Optional[Mapping[str, Any]] = None,
    on_round: Optional[Callable[[int, dict[str, float]], None]] = None,
) -> Summary:
  """Trains as `prepared` says, writing outputs to `run_dir`.

  Args:
    prepared: The run's checked configuration, its data (`data.population`
      is the N of the accountant; with `--evaluation=federated`, the
      training clients only), the clients held out for `--evaluation=
      federated` (required with it, and only with it) and the resolved
      clients per TFF call, from `tff_dp.program.prepare`.
    run_dir: Existing, writable directory for this run's outputs.
    resume: Continue the run in `run_dir` from its newest valid checkpoint
      (raises `tff_dp.program.resume.ResumeError` if that cannot be done
      honestly).
    config_defaults: Default of every setting (as in `config.to_json()`), for
      comparing with checkpoints written before a setting existed.
    on_round: Progress callback, (round, released values).

  Returns:
    The run's `Summary`.
  """
  config, data, held_out = prepared.config, prepared.data, prepared.held_out
  wall_start = time.monotonic()
  federated = config.evaluation is config_lib.Evaluation.FEDERATED
  if federated != (held_out is not None):
    raise ValueError('held_out is required with, and only with, '
                     f'--evaluation=federated (got {config.evaluation.value})')
  # Replaced by the checkpoint's secrets if the run resumes (`_restore`).
  secrets = run_secrets.draw(config.insecure_sampling_seed)
  sampler = run_privacy.build_sampler(config,
                                      data.population,
                                      secret=secrets.sampling)
  privacy = run_privacy.build_privacy_tracker(config, sampler, data)
  group_size = prepared.clients_per_call
  grouped_rounds = None
  if group_size > 1:
    grouped_rounds = grouped_data.GroupedRounds(data.client_x,
                                                data.client_y,
                                                seed=config.seed,
                                                epochs=config.client_epochs,
                                                group_size=group_size)
    print(
        f'simulation: up to {group_size} clients per TFF call (grouped '
        'DP-FedAvg)',
        flush=True)
  try:
    return _run(config,
                data,
                run_dir,
                held_out=held_out,
                sampler=sampler,
                secrets=secrets,
                privacy=privacy,
                group_size=group_size,
                grouped_rounds=grouped_rounds,
                wall_start=wall_start,
                resume=resume,
                config_defaults=config_defaults,
                on_round=on_round)
  finally:
    if grouped_rounds is not None:
      grouped_rounds.close()


def _run(config, data, run_dir, *, held_out, sampler, secrets, privacy,
         group_size, grouped_rounds, wall_start, resume, config_defaults,
         on_round):
  """`run_experiment` once the sampler, ledgers and client files exist."""
  release_nonprivate = (not config.private) or config.release_nonprivate_metrics
  process = assembly.build_process(
      config,
      data,
      sampler,
      group_size=group_size,
      client_files_dir=(grouped_rounds.files_dir if grouped_rounds else ''))
  evaluate = (_build_evaluator(config, data, held_out)
              if evaluation_released(config) else None)
  checkpoints = checkpoint.CheckpointManager(run_dir)
  run_id = resume_rules.ensure_run_id(run_dir)
  data_fingerprint = fingerprint.data_fingerprint(data)
  releaser = None
  try:
    # Everything that executes a TFF computation (initialize included) runs
    # inside the runtime we own; TFF's default context would start a worker
    # that outlives us.
    with runtime.local_runtime(
        log_path=os.path.join(run_dir, 'worker.log'),
        allow_unconfined_worker=config.allow_unconfined_worker):
      template = process.initialize()
      restored = None
      if resume:
        restored = _restore(config,
                            run_dir,
                            checkpoints,
                            template,
                            privacy,
                            config_defaults or {},
                            run_id=run_id,
                            data_fingerprint=data_fingerprint)
      # Written only now: a refused resume leaves the run's files as they
      # were.
      atomic_io.write_text_atomic(os.path.join(run_dir, 'flags.txt'),
                                  resolved_flagfile(config))
      atomic_io.write_text_atomic(os.path.join(run_dir, 'config.json'),
                                  json.dumps(config.to_json(), indent=2))
      releaser = release_lib.Releaser(run_dir,
                                      private=config.private,
                                      allow_nonprivate=release_nonprivate)
      start_round, state, last_values = 1, template, {}
      if resume and restored is None:
        releaser.replay([])  # Nothing was released: start over, cleanly.
      if restored is not None:
        rows, start_round, state, last_values, secrets = restored
        # The checkpoint's secret: the resumed run redraws its own cohorts.
        sampler = run_privacy.build_sampler(config,
                                            data.population,
                                            secret=secrets.sampling)
        releaser.replay(rows)
        if not rows or int(rows[-1]['round']) < start_round - 1:
          # Checkpointed but not yet released when the run stopped.
          releaser.release(start_round - 1, last_values)
      releaser.write_text('flags', resolved_flagfile(config))

      def persist(round_num, state, values):
        checkpoints.save(
            round_num,
            state,
            {
                'config': config.to_json(),
                'ledgers': privacy.to_json(),
                'released': values,
                # Only here: checkpoints stay private (see the statement).
                'secrets': secrets.to_json(),
                # What binds the checkpoint to this run and its data
                # (`tff_dp.program.resume.check_checkpoint`).
                'run_id': run_id,
                'data_fingerprint': data_fingerprint,
            })
        privacy.save(run_dir)

      result = training_loop.run_training_loop(
          process=process,
          state=state,
          sampler=sampler,
          round_datasets=grouped_rounds or
          client_data.round_datasets_for(data,
                                         batch_size=config.client_batch_size,
                                         epochs=config.client_epochs,
                                         seed=config.seed),
          rounds=config.rounds,
          privacy=privacy,
          evaluate=evaluate,
          eval_every=config.eval_every,
          eval_prefix=eval_prefix(config),
          release=releaser.release,
          round_values=_round_values_fn(config,
                                        release_nonprivate=release_nonprivate,
                                        label_kind=data.label_kind),
          persist=persist,
          report=lambda round_num, cohort: sampling.reporting_clients(
              cohort,
              dropout_rate=config.dropout_rate,
              seed=secrets.sampling,
              round_num=round_num),
          max_epsilon=config.max_epsilon,
          start_round=start_round,
          last_values=last_values,
          on_round=on_round)
    statement = privacy_statement.privacy_statement(
        config,
        population=data.population,
        rounds_run=result.rounds_completed,
        privacy=privacy,
        released_keys=releaser.released_keys)
    atomic_io.write_text_atomic(os.path.join(run_dir, 'privacy_statement.txt'),
                                statement)
    releaser.write_text('privacy_statement', statement)
  finally:
    if releaser is not None:
      releaser.close()

  summary = _summary(config,
                     data,
                     run_dir,
                     result,
                     privacy,
                     resumed_from=None if restored is None else start_round - 1,
                     wall_seconds=time.monotonic() - wall_start)
  atomic_io.write_text_atomic(os.path.join(run_dir, 'summary.json'),
                              json.dumps(summary.to_json(), indent=2))
  return summary


def _summary(config, data, run_dir, result, privacy, *, resumed_from,
             wall_seconds) -> Summary:
  """The run's `Summary`: released values and public facts only."""
  central = privacy.central_claim
  epsilons = result.epsilons if central else {}
  guarantee = accounting.tightest_epsilon(epsilons)
  prefix = eval_prefix(config)
  accuracy_key = prefix + 'accuracy'
  headline_key = prefix + labels.headline_metric(data.label_kind)
  values = result.last_values
  return Summary(
      run_dir=run_dir,
      private=config.private,
      guarantees=privacy.guarantees(),
      accuracy=values.get(accuracy_key),
      loss=values.get(prefix + 'loss'),
      evaluation=config.evaluation.value,
      accuracy_key=accuracy_key if accuracy_key in values else None,
      headline_key=headline_key if headline_key in values else None,
      headline_value=values.get(headline_key),
      eval_metrics={
          key: value for key, value in values.items() if key.startswith(prefix)
      },
      epsilon={
          kind.value: _json_number(eps)
          for kind, eps in epsilons.items()
          if not math.isnan(eps)
      },
      accountants_not_applicable=[
          kind.value for kind, eps in epsilons.items() if math.isnan(eps)
      ],
      guarantee_epsilon=None if guarantee is None else guarantee[1],
      guarantee_accountant=None if guarantee is None else guarantee[0].value,
      local_epsilon=_json_number(values.get('privacy/local_epsilon', math.nan)),
      record_level_epsilon=_json_number(
          values.get('privacy/example_epsilon', math.nan)),
      delta=config.delta if config.private else None,
      rounds=result.rounds_completed,
      rounds_planned=config.rounds,
      population=data.population,
      stop_reason=result.stop_reason,
      resumed_from=resumed_from,
      # The run's duration grows with the cohorts' sizes: released only
      # with the other values outside the guarantee.
      wall_seconds=(wall_seconds if
                    (not config.private or
                     config.release_nonprivate_metrics) else None))


def _restore(config, run_dir, checkpoints, template, privacy, defaults, *,
             run_id, data_fingerprint):
  """Restores state and ledger; returns (csv rows kept, next round, state,
  values released for the checkpoint's round, the run's secrets), or None if
  nothing was ever released (then the run starts over at round 1)."""
  stray = checkpoints.remove_stray_temporaries()
  if stray:
    print(f'warning: removed half-written checkpoints {stray}', flush=True)
  csv_path = release_lib.csv_path(run_dir)
  released = resume_rules.released_rounds(run_dir, csv_path=csv_path)
  ckpt, skipped = checkpoints.load_latest_valid(template)
  reasons = [reason for _, reason in skipped]
  if ckpt is None:
    if released:
      raise resume_rules.ResumeError(
          f'{run_dir} holds {released} released rounds but no valid '
          f'checkpoint ({"; ".join(reasons) or "none saved"}); refusing to '
          'restart at round 0 with a fresh ledger. Use another --run_name')
    return None
  secrets = resume_rules.check_checkpoint(ckpt.meta,
                                          path=ckpt.path,
                                          round_num=ckpt.round_num,
                                          config=config.to_json(),
                                          defaults=defaults,
                                          run_id=run_id,
                                          data_fingerprint=data_fingerprint)
  resume_rules.check_fallback(checkpoint_round=ckpt.round_num,
                              released=released,
                              skipped=reasons)
  for path in checkpoints.move_aside([round_num for round_num, _ in skipped]):
    print(f'warning: moved an invalid checkpoint aside to {path}', flush=True)
  for reason in reasons:
    print(f'warning: skipped an invalid checkpoint: {reason}', flush=True)
  # The ledger files are rewritten from the verified checkpoint only.
  privacy.restore_json(ckpt.meta['ledgers'])
  privacy.save(run_dir)
  rows = resume_rules.truncate_rows(csv_path, last_round=ckpt.round_num)
  print(f'resuming after round {ckpt.round_num} from {ckpt.path}', flush=True)
  return (rows, ckpt.round_num + 1, ckpt.state, ckpt.meta['released'], secrets)
