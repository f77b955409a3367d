"""The Python API: train from a notebook or a script, beside the command line.

    import tff_dp
    result = tff_dp.train(rounds=20, noise_multiplier=1.0)
    print(result.epsilon, result.accuracy)
    model = result.keras_model()     # the trained model, as a Keras model

Settings are the flags of `./run.sh train` (the README's flag reference),
as keyword arguments: `make_config(flagfile=..., **settings)` starts from
`configs/default.cfg` (the main job) unless another flagfile is named, and
every setting goes through the same validators, cross-checks and privacy
rules as on the command line (the CLI and this API share `tff_dp.program`).
A user's own model (`keras_model_fn`: an uncompiled Keras model, logits out,
input [batch, features] float32) and own clients (`client_data`: a
`tff.simulation.datasets.ClientData`, with a `test_data` set the caller
declares public; `tff_dp.data.python_client_data`) replace the built-in ones.

The result carries the final model weights, the released values of every
round (metrics.csv), the epsilons and the run directory, whose files are
those of a command-line run (resumable with the same call).

TensorFlow's C++ library prints a dozen INFO/WARNING/ERROR lines when it
loads (no CUDA, duplicate factory registrations, CPU instructions): noise in a
notebook. `train(quiet=True)`, the default, silences them as the command
line does (`tff_dp.cli.launch.quiet`), but only if TensorFlow is not loaded
yet (it reads TF_CPP_MIN_LOG_LEVEL once) and only if the caller has not set
TF_CPP_MIN_LOG_LEVEL: a value in the environment is the caller's choice and
is kept. `quiet=False` leaves TensorFlow's logging alone.
"""

import dataclasses
import datetime
import enum
import os
import re
import sys
from typing import Any, Callable, Optional

from absl import flags

from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags
from tff_dp.cli import launch
from tff_dp.config import TrainConfig
from tff_dp.program import prepare
from tff_dp.program import resume as resume_rules
from tff_dp.program import run_dirs
from tff_dp.program import run_summary

DEFAULT_FLAGFILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
    'default.cfg')


def _flag_values() -> flags.FlagValues:
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  return fv


def _argument(name: str, value: Any) -> str:
  """`--name=value` as the command line would spell the setting."""
  if isinstance(value, bool):
    return f'--{name}' if value else f'--no{name}'
  if isinstance(value, enum.Enum):
    value = value.value
  if isinstance(value, (list, tuple)):
    value = ','.join(
        str(v.value if isinstance(v, enum.Enum) else v) for v in value)
  return f'--{name}={value}'


def make_config(flagfile: Optional[str] = DEFAULT_FLAGFILE,
                **settings: Any) -> TrainConfig:
  """A checked-on-parse `TrainConfig`: `flagfile`, then `settings`.

  Args:
    flagfile: A flagfile (e.g. 'configs/dp_ftrl.cfg'); None: the flags'
      own defaults only.
    **settings: Flag name -> value (enums as members or their values; None
      for an optional setting left unset).

  Raises:
    ConfigError: For an unknown setting or a value the flag refuses.
  """
  fv = _flag_values()
  argv = ['tff_dp']
  if flagfile is not None:
    if not os.path.isfile(flagfile):
      raise ConfigError('flagfile', flagfile, 'no such file')
    argv.append(f'--flagfile={flagfile}')
  unset = {}
  for name, value in settings.items():
    if name not in fv:
      raise ConfigError(name, value,
                        'is not a setting (see the README flag reference)')
    if value is None:
      unset[name] = None
    else:
      argv.append(_argument(name, value))
  try:
    fv(argv)
  except flags.Error as e:
    raise _refusal(e, settings, flagfile) from e
  return dataclasses.replace(cli_flags.config_from_flags(fv), **unset)


def _refusal(error: flags.Error, settings: dict[str, Any],
             flagfile: Optional[str]) -> ConfigError:
  """The parser's refusal as a ConfigError naming the setting it refused.

  absl names the flag in its message ('flag --rounds=0: ...'); a value that
  came from the flagfile is named as the flagfile.
  """
  message = str(error)
  # 'flag --rounds=0: ...', or 'Missing value for flag --rounds' (a bool
  # given to a flag that takes a value).
  match = re.search(r'flag --(\w+)\b', message)
  name = match[1] if match else None
  if name in settings:
    return ConfigError(name, settings[name], message.split(': ', 1)[-1])
  if name is not None and flagfile is not None:
    return ConfigError('flagfile', flagfile, message)
  return ConfigError('flags',
                     ' '.join(f'--{k}={v}' for k, v in settings.items()),
                     message)


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What `train` returns.

  Attributes:
    run_dir: The run's directory (metrics.csv, the statement, TensorBoard).
    summary: The run's `Summary` (as summary.json, plus the weights).
    history: The released values of every round, in order ('round' first).
    keras_model_fn: Constructor of the trained model's Keras twin.
  """
  run_dir: str
  summary: run_summary.Summary
  history: tuple[dict[str, float], ...]
  keras_model_fn: Callable[[], Any] = dataclasses.field(repr=False)

  @property
  def model_weights(self):
    """The final `tff.learning.models.ModelWeights`."""
    return self.summary.model_weights

  @property
  def epsilon(self) -> Optional[float]:
    """The stated central epsilon (the tightest accountant's), if any."""
    return self.summary.guarantee_epsilon

  @property
  def epsilons(self) -> dict[str, Optional[float]]:
    """The central epsilon of each accountant (null: infinite)."""
    return self.summary.epsilon

  @property
  def accuracy(self) -> Optional[float]:
    return self.summary.accuracy

  def keras_model(self):
    """The trained model as a new Keras model (uncompiled)."""
    model = self.keras_model_fn()
    self.model_weights.assign_weights_to(model)
    return model


def _history(run_dir: str) -> tuple[dict[str, float], ...]:
  rows = resume_rules.read_rows(os.path.join(run_dir, 'metrics.csv'))
  return tuple({
      k: float(v) for k, v in row.items() if v not in ('', None)
  } for row in rows)


def _prepared(config: TrainConfig, client_data, test_data,
              data_options) -> prepare.PreparedRun:
  """The checked run, on the built-in data or the caller's clients."""
  if client_data is None:
    return prepare.prepare_run(config)
  if test_data is None:
    raise ConfigError('test_data', None,
                      'client_data needs a public test set (test_data)')
  from tff_dp.data import python_client_data  # pylint: disable=g-import-not-at-top
  from tff_dp.data.loading import Dataset  # pylint: disable=g-import-not-at-top
  data = python_client_data.from_client_data(client_data,
                                             test_data=test_data,
                                             **data_options)
  return prepare.prepare_data(
      dataclasses.replace(config, dataset=Dataset('python')), data)


def _run(prepared: prepare.PreparedRun, run_dir: run_dirs.RunDir,
         keras_model_fn: Optional[Callable[[], Any]],
         on_round: Optional[Callable[[int, dict[str, float]], None]]):
  """Runs the experiment in the locked `run_dir`; returns (run, summary)."""
  prepared = dataclasses.replace(prepared,
                                 config=dataclasses.replace(
                                     prepared.config, run_name=run_dir.name),
                                 keras_model_fn=keras_model_fn)
  fv = _flag_values()
  defaults = {name: fv[name].default for name in prepared.config.to_json()}
  from tff_dp.cli import exits  # pylint: disable=g-import-not-at-top
  from tff_dp.cli import resume_checks  # pylint: disable=g-import-not-at-top
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  from tff_dp.program import experiment  # pylint: disable=g-import-not-at-top
  assembly.check_trainable_model(prepared.config, prepared.data, keras_model_fn)
  try:
    if run_dir.resume:
      # As the command line, before TensorFlow builds anything: changed
      # settings are named as such, not as a checkpoint of another model.
      resume_checks.check_resume(prepared.config, run_dir.path, prepared.data,
                                 defaults)
    summary = experiment.run_experiment(prepared,
                                        run_dir.path,
                                        resume=run_dir.resume,
                                        config_defaults=defaults,
                                        on_round=on_round)
  except (exits.UserError, resume_rules.ResumeError) as e:
    # `check_resume` words its ResumeError for the command line.
    reason = e.__cause__ if isinstance(e, exits.UserError) else e
    raise ConfigError('run_name', run_dir.name,
                      f'cannot resume {run_dir.path}: {reason}') from e
  return prepared, summary


def train(config: Optional[TrainConfig] = None,
          *,
          flagfile: Optional[str] = None,
          keras_model_fn: Optional[Callable[[], Any]] = None,
          client_data: Any = None,
          test_data: Any = None,
          num_classes: Optional[int] = None,
          element_fn: Optional[Callable[[Any], Any]] = None,
          on_round: Optional[Callable[[int, dict[str, float]], None]] = None,
          quiet: bool = True,
          **settings: Any) -> TrainResult:
  """Trains as `./run.sh train` would, and returns the result.

  Args:
    config: A `TrainConfig` (from `make_config`); None: `make_config(
      flagfile or configs/default.cfg, **settings)`.
    flagfile: See `make_config` (only without `config`).
    keras_model_fn: Your own uncompiled Keras model's constructor (logits
      out), trained instead of `config.model`.
    client_data: Your own clients, a `tff.simulation.datasets.ClientData`,
      or the path of an imported file (the --client_data setting, with
      dataset='sqlite')
      (read into memory); with `test_data`, `num_classes` and `element_fn`
      as in `tff_dp.data.python_client_data.from_client_data`.
    test_data: The server's public test set for `client_data`.
    num_classes: Classes of `client_data` (None: inferred).
    element_fn: Maps an element of `client_data` to (x, y).
    on_round: Called with (round, released values) after every round.
    quiet: Silence TensorFlow's C++ start-up log (the module docstring says
      when this can take effect); False: leave it as it is.
    **settings: Settings (flags) over `config` or the flagfile.

  Raises:
    ConfigError: For a setting or combination that cannot run (the same
      refusals as the command line's), naming it.
    tff_dp.data.loading.DataError: For data that cannot be used.
  """
  if isinstance(client_data, (str, os.PathLike)):
    # The --client_data flag (an imported file), not a ClientData object.
    settings['client_data'] = os.fspath(client_data)
    client_data = None
  if config is None:
    config = make_config(flagfile or DEFAULT_FLAGFILE, **settings)
  elif flagfile is not None or settings:
    raise ConfigError(
        'config', 'given', 'pass settings to make_config, or '
        'settings and no config to train')
  if quiet and 'tensorflow' not in sys.modules:
    # Before the data sources or the experiment import TensorFlow, and only
    # once the settings are accepted (a refused call leaves the caller's
    # environment alone); keeps a TF_CPP_MIN_LOG_LEVEL the caller set.
    launch.quiet()
  prepared = _prepared(config, client_data, test_data,
                       dict(num_classes=num_classes, element_fn=element_fn))
  try:
    run_dir = run_dirs.open_run_dir(config.output_dir,
                                    config.run_name,
                                    default_name=run_dirs.default_run_name(
                                        ['--flagfile=api'],
                                        datetime.datetime.now(
                                            datetime.timezone.utc)))
  except run_dirs.RunDirError as e:
    raise ConfigError('run_name', config.run_name, str(e)) from e
  with run_dir:  # Locked until the run ends (`run_lock`).
    prepared, summary = _run(prepared, run_dir, keras_model_fn, on_round)
  from tff_dp.program import assembly  # pylint: disable=g-import-not-at-top
  return TrainResult(run_dir=run_dir.path,
                     summary=summary,
                     history=_history(run_dir.path),
                     keras_model_fn=assembly.build_keras_model_fn(
                         prepared.config, prepared.data, keras_model_fn))
