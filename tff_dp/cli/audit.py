"""tff-dp audit program: an empirical privacy audit of a configuration.

Usage:
  ./run.sh audit [--flagfile=configs/default.cfg] [training flags]
      [--audit_kind=training|mechanism] [--audit_canaries=M]
      [--audit_beta=0.05]

--audit_kind=training (the default) trains the configuration three times
(`tff_dp.program.training_audit`): with M canary clients in the population
(the audit run), the same with the noise off (its power twin), and as
configured (the production run, whose final model a loss-threshold
membership-inference attack then tries on training vs held-out clients).
--audit_kind=mechanism runs only the configuration's mechanisms, as a run
builds and samples them, on M canary clients instead of client data: the
central one (`tff_dp.program.mechanism_audit`) and local DP as the server sees
one client's update (`tff_dp.program.local_audit`): faster, and the most
powerful audit of a mechanism and its accounting, but not of the training
around it.

Both print one table: the analytic epsilon of each accountant, the one-shot
estimates (all iterates, final model; Andrew et al. 2024) and Steinke et
al.'s lower bound at confidence 1 - beta, for the audit and its power twin
(and the accuracies and the attack for a training audit). If the lower bound
exceeds the analytic epsilon, the mechanism or its accounting is wrong: the
program says so and exits with 3. Written to <output_dir>/<run_name>/:
audit.json, the estimates by round and the canaries' histograms in
tensorboard/ (noise_off/ for the twin), audit_canaries.png and
audit_epsilon.png, and the attack's results in nonprivate/membership.json
(they are computed from client data without noise). The canary directions
are never written.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.audit`: Ctrl-C during the imports below is one line,
  # and TensorFlow is quiet.
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-audit')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import datetime
import os
import sys

from absl import flags

from tff_dp import config as config_lib
from tff_dp.audit import canary_plan
from tff_dp.checks import ConfigError
from tff_dp.cli import audit_report
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.program import prepare
from tff_dp.program import run_dirs
from tff_dp.program import run_lock

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)
flags.DEFINE_enum(
    'audit_kind', 'training', ['training', 'mechanism'],
    'training: train with canaries, with the noise off, and as configured '
    '(then membership inference); mechanism: the central mechanism alone on '
    'canary clients (faster, no training).')
flags.DEFINE_float('audit_beta',
                   0.05,
                   'One minus the confidence of the lower bound.',
                   lower_bound=1e-9,
                   upper_bound=0.5)


def _canaries(config: config_lib.TrainConfig, population: int) -> int:
  """The number of canaries; `UserError` for what cannot be audited."""
  local = config.local_dp is not config_lib.LocalDp.NONE
  if config.workers:
    raise exits.UserError(
        f'--workers={config.workers}: the audit runs on the local worker '
        'only (remote workers are not built for it yet); drop --workers')
  if config.example_dp:
    raise exits.UserError(
        '--example_dp: record-level DP-SGD cannot be audited with canary '
        'clients; audit the run without it')
  if local and FLAGS.audit_kind == 'training':
    raise exits.UserError(
        f'--local_dp={config.local_dp.value}: canaries in training enter the '
        'central mechanism only; audit the local mechanism with '
        '--audit_kind=mechanism')
  if not (local or config.uses_dp_aggregator):
    raise exits.UserError(
        f'--dp_mechanism={config.dp_mechanism.value}: nothing to audit (no '
        'central or local mechanism)')
  limit = population // 2
  if config.audit_canaries == 0:
    return canary_plan.default_canaries(population)
  if not 4 <= config.audit_canaries <= limit:
    raise exits.UserError(
        f'--audit_canaries={config.audit_canaries}: must be at least 4 and at '
        f'most half of the population of {population} clients ({limit})')
  return config.audit_canaries


def _run_dir(config: config_lib.TrainConfig) -> tuple[str, run_lock.RunLock]:
  """Creates and locks the audit's output directory (two audits never write
  into one: a generated name is never reused, a named one is locked);
  `UserError` if it cannot."""
  default_name = datetime.datetime.now(
      datetime.timezone.utc).strftime('audit-%Y%m%d-%H%M%S')
  try:
    return run_dirs.open_locked_dir(config.output_dir,
                                    config.run_name,
                                    default_name=default_name)
  except run_dirs.RunDirError as e:
    raise exits.UserError(str(e)) from e


def _model_dim(config: config_lib.TrainConfig, data) -> int:
  """The number of trainable parameters of `config`'s model for `data`."""
  from tff_dp.algorithms import dp_ftrl  # pylint: disable=g-import-not-at-top
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  specs = dp_ftrl.model_update_specs(assembly.build_model_fn(config, data))
  return sum(spec.shape.num_elements() for spec in specs)


def _audit_mechanism(config, data, run_dir: str, *, canaries: int) -> dict:
  """--audit_kind=mechanism: each mechanism and its twin on canaries only."""
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  dim = _model_dim(config, data)
  print(
      f'auditing the mechanisms (--dp_mechanism={config.dp_mechanism.value}, '
      f'--local_dp={config.local_dp.value}) over {config.rounds} rounds: '
      f'{canaries} canaries in {data.population} clients, model dimension '
      f'{dim}',
      flush=True)
  with runtime.local_runtime(
      log_path=os.path.join(run_dir, 'worker.log'),
      allow_unconfined_worker=(config.allow_unconfined_worker)):
    results = audit_report.audit_mechanisms(config,
                                            population=data.population,
                                            dim=dim,
                                            canaries=canaries,
                                            beta=FLAGS.audit_beta)
  audit_report.print_table(
      config, [(name, result, None) for name, result in results.items()],
      beta=FLAGS.audit_beta)
  audit_report.write_outputs(
      run_dir,
      results,
      {
          'kind': 'mechanism',
          'config': config.to_json(),
          **{
              # No wall times: the runs' cohorts are hidden.
              name: audit_report.audit_json(result, seconds=False) for name, result in results.items(
              )
          }
      },
      title=f'{config.dp_mechanism.value} mechanism, {config.rounds} rounds')
  return results


def run(argv: list[str]) -> int:
  """Runs the audit on parsed flags; returns the exit code."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  config = cli_flags.config_from_flags(FLAGS)
  try:
    # Canaries are the audit's own: checked here, not as a training flag.
    prepared = prepare.prepare_run(dataclasses.replace(config,
                                                       audit_canaries=0))
  except ConfigError as e:
    raise exits.UserError(str(e)) from e
  population = prepared.data.population
  if FLAGS.audit_kind == 'training':
    from tff_dp.program import training_audit  # pylint: disable=g-import-not-at-top
    # The membership attack's non-members leave the population first.
    population -= training_audit.mia_clients_for(config, population)
  canaries = _canaries(config, population)
  run_dir, lock = _run_dir(config)
  with lock:
    return _audit(config, prepared, run_dir, canaries)


def _audit(config, prepared, run_dir: str, canaries: int) -> int:
  """Runs the audit of --audit_kind into `run_dir`; returns the exit code."""
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  runtime.disable_default_context()
  if FLAGS.audit_kind == 'mechanism':
    results = _audit_mechanism(prepared.config,
                               prepared.data,
                               run_dir,
                               canaries=canaries)
  else:
    results = audit_report.audit_training(config,
                                          run_dir,
                                          canaries=canaries,
                                          beta=FLAGS.audit_beta)
  print(f'outputs: {run_dir}', flush=True)
  unsound = [(name, result)
             for name, result in results.items()
             if result.unsound and not name.endswith('noise_off')]
  for name, result in unsound:
    print(
        f'tff-dp: SOUNDNESS ALARM ({name}): the measured lower bound '
        f'{result.bound.epsilon:.4g} exceeds the analytic epsilon '
        f'{result.analytic_epsilon:.4g}. The mechanism or its accounting is '
        'wrong; do not publish this epsilon.',
        file=sys.stderr)
  if unsound:
    return exits.EXIT_INTERNAL
  return 0


def main(argv: list[str]) -> None:
  try:
    code = run(argv)
  except (exits.UserError, ConfigError) as e:
    # ConfigError: a setting of one of a training audit's runs.
    print(f'tff-dp-audit: error: {exits.flag_error_message(e)}',
          file=sys.stderr)
    code = exits.EXIT_USAGE
  except KeyboardInterrupt:
    print('tff-dp-audit: interrupted', file=sys.stderr)
    code = exits.EXIT_SIGINT
  except Exception as e:  # pylint: disable=broad-except
    # One line, not a traceback: the audit wrote nothing half-way.
    print(f'tff-dp-audit: internal error: {type(e).__name__}: {e}',
          file=sys.stderr)
    code = exits.EXIT_INTERNAL
  sys.exit(code)


def entry_point() -> None:
  """Console-script entry point (`tff-dp-audit`)."""
  program_help.define_help_flags(
      FLAGS,
      doc=__doc__,
      groups=[('Audit', program_help.defined_by(FLAGS, __name__)),
              *program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS)])
  try:
    argv = FLAGS(sys.argv)
  except flags.Error as e:
    print(f'tff-dp-audit: error: {e}', file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)
  main(argv)


if __name__ == '__main__':
  entry_point()
