"""Errors of the TFF worker tff-dp owns, and the one-line messages they carry.

`RuntimeStartError` (and its `ConfinementUnavailableError`) means the worker
could not be started, confined or reached before a run used it. A
`WorkerError` ends a run whose worker died (`WorkerDiedError`) or stopped
answering (`WorkerUnreachableError`); `worker_process.Worker.diagnose` raises
them and programs catch `WorkerError`.
"""

import signal
from typing import Optional


class RuntimeStartError(RuntimeError):
  """The TFF worker could not be started."""


class ConfinementUnavailableError(RuntimeStartError):
  """The worker cannot be confined and the caller did not accept that."""


class RemoteWorkerStartError(RuntimeStartError):
  """A remote worker (--workers) cannot be reached, or its certificates
  are missing: the input names something that is not there."""


class WorkerError(RuntimeError):
  """The TFF worker a run uses failed; the message is one line."""


class WorkerDiedError(WorkerError):
  """The TFF worker exited while the run used it."""


class WorkerUnreachableError(WorkerError):
  """The TFF worker runs but has refused calls for too long."""


def describe_exit(returncode: Optional[int]) -> str:
  """How a worker ended, from its `Popen.returncode`, for an error message."""
  if returncode is None:
    return 'exited (status unknown)'
  if returncode < 0:
    try:
      name = signal.Signals(-returncode).name
    except ValueError:
      name = 'unknown signal'
    return f'was killed by signal {-returncode} ({name})'
  return f'exited with status {returncode}'


def refusal(reason: str) -> str:
  """The message of `ConfinementUnavailableError`, for a worker not confined.

  Args:
    reason: Why the worker cannot be confined.

  Returns:
    One line: the reason, the risk and the opt-in flag.
  """
  return (f'refusing to start the TFF worker: {reason}. Unconfined, the '
          'worker serves unauthenticated gRPC on all network interfaces, '
          'and anyone who can connect (any local user, any host that reaches '
          'this one) can run code as this user. To run anyway on a machine '
          'whose users and network you trust, pass --allow_unconfined_worker '
          '(see README, "Security notes")')
