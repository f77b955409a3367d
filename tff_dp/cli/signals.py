"""How the training program stops on Ctrl-C, SIGTERM and SIGHUP, and never misses one.

Python's default action for SIGTERM and SIGHUP ends the process without
running `finally` blocks: the TFF worker would not be stopped, the outputs
not closed, and no privacy statement written for the rounds already
released. `install_handlers` turns each of these signals into an exception
that unwinds the stack like Ctrl-C's `KeyboardInterrupt` does (`Terminated`
for SIGTERM and SIGHUP), so every `finally` runs.

An exception raised by a signal handler can be swallowed when the signal
lands inside a callback Python calls for a library (seen: a
KeyboardInterrupt in a garbage-collector callback of TensorFlow's XLA during
start-up, after which the run went on and exited 0). Every signal is
therefore also recorded, and `raise_if_interrupted` raises it again at the
program's next check. Standard library only.
"""

import signal
import sys


class Terminated(BaseException):
  """SIGTERM or SIGHUP arrived; unwinds the stack like Ctrl-C does."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


# Signals received, in order (see the module docstring).
received: list[int] = []


def interruption(signum: int) -> BaseException:
  """The exception that stands for signal `signum`."""
  return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def install_handlers() -> None:
  """Makes SIGINT, SIGTERM and SIGHUP raise (and record) their exception.

  A signal ignored by the parent (`nohup`, `&` for SIGINT) stays ignored.
  """

  def handler(signum, frame):
    del frame
    received.append(signum)
    raise interruption(signum)

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
  if received:
    raise interruption(received[0])
