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

import json
import os
import time
from typing import Any, Callable, Mapping, Optional

from tff_dp import atomic_io
from tff_dp import config as config_lib
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import shard_routing
from tff_dp.cohorts import sampling
from tff_dp.config import TrainConfig
from tff_dp.data import fingerprint
from tff_dp.data import shard_manifest
from tff_dp.execution import runtime
from tff_dp.execution import worker_errors
from tff_dp.privacy import run_secrets
from tff_dp.program import assembly
from tff_dp.program import canary_audit
from tff_dp.program import checkpoint
from tff_dp.program import client_data
from tff_dp.program import model_size
from tff_dp.program import prepare
from tff_dp.program import pretrained
from tff_dp.program import resume as resume_rules
from tff_dp.program import round_releases
from tff_dp.program import run_privacy
from tff_dp.program import run_start
from tff_dp.program import run_statement
from tff_dp.program import run_summary
from tff_dp.program import training_loop
from tff_dp.program import worker_losses


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


def run_experiment(
    prepared: prepare.PreparedRun,
    run_dir: str,
    *,
    resume: bool = False,
    config_defaults: Optional[Mapping[str, Any]] = None,
    on_round: Optional[Callable[[int, dict[str, float]], None]] = None,
    on_phase: Optional[Callable[[str], None]] = None,
    computation_cache_dir: str = '',
) -> run_summary.Summary:
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
    on_phase: Start-up progress callback, called with the name of each
      phase as it begins (building the process, starting the worker, the
      first round).
    computation_cache_dir: Where traced processes are kept across runs
      (`tff_dp.program.computation_cache`); '' for no cache.

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
  if config.audit_canaries and resume:
    raise resume_rules.ResumeError(
        'an audit run (--audit_canaries) cannot be resumed: its canaries\' '
        'statistics are not checkpointed; start it again')
  # An audit run's sampler draws from its canaries too (`canary_audit`).
  sampler = run_privacy.build_sampler(config,
                                      data.population + config.audit_canaries,
                                      secret=secrets.sampling)
  privacy = run_privacy.build_privacy_tracker(config, sampler, data)
  canaries = (canary_audit.CanaryRun(config,
                                     population=data.population,
                                     sampler=sampler,
                                     report=_reporter(config, secrets.sampling))
              if config.audit_canaries else None)
  group_size = prepared.clients_per_call
  grouped_rounds = None
  if group_size > 1 and isinstance(data, shard_manifest.ShardedClientData):
    # The workers read their shard's examples; the driver sends client ids.
    grouped_rounds = shard_routing.RoutedGroups(data,
                                                seed=config.seed,
                                                epochs=config.client_epochs,
                                                group_size=group_size)
    print(
        f'simulation: up to {group_size} clients per TFF call (the grouped '
        f'path, --algorithm={config.algorithm.value}), each sampled client '
        'routed to the worker holding its shard',
        flush=True)
  elif group_size > 1:
    grouped_rounds = grouped_data.GroupedRounds(data.client_x,
                                                data.client_y,
                                                seed=config.seed,
                                                epochs=config.client_epochs,
                                                group_size=group_size)
    print(f'simulation: up to {group_size} clients per TFF call (the grouped '
          f'path, --algorithm={config.algorithm.value}), ' +
          training_loop.calls_words(
              prepared.rounds_per_call,
              eval_every=config.eval_every,
              evaluated=round_releases.evaluation_released(config)),
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
                rounds_per_call=prepared.rounds_per_call,
                grouped_rounds=grouped_rounds,
                canaries=canaries,
                keras_model_fn=prepared.keras_model_fn,
                wall_start=wall_start,
                resume=resume,
                config_defaults=config_defaults,
                on_round=on_round,
                on_phase=on_phase or (lambda phase: None),
                cache_dir=computation_cache_dir)
  finally:
    if grouped_rounds is not None:
      grouped_rounds.close()


def _assign_shards(routed: shard_routing.RoutedGroups):
  """`split_runtime`'s on_connect: which shard each worker serves, checked
  before the first round (a mismatch is one line naming the worker)."""

  def on_connect(probe_each, workers):
    try:
      routed.assign(probe_each, workers)
    except shard_manifest.ShardError as e:
      raise worker_errors.RemoteWorkerStartError(str(e)) from e

  return on_connect


def _runtime(config: TrainConfig,
             run_dir: str,
             grouped_rounds=None,
             losses: Optional[worker_losses.WorkerLosses] = None):
  """The local worker, or with --workers the split across remote ones."""
  if config.workers:
    routed = isinstance(grouped_rounds, shard_routing.RoutedGroups)
    return runtime.split_runtime(
        log_path=os.path.join(run_dir, 'worker.log'),
        workers=config.workers,
        worker_certs=config.worker_certs,
        tunnel_log_path=os.path.join(run_dir, 'stunnel.log'),
        on_connect=_assign_shards(grouped_rounds) if routed else None,
        on_worker_lost=losses.on_lost if losses is not None else None)
  return runtime.local_runtime(
      log_path=os.path.join(run_dir, 'worker.log'),
      allow_unconfined_worker=config.allow_unconfined_worker)


def _run(config, data, run_dir, *, held_out, sampler, secrets, privacy,
         group_size, rounds_per_call, grouped_rounds, canaries, keras_model_fn,
         wall_start, resume, config_defaults, on_round, on_phase, cache_dir):
  """`run_experiment` once the sampler, ledgers and client files exist."""
  release_nonprivate = (not config.private) or config.release_nonprivate_metrics
  on_phase('building the learning process')
  process = assembly.build_process(
      config,
      data,
      sampler,
      group_size=group_size,
      client_files_dir=(grouped_rounds.files_dir if grouped_rounds else ''),
      canaries=canaries,
      keras_model_fn=keras_model_fn,
      frozen_weights=pretrained.frozen_weights(config, data),
      cache_dir=cache_dir)
  size = model_size.of_process(process, trainable=config.trainable.value)
  print(size.console_line(), flush=True)
  evaluate = (round_releases.build_evaluator(config, data, held_out,
                                             keras_model_fn)
              if round_releases.evaluation_released(config) else None)
  checkpoints = checkpoint.CheckpointManager(run_dir)
  binding = run_start.RunBinding(
      run_id=resume_rules.ensure_run_id(run_dir),
      data_fingerprint=fingerprint.data_fingerprint(data))
  releaser = None
  # The ledgers of the newest checkpoint: what a run stopped early has been
  # charged (`run_statement.write_stopped`).
  persisted = {}
  on_phase('starting the TFF worker')
  try:
    # Everything that executes a TFF computation (initialize included) runs
    # inside the runtime we own; TFF's default context would start a worker
    # that outlives us.
    losses = None
    if config.on_worker_loss is config_lib.WorkerLoss.CONTINUE:
      losses = worker_losses.WorkerLosses(
          run_dir,
          grouped_rounds
          if isinstance(grouped_rounds, shard_routing.RoutedGroups) else None,
          resume=resume)
    with _runtime(config, run_dir, grouped_rounds, losses):
      # A resumed run's state replaces this one; a fresh run starts from
      # the pretrained model of --init_from, if any.
      initial = pretrained.initial_state(process, process.initialize(), config,
                                         data)
      start = _start(config,
                     run_dir,
                     checkpoints,
                     initial,
                     privacy,
                     binding,
                     secrets=secrets,
                     resume=resume,
                     defaults=config_defaults or {})
      if canaries is not None:
        canaries.start(process.get_model_weights(start.state))
      if start.rows is not None:
        # The checkpoint's secret: the resumed run redraws its own cohorts.
        sampler = run_privacy.build_sampler(config,
                                            data.population,
                                            secret=start.secrets.sampling)
      releaser = run_start.open_releaser(config,
                                         run_dir,
                                         start,
                                         resume=resume,
                                         release_nonprivate=release_nonprivate,
                                         flagfile=resolved_flagfile(config),
                                         population=data.population +
                                         config.audit_canaries)
      persisted['ledgers'] = privacy.to_json()  # Fresh, or the resumed ones.

      def persist(round_num, state, rows):
        meta = run_start.checkpoint_meta(config, privacy, rows, start.secrets,
                                         binding)
        checkpoints.save(round_num, state, meta)
        persisted['ledgers'] = meta['ledgers']
        privacy.save(run_dir)

      if start.round_num <= config.rounds:
        on_phase(f'running round {start.round_num} (slower than the next: it '
                 'traces the computations first)')
      result = _train(config,
                      data,
                      process,
                      start,
                      sampler=sampler,
                      privacy=privacy,
                      evaluate=evaluate,
                      releaser=releaser,
                      persist=persist,
                      grouped_rounds=grouped_rounds,
                      canaries=canaries,
                      release_nonprivate=release_nonprivate,
                      on_round=on_round,
                      losses=losses,
                      rounds_per_call=rounds_per_call)
      weights = process.get_model_weights(result.state)
    audit = None if canaries is None else canaries.result(
        analytic={
            k.value: e for k, e in privacy.epsilons().items()
        },
        rounds=result.rounds_completed)
    run_statement.write(config, data, run_dir, result, privacy, releaser, audit,
                        size, losses)
  except BaseException as e:
    if releaser is not None and 'ledgers' in persisted:
      run_statement.write_stopped(config, data, run_dir, privacy,
                                  persisted['ledgers'], releaser, size, e,
                                  losses)
    raise
  finally:
    if releaser is not None:
      releaser.close()

  summary = run_summary.summarize(
      config,
      data,
      run_dir,
      result,
      privacy,
      eval_prefix=round_releases.eval_prefix(config),
      resumed_from=start.resumed_from,
      wall_seconds=time.monotonic() - wall_start,
      canary_audit=audit,
      model_weights=weights,
      model_size=size)
  atomic_io.write_text_atomic(os.path.join(run_dir, 'summary.json'),
                              json.dumps(summary.to_json(), indent=2))
  return summary


def _start(config, run_dir, checkpoints, template, privacy, binding, *, secrets,
           resume, defaults) -> run_start.Start:
  """Where the loop starts; writes flags.txt and config.json once decided."""
  start = None
  if resume:
    start = run_start.restore(config,
                              run_dir,
                              checkpoints,
                              template,
                              privacy,
                              defaults,
                              binding=binding)
  # Written only now: a refused resume leaves the run's files as they were.
  atomic_io.write_text_atomic(os.path.join(run_dir, 'flags.txt'),
                              resolved_flagfile(config))
  atomic_io.write_text_atomic(os.path.join(run_dir, 'config.json'),
                              json.dumps(config.to_json(), indent=2))
  return start or run_start.fresh(template, secrets)


def _reporter(config: TrainConfig, seed: int):
  """(round, cohort) -> the clients that report (simulated dropout)."""
  return lambda round_num, cohort: sampling.reporting_clients(
      cohort, dropout_rate=config.dropout_rate, seed=seed, round_num=round_num)


def _with_canaries(canaries, round_datasets, round_values, process, privacy):
  """An audit run's round datasets (real clients) and values (+ audit/*)."""
  if canaries is None:
    return round_datasets, round_values

  def values(output, cohort, seconds):
    released = round_values(output, cohort, seconds)
    released.update(
        canaries.observe(
            process.get_model_weights(output.state), lambda: {
                k.value: e for k, e in privacy.epsilons().items()
            }))
    return released

  return canaries.real_datasets(round_datasets), values


def _train(config,
           data,
           process,
           start,
           *,
           sampler,
           privacy,
           evaluate,
           releaser,
           persist,
           grouped_rounds,
           canaries,
           release_nonprivate,
           on_round,
           losses=None,
           rounds_per_call=1) -> training_loop.LoopResult:
  """Runs the training loop from `start` to the end of the run."""
  round_datasets, round_values = _with_canaries(
      canaries, grouped_rounds or
      client_data.round_datasets_for(data,
                                     batch_size=config.client_batch_size,
                                     epochs=config.client_epochs,
                                     seed=config.seed),
      round_releases.round_values_fn(config,
                                     release_nonprivate=release_nonprivate,
                                     label_kind=data.label_kind), process,
      privacy)
  if losses is not None:
    round_datasets = losses.track(round_datasets)
  return training_loop.run_training_loop(
      process=process,
      state=start.state,
      sampler=sampler,
      round_datasets=round_datasets,
      rounds=config.rounds,
      privacy=privacy,
      evaluate=evaluate,
      eval_every=config.eval_every,
      eval_prefix=round_releases.eval_prefix(config),
      release=releaser.release,
      round_values=round_values,
      persist=persist,
      report=_reporter(config, start.secrets.sampling),
      max_epsilon=config.max_epsilon,
      start_round=start.round_num,
      last_values=start.last_values,
      on_round=on_round,
      run_block=_block_runner(process, rounds_per_call),
      rounds_per_call=rounds_per_call)


def _block_runner(process, rounds_per_call: int):
  """`training_loop`'s run_block: rounds in one TFF call; None for one."""
  return assembly.block_runner(process) if rounds_per_call > 1 else None
