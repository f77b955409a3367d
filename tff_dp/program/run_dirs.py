"""A run's directory: its default name, and creating or resuming it.

Shared by the training program (`tff_dp.cli.train`) and the Python API
(`tff_dp.api`), so that both name, mark and resume run directories alike.
"""

import datetime
import os

from tff_dp.program import resume as resume_rules

RUN_MARKER = resume_rules.RUN_MARKER


class RunDirError(ValueError):
  """The run directory cannot be used; the message names the setting."""


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
    raise RunDirError(f'--output_dir={output_dir}: cannot create run directory '
                      f'{run_dir}: {e.strerror}') from e
  if not os.access(run_dir, os.W_OK):
    raise RunDirError(f'--output_dir={output_dir}: run directory {run_dir} is '
                      'not writable')
  entries = os.listdir(run_dir)
  if not entries:
    # Marks the directory as ours (with its run id) before anything else is
    # written, so that a run killed at any moment can be resumed in place.
    try:
      resume_rules.ensure_run_id(run_dir)
    except OSError as e:
      raise RunDirError(
          f'--output_dir={output_dir}: cannot write in {run_dir}: '
          f'{e.strerror}') from e
    return run_dir, False
  if RUN_MARKER not in entries and 'config.json' not in entries:
    raise RunDirError(f'--run_name={run_name}: {run_dir} is not empty and is '
                      'not a tff-dp run directory; choose another --run_name')
  return run_dir, True
