"""Console entry points that honour Ctrl-C from the first instant.

Importing a program (absl, dp-accounting, scipy, and later TensorFlow) takes
seconds, and a Ctrl-C in that window used to print an import traceback. The
console scripts (`tff-dp`, `tff-dp-epsilon`) start here: before anything
heavy is imported, SIGINT, SIGTERM and SIGHUP end the process with one line
and the conventional exit code (128 + signal). Nothing has been written and
no worker started at that point, so there is nothing to clean up; each
program installs its own handlers once it starts. Standard library only.
"""

import os
import signal


def install_early_handlers(program: str) -> None:
  """Until the program replaces them: a signal ends the process cleanly."""

  def handler(signum, frame):
    del frame
    os.write(
        2, f'{program}: interrupted during start-up '
        f'({signal.Signals(signum).name})\n'.encode())
    os._exit(128 + signum)  # pylint: disable=protected-access

  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(sig) is not signal.SIG_IGN:
      signal.signal(sig, handler)


def train() -> None:
  """`tff-dp`."""
  install_early_handlers('tff-dp')
  from tff_dp.cli import train as program  # pylint: disable=g-import-not-at-top
  program.entry_point()


def epsilon() -> None:
  """`tff-dp-epsilon`."""
  install_early_handlers('tff-dp-epsilon')
  from tff_dp.cli import epsilon as program  # pylint: disable=g-import-not-at-top
  program.entry_point()
