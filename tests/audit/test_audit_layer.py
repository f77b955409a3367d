"""The audit layer stays pure numpy / scipy / scikit-learn."""

import subprocess
import sys

from tests import helpers


def test_import_does_not_pull_in_tensorflow():
  # Statistics of a finished run: usable (and testable in milliseconds)
  # without TensorFlow, whatever the program around them imports.
  code = ('import sys, tff_dp.audit.divergence, tff_dp.audit.lower_bound, '
          'tff_dp.audit.membership, tff_dp.audit.one_shot; '
          "print(sorted({'tensorflow', 'tensorflow_federated', 'jax'} & "
          'set(sys.modules)))')
  result = subprocess.run([sys.executable, '-c', code],
                          cwd=helpers.REPO_ROOT,
                          capture_output=True,
                          text=True,
                          check=True,
                          timeout=120)
  assert result.stdout.strip() == '[]'
