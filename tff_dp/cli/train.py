"""tff-dp training program: differentially private FedAvg on TFF.

Usage:
  ./run.sh train [--flagfile=configs/default.cfg] [--flag=value ...]
  tff-dp --flagfile=configs/smoke.cfg --rounds=3

Every flag is listed by --helpfull and in the README. Bad values stop the
program before any training with a message that names the flag and the value.
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.train`: honour Ctrl-C during the imports below, as the
  # console script does (`tff_dp.cli.launch`).
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.install_early_handlers('tff-dp')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import datetime
import math
import os
import signal
import sys
import traceback

from absl import app
from absl import flags

from tff_dp import config as config_lib
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.data import labels
from tff_dp.program import prepare
from tff_dp.program import resume as resume_rules

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli_flags.define_train_flags(FLAGS)

RUN_MARKER = resume_rules.RUN_MARKER


class InternalError(Exception):
  """A bug or an environment failure during training, already logged."""


class Terminated(BaseException):
  """SIGTERM or SIGHUP arrived; unwinds the stack like Ctrl-C does."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


# Signals received, in order. An exception raised by a signal handler can be
# swallowed when the signal lands inside a callback Python calls for a
# library (seen: a KeyboardInterrupt in a garbage-collector callback of
# TensorFlow's XLA during start-up, after which the run went on and exited
# 0); the record makes the program honour it at its next check.
_received: list[int] = []


def _interruption(signum: int) -> BaseException:
  return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _install_signal_handlers() -> None:
  # Python's default action for SIGTERM and SIGHUP ends the process without
  # running `finally` blocks: the TFF worker would not be stopped, outputs
  # not closed. A SIGINT ignored by the parent (`nohup`, `&`) stays ignored.
  def handler(signum, frame):
    del frame
    _received.append(signum)
    raise _interruption(signum)

  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(sig) is not signal.SIG_IGN:
      signal.signal(sig, handler)
  sys.unraisablehook = _quiet_about_interruptions


def _quiet_about_interruptions(unraisable) -> None:
  """Python's hook for exceptions it cannot raise (e.g. in a gc callback),
  without the 'Exception ignored' traceback for our own interruptions: they
  are recorded and honoured at the program's next check."""
  if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
    return
  sys.__unraisablehook__(unraisable)


def raise_if_interrupted() -> None:
  """Raises the interruption of a signal received earlier, if any."""
  if _received:
    raise _interruption(_received[0])


def default_run_name(argv: list[str], now: datetime.datetime) -> str:
  """<flagfile names>-<UTC time>, e.g. default-20261126-071500."""
  configs = []
  for arg in argv:
    if arg.startswith('--flagfile='):
      name = os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
      configs.append(name)
  prefix = '+'.join(configs) or 'run'
  return f'{prefix}-{now.strftime("%Y%m%d-%H%M%S")}'


def prepare_run_dir(output_dir: str, run_name: str) -> tuple[str, bool]:
  """Creates the run directory; returns (path, whether to resume it).

  A directory that already holds a tff-dp run is resumed (the experiment
  refuses if it cannot do so honestly); any other non-empty directory is
  refused rather than written into.
  """
  run_dir = os.path.join(output_dir, run_name)
  try:
    os.makedirs(run_dir, exist_ok=True)
  except OSError as e:
    raise exits.UserError(
        f'--output_dir={output_dir}: cannot create run directory '
        f'{run_dir}: {e.strerror}') from e
  if not os.access(run_dir, os.W_OK):
    raise exits.UserError(
        f'--output_dir={output_dir}: run directory {run_dir} is '
        'not writable')
  entries = os.listdir(run_dir)
  if not entries:
    # Marks the directory as ours (with its run id) before anything else is
    # written, so that a run killed at any moment can be resumed in place.
    try:
      resume_rules.ensure_run_id(run_dir)
    except OSError as e:
      raise exits.UserError(
          f'--output_dir={output_dir}: cannot write in {run_dir}: '
          f'{e.strerror}') from e
    return run_dir, False
  if RUN_MARKER not in entries and 'config.json' not in entries:
    raise exits.UserError(
        f'--run_name={run_name}: {run_dir} is not empty and is '
        'not a tff-dp run directory; choose another --run_name')
  return run_dir, True


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


def _check_resume(config: config_lib.TrainConfig, run_dir: str, data,
                  defaults) -> None:
  """Refuses a resume that cannot be honest before importing TensorFlow.

  The same checks run again when the checkpoint's state is loaded
  (`tff_dp.program.experiment`); here they need only its verified meta.json.
  """
  from tff_dp.data import fingerprint  # pylint: disable=g-import-not-at-top
  from tff_dp.program import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoints = checkpoint.CheckpointManager(run_dir)
  round_num, meta, _ = checkpoints.latest_verified_meta()
  if meta is None:
    return  # Nothing to resume from: the experiment says why, or starts.
  try:
    resume_rules.check_checkpoint(
        meta,
        path=checkpoints.path(round_num),
        round_num=round_num,
        config=config.to_json(),
        defaults=defaults,
        run_id=resume_rules.read_run_id(run_dir),
        data_fingerprint=fingerprint.data_fingerprint(data))
  except resume_rules.ResumeError as e:
    raise exits.UserError(
        f'--run_name={config.run_name}: cannot resume {run_dir}: '
        f'{e}') from e


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


def _print_banner(config: config_lib.TrainConfig, data, held_out) -> None:
  """Describes the data: in a DP run, public facts only."""
  if not config.private:
    print(data.describe(), flush=True)
    if held_out is not None:
      print(held_out.describe(), flush=True)
    return
  from tff_dp.data import description  # pylint: disable=g-import-not-at-top
  print(description.public_description(
      data,
      dataset=config.dataset,
      held_out_clients=None if held_out is None else config.eval_clients),
        flush=True)


def _format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


# The prefix of the server-side test set's released keys (`tff_dp.program.release`,
# which imports TensorFlow: not imported here before the input is checked).
_TEST_PREFIX = 'eval/'
_NONPRIVATE_PREFIX = 'nonprivate/'


class Progress:
  """Prints one line per round: the headline metric, the guarantees, and
  (where round times are released) the round time and an ETA."""

  def __init__(self,
               rounds: int,
               *,
               private: bool,
               headline_key: str = _TEST_PREFIX + 'accuracy'):
    """Initializes the printer.

    Args:
      rounds: Rounds planned.
      private: Whether the run claims DP (prints its epsilons, or 'not
        private').
      headline_key: Released key of the metric to print (`tff_dp.data.
        labels.headline_metric` under the evaluation's prefix).
    """
    self._rounds = rounds
    self._private = private
    self._headline_key = headline_key
    # The server-side test set's metric is shown by its name ('accuracy',
    # 'recall_at_5'); anything else under its released key, so that a
    # non-private value reads as one ('nonprivate/...').
    self._headline_label = (headline_key[len(_TEST_PREFIX):]
                            if headline_key.startswith(_TEST_PREFIX) else
                            headline_key)
    self._durations = []

  def __call__(self, round_num: int, values: dict[str, float]) -> None:
    raise_if_interrupted()  # After the round's release: nothing is lost.
    parts = [f'round {round_num}/{self._rounds}']
    if self._headline_key in values:
      parts.append(f'{self._headline_label} {values[self._headline_key]:.4f}')
    parts += _guarantee_parts(values, private=self._private)
    # Round times grow with the hidden cohorts: shown only where they are
    # released (non-private runs, or --release_nonprivate_metrics).
    seconds = values.get('nonprivate/round_seconds')
    if seconds is not None:
      self._durations.append(seconds)
      # The first round includes tracing: leave it out of the ETA once there
      # is anything else to go by.
      recent = self._durations[1:][-20:] or self._durations
      eta = sum(recent) / len(recent) * (self._rounds - round_num)
      parts += [f'{seconds:.2f} s', f'ETA {_format_duration(eta)}']
    print(' | '.join(parts), flush=True)


def _guarantee_parts(values: dict[str, float], *, private: bool) -> list[str]:
  """The epsilons of the guarantees a round's values carry, in words."""
  if not private:
    return ['not private']
  central = [
      f'{key.rsplit("_", 1)[1]} {_eps(value)}' for key, value in values.items()
      if key.startswith('privacy/epsilon_')
  ]
  parts = ['epsilon ' + ', '.join(central)] if central else []
  if 'privacy/local_epsilon' in values:
    parts.append(f'local epsilon {_eps(values["privacy/local_epsilon"])}')
  if 'privacy/example_epsilon' in values:
    parts.append('record-level epsilon '
                 f'{_eps(values["privacy/example_epsilon"])}')
  return parts


def _eps(value: float) -> str:
  if math.isnan(value):
    return 'n/a'
  return 'inf' if math.isinf(value) else f'{value:.3f}'


def _print_summary(summary, statement_path: str, *, eval_prefix: str,
                   metric_names: tuple[str, ...]) -> None:
  """Prints the privacy statement and the summary.

  Args:
    summary: The run's `run_summary.Summary`.
    statement_path: The run's privacy statement.
    eval_prefix: Prefix of the evaluation's released keys.
    metric_names: The metrics to print (`labels.metric_names`), each as
      'test <name>' (the server's test set) or 'federated evaluation
      <name>'.
  """
  print()
  with open(statement_path) as f:
    print(f.read())
  print('Summary')
  print('=======')
  for name in metric_names:
    key = eval_prefix + name
    value = summary.eval_metrics.get(key)
    text = 'n/a' if value is None else f'{value:.4f}'
    caveat = (f'; released as {key}, NOT covered by the DP guarantee'
              if summary.private and value is not None else '')
    if summary.evaluation == config_lib.Evaluation.FEDERATED.value:
      print(f'federated evaluation {name} (held-out clients{caveat}): {text}')
    elif not eval_prefix.startswith(_NONPRIVATE_PREFIX):
      print(f'test {name}: {text}')
    elif summary.private and value is None:
      print(f'test {name}: not released (the test set belongs to the private '
            'population; pass --release_nonprivate_metrics to release it as '
            f'{key}, outside the guarantee)')
    else:
      print(f'test {name} (data of the private population{caveat}): {text}')
  if summary.guarantee_epsilon is not None:
    eps = ', '.join(f'{k} {_eps(math.inf if v is None else v)}'
                    for k, v in summary.epsilon.items())
    print(f'epsilon (central): {eps} (delta = {summary.delta:g})')
    for name in summary.accountants_not_applicable:
      print(f'epsilon ({name}): n/a, this accountant cannot compose the '
            'events of this run')
    print(f'guarantee: ({summary.guarantee_epsilon:.4g}, '
          f'{summary.delta:g})-DP for each client, by the '
          f'{summary.guarantee_accountant} accountant')
  elif summary.private:
    print('epsilon (central): none, the released models carry no central '
          'claim')
  else:
    print('epsilon: infinite (not private)')
  if summary.local_epsilon is not None:
    print(f'local epsilon (worst-case client, against the server): '
          f'{summary.local_epsilon:.4g}')
  if summary.record_level_epsilon is not None:
    print(f'record-level epsilon (worst client): '
          f'{summary.record_level_epsilon:.4g}')
  print(f'rounds: {summary.rounds}/{summary.rounds_planned} '
        f'({summary.stop_reason})')
  if summary.wall_seconds is not None:
    print(f'wall time: {_format_duration(summary.wall_seconds)}')
  print(f'outputs: {summary.run_dir}')


def run(argv: list[str]) -> int:
  """Runs the program on parsed flags; returns the exit code."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  # Before anything imports TensorFlow (streamed data sources do while they
  # load): level 3 hides TF's C++ start-up noise (e.g. duplicate CUDA plugin
  # registration on CPU-only machines); set the variable to see it.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  try:
    prepared = prepare.prepare_run(cli_flags.config_from_flags(FLAGS))
  except config_lib.ConfigError as e:
    raise exits.UserError(str(e)) from e
  config, data, held_out = prepared.config, prepared.data, prepared.held_out
  if prepared.calibrated_by is not None:
    from tff_dp.privacy import calibration  # pylint: disable=g-import-not-at-top
    print(
        f'calibrated --noise_multiplier='
        f'{calibration.format_noise_multiplier(config.noise_multiplier)}: '
        f'{config.rounds} rounds reach epsilon {config.target_epsilon:g} '
        f'at delta {config.delta:g} ({prepared.calibrated_by.value} '
        'accountant)',
        flush=True)
  _check_confinement(config)
  run_name = config.run_name or default_run_name(
      sys.argv, datetime.datetime.now(datetime.timezone.utc))
  run_dir, resume = prepare_run_dir(config.output_dir, run_name)
  config = dataclasses.replace(config, run_name=run_name)
  defaults = {name: FLAGS[name].default for name in config.to_json()}
  if resume:
    _check_resume(config, run_dir, data, defaults)
  _print_banner(config, data, held_out)
  print(f'run directory: {run_dir}', flush=True)

  # Importing TensorFlow takes seconds: only now that the input is valid.
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  from tff_dp.execution import worker_errors  # pylint: disable=g-import-not-at-top
  from tff_dp.program import experiment  # pylint: disable=g-import-not-at-top
  runtime.disable_default_context()
  raise_if_interrupted()
  try:
    summary = experiment.run_experiment(
        dataclasses.replace(prepared, config=config),
        run_dir,
        resume=resume,
        config_defaults=defaults,
        on_round=Progress(
            config.rounds,
            private=config.private,
            headline_key=(experiment.eval_prefix(config) +
                          labels.headline_metric(data.label_kind))))
  except resume_rules.ResumeError as e:
    raise exits.UserError(
        f'--run_name={run_name}: cannot resume {run_dir}: {e}') from e
  except worker_errors.WorkerError as e:
    # Raised before the round's values are released: nothing of it left.
    raise InternalError(
        f'{e}. Nothing of the interrupted round was '
        'released; run the same command again to resume.') from e
  except Exception as e:
    raise InternalError(f'{type(e).__name__}: {e} '
                        f'({_write_error_log(run_dir)})') from e
  _print_summary(summary,
                 os.path.join(run_dir, 'privacy_statement.txt'),
                 eval_prefix=experiment.eval_prefix(config),
                 metric_names=labels.metric_names(data.label_kind))
  return 0


def main(argv: list[str]) -> None:
  _install_signal_handlers()
  try:
    code = run(argv)
    raise_if_interrupted()  # A signal whose exception was swallowed.
  except exits.UserError as e:
    print(f'tff-dp: error: {e}', file=sys.stderr)
    code = exits.EXIT_USAGE
  except InternalError as e:
    print(f'tff-dp: internal error: {e}', file=sys.stderr)
    code = exits.EXIT_INTERNAL
  except KeyboardInterrupt:
    print('tff-dp: interrupted; the TFF worker was stopped', file=sys.stderr)
    code = exits.EXIT_SIGINT
  except Terminated as e:
    print(f'tff-dp: terminated by {e}; the TFF worker was stopped',
          file=sys.stderr)
    code = 128 + e.signum
  sys.exit(code)


def entry_point() -> None:
  """Console-script entry point (`tff-dp`).

  Not `absl.app.run`: with it, importing TensorFlow lazily inside `main` (we
  do, to validate flags before paying for the import) breaks the construction
  of Keras Sequential models in TF 2.14 (seen here; cause not established).
  """
  app.define_help_flags()
  try:
    argv = FLAGS(sys.argv)
  except flags.Error as e:
    print(f'tff-dp: error: {e}\nPass --helpfull to see every flag.',
          file=sys.stderr)
    sys.exit(exits.EXIT_USAGE)
  main(argv)


if __name__ == '__main__':
  entry_point()
