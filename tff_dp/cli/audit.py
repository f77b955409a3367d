"""tff-dp audit program: an empirical privacy audit of a configuration.

Usage:
  ./run.sh audit [--flagfile=configs/default.cfg] [training flags]
      [--audit_canaries=M] [--audit_beta=0.05]

Runs the configuration's central mechanism as a run builds and samples it,
with M canary clients instead of client data (`tff_dp.program.
mechanism_audit`), then its power twin (the same with the noise off), and
prints one table: the analytic epsilon of each accountant, the one-shot
estimates (all iterates, final model) and Steinke et al.'s lower bound at
confidence 1 - beta. If the lower bound exceeds the analytic epsilon, the
mechanism or its accounting is wrong: the program says so and exits with 3.
The table is also written to <output_dir>/<run_name>/audit.json, and the
estimates, the lower bound and the analytic epsilon by round, with histograms
of the canaries' statistics, to its tensorboard/ (noise_off/ for the twin);
the canary directions are never written.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.audit`: Ctrl-C during the imports below is one line.
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.install_early_handlers('tff-dp-audit')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import datetime
import json
import math
import os
import sys

from absl import flags

from tff_dp import atomic_io
from tff_dp import config as config_lib
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.program import prepare

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)
flags.DEFINE_integer(
    'audit_canaries',
    0, 'Canary directions M of the audit, each inserted with probability 1/2 '
    'into the population: at most half of it (more would move the adaptive '
    'clip); 0 for half of it, at most 1000.',
    lower_bound=0,
    upper_bound=100_000)
flags.DEFINE_float('audit_beta',
                   0.05,
                   'One minus the confidence of the lower bound.',
                   lower_bound=1e-9,
                   upper_bound=0.5)


def _row(name: str, result) -> str:
  analytic = ', '.join(
      f'{v:.3g} ({k})' for k, v in result.analytic.items() if not math.isnan(v))
  return (f'{name:<11} {analytic:<24} '
          f'{result.estimate_all_iterates.epsilon:>10.3g} '
          f'{result.estimate_final.epsilon:>10.3g} '
          f'{result.bound.epsilon:>12.3g} {result.seconds:>7.1f}s')


def _number(value: float):
  # JSON has no inf/nan: null means infinite, or n/a for an accountant that
  # cannot compose the mechanism's events.
  return value if math.isfinite(value) else None


def _to_json(result) -> dict:
  return {
      'analytic_epsilon': {
          k: _number(v) for k, v in result.analytic.items()
      },
      'estimate_all_iterates': _number(result.estimate_all_iterates.epsilon),
      'estimate_final_model': _number(result.estimate_final.epsilon),
      'lower_bound': _number(result.bound.epsilon),
      'lower_bound_confidence': 1 - result.bound.beta,
      'canaries': result.canaries,
      'inserted': result.inserted,
      'dim': result.dim,
      'rounds': result.rounds,
      'seconds': result.seconds,
  }


def _check(config: config_lib.TrainConfig, population: int) -> int:
  """The number of canaries; `UserError` for what cannot be audited."""
  if not config.uses_dp_aggregator:
    raise exits.UserError(
        f'--dp_mechanism={config.dp_mechanism.value}: the audit measures a '
        'central mechanism; local DP and example-level DP-SGD cannot be '
        'audited this way yet')
  if config.local_dp is not config_lib.LocalDp.NONE or config.example_dp:
    raise exits.UserError(
        '--local_dp/--example_dp: the audit covers the central mechanism '
        'only; audit the run without the client-side noise')
  limit = population // 2
  if FLAGS.audit_canaries == 0:
    return max(2, min(limit, 1000))
  if FLAGS.audit_canaries > limit or FLAGS.audit_canaries < 4:
    raise exits.UserError(
        f'--audit_canaries={FLAGS.audit_canaries}: must be at least 4 and '
        f'at most half of the population of {population} clients ({limit})')
  return FLAGS.audit_canaries


def _audit(config, population, dim, canaries):
  from tff_dp.program import mechanism_audit  # pylint: disable=g-import-not-at-top
  return mechanism_audit.audit_mechanism(config,
                                         population=population,
                                         dim=dim,
                                         canaries=canaries,
                                         beta=FLAGS.audit_beta)


def _run_dir(config: config_lib.TrainConfig) -> str:
  """Creates the audit's output directory; `UserError` if it cannot."""
  run_name = config.run_name or datetime.datetime.now(
      datetime.timezone.utc).strftime('audit-%Y%m%d-%H%M%S')
  run_dir = os.path.join(config.output_dir, run_name)
  try:
    os.makedirs(run_dir, exist_ok=True)
  except OSError as e:
    raise exits.UserError(f'--output_dir={config.output_dir}: cannot create '
                          f'{run_dir}: {e.strerror}') from e
  return run_dir


def _model_dim(config: config_lib.TrainConfig, data) -> int:
  """The number of trainable parameters of `config`'s model for `data`."""
  from tff_dp.algorithms import dp_ftrl  # pylint: disable=g-import-not-at-top
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  specs = dp_ftrl.model_update_specs(assembly.build_model_fn(config, data))
  return sum(spec.shape.num_elements() for spec in specs)


def _report(config: config_lib.TrainConfig, run_dir: str, audited,
            power) -> None:
  """Prints the table; writes audit.json and the TensorBoard values."""
  from tff_dp.program import mechanism_audit  # pylint: disable=g-import-not-at-top
  mechanism_audit.write_tensorboard(audited,
                                    os.path.join(run_dir, 'tensorboard'))
  mechanism_audit.write_tensorboard(
      power, os.path.join(run_dir, 'tensorboard', 'noise_off'))
  table = [
      f'{"":<11} {"analytic epsilon":<24} {"estimate":>10} {"(final)":>10} '
      f'{"lower bound":>12} {"time":>8}',
      _row('audited', audited),
      _row('noise off', power),
      f'delta {config.delta:g}; lower bound at confidence '
      f'{1 - FLAGS.audit_beta:g} (Steinke et al. 2023); estimates: one-shot '
      '(Andrew et al. 2024), not guarantees.',
  ]
  print('\n'.join(table), flush=True)
  atomic_io.write_text_atomic(
      os.path.join(run_dir, 'audit.json'),
      json.dumps(
          {
              'config': config.to_json(),
              'audited': _to_json(audited),
              'noise_off': _to_json(power)
          },
          indent=2))
  print(f'outputs: {run_dir}', flush=True)


def run(argv: list[str]) -> int:
  """Runs the audit on parsed flags; returns the exit code."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  try:
    prepared = prepare.prepare_run(cli_flags.config_from_flags(FLAGS))
  except ConfigError as e:
    raise exits.UserError(str(e)) from e
  config, population = prepared.config, prepared.data.population
  canaries = _check(config, population)
  run_dir = _run_dir(config)
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  runtime.disable_default_context()
  dim = _model_dim(config, prepared.data)
  print(
      f'auditing --dp_mechanism={config.dp_mechanism.value} over '
      f'{config.rounds} rounds: {canaries} canaries in {population} '
      f'clients, model dimension {dim}',
      flush=True)
  with runtime.local_runtime(
      log_path=os.path.join(run_dir, 'worker.log'),
      allow_unconfined_worker=(config.allow_unconfined_worker)):
    audited = _audit(config, population, dim, canaries)
    power = _audit(dataclasses.replace(config, noise_multiplier=0.0),
                   population, dim, canaries)
  _report(config, run_dir, audited, power)
  if audited.unsound:
    print(
        f'tff-dp: SOUNDNESS ALARM: the measured lower bound '
        f'{audited.bound.epsilon:.4g} exceeds the analytic epsilon '
        f'{audited.analytic_epsilon:.4g}. The mechanism or its accounting is '
        'wrong; do not publish this epsilon.',
        file=sys.stderr)
    return exits.EXIT_INTERNAL
  return 0


def main(argv: list[str]) -> None:
  try:
    code = run(argv)
  except exits.UserError as e:
    print(f'tff-dp-audit: error: {e}', file=sys.stderr)
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
  try:
    argv = FLAGS(sys.argv)
  except flags.Error as e:
    print(f'tff-dp-audit: error: {e}', file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)
  main(argv)


if __name__ == '__main__':
  entry_point()
