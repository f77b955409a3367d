"""tff-dp training program: differentially private FedAvg on TFF.

Usage:
  ./run.sh train [--flagfile=configs/default.cfg] [--flag=value ...]
  tff-dp --flagfile=configs/smoke.cfg --rounds=3

`./run.sh train` without a --flagfile reads configs/default.cfg first (the
defaults below are the flags' own); flags given after it override it. Bad
values stop the program before any training with a message that names the
flag and the value (exit 2). The README's flag reference has the same flags.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.train`: honour Ctrl-C during the imports below, and
  # quiet TensorFlow before anything imports it, as the console script does
  # (`tff_dp.cli.launch`).
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import datetime
import os
import shutil
import sys
import traceback

from absl import flags

from tff_dp import config as config_lib
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.cli import console
from tff_dp.cli import console_flags
from tff_dp.cli import exits
from tff_dp.cli import launch
from tff_dp.cli import program_help
from tff_dp.cli import resume_checks
from tff_dp.cli import signals
from tff_dp.data import labels
from tff_dp.execution import worker_launch
from tff_dp.privacy import run_secrets
from tff_dp.program import prepare
from tff_dp.program import resume as resume_rules
from tff_dp.program import run_dirs

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)

console_flags.define_console_flags(FLAGS)


def _computation_cache_dir() -> str:
  """--computation_cache, its default under $XDG_CACHE_HOME if that is set."""
  xdg = os.environ.get('XDG_CACHE_HOME', '')
  if FLAGS['computation_cache'].using_default_value and xdg:
    return os.path.join(xdg, 'tff_dp', 'computations')
  return os.path.expanduser(FLAGS.computation_cache)


# What --help lists: the training flags as the README groups them, then this
# program's own.
HELP_GROUPS = program_help.flag_groups(cli_flags.TRAIN_FLAG_GROUPS + (
    ('Console', console_flags.define_console_flags),))

RUN_MARKER = resume_rules.RUN_MARKER


class InternalError(Exception):
  """A bug or an environment failure during training, already logged."""


def open_run_dir(output_dir: str, run_name: str) -> run_dirs.RunDir:
  """`run_dirs.open_run_dir` (locked), its refusals as one-line errors."""
  try:
    return run_dirs.open_run_dir(output_dir,
                                 run_name,
                                 default_name=run_dirs.default_run_name(
                                     sys.argv,
                                     datetime.datetime.now(
                                         datetime.timezone.utc)))
  except run_dirs.RunDirError as e:
    raise exits.UserError(str(e)) from e


def _write_error_log(run_dir: str) -> str:
  """Writes the current exception's traceback to error.log; says where.

  The failure may be a full disk: then this write fails too, and the
  one-line message must still be printed (`main` prints it after this).
  """
  error_log = os.path.join(run_dir, 'error.log')
  try:
    with open(error_log, 'w') as f:
      traceback.print_exc(file=f)
  except OSError as e:
    return f'no traceback: writing {error_log} failed too: {e.strerror}'
  return f'traceback in {error_log}'


def _check_confinement(config: config_lib.TrainConfig) -> None:
  """Refuses, before any import of TensorFlow, a worker others could drive."""
  from tff_dp.execution import native  # pylint: disable=g-import-not-at-top
  reason = native.confinement_unavailable_reason()
  if reason is not None and not config.allow_unconfined_worker:
    raise exits.UserError(
        f'{reason}. Refusing to start a TFF worker that any local user (or '
        'another host) could use to run code as you; build the shim, or '
        'pass --allow_unconfined_worker to run unconfined anyway')
  # Otherwise `tff_dp.execution.worker_connect` warns when it starts the worker
  # unconfined.
  if config.workers:
    from tff_dp.execution import certs  # pylint: disable=g-import-not-at-top
    missing = certs.missing_files(config.worker_certs, certs.DRIVER_FILES)
    if missing:
      raise exits.UserError(
          f'--worker_certs={config.worker_certs}: missing '
          f'{", ".join(missing)} (make them with ./run.sh certs)')
    # As `tls_proxy.stunnel_binary`, which imports TensorFlow.
    if not (shutil.which('stunnel4') or shutil.which('stunnel')):
      raise exits.UserError(
          '--workers needs stunnel (the TLS client to the workers): '
          'apt-get install stunnel4 (./run.sh worker installs it)')


def _flag_defaults(config: config_lib.TrainConfig) -> dict[str, object]:
  """Flag name -> default, for every setting of `config`."""
  return {name: FLAGS[name].default for name in config.to_json()}


def _flags_config() -> config_lib.TrainConfig:
  try:
    return cli_flags.config_from_flags(FLAGS)
  except ConfigError as e:
    raise exits.UserError(str(e)) from e


def _prepare_input(config: config_lib.TrainConfig,
                   phases: console.StartupPhases) -> prepare.PreparedRun:
  """The checked run, its data loaded and its noise calibrated."""
  phases('loading the data')
  try:
    prepared = prepare.prepare_run(config)
  except ConfigError as e:
    raise exits.UserError(str(e)) from e
  if prepared.calibrated_by is not None:
    console.print_calibration(prepared.config, prepared.calibrated_by)
  return prepared


def _open_run_dir(
    prepared: prepare.PreparedRun
) -> tuple[prepare.PreparedRun, run_dirs.RunDir, dict[str, object]]:
  """Names, creates and locks the run directory; refuses a dishonest resume.

  Returns:
    The run under its run name, its locked directory (the caller closes
    it), and the flags' defaults (flag name -> default).
  """
  run_dir = open_run_dir(prepared.config.output_dir, prepared.config.run_name)
  try:
    config = dataclasses.replace(prepared.config, run_name=run_dir.name)
    defaults = _flag_defaults(config)
    if run_dir.resume:
      resume_checks.check_resume(config, run_dir.path, prepared.data, defaults)
  except BaseException:
    run_dir.close()
    raise
  prepared = dataclasses.replace(prepared, config=config)
  return prepared, run_dir, defaults


def _on_round(progress: console.Progress):
  """The experiment's round callback: honours a signal, then prints the line."""

  def on_round(round_num: int, values: dict[str, float]) -> None:
    signals.raise_if_interrupted()  # Released already: nothing is lost.
    progress(round_num, values)

  return on_round


def _progress(config: config_lib.TrainConfig, data,
              eval_prefix: str) -> console.Progress:
  """The round lines' printer, --log_every resolved."""
  return console.Progress(
      config.rounds,
      private=config.private,
      headline_key=eval_prefix + labels.headline_metric(data.label_kind),
      log_every=console.resolve_log_every(FLAGS.log_every,
                                          rounds=config.rounds,
                                          eval_every=config.eval_every,
                                          terminal=sys.stdout.isatty()),
      eval_every=config.eval_every,
      insecure=run_secrets.seed_voids_guarantee(config))


def _train(prepared: prepare.PreparedRun, run_dir: str, *, resume: bool,
           defaults: dict[str, object], phases: console.StartupPhases) -> None:
  """Imports TensorFlow, runs the experiment and prints its summary."""
  # Importing TensorFlow takes seconds: only now that the input is valid.
  phases('importing TensorFlow and TFF')
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_errors  # pylint: disable=g-import-not-at-top
  from tff_dp.program import experiment  # pylint: disable=g-import-not-at-top
  from tff_dp.program import round_releases  # pylint: disable=g-import-not-at-top
  runtime.disable_default_context()
  signals.raise_if_interrupted()
  config, data = prepared.config, prepared.data
  progress = _progress(config, data, round_releases.eval_prefix(config))
  try:
    summary = experiment.run_experiment(
        prepared,
        run_dir,
        resume=resume,
        config_defaults=defaults,
        on_round=_on_round(progress),
        on_phase=phases,
        computation_cache_dir=_computation_cache_dir())
  except resume_rules.ResumeError as e:
    raise exits.UserError(
        f'--run_name={config.run_name}: cannot resume {run_dir}: {e}') from e
  except worker_errors.RemoteWorkerStartError as e:
    raise exits.UserError(str(e)) from e
  except worker_errors.WorkerError as e:
    # Raised before the round's values are released: nothing of it left.
    raise InternalError(
        f'{e}. Nothing of the interrupted round was '
        'released; run the same command again to resume.') from e
  except BrokenPipeError:
    raise  # The output's reader quit (`| head`): not a bug (`main`).
  except Exception as e:
    raise InternalError(f'{type(e).__name__}: {e} '
                        f'({_write_error_log(run_dir)})') from e
  except (KeyboardInterrupt, signals.Terminated):
    console.print_stopped_statement(run_dir, progress)
    raise
  finally:
    progress.close()
  console.print_summary(summary,
                        os.path.join(run_dir, 'privacy_statement.txt'),
                        eval_prefix=round_releases.eval_prefix(config),
                        metric_names=labels.metric_names(data.label_kind))


def run(argv: list[str]) -> int:
  """Runs the program on parsed flags; returns the exit code."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  # Before anything imports TensorFlow (streamed data sources do while they
  # load); the entry points did it already, this is for callers of `main`.
  launch.quiet()
  phases = console.StartupPhases()
  config = _flags_config()
  note = cli_flags.unread_data_dir_note(FLAGS, config)
  if note:
    print(note, flush=True)
  if config.private and not config.release_nonprivate_metrics:
    phases.hide_times()
  elif config.private:
    phases.label_times()
  # In about a second, before any loading.
  resume_checks.refuse_changed_flags(config, _flag_defaults(config))
  prepared = _prepare_input(config, phases)
  _check_confinement(prepared.config)
  prepared, run_dir, defaults = _open_run_dir(prepared)
  with run_dir:  # Locked until the run ends (`run_lock`).
    console.print_banner(prepared.config, prepared.data, prepared.held_out)
    print(f'run directory: {run_dir.path}', flush=True)
    if not prepared.config.workers:
      # Loads and serves while TensorFlow is imported and the process built;
      # the runtime adopts it (`tff_dp.program.experiment._runtime`).
      worker_launch.prestart(
          log_path=os.path.join(run_dir.path, 'worker.log'),
          allow_unconfined_worker=prepared.config.allow_unconfined_worker)
    try:
      _train(prepared,
             run_dir.path,
             resume=run_dir.resume,
             defaults=defaults,
             phases=phases)
    finally:
      worker_launch.discard_prestarted()  # Stops it if the run never used it.
  return 0


def main(argv: list[str]) -> None:
  signals.install_handlers()
  try:
    try:
      code = run(argv)
    except InternalError:
      # A signal's exception swallowed inside a library can surface as
      # another error (seen: an AttributeError from dm-tree's C code while
      # TFF traced, after Ctrl-C): the signal is the cause.
      signals.raise_if_interrupted()
      raise
    signals.raise_if_interrupted()  # A signal whose exception was swallowed.
  except exits.UserError as e:
    print(f'tff-dp: error: {e}', file=sys.stderr)
    code = exits.EXIT_USAGE
  except InternalError as e:
    print(f'tff-dp: internal error: {e}', file=sys.stderr)
    code = exits.EXIT_INTERNAL
  except KeyboardInterrupt:
    print('tff-dp: interrupted; the TFF worker was stopped', file=sys.stderr)
    code = exits.EXIT_SIGINT
  except BrokenPipeError:
    # What was released stays (and its statement, `run_statement`); the
    # same command resumes.
    code = exits.stdout_closed('tff-dp')
  except signals.Terminated as e:
    print(f'tff-dp: terminated by {e}; the TFF worker was stopped',
          file=sys.stderr)
    code = 128 + e.signum
  exits.drop_tff_default_context()
  sys.exit(code)


def entry_point() -> None:
  """Console-script entry point (`tff-dp`).

  Not `absl.app.run`: with it, importing TensorFlow lazily inside `main` (we
  do, to validate flags before paying for the import) breaks the construction
  of Keras Sequential models in TF 2.14 (seen here; cause not established).
  """
  program_help.define_help_flags(FLAGS, doc=__doc__, groups=HELP_GROUPS)
  try:
    argv = FLAGS(sys.argv)
  except flags.Error as e:
    print(
        f'tff-dp: error: {exits.flag_error_message(e)}\nPass --help to see the flags.',
        file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)
  main(argv)


if __name__ == '__main__':
  entry_point()
