"""Which heavy libraries a fresh interpreter imports along with some modules.

The layers below TensorFlow (privacy, cohorts, data) must import without it,
so that planning and accounting stay fast and testable alone; each of their
tests checks its modules here, in a new `python -c` (pytest's own process
has imported TensorFlow long before).
"""

import subprocess
import sys

from tests.helpers import REPO_ROOT

_HEAVY = ('tensorflow', 'tensorflow_federated')


def heavy_imports(*modules: str) -> list[str]:
  """The modules of TensorFlow and TFF in sys.modules after importing
  `modules` (dotted names) in a fresh interpreter."""
  code = (f'import sys; import {", ".join(modules)}; '
          f'print(*[m for m in {_HEAVY!r} if m in sys.modules])')
  result = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          check=False,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.split()
