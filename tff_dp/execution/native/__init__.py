"""Native helpers built at install time: the worker's bind shim.

`loopback_bind.c` is compiled by setup.py as an optional extension (a machine
without a C compiler still installs tff-dp). It is an LD_PRELOAD library for
the TFF worker process, not a Python module: never import it. With
`SOCKET_ENV` set in the worker's environment it makes the worker serve on
that Unix socket instead of TCP (see tff_dp/execution/worker_socket.py); without the shim
tff-dp refuses to start a worker unless the caller explicitly accepts an
unconfined one.

This module imports nothing heavy, so that programs can check for the shim
(`confinement_unavailable_reason`) before they pay for importing TensorFlow.
"""

import importlib.machinery
import os
import sys
from typing import Optional

# Also the extension name in setup.py (tff_dp.execution.native._loopback_bind).
LIBRARY_NAME = '_loopback_bind'
SOURCE_NAME = 'loopback_bind.c'
# The variable the shim reads: the path of the worker's Unix socket.
SOCKET_ENV = 'TFF_DP_WORKER_SOCKET'


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


def confinement_unavailable_reason() -> Optional[str]:
  """Why the worker cannot be confined to a private Unix socket, or None.

  Returns:
    None if the shim is built and can be preloaded (Linux); otherwise a
    sentence fragment naming the cause and the fix.
  """
  if not sys.platform.startswith('linux'):
    return (f'the worker shim needs Linux (this is {sys.platform}), so the '
            'TFF worker cannot be confined to a private Unix socket')
  path = loopback_bind_library()
  if path is None:
    return (
        'the worker shim (tff_dp/execution/native/loopback_bind.c) was not built, '
        'so the TFF worker cannot be confined to a private Unix socket; '
        'to build it, ' + build_hint())
  if any(c in path for c in ' \t\n:'):
    # ld.so splits LD_PRELOAD on these and would silently skip the shim.
    return f'the worker shim path {path!r} cannot be preloaded'
  return None
