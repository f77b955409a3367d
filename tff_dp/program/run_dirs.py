"""A run's directory: its default name, and creating, locking or resuming it.

Shared by the training program (`tff_dp.cli.train`) and the Python API
(`tff_dp.api`), so that both name, mark, lock and resume run directories
alike. A named directory (`--run_name`) that holds a run is resumed; a
generated name (from the flagfiles and the time) always gets a directory of
its own, created exclusively, so two runs started in the same second never
share one. Either way the directory is locked (`run_lock`) before anything
in it is read for a resume or written. The audit (`tff_dp.cli.audit`) does
not resume: its named directory must not exist yet (`open_locked_dir`), so
an earlier audit's outputs are never written over.
"""

import dataclasses
import datetime
import os

from tff_dp.program import resume as resume_rules
from tff_dp.program import run_lock

RUN_MARKER = resume_rules.RUN_MARKER
# Generated names tried before giving up: `name`, `name-2`, ...
_MAX_SUFFIX = 1000


class RunDirError(ValueError):
  """The run directory cannot be used; the message names the setting."""


@dataclasses.dataclass
class RunDir:
  """A run directory this process holds the lock of, until `close`.

  Attributes:
    path: The directory.
    name: Its run name (a generated one made unique).
    resume: Whether it holds a run to resume.
    lock: The held lock.
  """
  path: str
  name: str
  resume: bool
  lock: run_lock.RunLock

  def close(self) -> None:
    self.lock.release()

  def __enter__(self) -> 'RunDir':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def default_run_name(argv: list[str], now: datetime.datetime) -> str:
  """<flagfile names>-<UTC time>, e.g. default-20261126-071500."""
  configs = []
  for arg in argv:
    if arg.startswith('--flagfile='):
      name = os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
      configs.append(name)
  prefix = '+'.join(configs) or 'run'
  return f'{prefix}-{now.strftime("%Y%m%d-%H%M%S")}'


def _create_unique(output_dir: str, base_name: str) -> str:
  """Creates output_dir/<base_name>[-k] exclusively; returns the name."""
  _makedirs(output_dir, output_dir)
  for k in range(1, _MAX_SUFFIX + 1):
    name = base_name if k == 1 else f'{base_name}-{k}'
    try:
      os.mkdir(os.path.join(output_dir, name))
    except FileExistsError:
      continue  # Another run (maybe started this second) has it.
    except OSError as e:
      raise RunDirError(f'--output_dir={output_dir}: cannot create run '
                        f'directory {name}: {e.strerror}') from e
    return name
  raise RunDirError(f'--output_dir={output_dir}: {base_name} and '
                    f'{_MAX_SUFFIX - 1} suffixed names exist; pass --run_name')


def _create(output_dir: str,
            run_name: str,
            default_name: str,
            *,
            fresh: bool = False) -> tuple[str, str]:
  """(path, name) of the directory: `run_name`'s (created if missing; with
  `fresh`, created here or refused), or a new one under a name made unique
  from `default_name`."""
  name = run_name or _create_unique(output_dir, default_name)
  run_dir = os.path.join(output_dir, name)
  if run_name and fresh:
    _create_fresh(output_dir, run_dir, run_name)
  elif run_name:
    _makedirs(output_dir, run_dir)
  return run_dir, name


def _create_fresh(output_dir: str, run_dir: str, run_name: str) -> None:
  """Creates `run_dir` exclusively; an existing one is refused untouched."""
  _makedirs(output_dir, output_dir)
  try:
    os.mkdir(run_dir)
  except FileExistsError:
    # Another process's lock is the more useful reason: it names the pid.
    holder = run_lock.live_holder(run_dir)
    if holder is not None:
      raise RunDirError(str(run_lock.RunLockedError(run_dir, holder))) from None
    raise RunDirError(f'--run_name={run_name}: {run_dir} exists (an earlier '
                      'output?) and is never written over; choose another '
                      '--run_name or remove it') from None
  except OSError as e:
    raise RunDirError(f'--output_dir={output_dir}: cannot create run directory '
                      f'{run_dir}: {e.strerror}') from e


def _makedirs(output_dir: str, path: str) -> None:
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise RunDirError(f'--output_dir={output_dir}: cannot create run directory '
                      f'{path}: {e.strerror}') from e


def _lock(output_dir: str, run_dir: str) -> run_lock.RunLock:
  try:
    return run_lock.RunLock(run_dir).acquire()
  except run_lock.RunLockedError as e:
    raise RunDirError(str(e)) from e
  except OSError as e:
    raise RunDirError(f'--output_dir={output_dir}: cannot write in {run_dir}: '
                      f'{e.strerror}') from e


def _entries(run_dir: str) -> list[str]:
  """The directory's entries but our lock file (left by any earlier run)."""
  return [e for e in os.listdir(run_dir) if e != run_lock.LOCK_FILE]


def open_locked_dir(output_dir: str, run_name: str, *,
                    default_name: str) -> tuple[str, run_lock.RunLock]:
  """An output directory of a program that does not resume (the audit),
  created exclusively (a generated name made unique, as `open_run_dir`; a
  named one refused if it exists, so an earlier output is never written
  over) and locked.

  Returns:
    (its path, its held `RunLock`: the caller releases it when done).

  Raises:
    RunDirError: It exists (named), cannot be created or written, or
      another process holds it.
  """
  run_dir, _ = _create(output_dir, run_name, default_name, fresh=True)
  return run_dir, _lock(output_dir, run_dir)


def open_run_dir(output_dir: str, run_name: str, *,
                 default_name: str) -> RunDir:
  """Creates or opens the run directory and locks it.

  Args:
    output_dir: Where run directories go.
    run_name: The user's run name; '' for a generated one.
    default_name: The generated name's base (`default_run_name`).

  Returns:
    The locked `RunDir`: a directory that already holds a tff-dp run is
    resumed (the experiment refuses if it cannot do so honestly). The
    caller closes it when the run ends (the process's exit does, too).

  Raises:
    RunDirError: A directory that cannot be created or written; any other
      non-empty directory (refused rather than written into); one that
      another process holds (`run_lock`).
  """
  run_dir, name = _create(output_dir, run_name, default_name)
  if not os.access(run_dir, os.W_OK):
    raise RunDirError(f'--output_dir={output_dir}: run directory {run_dir} is '
                      'not writable')
  entries = _entries(run_dir)
  if entries and RUN_MARKER not in entries and 'config.json' not in entries:
    # Checked before locking: the lock file is not written into it. A
    # trainer that has just locked it may be writing its marker (a
    # temporary file first): then the lock is the reason.
    holder = run_lock.live_holder(run_dir)
    if holder is not None:
      raise RunDirError(str(run_lock.RunLockedError(run_dir, holder)))
    raise RunDirError(f'--run_name={name}: {run_dir} is not empty and is '
                      'not a tff-dp run directory; choose another --run_name')
  lock = _lock(output_dir, run_dir)
  try:
    # Listed again under the lock: a holder that just ended may have
    # written its first files since.
    if _entries(run_dir):
      return RunDir(run_dir, name, True, lock)
    # Marks the directory as ours (with its run id) before anything else is
    # written, so that a run killed at any moment can be resumed in place.
    try:
      resume_rules.ensure_run_id(run_dir)
    except OSError as e:
      raise RunDirError(f'--output_dir={output_dir}: cannot write in '
                        f'{run_dir}: {e.strerror}') from e
    return RunDir(run_dir, name, False, lock)
  except BaseException:
    lock.release()
    raise
