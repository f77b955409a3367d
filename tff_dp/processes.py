"""Whether a process is alive, as Linux's /proc tells it.

Used where a later run cleans up after a killed one (stunnel's private
directory, a run's copy of the client files): the killed process is dead for
that purpose once it is a zombie. An orphan's new parent, PID 1 in many
containers, may never reap it, so its pid stays in /proc (and `kill(pid, 0)`
succeeds) while it holds no port and no open file.
"""

import os
from typing import Optional


def _state(pid: int) -> Optional[str]:
  """The one-letter state of /proc/<pid>/stat, or None if there is no pid."""
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8', errors='replace') as f:
      # The command name (in parentheses) may itself hold spaces or ')'.
      return f.read().rsplit(')', 1)[1].split()[0]
  except (OSError, IndexError):
    return None


def is_live(pid: int) -> bool:
  """True if `pid` exists and is not a zombie (any user's process)."""
  state = _state(pid)
  return state is not None and state != 'Z'


def argv(pid: int) -> list[bytes]:
  """The live process's argv ([] if it is gone or a zombie)."""
  if not is_live(pid):
    return []
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().split(b'\0')[:-1]
  except OSError:
    return []


def runs_with_argument(pid: int, argument: str) -> bool:
  """True if `pid` is live and `argument` is one of its argv entries.

  Tells a process we started on a file from one that reused its pid.
  """
  return os.fsencode(argument) in argv(pid)
