"""tff_dp.lazy_imports: deferred modules run on first use, and only then.

Pure-Python tests on a throwaway package (pytest's own process imported the
real stack long ago), one fresh interpreter that imports TFF and TF Privacy
with the deferral and then uses what it deferred, and (slow) a whole
training run that must never run jax or TensorFlow Probability.
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests import helpers
from tests.helpers import programs
from tff_dp import lazy_imports

# Each module of the throwaway package appends its name to RAN when its code
# runs, so a test sees what ran and in which order.
_FILES = {
    '__init__.py': 'import lazyfake_log\nlazyfake_log.RAN.append("pkg")\n'
                   'def double(x):\n  return 2 * x\nVALUE = 7\n',
    'sub.py': 'import lazyfake_log\nlazyfake_log.RAN.append("pkg.sub")\n'
              'from lazyfakepkg import VALUE\nTWICE = 2 * VALUE\n',
}


@pytest.fixture(name='fake')
def _fake(tmp_path, monkeypatch):
  """A deferred package `lazyfakepkg` with a submodule and a placeholder."""
  package = tmp_path / 'lazyfakepkg'
  package.mkdir()
  for name, text in _FILES.items():
    (package / name).write_text(text)
  (tmp_path / 'lazyfake_log.py').write_text('RAN = []\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  finder = lazy_imports.DeferringFinder(
      names=('lazyfakepkg',), placeholders={'lazyfakepkg': ('double',)})
  sys.meta_path.insert(0, finder)
  yield sys.modules
  sys.meta_path.remove(finder)
  for name in [n for n in sys.modules if n.startswith('lazyfake')]:
    del sys.modules[name]


def test_a_deferred_module_runs_on_the_first_missing_attribute(fake):
  import lazyfake_log  # pylint: disable=g-import-not-at-top
  import lazyfakepkg  # pylint: disable=g-import-not-at-top
  assert lazyfake_log.RAN == []
  assert lazy_imports.is_deferred(lazyfakepkg)
  assert lazyfakepkg.VALUE == 7
  assert lazyfake_log.RAN == ['pkg']
  assert not lazy_imports.is_deferred(lazyfakepkg)
  assert fake['lazyfakepkg'] is lazyfakepkg  # The same object, now real.


def test_from_package_import_submodule_stays_deferred_and_runs_parents_first(
    fake):
  del fake
  import lazyfake_log  # pylint: disable=g-import-not-at-top
  from lazyfakepkg import sub  # pylint: disable=g-import-not-at-top
  assert lazyfake_log.RAN == []
  assert lazy_imports.is_deferred(sub)
  assert sub.TWICE == 14
  assert lazyfake_log.RAN == ['pkg', 'pkg.sub']


def test_a_placeholder_runs_the_module_when_called(fake):
  del fake
  import lazyfake_log  # pylint: disable=g-import-not-at-top
  from lazyfakepkg import double  # pylint: disable=g-import-not-at-top
  assert lazyfake_log.RAN == []
  assert double(21) == 42
  assert lazyfake_log.RAN == ['pkg']


def test_a_missing_module_fails_as_without_the_finder(fake):
  del fake
  finder = lazy_imports.DeferringFinder(names=('lazyfake_missing',))
  assert finder.find_spec('lazyfake_missing', None) is None
  sys.meta_path.insert(0, finder)
  try:
    with pytest.raises(ModuleNotFoundError):
      importlib.import_module('lazyfake_missing')
  finally:
    sys.meta_path.remove(finder)


def test_the_environment_variable_turns_it_off(monkeypatch):
  lazy_imports.uninstall()
  monkeypatch.setenv(lazy_imports.ENV_DISABLE, '1')
  assert not lazy_imports.install()
  assert not any(
      isinstance(f, lazy_imports.DeferringFinder) for f in sys.meta_path)
  monkeypatch.setenv(lazy_imports.ENV_DISABLE, '0')
  assert lazy_imports.install()
  lazy_imports.uninstall()
  # A list: those names import as usual, the others stay deferred.
  monkeypatch.setenv(lazy_imports.ENV_DISABLE, 'h5py,jax')
  assert lazy_imports.install()
  finder = next(
      f for f in sys.meta_path if isinstance(f, lazy_imports.DeferringFinder))
  lazy_imports.uninstall()
  assert finder.find_spec('h5py', None) is None
  assert finder.find_spec('jax', None) is None
  assert lazy_imports.is_deferred(_created(finder, 'sklearn'))


def _created(finder, name):
  """A module made from `finder`'s spec for `name`, not in sys.modules."""
  spec = finder.find_spec(name, None)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# In a fresh interpreter: TFF and TF Privacy import with jax, TF Probability,
# scikit-learn and h5py deferred; each still works when used.
_STACK_CHECK = textwrap.dedent('''
    import json, sys
    from tff_dp.cli import launch
    launch.start('test')
    from tff_dp import lazy_imports as li
    import tensorflow as tf
    import tensorflow_federated as tff
    import tensorflow_privacy
    from tensorflow_privacy.privacy.dp_query import discrete_gaussian_utils
    before = {n: li.loaded(n) for n in li.DEFERRED}
    sample = discrete_gaussian_utils.sample_discrete_gaussian(
        scale=tf.constant(3, tf.int32), shape=tf.constant([1000]),
        dtype=tf.int32)
    import h5py
    import jax
    from sklearn import preprocessing
    used = {
        'h5py_file': isinstance(h5py.File, type),
        'sample_std': float(tf.math.reduce_std(tf.cast(sample, tf.float32))),
        'jax_sum': int(jax.numpy.add(2, 3)),
        'scaled': preprocessing.scale([[1.0], [3.0]]).ravel().tolist(),
        'tff_jax': callable(tff.jax.computation),
    }
    after = {n: li.loaded(n) for n in li.DEFERRED}
    print(json.dumps({'before': before, 'after': after, **used}))
''')


@pytest.mark.tff
def test_the_stack_imports_without_them_and_they_work_when_used():
  result = subprocess.run([sys.executable, '-c', _STACK_CHECK],
                          cwd=helpers.REPO_ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
                          capture_output=True,
                          text=True,
                          timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.splitlines()[-1])
  assert not any(report['before'].values()), report['before']
  assert all(report['after'].values()), report['after']
  # Discrete Gaussian, scale 3: std ~3 (1000 draws: SE ~0.07; 2 to 4 is
  # beyond 10 SE either side).
  assert 2 < report['sample_std'] < 4
  assert report['jax_sum'] == 5
  assert report['scaled'] == [-1.0, 1.0]
  assert report['tff_jax']
  assert report['h5py_file']


@pytest.mark.e2e
@pytest.mark.slow
def test_a_training_run_never_runs_jax_or_tensorflow_probability(tmp_path):
  out = tmp_path / 'census.json'
  programs.run_train(str(out),
                     '--flagfile=configs/smoke.cfg',
                     f'--output_dir={tmp_path / "runs"}',
                     check=True,
                     program='tests.helpers.lazy_census')
  census = json.loads(out.read_text())
  for name in ('jax', 'tensorflow_probability', 'h5py',
               'tensorflow_federated.python.core.environments.jax'):
    assert census[name] == 'deferred', census
  # The smoke run's digits come from scikit-learn: deferred, then run.
  assert census['sklearn'] == 'loaded', census
