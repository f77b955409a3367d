"""Native helpers built at install time: the worker's loopback-bind shim.

`loopback_bind.c` is compiled by setup.py as an optional extension (a machine
without a C compiler still installs tff-dp, with an unconfined worker). It is
an LD_PRELOAD library for the TFF worker process, not a Python module: never
import it.
"""

import importlib.machinery
import os
from typing import Optional

# Also the extension name in setup.py (tff_dp.native._loopback_bind).
LIBRARY_NAME = '_loopback_bind'
SOURCE_NAME = 'loopback_bind.c'


def loopback_bind_library() -> Optional[str]:
  """Returns the path of the built shim, or None if it was not built."""
  here = os.path.dirname(os.path.abspath(__file__))
  # setuptools names the file like a Python extension of this interpreter.
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = os.path.join(here, LIBRARY_NAME + suffix)
    if os.path.isfile(path):
      return path
  return None


def build_hint() -> str:
  """How to build the shim, for warnings and errors."""
  return ('install a C compiler (e.g. `apt-get install gcc`); the next '
          '`./run.sh` command then builds it (or run `.venv/bin/python -m pip '
          'install --no-deps --no-build-isolation --editable .`)')
