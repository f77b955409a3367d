"""The programs start quiet: TensorFlow's C++ log and setuptools' warning off.

Every run printed setuptools' pkg_resources deprecation warning (2 lines,
from google-api-core's namespace packages, when TFF is imported) and,
wherever TensorFlow was imported before TF_CPP_MIN_LOG_LEVEL was set,
TensorFlow's C++ start-up log. The training program's stderr is checked
empty on a real run in test_e2e.py.
"""

import os
import warnings

from tff_dp.cli import launch


def test_quiet_keeps_a_level_the_user_set(monkeypatch):
  monkeypatch.delenv('TF_CPP_MIN_LOG_LEVEL', raising=False)
  with warnings.catch_warnings():
    launch.quiet()
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')
  with warnings.catch_warnings():
    launch.quiet()
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '0'


def test_quiet_silences_only_the_dependencies_warnings_about_themselves():
  with warnings.catch_warnings(record=True) as shown:
    warnings.simplefilter('always')
    launch.quiet()
    warnings.warn(
        'pkg_resources is deprecated as an API. See https://setuptools.'
        'pypa.io/en/latest/pkg_resources.html.',
        UserWarning,
        stacklevel=2)  # As pkg_resources warns: in its importer's name.
    warnings.warn(
        "Deprecated call to `pkg_resources.declare_namespace("
        "'google')`.",
        DeprecationWarning,
        stacklevel=2)
    warnings.warn('something else', UserWarning, stacklevel=2)
  assert [str(w.message) for w in shown] == ['something else']
