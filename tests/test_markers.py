"""The tier markers mean what pytest.ini says, read from the tests' own code.

tests/conftest.py orders the files by their costliest marker, so that the
two workers start the long program runs first; a program run in a file
without `e2e` lands at the end of the queue and keeps one core busy alone.

This test reads every test file with `ast` (nothing is imported or run) and
checks that

* a test that starts a program of this repository in a subprocess carries
  `e2e`: a call of a function of tests/helpers/, benchmarks/ or tools/ that
  does (`programs.run_train`, `programs.start_train`, ...), or a
  `subprocess` call whose command names run.sh, runs `-m` a module of
  tff_dp/, tools/, benchmarks/ or examples/, or runs a module of tests/ that imports
  tff_dp.cli (`-m tests.helpers...`, or the test file itself: `__file__`);
* a test marked `e2e` (by itself or by the module's `pytestmark`) does so:
  a pure test marked `e2e` would be run among the costly first;
* a test that asks for the `tff_runtime` fixture carries `tff`.

A test reaches what it runs through the module's functions it calls and the
module's fixtures it asks for, at any depth. A mark given to one parameter
(`pytest.param(..., marks=...)`) is not seen: mark the test.
"""

import ast
import functools
import os

import pytest

from tests import helpers

_TESTS = os.path.join(helpers.REPO_ROOT, 'tests')
# What the tests call besides the package (which starts no program).
_CALLED_FOLDERS = (os.path.join('tests', 'helpers'), 'benchmarks', 'tools')
_SUBPROCESS_CALLS = {'run', 'Popen', 'call', 'check_call', 'check_output'}
# Top-level packages whose `python -m` modules are programs of the repository.
_PROGRAM_PACKAGES = {'tff_dp', 'tools', 'benchmarks', 'examples'}
_FILE = object()  # `__file__` in a command: the module runs itself.


def _test_files():
  for root, dirs, files in os.walk(_TESTS):
    dirs[:] = sorted(d for d in dirs if d not in ('helpers', '__pycache__'))
    for name in sorted(files):
      if name.startswith('test_') and name.endswith('.py'):
        yield os.path.join(root, name)


def _dotted(node):
  """'a.b.c' for the expression a.b.c; None for anything else."""
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    base = _dotted(node.value)
    return base and f'{base}.{node.attr}'
  return None


def _mark_names(node):
  """Names of the pytest marks an expression (or list of them) applies."""
  if isinstance(node, (ast.List, ast.Tuple)):
    return {name for elt in node.elts for name in _mark_names(elt)}
  if isinstance(node, ast.Call):
    node = node.func
  dotted = _dotted(node) or ''
  return {dotted.split('.')[-1]} if dotted.startswith('pytest.mark.') else set()


def _module_name(path):
  rel = os.path.relpath(path, helpers.REPO_ROOT)[:-3]
  return rel.replace(os.sep, '.').removesuffix('.__init__')


def _module_path(module):
  path = os.path.join(helpers.REPO_ROOT, *module.split('.'))
  return path + '.py' if os.path.isfile(path + '.py') else os.path.join(
      path, '__init__.py')


@functools.cache
def _parse(path):
  with open(path, encoding='utf-8') as f:
    return ast.parse(f.read(), filename=path)


@functools.cache
def _imports_the_cli(path):
  """True if the file at `path` imports tff_dp.cli (anywhere in it)."""
  if not os.path.isfile(path):
    return False
  for node in ast.walk(_parse(path)):
    if isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    elif isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    else:
      continue
    if any(n == 'tff_dp.cli' or n.startswith('tff_dp.cli.') for n in names):
      return True
  return False


class _Module:
  """What one test or helper file's functions run, by name."""

  def __init__(self, path):
    self.path = path
    self.name = _module_name(path)
    tree = _parse(path)
    self.functions = {}  # Module-level function name -> its node.
    self.fixtures = {}  # Fixture name -> its function's node.
    self.assigned = {}  # Module-level name -> the expression assigned.
    self.aliases = {}  # Imported name -> the dotted name it stands for.
    self.marks = set()  # The module's `pytestmark`.
    for node in tree.body:
      if isinstance(node, ast.FunctionDef):
        self.functions[node.name] = node
        for decorator in node.decorator_list:
          call = decorator if isinstance(decorator, ast.Call) else None
          if _dotted(call.func if call else decorator) == 'pytest.fixture':
            name = next((k.value.value
                         for k in (call.keywords if call else [])
                         if k.arg == 'name'), node.name)
            self.fixtures[name] = node
      elif isinstance(node, ast.Assign):
        for target in node.targets:
          if isinstance(target, ast.Name):
            self.assigned[target.id] = node.value
            if target.id == 'pytestmark':
              self.marks = _mark_names(node.value)
      elif isinstance(node, ast.Import):
        for alias in node.names:
          self.aliases[alias.asname or alias.name.split('.')[0]] = (
              alias.name if alias.asname else alias.name.split('.')[0])
      elif isinstance(node, ast.ImportFrom) and node.module:
        for alias in node.names:
          full = f'{node.module}.{alias.name}'
          self.aliases[alias.asname or alias.name] = full

  def tests(self):
    return {n: f for n, f in self.functions.items() if n.startswith('test_')}

  def marks_of(self, function):
    marks = set(self.marks)
    for decorator in function.decorator_list:
      marks |= _mark_names(decorator)
    return marks

  def _words(self, node, env, seen=frozenset()):
    """The strings of a command expression, in order, names resolved.

    Args:
      node: The expression.
      env: Names of the function it is in -> (expression, its env).
      seen: Expressions already on the way here (recursion).
    """
    if id(node) in seen:
      return
    seen = seen | {id(node)}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      yield node.value
    elif isinstance(node, ast.Name):
      if node.id == '__file__':
        yield _FILE
      elif node.id in env:
        yield from self._words(*env[node.id], seen)
      elif node.id in self.assigned:
        yield from self._words(self.assigned[node.id], {}, seen)
    elif isinstance(node, (ast.List, ast.Tuple)):
      for elt in node.elts:
        yield from self._words(elt, env, seen)
    elif isinstance(node, ast.Starred):
      yield from self._words(node.value, env, seen)
    elif isinstance(node, ast.Call):
      callee = self.functions.get(_dotted(node.func) or '')
      if callee is not None:
        # A module function that builds the command: what it returns.
        inner = _environment(callee, node, env)
        for sub in ast.walk(callee):
          if isinstance(sub, ast.Return) and sub.value is not None:
            yield from self._words(sub.value, inner, seen)
      else:  # os.path.join(ROOT, 'run.sh') and the like.
        for arg in node.args:
          yield from self._words(arg, env, seen)

  def _runs_a_program(self, command, env):
    words = list(self._words(command, env))
    if any(
        isinstance(w, str) and os.path.basename(w) == 'run.sh' for w in words):
      return True
    if _FILE in words:
      return _imports_the_cli(self.path)
    for flag, module in zip(words, words[1:]):
      if flag == '-m' and isinstance(module, str):
        package = module.split('.')[0]
        if package in _PROGRAM_PACKAGES:
          return True
        if package == 'tests' and _imports_the_cli(_module_path(module)):
          return True
    return False

  def _full_name(self, dotted):
    head, _, rest = dotted.partition('.')
    full = self.aliases.get(head)
    if full is None:
      return f'{self.name}.{dotted}' if dotted in self.functions else None
    return f'{full}.{rest}' if rest else full

  def starts_programs(self, function, launchers, env=None, seen=frozenset()):
    """True if `function` starts a program (module docstring), at any depth.

    Args:
      function: A module-level function (test, fixture or helper) node.
      launchers: Full names of the other modules' functions that start
        programs.
      env: `function`'s environment (`_environment`); None: its own names.
      seen: Functions already on the way here (recursion).
    """
    seen = seen | {function.name}
    env = _environment(function) if env is None else env
    for node in ast.walk(function):
      if not isinstance(node, ast.Call):
        continue
      dotted = _dotted(node.func) or ''
      if (dotted.startswith('subprocess.') and
          dotted.split('.')[1] in _SUBPROCESS_CALLS):
        command = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == 'args'), None)
        if command is not None and self._runs_a_program(command, env):
          return True
      if self._full_name(dotted) in launchers:
        return True
      callee = self.functions.get(dotted)
      if callee is not None and callee.name not in seen:
        if self.starts_programs(callee, launchers,
                                _environment(callee, node, env), seen):
          return True
    return any(
        self.starts_programs(self.fixtures[name], launchers, seen=seen)
        for name in _parameters(function)
        if name in self.fixtures and self.fixtures[name].name not in seen)

  def asks_for(self, function, fixture, seen=frozenset()):
    """True if `function` asks for `fixture`, itself or through fixtures."""
    seen = seen | {function.name}
    for name in _parameters(function):
      if name == fixture:
        return True
      own = self.fixtures.get(name)
      if (own is not None and own.name not in seen and
          self.asks_for(own, fixture, seen)):
        return True
    return False


def _parameters(function):
  args = function.args
  return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]


def _environment(function, call=None, caller_env=None):
  """A function's names -> (expression, the environment it is read in).

  Its parameters are bound to their defaults (read in the module), then to
  the arguments of `call` (read in `caller_env`), `*args` to the list of the
  rest; names it assigns to the last expression assigned (read in this
  environment).
  """
  args = function.args
  positional = [a.arg for a in args.posonlyargs + args.args]
  env = {
      name: (default, {}) for name, default in zip(
          positional[len(positional) - len(args.defaults):], args.defaults)
  }
  env.update({
      a.arg: (default, {})
      for a, default in zip(args.kwonlyargs, args.kw_defaults)
      if default is not None
  })
  if call is not None:
    for i, arg in enumerate(call.args):
      if isinstance(arg, ast.Starred) or i >= len(positional):
        if args.vararg is not None:
          rest = ast.List(elts=call.args[i:], ctx=ast.Load())
          env[args.vararg.arg] = (rest, caller_env)
        break
      env[positional[i]] = (arg, caller_env)
    for keyword in call.keywords:
      if keyword.arg is not None:
        env[keyword.arg] = (keyword.value, caller_env)
  for node in ast.walk(function):
    if isinstance(node, ast.Assign):
      for target in node.targets:
        if isinstance(target, ast.Name):
          env[target.id] = (node.value, env)
  return env


@functools.cache
def _launchers():
  """Full names of the functions of tests/helpers/, benchmarks/ and tools/
  that start a program (the code tests call besides the package's)."""
  modules = [
      _Module(os.path.join(helpers.REPO_ROOT, folder, name))
      for folder in _CALLED_FOLDERS
      for name in sorted(os.listdir(os.path.join(helpers.REPO_ROOT, folder)))
      if name.endswith('.py')
  ]
  found = set()
  while True:  # Until no helper is found to call another new one.
    more = {
        f'{module.name}.{name}' for module in modules
        for name, function in module.functions.items()
        if module.starts_programs(function, found)
    }
    if more <= found:
      return frozenset(found)
    found |= more


_FILES = list(_test_files())
_IDS = [os.path.relpath(path, _TESTS) for path in _FILES]

# One of each way a test reaches a program, or only seems to.
_EXAMPLE = """
import os
import subprocess
import sys

import pytest

from tests.helpers import benchmark_presets as presets
from tests.helpers import programs

pytestmark = [pytest.mark.tff, pytest.mark.slow]
_RUN_SH = os.path.join('root', 'run.sh')


def _epsilon(*args):
  return subprocess.run([sys.executable, '-m', 'tff_dp.cli.epsilon', *args])


def _child(argv, *, timeout=9):
  return subprocess.Popen(argv)


@pytest.fixture(name='run')
def fixture_run():
  return subprocess.run(['bash', _RUN_SH, 'train'])


@pytest.fixture(name='worker')
def fixture_worker(tff_runtime):
  return tff_runtime


def test_helper():
  programs.run_train('--rounds=1')


@pytest.mark.e2e
def test_helper_of_a_helper(tmp_path):
  presets.train_one_round(tmp_path, 'cifar100', tmp_path)


def test_module_function():
  _epsilon('--help')


def test_fixture(run, worker):
  del run, worker


def test_argument():
  command = [sys.executable, '-m', 'tools.fault_campaign']
  _child(command)


def test_itself_as_the_program():
  subprocess.run([sys.executable, __file__], check=True)


def test_python_c():
  subprocess.run([sys.executable, '-c', 'import tff_dp.cli.train'])


def test_other_argument():
  _child(['sleep', '1'])


if __name__ == '__main__':
  from tff_dp.cli import train
  train.entry_point()
"""


def test_the_reading_finds_every_way_to_a_program(tmp_path):
  # If the reading broke, the tests below would pass by finding nothing.
  path = tmp_path / 'test_example.py'
  path.write_text(_EXAMPLE)
  module = _Module(str(path))
  starting = {
      name for name, test in module.tests().items()
      if module.starts_programs(test, _launchers())
  }
  assert starting == {
      'test_helper', 'test_helper_of_a_helper', 'test_module_function',
      'test_fixture', 'test_argument', 'test_itself_as_the_program'
  }
  tests = module.tests()
  assert module.marks_of(tests['test_helper']) == {'tff', 'slow'}
  assert module.marks_of(
      tests['test_helper_of_a_helper']) == {'tff', 'slow', 'e2e'}
  assert module.asks_for(tests['test_fixture'], 'tff_runtime')
  assert not module.asks_for(tests['test_helper'], 'tff_runtime')
  # Run as itself, a file is the program only if it imports tff_dp.cli.
  path = tmp_path / 'test_example_without_the_cli.py'  # Not read before.
  path.write_text(_EXAMPLE.replace('from tff_dp.cli import train', 'pass'))
  module = _Module(str(path))
  assert not module.starts_programs(
      module.tests()['test_itself_as_the_program'], _launchers())


def test_the_reading_finds_the_helpers_and_real_program_runs():
  assert {
      'tests.helpers.programs.run_train', 'tests.helpers.programs.start_train',
      'tests.helpers.configs_smoke.train_and_check',
      'tests.helpers.benchmark_presets.train_one_round',
      'benchmarks.csv_import_memory.run'
  } <= _launchers(), sorted(_launchers())
  module = _Module(os.path.join(_TESTS, 'cli', 'test_e2e.py'))
  assert module.starts_programs(
      module.functions['test_smoke_run_writes_every_output'], _launchers())


@pytest.mark.parametrize('path', _FILES, ids=_IDS)
def test_a_test_that_starts_a_program_is_marked_e2e(path):
  module = _Module(path)
  unmarked = sorted(name for name, test in module.tests().items()
                    if module.starts_programs(test, _launchers()) and
                    'e2e' not in module.marks_of(test))
  assert not unmarked, (
      f'{module.name}: these start a program in a subprocess; mark them '
      f'@pytest.mark.e2e (pytest.ini): {unmarked}')


@pytest.mark.parametrize('path', _FILES, ids=_IDS)
def test_a_test_marked_e2e_starts_a_program(path):
  module = _Module(path)
  pure = sorted(name for name, test in module.tests().items()
                if 'e2e' in module.marks_of(test) and
                not module.starts_programs(test, _launchers()))
  assert not pure, (
      f'{module.name}: marked e2e but start no program (a module-level '
      f'`pytestmark` marks every test): {pure}')


@pytest.mark.parametrize('path', _FILES, ids=_IDS)
def test_a_test_on_the_tff_runtime_is_marked_tff(path):
  module = _Module(path)
  unmarked = sorted(name for name, test in module.tests().items()
                    if module.asks_for(test, 'tff_runtime') and
                    'tff' not in module.marks_of(test))
  assert not unmarked, (
      f'{module.name}: these run on the TFF runtime; mark them '
      f'@pytest.mark.tff (pytest.ini): {unmarked}')
