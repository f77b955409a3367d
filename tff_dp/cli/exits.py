"""Exit codes of the programs, and the error that ends one with a single line.

Shared by every program so that a script driving them sees one meaning per
code: 1 I/O, 2 bad input (flag, config, data file,
checkpoint), 3 internal error or environment failure (logged), 130 Ctrl-C.
SIGTERM ends a run with 128 + its signal number, as shells report it.
"""

import os
import re
import sys
from typing import Callable, Optional

from absl import flags

EXIT_IO = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_SIGINT = 130

# Loaded by any import of TFF, however far it got; never imported here.
_TFF_CONTEXT_STACK = (
    'tensorflow_federated.python.core.impl.context_stack.context_stack_impl')


def drop_tff_default_context() -> None:
  """Replaces TFF's default execution context, if TFF was (even partly)
  imported, by one that refuses to run.

  Importing TFF installs a context whose executor factory has a `__del__`
  that fails with a traceback at interpreter shutdown. Programs replace it
  once TFF is imported (`tff_dp.execution.runtime.disable_default_context`);
  a Ctrl-C that lands during the import comes before that, so every exit
  drops it here, while the interpreter is still whole.
  """
  stack = sys.modules.get(_TFF_CONTEXT_STACK)
  if getattr(stack, 'context_stack', None) is None:
    return
  errors = sys.modules[stack.__name__.rsplit('.', 1)[0] +
                       '.runtime_error_context']
  stack.context_stack.set_default_context(errors.RuntimeErrorContext())


class UserError(Exception):
  """Bad input: reported as one line naming the thing and the value."""


# absl's words for a required flag left unset (`flags.mark_flag_as_required`).
_REQUIRED = re.compile(r'^flag --(\w+)=None: Flag --\1 must have a value '
                       r'other than None\.$')

# absl's words for a --flagfile it cannot open (an OSError's text).
_FLAGFILE = re.compile(r"^Unable to open flagfile: \[Errno \d+\] (.+): '(.*)'$")


def _flagfile_line(line: str) -> str:
  """'--flagfile=F: no such file or directory' for absl's open error."""
  match = _FLAGFILE.match(line)
  if match is None:
    return line
  return f'--flagfile={match.group(2)}: {match.group(1).lower()}'


def flag_error_message(error: Exception) -> str:
  """absl's flag error as one line, without its 'ERROR:: ' prefix (a missing
  flagfile), and its missing required flags said as such ('--input and
  --output are required', not 'flag --input=None: ...')."""
  lines = [
      _flagfile_line(line.removeprefix('ERROR:: '))
      for line in str(error).splitlines()
  ]
  missing = [m.group(1) for m in map(_REQUIRED.match, lines) if m]
  if not missing or len(missing) < len(lines):
    return '; '.join(lines)
  names = [f'--{name}' for name in missing]
  if len(names) == 1:
    return f'{names[0]} is required'
  return f'{", ".join(names[:-1])} and {names[-1]} are required'


def stdout_closed(program: str) -> int:
  """After a BrokenPipeError (the reader of the output, e.g. `| head`, is
  gone): one line on stderr, stdout pointed at /dev/null so that the
  interpreter's last flush cannot raise again; returns EXIT_IO."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, sys.stdout.fileno())
  print(f'{program}: standard output was closed (broken pipe); stopped',
        file=sys.stderr)
  return EXIT_IO


def fail(program: str, message: str, code: int) -> None:
  """Ends the program with one line on stderr and exit code `code`."""
  print(f'{program}: error: {message}', file=sys.stderr)
  sys.exit(code)


def run_program(program: str,
                body: Callable[[], Optional[int]],
                *,
                user_errors: tuple[type[Exception], ...] = (UserError,),
                interrupted: str = 'interrupted') -> None:
  """Runs a program's `body` and exits with its code (None: 0), turning the
  errors a user can cause into one line each, never a traceback: a bad flag
  or one of `user_errors` (EXIT_USAGE), an OSError (EXIT_IO, naming the
  file), Ctrl-C (EXIT_SIGINT, with `interrupted` as the message)."""
  try:
    code = body()
  except flags.Error as e:
    fail(program, flag_error_message(e), EXIT_USAGE)
  except user_errors as e:
    fail(program, str(e), EXIT_USAGE)
  except BrokenPipeError:
    sys.exit(stdout_closed(program))
  except OSError as e:
    # Disk full, permissions: the environment, not the input.
    name = f'{e.filename}: ' if e.filename else ''
    fail(program, f'{name}{e.strerror or e}', EXIT_IO)
  except KeyboardInterrupt:
    drop_tff_default_context()
    fail(program, interrupted, EXIT_SIGINT)
  sys.exit(code or 0)
