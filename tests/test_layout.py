"""The package's layers: every module imports only the layers below its own.

`tff_dp/__init__.py` states the order; each subpackage's docstring says what
it may import. This test reads every import statement (function-level ones
included) with `ast`, so a lazy import cannot hide an upward dependency.
"""

import ast
import os

import pytest

from tests import helpers

_PACKAGE = os.path.join(helpers.REPO_ROOT, 'tff_dp')
_BELOW_CONFIG = {
    'atomic_io', 'checks', 'processes', 'cohorts', 'privacy', 'data', 'audit',
    'mechanisms'
}
_BELOW_PROGRAM = _BELOW_CONFIG | {
    'config', 'simulation_path', 'config_checks', 'models', 'algorithms',
    'execution'
}
# Layer -> the layers it may import (its own always allowed).
_ALLOWED = {
    'atomic_io': set(),
    'checks': set(),
    # Whether a process is alive (/proc; standard library only).
    'processes': set(),
    'cohorts': {'atomic_io', 'checks'},
    'privacy': {'cohorts', 'atomic_io', 'checks'},
    'data': {'atomic_io', 'checks'},
    'audit': {'privacy', 'checks', 'atomic_io'},
    'config': _BELOW_CONFIG,
    # Which simulation path runs a configuration (pure Python).
    'simulation_path': _BELOW_CONFIG | {'config'},
    'config_checks': _BELOW_CONFIG | {'config', 'simulation_path'},
    'mechanisms': {'privacy', 'cohorts', 'atomic_io', 'checks'},
    # Model architectures (the transformer) and how their parameters train.
    'models': {'config', 'checks'},
    'algorithms': _BELOW_CONFIG | {'config', 'models'},
    'execution': {'checks', 'processes'},
    'program': _BELOW_PROGRAM,
    # Sweeps run the training program as a subprocess and read what its
    # runs wrote: they may read the program's file formats, not its flags.
    'sweeps': _BELOW_PROGRAM | {'program'},
    'cli': _BELOW_PROGRAM | {'program', 'sweeps', 'lazy_imports'},
    # The programs' deferred imports of the stack (standard library only).
    'lazy_imports': set(),
    # The Python API, beside the programs: it parses settings with the
    # programs' flag definitions (never the global FLAGS).
    'api': _BELOW_PROGRAM | {'program', 'cli'},
}


def _layer(dotted):
  """'tff_dp.privacy.accounting' -> 'privacy'; 'tff_dp' -> None."""
  parts = dotted.split('.')
  return parts[1] if parts[0] == 'tff_dp' and len(parts) > 1 else None


def _modules():
  for root, _, files in os.walk(_PACKAGE):
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, helpers.REPO_ROOT)[:-3]
        yield path, rel.replace(os.sep, '.').removesuffix('.__init__')


def _imported(path):
  """Every tff_dp module or package a file imports."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), filename=path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == 'tff_dp':  # from tff_dp import config
        yield from (f'tff_dp.{alias.name}' for alias in node.names)
      else:
        yield node.module


def test_every_module_lives_in_a_known_layer():
  for _, module in _modules():
    layer = _layer(module)
    assert layer is None or layer in _ALLOWED, (
        f'{module}: {layer} is not a layer; add it to tff_dp/__init__.py '
        'and this test')


@pytest.mark.parametrize('path,module',
                         list(_modules()),
                         ids=lambda value: value if '.' in value else '')
def test_imports_only_lower_layers(path, module):
  layer = _layer(module)
  if layer is None:
    return
  upward = sorted({
      name for name in _imported(path)
      if _layer(name) not in (None,
                              layer) and _layer(name) not in _ALLOWED[layer]
  })
  assert not upward, f'{module} ({layer}) imports a higher layer: {upward}'


# Subpackages whose __init__.py is fixed by a contract between branches
# (`models`: its one docstring line); `tff_dp/__init__.py` states their rule.
_RULE_IN_PACKAGE_DOCSTRING = {'models'}


def test_every_subpackage_says_what_it_may_import():
  for name in sorted(os.listdir(_PACKAGE)):
    init = os.path.join(_PACKAGE, name, '__init__.py')
    if name in _RULE_IN_PACKAGE_DOCSTRING:
      with open(os.path.join(_PACKAGE, '__init__.py'), encoding='utf-8') as f:
        assert f'`{name}`' in ast.get_docstring(ast.parse(f.read()))
    elif name in _ALLOWED and os.path.exists(init):
      with open(init, encoding='utf-8') as f:
        docstring = ast.get_docstring(ast.parse(f.read()))
      assert docstring and 'import' in docstring.lower(), init
