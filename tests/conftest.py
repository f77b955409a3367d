"""Shared pytest set-up: the slow tier switch and the TFF runtime fixture.

Tiers (see pytest.ini markers): unmarked tests are pure Python; `tff` tests
build or run TFF computations on one worker shared by the session; `e2e` tests
start a program of the repository (train, epsilon, import-data, run.sh, ...) in
a subprocess; `slow` tests run only with --run-slow. tests/test_markers.py
reads the tests' code and fails where a mark and what a test runs disagree.

Layout: the folders mirror the package. A test file lives in the folder of the
subpackage it mainly tests (tests/privacy/ for tff_dp/privacy/, ...;
tests/tools/ for tools/ and benchmarks/), named test_<module>.py after the
module it tests or, when it tests a behaviour across modules, after that
(tests/program/test_threat_model.py); checks of the whole repository
(test_layout.py) stay in tests/. File names are unique across folders: the
folders have no __init__.py (tests/tools/ would hide the tools package), so
pytest imports each file by its bare name. Fakes and helpers that several
files share live in the package tests/helpers/; a test file never imports
another.
"""

import os
import shutil
import signal
import tempfile

import pytest

# A suite started in the background by a non-interactive shell (`cmd &`)
# inherits SIGINT ignored, and so would every program it starts: the tests
# that interrupt a program with SIGINT would then fail for the shell's sake.
# A Python handler here is reset to the default by exec in each child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

# Keep TensorFlow's C++ start-up chatter out of test output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Programs the tests start keep their traced computations
# (`--computation_cache`'s default, under $XDG_CACHE_HOME) in this session's
# own directory, never in the user's cache: the suite starts cold, as in CI,
# and its runs of one configuration reuse each other's.
_SESSION_CACHE = tempfile.mkdtemp(prefix='tff-dp-tests-cache-')
os.environ['XDG_CACHE_HOME'] = _SESSION_CACHE
# The helpers' asserts (e.g. configs_smoke.train_and_check's) explain a
# failure as a test's own do.
pytest.register_assert_rewrite('tests.helpers')


def pytest_addoption(parser):
  parser.addoption('--run-slow',
                   action='store_true',
                   default=False,
                   help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
  # Costly files first: those with program runs (`e2e`, tens of seconds
  # each), then those running TFF computations (`tff`), then pure Python.
  # The runner (`-n 2 --dist loadfile --no-loadscope-reorder`, see run.sh)
  # hands out files in this order; a long file started last would leave the
  # other core idle while it finishes.
  run_slow = config.getoption('--run-slow')
  cost = {}
  for item in items:
    if 'slow' in item.keywords and not run_slow:
      item.add_marker(
          pytest.mark.skip(reason='slow: run with ./run.sh test --run-slow'))
      tier = 2  # Skipped: costs nothing.
    else:
      tier = (0
              if 'e2e' in item.keywords else 1 if 'tff' in item.keywords else 2)
    cost[item.path] = min(cost.get(item.path, 2), tier)
  # Within a tier, files in name order whatever their folder (names are
  # unique): the order of the flat tests/ the runner's balance was set on.
  # Stable: a file's tests keep their order.
  items.sort(key=lambda item: (cost[item.path], item.path.name))


@pytest.fixture(scope='session')
def tff_runtime(tmp_path_factory):
  """One TFF worker for the whole session, owned and stopped by tff-dp."""
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  log_path = str(tmp_path_factory.mktemp('worker') / 'worker.log')
  with runtime.local_runtime(log_path=log_path) as worker:
    yield worker
  assert not worker.alive()


def pytest_sessionfinish(session, exitstatus):
  """Removes the session's cache and drops TFF's default context.

  The context goes while the interpreter is still whole
  (`tff_dp.cli.exits.drop_tff_default_context` says why).
  """
  del session, exitstatus
  shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
  from tff_dp.cli import exits  # pylint: disable=g-import-not-at-top
  exits.drop_tff_default_context()
