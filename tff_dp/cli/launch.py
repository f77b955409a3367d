"""Console entry points that start quietly and honour Ctrl-C from the first instant.

Importing a program (absl, dp-accounting, scipy, and later TensorFlow) takes
seconds, and a Ctrl-C in that window used to print an import traceback. The
console scripts (`tff-dp`, `tff-dp-epsilon`) and the programs' `python -m`
forms start with `start`: before anything heavy is imported, SIGINT, SIGTERM
and SIGHUP end the process with one line and the conventional exit code
(128 + signal), and the libraries' start-up noise is silenced (`quiet`).
Nothing has been written and no worker started at that point, so there is
nothing to clean up; each program installs its own handlers once it starts.
`start` also defers the stack's imports that the programs do not use
(`tff_dp.lazy_imports`: jax, TensorFlow Probability, scikit-learn), which
must happen before TensorFlow is imported. Standard library only.
"""

import os
import signal
import sys
import warnings

from tff_dp import lazy_imports

# What `quiet` silences: warnings of the dependencies about themselves, not
# about this program's use of them. Matched by message (a regular expression
# matched at the start) and category, wherever they are attributed: the
# warning names the module that imported pkg_resources (google.rpc,
# google.logging, tensorboard.default), not pkg_resources.
QUIET_WARNINGS = (
    # setuptools >= 81 on `import pkg_resources` (google-api-core's
    # namespace packages, TensorBoard).
    (UserWarning, r'pkg_resources is deprecated as an API'),
    # The namespace packages' `pkg_resources.declare_namespace(...)` calls.
    (DeprecationWarning, r'Deprecated call to `pkg_resources\.'),
)


def quiet() -> None:
  """Silences TensorFlow's C++ start-up logging and `QUIET_WARNINGS`.

  Must run before TensorFlow is first imported: TF reads
  TF_CPP_MIN_LOG_LEVEL once, when its C++ library loads. Level 3 hides the
  INFO, WARNING and ERROR lines it prints on every start (no CUDA drivers,
  duplicate cuDNN/cuFFT/cuBLAS factory registration, CPU instructions,
  TensorRT, grappler sessions); TensorFlow's real failures still reach the
  program as Python exceptions. A value already set is kept:
  `TF_CPP_MIN_LOG_LEVEL=0 ./run.sh train` shows everything.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  for category, message in QUIET_WARNINGS:
    warnings.filterwarnings('ignore', message=message, category=category)


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


def install_broken_pipe_hook(program: str) -> None:
  """Output piped into a reader that quits early (`| head`) ends the program
  with one line (`exits.stdout_closed`, exit 1), not a traceback, wherever
  the write was."""
  previous = sys.excepthook

  def hook(kind, value, traceback):
    if issubclass(kind, BrokenPipeError):
      from tff_dp.cli import exits  # pylint: disable=g-import-not-at-top
      exits.stdout_closed(program)
    else:
      previous(kind, value, traceback)

  sys.excepthook = hook


def start(program: str) -> None:
  """What every program does first: `install_early_handlers`,
  `install_broken_pipe_hook`, `quiet` and `lazy_imports.install`."""
  install_early_handlers(program)
  install_broken_pipe_hook(program)
  quiet()
  lazy_imports.install()


def train() -> None:
  """`tff-dp`."""
  start('tff-dp')
  from tff_dp.cli import train as program  # pylint: disable=g-import-not-at-top
  program.entry_point()


def epsilon() -> None:
  """`tff-dp-epsilon`."""
  start('tff-dp-epsilon')
  from tff_dp.cli import epsilon as program  # pylint: disable=g-import-not-at-top
  program.entry_point()
